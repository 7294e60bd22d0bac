"""The API server component: TLS, token and kubeconfig, listening and outages, dispatch.

At start it takes (or creates) the twin's CA, issues a serving certificate, makes a
random bearer token and writes ``state_dir/kubeconfig``. Every request needs the token
(k3s runs with ``--anonymous-auth=false``), is logged at DEBUG (method, path, status,
duration) and ends as a response or a ``Status``. :meth:`APIServer.outage` stops
listening for a while (connections are refused, as while k3s restarts) and then listens
again on the same port. What each kind of request does lives in the route mixins.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from ..store import StoreError
from .admission import AdmissionChecks, warning_headers
from .auth import USER, AuthRoutes, review_types
from .portforward import PortForwardRoutes
from .remotecommand import RemoteCommandRoutes
from .defaults import CreateDefaults
from .discovery import K8S_VERSION, DiscoveryRoutes
from .openapi import OpenAPIRoutes
from .patching import PatchRoutes
from .resources import ResourceRoutes
from .responses import HTTPError, error_response, json_response
from .routing import Route, parse_resource_path
from .subresources import SubresourceRoutes
from .watch import WatchRoutes

log = logging.getLogger("twin.apiserver")


class APIServer(DiscoveryRoutes, ResourceRoutes, PatchRoutes, SubresourceRoutes, WatchRoutes,
                CreateDefaults, OpenAPIRoutes, AdmissionChecks, AuthRoutes, RemoteCommandRoutes,
                PortForwardRoutes):
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
        from ..pki import PKI
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
        self._sa_key = secrets.token_bytes(32)   # signs the service account tokens it issues
        for t in review_types():
            if rt.store.lookup(t.group, t.version, t.plural) is None:
                rt.store.register(t)
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
        # The outage may be cancelled at any await (a server back, quorum regained), also
        # while the socket is being closed: the close runs to its end on its own, and the
        # server always listens again afterwards (a cancel in the middle of the close once
        # left the API refusing connections for good).
        closing = asyncio.ensure_future(self._unlisten())
        try:
            await asyncio.shield(closing)
            log.info("API server down for %.1f cluster seconds", cluster_seconds)
            await asyncio.sleep(self.rt.clock.real(cluster_seconds))
        finally:
            if not closing.done():
                await asyncio.wait([closing])
            # Also when the outage is cancelled, except while the server is stopping.
            await self._listen_again()

    async def _listen_again(self) -> None:
        """Listen on the same port again after an outage. The port can take a moment to be
        free again (a connection still closing): retried, and every failure logged, so an
        outage never silently ends in an API that refuses for good."""
        for attempt in range(50):
            if self._stopping or self._runner is None or self.listening:
                return
            try:
                await self._listen()
            except OSError as e:
                log.warning("API server: listening again on port %d failed (%s), attempt %d",
                            self.port, e, attempt + 1)
                await asyncio.sleep(0.1)
                continue
            log.info("API server listening again on port %d", self.port)
            return
        log.error("API server: could not listen on port %d again after an outage", self.port)

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
            if not resp.prepared:
                warning_headers(request, resp)
            return resp
        except HTTPError as e:
            status = e.code
            return error_response(e)
        except StoreError as e:
            status = e.code
            return error_response(HTTPError(e.code, e.reason, e.message, e.details or None))
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499
            raise
        except Exception as e:  # noqa: BLE001 - every failure must still be a Status
            log.exception("internal error on %s %s", request.method, request.path)
            return error_response(HTTPError(500, "InternalError", f"internal error: {e}"))
        finally:
            if log.isEnabledFor(logging.DEBUG):
                # Method, path (with query: it holds no credentials), status, duration.
                log.debug("%s %s %d %.1fms", request.method, request.path_qs, status,
                          (time.perf_counter() - t0) * 1000)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        # k3s runs its API server with --anonymous-auth=false: even /version and
        # /healthz need a token.
        user = self._authenticate(request)
        if user is None:
            raise HTTPError(401, "Unauthorized", "Unauthorized")
        request[USER] = user
        route = parse_resource_path(path)
        self._check_access(request, user, path, route if isinstance(route, Route) else None)
        if path == "/version":
            return json_response(K8S_VERSION)
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/api":
            return self._api_versions(request)
        if path == "/apis":
            return self._api_groups(request)
        if path in ("/openapi/v2", "/openapi/v3") or path.startswith("/openapi/v3/"):
            return self._openapi(request, path)
        if path.startswith("/apis/") and path.count("/") == 2:
            return self._api_group(path.split("/")[2])
        if route == "discovery":
            parts = [p for p in path.split("/") if p]
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            return self._resource_list(group, version)
        if not isinstance(route, Route):
            raise HTTPError(404, "NotFound", "the server could not find the requested resource",
                            {})
        return await self._resource(request, route)
