"""The twin's Kubernetes API server: HTTPS on loopback in front of :mod:`twin.store`.

Real clients (kubectl 1.32, helm 4, the official Python client) talk to it exactly as to
a k3s server; ``/work/shared/reference/k8s-api-for-real-clients.md`` lists what they
need. One component (``name = "apiserver"``) of the twin's runtime:

- at start it takes (or creates) the twin's CA, issues a serving certificate, makes a
  random bearer token and writes ``state_dir/kubeconfig``;
- it serves discovery, CRUD on every registered type (CRDs included), the four PATCH
  flavours, watches with bookmarks and initial events, server-side Table output,
  ``/openapi/v2`` and helm's protobuf Secret/ConfigMap bodies;
- :meth:`APIServer.outage` stops listening for a while (connections are refused, as
  while k3s restarts) and then listens again on the same port.

Routing is done here rather than with aiohttp's router because the set of resources
changes at run time (CRDs come and go).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import protobuf, tables
from .store import Gone, NotFound, ResourceType, StoreError

log = logging.getLogger("twin.apiserver")

K8S_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1",
    "gitCommit": "a562d7ee0d9fb8bf2aad6a7ea9f4e0f7e7b4b2ad", "gitTreeState": "clean",
    "buildDate": "2024-12-13T00:00:00Z", "goVersion": "go1.22.9", "compiler": "gc",
    "platform": "linux/amd64",
}
JSON = "application/json"
TABLE_VERSIONS = ("v1", "v1beta1")
DEFAULT_WATCH_TIMEOUT = 1800.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class HTTPError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A ``Status`` object with ``status: Failure``, as the API server sends on errors."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status,
                        content_type=JSON)


def _error_response(e: HTTPError) -> web.Response:
    return _json_response(status_body(e.code, e.reason, e.message, e.details), e.code)


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version_key(v: str) -> tuple:
    """Kubernetes version priority: GA > beta > alpha, then by number (v1 > v1beta2)."""
    import re
    m = re.match(r"v(\d+)(?:(alpha|beta)(\d+))?$", v)
    if not m:
        return (0, 0, 0, v)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 3, "beta": 2, "alpha": 1}[level]
    return (rank, major, minor, "")


@dataclass
class Route:
    """A parsed resource path."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_path: bool = False   # legacy /watch/ prefix


def parse_resource_path(path: str) -> Route | None | str:
    """Split ``/api/v1/...`` or ``/apis/{g}/{v}/...`` into a :class:`Route`.

    Returns:
        A Route, ``"discovery"`` for a group-version root, or None when the path is not
        under a group version at all.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return "discovery"
    watch = False
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
        if not rest:
            return None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        ns, rest = rest[1], rest[2:]
    else:
        ns = None
    if len(rest) > 3:
        return None
    return Route(group, version, rest[0], ns, rest[1] if len(rest) > 1 else None,
                 rest[2] if len(rest) > 2 else None, watch)


def _accept_table(accept: str) -> str | None:
    """The Table version asked for by an Accept header (``as=Table;g=meta.k8s.io``)."""
    for part in accept.split(","):
        params = {}
        for kv in part.split(";")[1:]:
            if "=" in kv:
                k, v = kv.strip().split("=", 1)
                params[k] = v
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            v = params.get("v", "v1")
            if v in TABLE_VERSIONS:
                return v
    return None


def _accept_as(accept: str) -> set[str]:
    out = set()
    for part in accept.split(","):
        for kv in part.split(";")[1:]:
            kv = kv.strip()
            if kv.startswith("as="):
                out.add(kv[3:])
    return out


class APIServer:
    """HTTPS Kubernetes API endpoint of the twin (a runtime component).

    Args:
        host: loopback address to listen on.
        port: 0 for an ephemeral port (kept across outages and restarts).
        extra_dns_names: additional SANs for the serving certificate.
        bookmark_interval: wall-clock seconds between watch BOOKMARK events.

    Example:
        >>> srv = APIServer()          # doctest: +SKIP
        >>> await rt.start_all([srv])  # doctest: +SKIP
        >>> rt.endpoints["api"]        # doctest: +SKIP
        'https://127.0.0.1:40123'
    """

    name = "apiserver"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 extra_dns_names: tuple[str, ...] = (), bookmark_interval: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.extra_dns_names = tuple(extra_dns_names)
        self.bookmark_interval = bookmark_interval
        self.rt: Any = None
        self.token = ""
        self.kubeconfig_path: Path | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ssl = None
        self._watches: set[asyncio.Task] = set()
        self._outage_task: asyncio.Task | None = None
        self.listening = False
        self._stopping = False
        self.requests = 0
        self.protobuf_bodies = 0   # decoded protobuf request bodies (helm's release Secrets)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self, rt: Any) -> None:
        """Create PKI, token and kubeconfig; start listening."""
        from .pki import PKI
        self.rt = rt
        self._stopping = False
        state = Path(rt.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        if rt.pki is None:
            rt.pki = PKI(state / "pki")
        pair = rt.pki.issue("apiserver", dns_names=["kubernetes", "kubernetes.default",
                                                     "kubernetes.default.svc", *self.extra_dns_names])
        self._ssl = pair.ssl_context()
        self.token = secrets.token_urlsafe(32)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # access_log=None: aiohttp's access log would not add anything to our own line.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        rt.endpoints["api"] = self.url
        rt.endpoints["api_port"] = self.port
        rt.options["api_token"] = self.token
        self.kubeconfig_path = state / "kubeconfig"
        self._write_kubeconfig(self.kubeconfig_path, rt.pki.ca_pem)
        if rt.faults.api_down_seconds and not rt.faults.api_down_on_restart:
            self.trigger_fault_outage()  # a fault set at start begins at start

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl,
                                 reuse_address=True, backlog=256)
        await self._site.start()
        if self.port == 0:
            server = self._site._server  # the bound socket: read back the ephemeral port
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.listening = True

    async def _unlisten(self) -> None:
        """Stop accepting and drop every open connection (watches included)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self.listening = False
        for t in list(self._watches):
            t.cancel()
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()

    async def stop(self) -> None:
        self._stopping = True
        if self._outage_task is not None:
            self._outage_task.cancel()
        await self._unlisten()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        return f"Kubernetes API at {self.url} (kubeconfig {self.kubeconfig_path})"

    def _write_kubeconfig(self, path: Path, ca_pem: bytes) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "twin", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
            "users": [{"name": "twin-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "twin", "context": {"cluster": "twin", "user": "twin-admin"}}],
            "current-context": "twin",
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        os.replace(tmp, path)

    # -- outages ---------------------------------------------------------------------------
    async def outage(self, cluster_seconds: float) -> None:
        """Refuse connections for ``cluster_seconds`` (scaled by the clock), then listen
        again on the same port. Returns when the server listens again."""
        if not self.listening:
            return
        await self._unlisten()
        log.info("API server down for %.1f cluster seconds", cluster_seconds)
        try:
            await asyncio.sleep(self.rt.clock.real(cluster_seconds))
        finally:
            # Also when the outage is cancelled, except while the server is stopping.
            if not self._stopping and self._runner is not None and not self.listening:
                await self._listen()
                log.info("API server listening again on port %d", self.port)

    def trigger_fault_outage(self) -> asyncio.Task | None:
        """Start an outage of ``rt.faults.api_down_seconds`` in the background (if set)."""
        secs = float(getattr(self.rt.faults, "api_down_seconds", 0) or 0)
        if secs <= 0:
            return None
        self._outage_task = asyncio.get_running_loop().create_task(self.outage(secs))
        return self._outage_task

    # -- request entry ---------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        self.requests += 1
        status = 500
        try:
            resp = await self._dispatch(request)
            status = resp.status
            return resp
        except HTTPError as e:
            status = e.code
            return _error_response(e)
        except StoreError as e:
            status = e.code
            return _error_response(HTTPError(e.code, e.reason, e.message, e.details or None))
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499
            raise
        except Exception as e:  # noqa: BLE001 - every failure must still be a Status
            log.exception("internal error on %s %s", request.method, request.path)
            return _error_response(HTTPError(500, "InternalError", f"internal error: {e}"))
        finally:
            if log.isEnabledFor(logging.DEBUG):
                # Method, path (with query: it holds no credentials), status, duration.
                log.debug("%s %s %d %.1fms", request.method, request.path_qs, status,
                          (time.perf_counter() - t0) * 1000)

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].strip(), self.token)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        # k3s runs its API server with --anonymous-auth=false: even /version and
        # /healthz need the token.
        if not self._authorized(request):
            raise HTTPError(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return _json_response(K8S_VERSION)
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/api":
            return self._api_versions(request)
        if path == "/apis":
            return self._api_groups(request)
        if path == "/openapi/v2":
            return self._openapi_v2(request)
        if path.startswith("/apis/") and path.count("/") == 2:
            return self._api_group(path.split("/")[2])
        route = parse_resource_path(path)
        if route == "discovery":
            parts = [p for p in path.split("/") if p]
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            return self._resource_list(group, version)
        if not isinstance(route, Route):
            raise HTTPError(404, "NotFound", "the server could not find the requested resource",
                            {})
        return await self._resource(request, route)

    # -- discovery -------------------------------------------------------------------------
    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.rt.store.resource_types():
            vs = groups.setdefault(rt.group, [])
            if rt.version not in vs:
                vs.append(rt.version)
        for vs in groups.values():
            vs.sort(key=_version_key, reverse=True)
        return groups

    def _api_versions(self, request: web.Request) -> web.Response:
        if "APIGroupDiscoveryList" in _accept_as(request.headers.get("Accept", "")):
            return self._aggregated(core=True, request=request)
        return _json_response({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": f"{self.host}:{self.port}"}]})

    def _group_obj(self, name: str, versions: list[str]) -> dict:
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": vs, "preferredVersion": vs[0]}

    def _api_groups(self, request: web.Request) -> web.Response:
        if "APIGroupDiscoveryList" in _accept_as(request.headers.get("Accept", "")):
            return self._aggregated(core=False, request=request)
        groups = [self._group_obj(g, vs) for g, vs in sorted(self._group_versions().items()) if g]
        return _json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _api_group(self, name: str) -> web.Response:
        vs = self._group_versions().get(name)
        if not vs or not name:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        return _json_response({"kind": "APIGroup", "apiVersion": "v1", **self._group_obj(name, vs)})

    def _types_of(self, group: str, version: str) -> list[ResourceType]:
        return sorted((t for t in self.rt.store.resource_types()
                       if t.group == group and t.version == version), key=lambda t: t.plural)

    @staticmethod
    def _subresources(t: ResourceType) -> list[tuple[str, str, str, str, list[str]]]:
        """(name, group, version, kind, verbs) of the subresources served for ``t``."""
        subs = []
        if t.status_subresource:
            subs.append(("status", t.group, t.version, t.kind, ["get", "patch", "update"]))
        if t.scale_subresource:
            subs.append(("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]))
        if t.group == "" and t.plural == "pods":
            subs.append(("eviction", "policy", "v1", "Eviction", ["create"]))
            subs.append(("log", "", "v1", "Pod", ["get"]))
        return subs

    def _resource_list(self, group: str, version: str) -> web.Response:
        types = self._types_of(group, version)
        if not types:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for t in types:
            r: dict[str, Any] = {"name": t.plural, "singularName": t.singular or t.kind.lower(),
                                 "namespaced": t.namespaced, "kind": t.kind, "verbs": list(t.verbs)}
            if t.short_names:
                r["shortNames"] = list(t.short_names)
            if t.categories:
                r["categories"] = list(t.categories)
            resources.append(r)
            for sub, g, v, kind, verbs in self._subresources(t):
                sr: dict[str, Any] = {"name": f"{t.plural}/{sub}", "singularName": "",
                                      "namespaced": t.namespaced, "kind": kind, "verbs": verbs}
                if (g, v) != (t.group, t.version):
                    sr["group"], sr["version"] = g, v
                resources.append(sr)
        gv = f"{group}/{version}" if group else version
        return _json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                               "resources": resources})

    def _aggregated(self, *, core: bool, request: web.Request) -> web.Response:
        """Aggregated discovery (``apidiscovery.k8s.io/v2``): one document per root."""
        accept = request.headers.get("Accept", "")
        api_version = "apidiscovery.k8s.io/v2" if "v=v2;" in accept.replace(" ", "") + ";" or \
            "v=v2," in accept.replace(" ", "") else "apidiscovery.k8s.io/v2beta1"
        items = []
        for g, vs in sorted(self._group_versions().items()):
            if (g == "") != core:
                continue
            versions = []
            for v in vs:
                resources = []
                for t in self._types_of(g, v):
                    res: dict[str, Any] = {
                        "resource": t.plural,
                        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
                        "scope": "Namespaced" if t.namespaced else "Cluster",
                        "singularResource": t.singular or t.kind.lower(),
                        "verbs": list(t.verbs)}
                    if t.short_names:
                        res["shortNames"] = list(t.short_names)
                    if t.categories:
                        res["categories"] = list(t.categories)
                    subs = [{"subresource": s, "responseKind": {"group": sg, "version": sv, "kind": k},
                             "verbs": verbs} for s, sg, sv, k, verbs in self._subresources(t)]
                    if subs:
                        res["subresources"] = subs
                    resources.append(res)
                versions.append({"version": v, "resources": resources, "freshness": "Current"})
            items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": versions})
        body = {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {},
                "items": items}
        resp = _json_response(body)
        resp.content_type = JSON
        resp.headers["Content-Type"] = (f"application/json;g=apidiscovery.k8s.io;"
                                        f"v={api_version.split('/')[1]};as=APIGroupDiscoveryList")
        return resp

    def _openapi_v2(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and JSON not in accept:
            # An empty protobuf message is a valid, empty openapi_v2.Document.
            return web.Response(body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        return _json_response({"swagger": "2.0",
                               "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
                               "paths": {}, "definitions": {}})

    # -- resources -------------------------------------------------------------------------
    def _rtype(self, route: Route) -> ResourceType:
        t = self.rt.store.lookup(route.group, route.version, route.plural)
        if t is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource", {})
        return t

    async def _resource(self, request: web.Request, route: Route) -> web.StreamResponse:
        t = self._rtype(route)
        if route.namespace is not None and not t.namespaced:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        ns = route.namespace if t.namespaced else None
        m = request.method
        q = request.query
        if route.watch_path or (m == "GET" and q.get("watch") in ("true", "1") and route.name is None):
            if route.name is not None:
                fs = f"metadata.name={route.name}"
                q = dict(q)
                q["fieldSelector"] = ",".join(x for x in (q.get("fieldSelector"), fs) if x)
            return await self._watch(request, t, ns, q)
        if route.name is None:
            if m == "GET":
                return self._list(request, t, ns)
            if m == "POST":
                return await self._create(request, t, ns, route)
            if m == "DELETE":
                return await self._delete_collection(request, t, ns)
            raise HTTPError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if t.namespaced and ns is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        sub = route.subresource
        if sub is not None:
            return await self._subresource(request, t, ns, route.name, sub)
        if m == "GET":
            return self._get(request, t, ns, route.name)
        if m == "PUT":
            return await self._update(request, t, ns, route.name, None)
        if m == "PATCH":
            return await self._patch(request, t, ns, route.name, None)
        if m == "DELETE":
            return await self._delete(request, t, ns, route.name)
        raise HTTPError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # -- bodies ----------------------------------------------------------------------------
    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = (request.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()
        if not raw:
            return None
        if ctype == protobuf.CONTENT_TYPE:
            try:
                obj = protobuf.decode_body(raw)
                self.protobuf_bodies += 1
                return obj
            except protobuf.ProtobufError as e:
                if "not supported" in str(e):
                    raise HTTPError(415, "UnsupportedMediaType", str(e)) from e
                raise HTTPError(400, "BadRequest", f"invalid protobuf body: {e}") from e
        try:
            if ctype.endswith("yaml"):
                return yaml.safe_load(raw.decode())
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise HTTPError(400, "BadRequest", f"the body of the request was in an unknown format: {e}") from e

    @staticmethod
    def _check_object(body: Any, t: ResourceType) -> dict:
        if not isinstance(body, dict):
            raise HTTPError(400, "BadRequest", "the body of the request must be an object")
        kind, av = body.get("kind"), body.get("apiVersion")
        if kind and kind != t.kind:
            raise HTTPError(400, "BadRequest",
                            f"the kind of the provided object ({kind}) does not match the resource ({t.kind})")
        if av and (av.split("/")[0] if "/" in av else "") != t.group:
            raise HTTPError(400, "BadRequest", f"the API version in the data ({av}) does not match "
                                               f"the expected API version ({t.api_version})")
        body["kind"] = t.kind
        body["apiVersion"] = t.api_version
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}
        return body

    def _check_namespace(self, t: ResourceType, ns: str | None, body: dict) -> None:
        meta = body["metadata"]
        if not t.namespaced:
            meta.pop("namespace", None)
            return
        if ns is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        if meta.get("namespace") and meta["namespace"] != ns:
            raise HTTPError(400, "BadRequest", "the namespace of the provided object does not "
                                               "match the namespace sent on the request")
        meta["namespace"] = ns

    def _require_namespace(self, ns: str | None) -> None:
        """Writes into a namespace that does not exist fail, as on a real server."""
        if ns is None:
            return
        nst = self.rt.store.lookup("", "v1", "namespaces")
        if nst is not None and self.rt.store.try_get(nst, None, ns) is None:
            raise HTTPError(404, "NotFound", f'namespaces "{ns}" not found',
                            {"name": ns, "kind": "namespaces"})

    def apply_defaults(self, t: ResourceType, obj: dict) -> None:
        """Defaults a real API server fills on create: Service IPs/ports, apps/v1 strategies."""
        if (t.group, t.plural) == ("", "services"):
            self.allocate_service(obj)
        elif t.group == "apps":
            from .controllers.workloads import workload_defaults

            workload_defaults(t.kind, obj)

    def allocate_service(self, svc: dict) -> None:
        """Allocate a cluster IP (k3s' 10.43.0.0/16) and node ports, as the real service
        registry does on create; values the client chose are kept."""
        spec = svc.setdefault("spec", {})
        stype = spec.setdefault("type", "ClusterIP")
        if stype == "ExternalName":
            return
        t = self.rt.store.lookup("", "v1", "services")
        used_ips: set[str] = set()
        used_ports: set[int] = set()
        for o in self.rt.store.iter_objects(t):
            ospec = o.get("spec") or {}
            used_ips.add(ospec.get("clusterIP", ""))
            used_ports.update(int(p.get("nodePort") or 0) for p in ospec.get("ports") or [])
        if not spec.get("clusterIP"):
            n = 10 + len(used_ips)
            while True:
                ip = f"10.43.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"
                if ip not in used_ips and ip != "10.43.0.1":
                    break
                n += 7
            spec["clusterIP"] = ip
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if stype in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                np = 30000 + (len(used_ports) * 37) % 2768
                while np in used_ports:
                    np = 30000 + (np - 30000 + 1) % 2768
                port["nodePort"] = np
                used_ports.add(np)

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return "All" in request.query.getall("dryRun", [])

    # -- reads -----------------------------------------------------------------------------
    def _table_or_json(self, request: web.Request, t: ResourceType, objs: list[dict],
                       list_meta: dict | None, single: bool) -> web.Response | None:
        accept = request.headers.get("Accept", "")
        tv = _accept_table(accept)
        if tv is not None:
            table = tables.render_table(
                t.group, t.plural, objs, printer_columns=t.table_columns,
                include_object=request.query.get("includeObject", "Metadata"),
                list_metadata=list_meta, api_version=f"meta.k8s.io/{tv}")
            return _json_response(table)
        ases = _accept_as(accept)
        if "PartialObjectMetadataList" in ases and not single or "PartialObjectMetadata" in ases and single:
            v = "v1beta1" if "v=v1beta1" in accept and "v=v1;" not in accept else "v1"
            items = [tables.partial_metadata(o, f"meta.k8s.io/{v}") for o in objs]
            if single:
                return _json_response(items[0])
            return _json_response({"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{v}",
                                   "metadata": list_meta or {}, "items": items})
        return None

    def _get(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        obj = self.rt.store.get(t, ns, name)
        alt = self._table_or_json(request, t, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                                  single=_accept_table(request.headers.get("Accept", "")) is None)
        return alt or _json_response(obj)

    def _list(self, request: web.Request, t: ResourceType, ns: str | None) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit") or 0)
        except ValueError as e:
            raise HTTPError(400, "BadRequest", f"invalid limit {q.get('limit')!r}") from e
        # copy=False: the stored dicts are only serialised (or read by the printers).
        res = self.rt.store.list(t, ns, label_selector=q.get("labelSelector") or None,
                                 field_selector=q.get("fieldSelector") or None,
                                 limit=max(limit, 0), continue_token=q.get("continue") or None,
                                 copy=False)
        meta: dict[str, Any] = {"resourceVersion": str(res.resource_version)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            if res.remaining is not None:
                meta["remainingItemCount"] = res.remaining
        alt = self._table_or_json(request, t, res.items, meta, single=False)
        if alt is not None:
            return alt
        return _json_response({"kind": t.list_kind or f"{t.kind}List", "apiVersion": t.api_version,
                               "metadata": meta, "items": res.items})

    # -- writes ----------------------------------------------------------------------------
    def _fake_create(self, obj: dict, t: ResourceType) -> dict:
        """What a create would return, without storing anything (dryRun=All)."""
        meta = obj["metadata"]
        if t.status_subresource:
            obj.pop("status", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now_rfc3339())
        meta.setdefault("generation", 1)
        return obj

    async def _create(self, request: web.Request, t: ResourceType, ns: str | None,
                      route: Route) -> web.Response:
        body = self._check_object(await self._read_body(request), t)
        self._check_namespace(t, ns, body)
        if not body["metadata"].get("name") and not body["metadata"].get("generateName"):
            raise HTTPError(422, "Invalid", f"{t.kind} \"\" is invalid: metadata.name: Required value: "
                                           "name or generateName is required",
                            {"kind": t.kind, "group": t.group})
        body["metadata"].pop("resourceVersion", None)
        self._require_namespace(ns)
        self.apply_defaults(t, body)
        if self._dry_run(request):
            name = body["metadata"].get("name")
            if name and self.rt.store.try_get(t, ns, name) is not None:
                raise HTTPError(409, "AlreadyExists", f'{t.plural} "{name}" already exists',
                                {"name": name, "group": t.group, "kind": t.plural})
            return _json_response(self._fake_create(body, t), 201)
        return _json_response(self.rt.store.create(body, rtype=t, reset_status=True), 201)

    async def _update(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                      sub: str | None) -> web.Response:
        body = self._check_object(await self._read_body(request), t)
        self._check_namespace(t, ns, body)
        if body["metadata"].get("name", name) != name:
            raise HTTPError(400, "BadRequest", "the name of the object "
                                               f"({body['metadata'].get('name')}) does not match the name on the URL ({name})")
        body["metadata"]["name"] = name
        if self._dry_run(request):
            cur = self.rt.store.get(t, ns, name)
            if sub == "status":
                cur["status"] = body.get("status")
                return _json_response(cur)
            return _json_response(body)
        out = self.rt.store.update(body, rtype=t, subresource=sub,
                                   check_version=bool(body["metadata"].get("resourceVersion")),
                                   preserve_status=sub is None)
        return _json_response(out)

    async def _patch(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                     sub: str | None) -> web.Response:
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        kinds = {"application/merge-patch+json": "merge", "application/json-patch+json": "json",
                 "application/strategic-merge-patch+json": "strategic",
                 "application/apply-patch+yaml": "apply", "application/apply-patch+json": "apply"}
        kind = kinds.get(ctype)
        if kind is None:
            raise HTTPError(415, "UnsupportedMediaType",
                            f"the body of the request was in an unknown format - accepted media types include: "
                            f"{', '.join(kinds)}")
        patch_body = await self._read_body(request)
        if patch_body is None:
            raise HTTPError(400, "BadRequest", "the body of the request was empty")
        if kind == "json" and not isinstance(patch_body, list):
            raise HTTPError(400, "BadRequest", "json patch must be a list of operations")
        if kind != "json" and not isinstance(patch_body, dict):
            raise HTTPError(400, "BadRequest", "patch body must be an object")
        dry = self._dry_run(request)
        current = self.rt.store.try_get(t, ns, name)
        if current is None:
            if kind != "apply" or sub is not None:
                raise NotFound(f'{t.plural}{"." + t.group if t.group else ""} "{name}" not found',
                               details={"name": name, "group": t.group, "kind": t.plural})
            # Server-side apply creates the object when it is absent.
            obj = self._check_object(self._patched("apply", None, patch_body, request), t)
            self._check_namespace(t, ns, obj)
            if obj["metadata"].get("name", name) != name:
                raise HTTPError(400, "BadRequest", "the name of the object does not match the name on the URL")
            obj["metadata"]["name"] = name
            self._require_namespace(ns)
            self.apply_defaults(t, obj)
            if dry:
                return _json_response(self._fake_create(obj, t), 201)
            return _json_response(self.rt.store.create(obj, rtype=t, reset_status=True), 201)
        result = self._patched(kind, current, patch_body, request)
        if not isinstance(result, dict):
            raise HTTPError(422, "Invalid", "the patch produced something that is not an object")
        result = self._check_object(result, t)
        self._check_namespace(t, ns, result)
        if result["metadata"].get("name") != name:
            raise HTTPError(400, "BadRequest", "a patch may not change the name of an object")
        # A patch is applied to what we just read: optimistic concurrency only if the patch
        # itself names a resourceVersion (as kubectl's does not).
        patched_rv = (patch_body.get("metadata") or {}).get("resourceVersion") if isinstance(patch_body, dict) else None
        if not patched_rv:
            result["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        if dry:
            return _json_response(result)
        return _json_response(self.rt.store.update(result, rtype=t, subresource=sub,
                                                   check_version=bool(patched_rv),
                                                   preserve_status=sub is None))

    @staticmethod
    def _patched(kind: str, current: dict | None, patch_body: Any, request: web.Request) -> dict:
        from .patch import PatchError
        try:
            return _apply_patch(kind, current, patch_body,
                                manager=request.query.get("fieldManager", ""),
                                force=request.query.get("force") == "true")
        except PatchError as e:
            raise HTTPError(e.code, "BadRequest" if e.code == 400 else "Invalid", e.message) from e
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise HTTPError(422, "Invalid", f"the patch could not be applied: {e}") from e

    async def _delete_options(self, request: web.Request) -> dict:
        opts: dict[str, Any] = {}
        try:
            body = await self._read_body(request)
        except HTTPError:
            body = None
        if isinstance(body, dict):
            opts.update(body)
        q = request.query
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("gracePeriodSeconds"):
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError as e:
                raise HTTPError(400, "BadRequest", "invalid gracePeriodSeconds") from e
        if q.get("orphanDependents") == "true":
            opts["propagationPolicy"] = "Orphan"
        if opts.get("orphanDependents") is True:
            opts["propagationPolicy"] = "Orphan"
        return opts

    def _do_delete(self, t: ResourceType, ns: str | None, name: str, opts: dict, dry: bool) -> dict:
        pre = opts.get("preconditions") or {}
        if dry:
            cur = self.rt.store.get(t, ns, name)
            for k in ("uid", "resourceVersion"):
                if pre.get(k) and pre[k] != cur["metadata"].get(k):
                    raise HTTPError(409, "Conflict", f"Precondition failed: {k}: {pre[k]}")
            return cur
        policy = opts.get("propagationPolicy") or "Background"
        return self.rt.store.delete(t, ns, name, propagation=policy,
                                    grace_period=opts.get("gracePeriodSeconds"),
                                    preconditions=pre or None)

    async def _delete(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        opts = await self._delete_options(request)
        return _json_response(self._do_delete(t, ns, name, opts, self._dry_run(request)))

    async def _delete_collection(self, request: web.Request, t: ResourceType, ns: str | None) -> web.Response:
        opts = await self._delete_options(request)
        q = request.query
        res = self.rt.store.list(t, ns, label_selector=q.get("labelSelector") or None,
                                 field_selector=q.get("fieldSelector") or None)
        dry = self._dry_run(request)
        deleted = []
        for obj in res.items:
            meta = obj["metadata"]
            try:
                deleted.append(self._do_delete(t, meta.get("namespace"), meta["name"], opts, dry))
            except NotFound:
                continue   # removed meanwhile (garbage collection of an earlier item)
        return _json_response({"kind": t.list_kind or f"{t.kind}List", "apiVersion": t.api_version,
                               "metadata": {"resourceVersion": str(self.rt.store.resource_version)},
                               "items": deleted})

    # -- subresources ----------------------------------------------------------------------
    async def _subresource(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                           sub: str) -> web.StreamResponse:
        m = request.method
        if sub == "status" and t.status_subresource:
            if m == "GET":
                return _json_response(self.rt.store.get(t, ns, name))
            if m == "PUT":
                return await self._update(request, t, ns, name, "status")
            if m == "PATCH":
                return await self._patch(request, t, ns, name, "status")
        elif sub == "finalize" and (t.group, t.plural) == ("", "namespaces") and m == "PUT":
            # What operators use to unstick a Terminating namespace: replace spec.finalizers.
            body = self._check_object(await self._read_body(request), t)
            fins = list((body.get("spec") or {}).get("finalizers") or [])
            return _json_response(self.rt.store.mutate(
                t, None, name, lambda o: o.setdefault("spec", {}).__setitem__("finalizers", fins)))
        elif sub == "scale" and t.scale_subresource:
            return await self._scale(request, t, ns, name)
        elif sub == "eviction" and (t.group, t.plural) == ("", "pods") and m == "POST":
            opts = {}
            body = await self._read_body(request)
            if isinstance(body, dict) and isinstance(body.get("deleteOptions"), dict):
                opts = body["deleteOptions"]
            self._do_delete(t, ns, name, opts, self._dry_run(request))
            return _json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Success", "code": 201}, 201)
        elif sub == "log" and (t.group, t.plural) == ("", "pods") and m == "GET":
            self.rt.store.get(t, ns, name)
            return web.Response(text="", content_type="text/plain")
        raise HTTPError(404, "NotFound", "the server could not find the requested resource")

    async def _scale(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        store = self.rt.store
        scale = store.get_scale(t, ns, name)
        m = request.method
        if m == "GET":
            return _json_response(scale)
        body = await self._read_body(request)
        if m == "PATCH":
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
            kind = {"application/json-patch+json": "json"}.get(ctype, "merge")
            body = _apply_patch(kind, scale, body)
        elif m != "PUT":
            raise HTTPError(405, "MethodNotAllowed", "method not allowed on scale")
        if not isinstance(body, dict) or "replicas" not in (body.get("spec") or {}):
            raise HTTPError(400, "BadRequest", "scale body needs spec.replicas")
        replicas = body["spec"]["replicas"]
        if self._dry_run(request):
            scale["spec"]["replicas"] = replicas
            return _json_response(scale)
        rv = (body.get("metadata") or {}).get("resourceVersion") if m == "PUT" else None
        return _json_response(store.set_scale(t, ns, name, replicas, resource_version=rv))

    # -- watch -----------------------------------------------------------------------------
    async def _watch(self, request: web.Request, t: ResourceType, ns: str | None, q: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        try:
            return await self._watch_inner(request, t, ns, q)
        finally:
            if task is not None:
                self._watches.discard(task)

    async def _watch_inner(self, request: web.Request, t: ResourceType, ns: str | None,
                           q: Any) -> web.StreamResponse:
        store = self.rt.store
        try:
            timeout = float(q.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError as e:
            raise HTTPError(400, "BadRequest", "invalid timeoutSeconds") from e
        ls, fs = q.get("labelSelector") or None, q.get("fieldSelector") or None
        rv = q.get("resourceVersion") or ""
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        send_initial = q.get("sendInitialEvents") in ("true", "1")
        if send_initial and q.get("resourceVersionMatch") != "NotOlderThan":
            raise HTTPError(422, "Invalid", "sendInitialEvents is forbidden unless "
                                            "resourceVersionMatch is NotOlderThan")
        table_v = _accept_table(request.headers.get("Accept", ""))
        # Legacy semantics: a watch without a resourceVersion (or "0") starts with
        # synthetic ADDED events for every existing object; only sendInitialEvents adds the
        # initial-events-end bookmark.
        initial = send_initial or rv in ("", "0")
        try:
            w = store.watch(t, ns, label_selector=ls, field_selector=fs,
                            resource_version=None if initial else rv,
                            send_initial_events=initial, initial_events_bookmark=send_initial)
        except Gone as e:
            return await self._watch_gone(request, e.message)
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON,
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            await self._pump(request, resp, w, t, timeout, bookmarks, table_v)
        except ConnectionResetError:
            # The client went away (helm ends its --wait watches by closing them).
            return resp
        finally:
            w.close()
        try:
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    async def _pump(self, request: web.Request, resp: web.StreamResponse, w: Any, t: ResourceType,
                    timeout: float, bookmarks: bool, table_v: str | None) -> None:
        """Copy watch events to the response until the timeout, an error or a disconnect."""
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            # Send what is already queued in one write (initial events come in bulk).
            buf: list[bytes] = []
            error = False
            while w.pending() and len(buf) < 500:
                ev = await w.next(timeout=0)
                if ev is None:
                    break
                buf.append(self._event_bytes(ev, t, table_v, bookmarks))
                if ev.type == "ERROR":
                    error = True
                    break
            if buf:
                await resp.write(b"".join(buf))
                if error:
                    return
                continue
            wait = min(deadline - now, 1.0)
            if bookmarks:
                wait = max(0.0, min(wait, next_bookmark - now))
            ev = await w.next(timeout=wait)
            if ev is not None:
                await resp.write(self._event_bytes(ev, t, table_v, bookmarks))
                if ev.type == "ERROR":
                    return
                continue
            if getattr(w, "closed", False):
                return
            if bookmarks and time.monotonic() >= next_bookmark:
                # The watch's bookmark names a version it is current with, so a client
                # resuming from it misses nothing.
                await resp.write(self._event_bytes(w.bookmark(), t, table_v, True))
                next_bookmark = time.monotonic() + self.bookmark_interval

    @staticmethod
    def _event_bytes(ev: Any, t: ResourceType, table_v: str | None, bookmarks: bool) -> bytes:
        obj = ev.object
        if ev.type == "BOOKMARK":
            if not bookmarks and INITIAL_EVENTS_END not in (obj.get("metadata", {}).get("annotations") or {}):
                return b""
        elif ev.type != "ERROR" and table_v is not None:
            obj = tables.render_table(t.group, t.plural, [obj], printer_columns=t.table_columns,
                                      api_version=f"meta.k8s.io/{table_v}",
                                      list_metadata={"resourceVersion":
                                                     obj.get("metadata", {}).get("resourceVersion", "")})
        return json.dumps({"type": ev.type, "object": obj}, separators=(",", ":")).encode() + b"\n"

    async def _watch_gone(self, request: web.Request, message: str) -> web.StreamResponse:
        """An expired resourceVersion: a 200 stream with one ERROR event (as the real server)."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(self._error_line(410, "Expired", message))
        await resp.write_eof()
        return resp

    @staticmethod
    def _error_line(code: int, reason: str, message: str) -> bytes:
        return json.dumps({"type": "ERROR", "object": status_body(code, reason, message)},
                          separators=(",", ":")).encode() + b"\n"


# --- patches ----------------------------------------------------------------------------------
def _apply_patch(kind: str, current: dict | None, patch_body: Any, *, manager: str = "",
                 force: bool = False) -> dict:
    """Apply one PATCH flavour with the pure patch functions of :mod:`twin.patch`."""
    from . import patch as p
    if kind == "merge":
        return p.merge_patch(current, patch_body)
    if kind == "json":
        return p.json_patch(current, patch_body)
    if kind == "strategic":
        return p.strategic_merge_patch(current, patch_body)
    if kind == "apply":
        return p.server_side_apply(current, patch_body, field_manager=manager or "unknown",
                                   now=_now_rfc3339(), force=force)
    raise ValueError(f"unknown patch kind {kind}")
