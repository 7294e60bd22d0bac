"""The API server component: TLS, token and kubeconfig, listening and outages, dispatch.

At start it takes (or creates) the twin's CA, issues a serving certificate, makes a
random bearer token and writes ``state_dir/kubeconfig``. Every request needs the token
(k3s runs with ``--anonymous-auth=false``), is logged at DEBUG (method, path, status,
duration) and ends as a response or a ``Status``. While anything holds it down
(:meth:`APIServer.hold_down`: an outage of N seconds, the nodes' datastore without quorum)
it refuses connections, as while k3s restarts, and then listens again on the same port. What each kind of request does lives in the route mixins.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
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
        self._outage_seq = 0
        self._holds: set[str] = set()          # reasons the API refuses connections now
        self._sync_task: asyncio.Task | None = None
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
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl,
                           reuse_address=True, backlog=256)
        try:
            await site.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await site.stop()   # unregister the half-started site from the runner
            raise
        self._site = site
        if self.port == 0:
            server = site._server  # the bound socket: read back the ephemeral port
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
        for task in (self._outage_task, self._sync_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
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
    # Whether the API listens is decided by its holds: every reason to refuse connections
    # (an outage of N seconds, a datastore without quorum) holds it down, and it listens
    # while nothing does. One task of the server's own opens and closes the socket until
    # it is as the holds want (:meth:`_sync_socket`); callers only add and release holds,
    # synchronously, so no caller's cancellation can interrupt a socket half opened (it
    # once did: a third k3s server coming up cancelled the outage a second time while the
    # second server's end of it was listening again, and the API refused for good).
    def hold_down(self, reason: str) -> None:
        """Refuse connections (as while k3s restarts) until :meth:`release` of ``reason``.

        Idempotent per reason; open connections and watches are cut. Holds of different
        reasons overlap: the API listens again when the last one is released.

        Example:
            >>> api.hold_down("etcd quorum lost")   # doctest: +SKIP
            >>> api.release("etcd quorum lost")     # doctest: +SKIP
        """
        if reason not in self._holds:
            log.info("API server held down: %s", reason)
        self._holds.add(reason)
        self._sync()

    def release(self, reason: str) -> None:
        """End the hold ``reason`` (no-op if not held); listen again when none is left."""
        if reason in self._holds:
            self._holds.discard(reason)
            log.info("API server hold released: %s%s", reason,
                     f" (still held: {', '.join(sorted(self._holds))})" if self._holds else "")
        self._sync()

    def held_down(self, reason: str | None = None) -> bool:
        """Whether ``reason`` (or, without one, anything) holds the API down."""
        return bool(self._holds) if reason is None else reason in self._holds

    async def settled(self) -> None:
        """Return once the socket is as the holds want (listening or not)."""
        while self._sync_task is not None and not self._sync_task.done():
            await asyncio.shield(self._sync_task)

    async def outage(self, cluster_seconds: float) -> None:
        """Refuse connections for ``cluster_seconds`` (scaled by the clock), then listen
        again on the same port (unless something else still holds the API down). Returns
        when the outage is over and the socket settled. Cancelling it ends the outage early,
        safely at any point and any number of times.

        Example:
            >>> await api.outage(20)   # doctest: +SKIP
        """
        if self._stopping or self._runner is None:
            return
        self._outage_seq += 1
        reason = f"outage #{self._outage_seq} ({cluster_seconds:g} cluster seconds)"
        self.hold_down(reason)
        try:
            await self.settled()
            await asyncio.sleep(self.rt.clock.real(cluster_seconds))
        finally:
            self.release(reason)
            await self.settled()   # cancelled again here: the socket still settles on its own

    def _sync(self) -> None:
        if self._stopping or self._runner is None:
            return
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.ensure_future(self._sync_socket())

    async def _sync_socket(self) -> None:
        """Open or close the socket until it is as the holds want; the holds may change
        while it runs (the loop looks again after each step). Never cancelled by callers,
        only by :meth:`stop`."""
        try:
            while not self._stopping and self._runner is not None:
                want = not self._holds
                if want == self.listening:
                    return
                if not want:
                    await self._unlisten()
                elif not await self._listen_again():
                    return
        except Exception:   # noqa: BLE001 - logged: a waiter of settled() must not fail on it
            log.exception("API server: %s the socket failed", "closing" if self._holds else "opening")

    async def _listen_again(self) -> bool:
        """Listen on the same port again after an outage. The port can take a moment to be
        free again (a connection still closing): retried, and every failure logged, so an
        outage never silently ends in an API that refuses for good."""
        for attempt in range(50):
            if self._stopping or self._runner is None:
                return False
            try:
                await self._listen()
            except OSError as e:
                log.warning("API server: listening again on port %d failed (%s), attempt %d",
                            self.port, e, attempt + 1)
                await asyncio.sleep(0.1)
                continue
            log.info("API server listening again on port %d", self.port)
            return True
        log.error("API server: could not listen on port %d again after an outage: connections "
                  "stay refused; restart the twin (`runbook twin up`)", self.port)
        return False

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
