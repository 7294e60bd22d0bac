"""The Kubernetes API, through one client holder.

Every call goes through :meth:`Cluster.request`, the one choke point (kr8s'
``Api.call_api``): it refuses non-loopback servers for a twin target, retries
connection errors, 429 and 5xx with backoff for as long as a control-plane restart
takes (recording how long the API was away), and translates the client's exceptions
into :class:`~runbook.errors.ClusterError`.

Bulk reads return raw JSON dicts, paged with ``limit``/``continue``: typed model
deserialisation costs about 0.2 ms per pod, four times the raw cost at scale.

Example:
    >>> from runbook import cluster, params
    >>> c = cluster.Cluster.from_params(params.load("params/twin.yaml"))   # doctest: +SKIP
    >>> c.snapshot("pods").groupby("namespace").size()                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote, urlsplit

import pandas as pd

from . import lean_imports
from .cluster_pipeline import PageRequests
from .cluster_route import Route, hint_for, register_secret, resolve, status_message, status_reason
from .errors import ClusterError, WaitTimeout
from .paging import Pager, loads
from .safety import require_loopback_url

# (apiVersion, plural, namespaced) of what the runbook reads and writes.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("v1", "namespaces", False),
    "nodes": ("v1", "nodes", False),
    "pods": ("v1", "pods", True),
    "services": ("v1", "services", True),
    "configmaps": ("v1", "configmaps", True),
    "secrets": ("v1", "secrets", True),
    "persistentvolumeclaims": ("v1", "persistentvolumeclaims", True),
    "persistentvolumes": ("v1", "persistentvolumes", False),
    "events": ("v1", "events", True),
    "deployments": ("apps/v1", "deployments", True),
    "replicasets": ("apps/v1", "replicasets", True),
    "daemonsets": ("apps/v1", "daemonsets", True),
    "statefulsets": ("apps/v1", "statefulsets", True),
    "ingresses": ("networking.k8s.io/v1", "ingresses", True),
    "networkpolicies": ("networking.k8s.io/v1", "networkpolicies", True),
    "leases": ("coordination.k8s.io/v1", "leases", True),
    "poddisruptionbudgets": ("policy/v1", "poddisruptionbudgets", True),
    "customresourcedefinitions": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "applications": ("argoproj.io/v1alpha1", "applications", True),
    "applicationsets": ("argoproj.io/v1alpha1", "applicationsets", True),
    "backups": ("velero.io/v1", "backups", True),
    "restores": ("velero.io/v1", "restores", True),
    "ipaddresspools": ("metallb.io/v1beta1", "ipaddresspools", True),
    "ciliumnodes": ("cilium.io/v2", "ciliumnodes", False),
    "ciliumendpoints": ("cilium.io/v2", "ciliumendpoints", True),
    "ciliumnodeconfigs": ("cilium.io/v2alpha1", "ciliumnodeconfigs", True),
    # Longhorn's CRDs, named with their group ("volumes" alone is ambiguous)
    "volumes.longhorn.io": ("longhorn.io/v1beta2", "volumes", True),
    "replicas.longhorn.io": ("longhorn.io/v1beta2", "replicas", True),
}

_RETRY_STATUS = {429, 500, 502, 503, 504}


def resource_path(api_version: str, plural: str, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """The REST path of a collection or an object.

    >>> resource_path("apps/v1", "deployments", "argocd", "argocd-server")
    '/apis/apps/v1/namespaces/argocd/deployments/argocd-server'
    """
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name, safe='')}"
    if subresource:
        base += f"/{subresource}"
    return base


@dataclass
class Outage:
    """A period during which the API server did not answer."""

    started: float
    ended: float | None = None
    attempts: int = 0
    last_error: str = ""

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started


@dataclass
class Cluster:
    """A connection to one cluster's API server.

    Args:
        kubeconfig: path of the kubeconfig file.
        context: context name (None = current-context).
        kind: ``twin`` or ``real``; a twin must be on loopback.
        retry_for: seconds a call keeps retrying while the API is unreachable.
    """

    kubeconfig: str
    context: str | None = None
    kind: str = "real"
    retry_for: float = 120.0
    request_timeout: float = 30.0
    outages: list[Outage] = field(default_factory=list)
    #: where :meth:`wait_for` logs each wait (``<run_dir>/waits.jsonl``; None: nowhere)
    wait_log: Path | None = None
    _api: Any = field(default=None, repr=False)

    @classmethod
    def from_params(cls, params: Any) -> "Cluster":
        """Connect as the params say (``target.kubeconfig``, ``target.context``, ``target.kind``)."""
        timeouts = getattr(getattr(params, "limits", None), "timeouts", None)
        retry_for = float(getattr(timeouts, "api_ready", 120) or 120)
        kubeconfig = getattr(params, "kubeconfig_path", None) or params.target.kubeconfig
        return cls(str(Path(str(kubeconfig)).expanduser()), params.target.context,
                   kind=params.target.kind, retry_for=retry_for)

    # -- connection -------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> Any:
        lean_imports.kubernetes()   # first: without the optional validator's import cost
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration

        if not Path(self.kubeconfig).is_file():
            raise ClusterError(f"kubeconfig not found: {self.kubeconfig}", hint=(
                "a twin writes its kubeconfig next to its params.yaml when it starts: is it running? "
                "Start one with `.venv/bin/runbook twin up --state-dir .twin` (then use "
                ".twin/params.yaml), or rehearse everything with `make rehearse`"
                if self.kind == "twin" else "check target.kubeconfig in the params file"))
        cfg = Configuration()
        try:
            kconfig.load_kube_config(config_file=self.kubeconfig, context=self.context,
                                     client_configuration=cfg, persist_config=False)
        except Exception as e:  # the loader raises ConfigException, KeyError, yaml errors ...
            raise ClusterError(f"cannot load kubeconfig {self.kubeconfig}: {e}") from e
        require_loopback_url(cfg.host, kind=self.kind, what="Kubernetes API server")
        token = (cfg.api_key or {}).get("authorization", "")
        if token:
            register_secret(token.removeprefix("Bearer ").strip())
        cfg.retries = False  # our choke point retries, with an outage record
        from kubernetes.client import ApiClient

        return ApiClient(cfg)

    @property
    def server(self) -> str:
        """The API server URL (no credentials)."""
        return self.api.configuration.host

    # -- the choke point ------------------------------------------------------------------
    def route(self) -> Route:
        """The server URL and the headers every request carries (credentials included),
        resolved from the client now (:func:`runbook.cluster_route.resolve`: a token an
        exec plugin or an expiry refreshes is refreshed here). :meth:`request_raw`
        resolves one per call unless handed one; a paged read, one per list."""
        return resolve(self.api)

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str | None = None,
                ok_missing: bool = False, retry_for: float | None = None,
                raise_status: frozenset[int] = frozenset()) -> Any:
        """One API call, returning parsed JSON (None for 404 when ``ok_missing``).

        Retries connection failures, 429 and 5xx with exponential backoff for up to
        ``retry_for`` seconds (default the cluster's), recording the outage; other
        errors raise ClusterError. A status in ``raise_status`` is an answer, not an
        outage: it raises ClusterError at once (an eviction a PodDisruptionBudget refuses
        is a 429 the caller retries on its own schedule).
        """
        data = self.request_raw(method, path, query=query, body=body, content_type=content_type,
                                ok_missing=ok_missing, retry_for=retry_for,
                                raise_status=raise_status)
        return loads(data) if data else None

    def request_raw(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                    body: Any = None, content_type: str | None = None,
                    ok_missing: bool = False, retry_for: float | None = None,
                    raise_status: frozenset[int] = frozenset(),
                    route: Route | None = None,
                    answer_headers: dict[str, str] | None = None,
                    ongoing: Outage | None = None) -> bytes | None:
        """:meth:`request` without decoding: the response body (None for 404 when
        ``ok_missing``), for callers that decode it themselves (paging). With
        ``answer_headers``, the headers of a successful answer are put there (its
        ``Date``: :func:`runbook.server_clock.measure`).

        Sent through the official client's own urllib3 pool (its TLS, CA, client
        certificate and proxy settings) with the headers of ``route`` (default: resolved
        for this call, :meth:`route`). A 401 on a route resolved earlier re-resolves it
        once (a token that expired meanwhile) and asks again. ``ongoing``: the outage
        record of an attempt that already failed (a page asked ahead), which this call
        continues instead of opening another.
        """
        from urllib3.exceptions import HTTPError as Urllib3Error

        api = self.api
        reused = route is not None
        route = route or self.route()
        q = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = dict(route.headers)
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        payload = None if body is None else json.dumps(api.sanitize_for_serialization(body))
        pool = api.rest_client.pool_manager
        timeout = self._timeout(self.request_timeout)
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.2
        outage = ongoing
        while True:
            err: str
            cause: BaseException | None = None  # the transport's own error, kept for ``from``
            url = route.url(api, path, q)
            try:
                resp = pool.request(method, url, body=payload, headers=headers, timeout=timeout,
                                    preload_content=False)
                data = resp.data
                status = resp.status
                if outage is not None:
                    outage.ended = time.time()
                if 200 <= status < 300:
                    if answer_headers is not None:
                        answer_headers.update(resp.headers)
                    return data
                if status == 404 and ok_missing:
                    return None
                if status == 401 and reused:
                    reused = False      # once: a token that expired since the route was resolved
                    if route.renew(self.route()):
                        headers.update(route.headers)
                        continue
                msg = status_message(data)
                if status not in _RETRY_STATUS or status in raise_status:
                    raise ClusterError(f"{method} {path} failed: {status} {msg}", status=status,
                                       reason=status_reason(data),
                                       hint=hint_for(status))
                err = f"HTTP {status} {msg}"
            except (Urllib3Error, OSError) as e:
                err = f"{type(e).__name__}: {e}"
                cause = e
            if outage is None:
                outage = Outage(started=time.time())
                self.outages.append(outage)
            outage.attempts += 1
            outage.last_error = err[:300]
            if time.monotonic() >= deadline:
                outage.ended = time.time()
                raise ClusterError(
                    f"API server unreachable for {outage.seconds:.0f}s "
                    f"({outage.attempts} attempts): {outage.last_error}",
                    hint="check that k3s is running on the server node (systemctl status k3s)"
                ) from cause
            time.sleep(delay)
            delay = min(delay * 1.6, 2.0)

    def watch_stream(self, path: str, query: dict[str, Any], *, read_timeout: float = 90.0) -> Any:
        """Open a watch (``?watch=true``) and return the streaming response (urllib3's),
        one JSON event per line. No retries: :class:`runbook.watches.Changes` resumes
        from its last resourceVersion, and polls while a watch cannot be opened."""
        api, route = self.api, self.route()
        q = [(k, v) for k, v in query.items() if v is not None]
        resp = api.rest_client.pool_manager.request(
            "GET", route.url(api, path, q), headers=dict(route.headers),
            timeout=self._timeout(self.request_timeout, read_timeout), preload_content=False)
        if resp.status != 200:
            data = resp.data
            raise ClusterError(f"watch {path} failed: {resp.status} {status_message(data)}",
                               status=resp.status, reason=status_reason(data))
        return resp

    @staticmethod
    def _timeout(connect: float, read: float | None = None) -> Any:
        """urllib3's timeout: ``connect`` as the whole request's, or (connect, read)."""
        import urllib3

        if read is None:
            return urllib3.Timeout(total=connect)
        return urllib3.Timeout(connect=connect, read=read)

    # -- convenience ----------------------------------------------------------------------
    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        """One object (raw dict), or None when absent."""
        api_version, plural, _ = RESOURCES[resource]
        return self.request("GET", resource_path(api_version, plural, namespace, name), ok_missing=True)

    def iter_list(self, resource: str, namespace: str | None = None, *,
                  label_selector: str | None = None, field_selector: str | None = None,
                  limit: int = 500) -> Iterator[dict]:
        """Every object of a resource, page by page (``limit``/``continue``), the next
        page asked for before this one is decoded (:class:`runbook.paging.Pager`)."""
        api_version, plural, _ = RESOURCES[resource]
        yield from self.iter_collection(api_version, plural, namespace, limit=limit,
                                        label_selector=label_selector,
                                        field_selector=field_selector)

    def iter_collection(self, api_version: str, plural: str, namespace: str | None = None, *,
                        label_selector: str | None = None, field_selector: str | None = None,
                        limit: int = 500) -> Iterator[dict]:
        """Every object of any served type (``apps/v1``, ``deployments``), paged; nothing
        when the server does not serve the type (404)."""
        for page in self.pages(api_version, plural, namespace, label_selector=label_selector,
                               field_selector=field_selector, limit=limit):
            yield from page.get("items") or []

    def pages(self, api_version: str, plural: str, namespace: str | None = None, *,
              label_selector: str | None = None, field_selector: str | None = None,
              limit: int = 500) -> Pager:
        """The decoded pages (``limit``/``continue``) of a collection, each read through
        :meth:`request_raw` with one :class:`Route` for the whole list, the next page
        requested before this one is decoded, on a kept connection of the client's pool
        (:class:`runbook.cluster_pipeline.PageRequests`; what it does not deliver is asked
        again through :meth:`request_raw`); no page when the server does not serve the
        type (404).

        Example:
            >>> sum(len(p["items"]) for p in c.pages("v1", "pods"))   # doctest: +SKIP
            50000
        """
        from urllib3.util import parse_url

        path = resource_path(api_version, plural, namespace)
        route = self.route()

        def query(token: str | None) -> dict[str, Any]:
            return {"limit": limit, "continue": token, "labelSelector": label_selector,
                    "fieldSelector": field_selector}

        failure: list[Outage] = []     # the outage a page asked ahead ran into, continued by fetch

        def fetch(token: str | None) -> bytes | None:
            # None: the resource type does not exist (e.g. no cilium.io CRDs yet)
            return self.request_raw("GET", path, query=query(token), ok_missing=True, route=route,
                                    ongoing=failure.pop() if failure else None)

        def target(token: str) -> str:
            q = [(k, v) for k, v in query(token).items() if v is not None]
            return parse_url(route.url(self.api, path, q)).request_uri

        def failed(err: str, status: int | None) -> None:
            # a page asked ahead that is asked again through request_raw: what it learnt first
            if status == 401:
                route.renew(self.route())     # an expired token: the retry carries the new one
            elif status is None or status in _RETRY_STATUS:
                now = time.time()             # a failed attempt: the outage the retry continues
                failure[:] = [Outage(started=now, ended=now, attempts=1, last_error=err[:300])]
                self.outages.append(failure[0])

        ahead = PageRequests.of(self.api, target, lambda: route.headers, timeout=self.request_timeout,
                                failed=failed)
        return Pager(fetch, ahead=ahead)

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        """All objects of a resource as raw dicts (paged; each page's items joined at once)."""
        api_version, plural, _ = RESOURCES[resource]
        out: list[dict] = []
        for page in self.pages(api_version, plural, namespace, **kw):
            out += page.get("items") or []
        return out

    def has_resource(self, resource: str) -> bool:
        """True when the server serves the resource type (e.g. cilium.io CRDs registered)."""
        api_version, plural, _ = RESOURCES[resource]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        doc = self.request("GET", base, ok_missing=True)
        return bool(doc) and any(r.get("name") == plural for r in doc.get("resources", []))

    def patch(self, resource: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: str = "merge") -> dict:
        """Patch an object: ``merge`` (RFC 7386, ``None`` deletes a key), ``json`` or ``strategic``."""
        api_version, plural, _ = RESOURCES[resource]
        ctype = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}[patch_type]
        return self.request("PATCH", resource_path(api_version, plural, namespace, name),
                            body=patch, content_type=ctype, query={"fieldManager": "phase22-runbook"})

    def create(self, resource: str, obj: dict, namespace: str | None = None) -> dict:
        api_version, plural, _ = RESOURCES[resource]
        return self.request("POST", resource_path(api_version, plural, namespace), body=obj,
                            query={"fieldManager": "phase22-runbook"})

    def replace(self, resource: str, obj: dict) -> dict:
        api_version, plural, _ = RESOURCES[resource]
        md = obj["metadata"]
        return self.request("PUT", resource_path(api_version, plural, md.get("namespace"), md["name"]),
                            body=obj)

    def delete(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        """Delete an object; absent is fine (returns None)."""
        api_version, plural, _ = RESOURCES[resource]
        return self.request("DELETE", resource_path(api_version, plural, namespace, name),
                            ok_missing=True)

    def exec(self, namespace: str, pod: str, argv: list[str], **kw: Any) -> Any:
        """Run a command in a pod over the API's WebSocket (``kubectl exec``); see
        :func:`runbook.pod_exec.exec_in_pod` for the arguments. Returns an
        :class:`~runbook.pod_exec.ExecResult` (rc, stdout, stderr), never raising on a
        non-zero exit status.

        Example:
            >>> c.exec("kube-system", "coredns-6799fbcd5-x2x9q", ["nslookup", "kubernetes"])  # doctest: +SKIP
        """
        from .pod_exec import exec_in_pod

        return exec_in_pod(self, namespace, pod, argv, **kw)

    def identity(self) -> str:
        """The cluster's identity for provenance: the kube-system namespace UID."""
        ns = self.get("namespaces", "kube-system")
        if not ns:
            raise ClusterError("namespace kube-system not found: is this a Kubernetes cluster?")
        return ns["metadata"]["uid"]

    def version(self) -> dict:
        return self.request("GET", "/version")

    def ping(self) -> bool:
        """True when the API answers right now (no retries)."""
        try:
            self.request("GET", "/version", retry_for=0.0)
            return True
        except ClusterError:
            return False

    # -- waits ----------------------------------------------------------------------------
    def wait_for(self, check: Callable[[], tuple[bool, list[str]]], *, timeout: float,
                 what: str, interval: float = 1.0,
                 progress: Callable[[str], None] | None = None,
                 watch: Sequence[Any] = (), watched_interval: float | None = None) -> float:
        """Re-check ``check`` until it returns ``(True, [])``; returns the seconds waited.

        ``check`` returns ``(done, pending)`` where ``pending`` lists, in words, what is
        not there yet. On timeout raises WaitTimeout with that list.

        Args:
            watch: the resources ``check`` reads (names of :data:`RESOURCES`, or
                ``(name, namespace)``): it is re-checked as soon as one of them changes
                (:class:`runbook.watches.Changes`), and every ``interval`` seconds anyway
                (the fallback for what no watch sees, or while no watch can be opened).
                Without ``watch``, ``check`` is polled every ``interval`` seconds.
            watched_interval: seconds between re-checks while every watch is open (default
                ``interval``): for a ``check`` that reads only the watched resources, so
                that ``interval`` is the poll of a wait whose watch failed.

        Example:
            >>> c.wait_for(lambda: (all(node_ready(n) for n in c.list("nodes")), []),
            ...            timeout=300, what="every node Ready", watch=["nodes"])   # doctest: +SKIP
        """
        from .watches import Changes

        t0 = time.monotonic()
        pending: list[str] = []
        last_report = 0.0
        checks = 0
        changes = Changes(self, watch) if watch else None
        ok = False
        try:
            while True:
                done, pending = check()
                checks += 1
                waited = time.monotonic() - t0
                if done:
                    ok = True
                    return waited
                if waited >= timeout:
                    raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}",
                                      pending=pending)
                if progress and waited - last_report >= 10:
                    progress(f"still waiting for {what} ({waited:.0f}s): {len(pending)} pending")
                    last_report = waited
                pause = min(interval, max(0.0, timeout - waited))
                if changes is not None:
                    if watched_interval is not None and changes.watching:
                        pause = min(watched_interval, max(0.0, timeout - waited))
                    changes.wait(pause)
                else:
                    time.sleep(pause)
        finally:
            if changes is not None:
                changes.close()
            self.log_wait(what, time.monotonic() - t0, ok=ok, timeout=timeout, checks=checks,
                          events=changes.events if changes else None)

    def log_wait(self, what: str, seconds: float, *, ok: bool, timeout: float,
                 checks: int | None = None, events: int | None = None) -> None:
        """Append one wait to ``wait_log`` (``waits.jsonl`` in the run folder), if set:
        how long the run waited for what, and whether it came (evidence of where a
        run's time went). Best effort: a wait never fails for its log."""
        if self.wait_log is None:
            return
        entry = {"ts": time.time(), "what": what, "seconds": round(seconds, 3), "ok": ok,
                 "timeout": timeout, "checks": checks, "events": events}
        try:
            fd = os.open(self.wait_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError:
            pass

    # -- snapshots --------------------------------------------------------------------------
    def snapshot(self, kind: str) -> pd.DataFrame:
        """A table of the cluster's ``kind``: pods, services, ingresses, pvcs, nodes,
        daemonsets, deployments, statefulsets (columns: :data:`runbook.cluster_tables.COLUMNS`)."""
        from .cluster_tables import table

        return table(self, kind)

def _controller(obj: dict) -> tuple[str, str]:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("kind", ""), ref.get("name", "")
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return (refs[0].get("kind", ""), refs[0].get("name", "")) if refs else ("", "")


def pod_display_status(pod: dict) -> str:
    """The STATUS column kubectl shows for a pod (waiting reason, Terminating, phase)."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    st = pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
    return st.get("phase") or "Unknown"


def pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def server_host(kubeconfig: str) -> str:
    """The host of the kubeconfig's current server (for messages; no connection)."""
    import yaml

    doc = yaml.safe_load(Path(kubeconfig).read_text())
    ctx_name = doc.get("current-context")
    ctx = next((c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name), {})
    cl = next((c["cluster"] for c in doc.get("clusters", []) if c["name"] == ctx.get("cluster")), {})
    return urlsplit(cl.get("server", "")).hostname or ""
