"""The twin's fault admin endpoint: read and set fault switches while the twin runs.

HTTP on loopback (ephemeral port), every request needs ``Authorization: Bearer TOKEN``;
the token is random per twin and written to ``<state_dir>/admin-token`` (mode 0600).
``rt.endpoints["admin"]`` holds the URL and ``rt.endpoints["admin_token_file"]`` the
token file.

Routes (JSON in and out):

``GET /faults``
    ``rt.faults.as_dict()``.
``POST /faults`` ``{"name": value, ...}``
    Sets each switch with ``rt.faults.set`` (all names are checked first: one unknown
    name -> 400 and nothing is set). Side effects that make a switch take hold at once:
    ``ssh_down`` takes the listed nodes' SSH servers down (and the others back up)
    through the ``ssh`` component; ``api_down_seconds`` > 0 (without
    ``api_down_on_restart``) starts an API outage of that many cluster seconds;
    ``containerd_template`` writes (or removes) the nodes' ``config.toml.tmpl`` through
    the ``nodes`` component; ``firewall`` rules are checked (a bad rule -> 400).
``POST /faults/api-outage`` ``{"seconds": N}``
    API server down for N cluster seconds (``rt.component("apiserver").outage(N)``,
    started in the background; the answer comes at once, 202).
``POST /faults/ssh-down`` ``{"node": NAME, "down": true|false}``
    One node's SSH server down or back up.

Example::

    curl -H "Authorization: Bearer $(cat .twin/admin-token)" \\
         -d '{"velero_partially_failed": true}' http://127.0.0.1:PORT/faults
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from typing import Any

from aiohttp import web

from .ticker import TaskSet

log = logging.getLogger("twin.admin")


class AdminEndpoint:
    """Runtime component ``"admin"`` (see the module docstring)."""

    name = "admin"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.rt: Any = None
        self.token = ""
        self._runner: web.AppRunner | None = None
        self._tasks = TaskSet("admin")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.token = secrets.token_urlsafe(32)
        path = rt.state_dir / "admin-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        os.chmod(path, 0o600)
        app = web.Application(middlewares=[self._auth], client_max_size=1 << 20)
        app.router.add_get("/faults", self._get_faults)
        app.router.add_post("/faults", self._post_faults)
        app.router.add_post("/faults/api-outage", self._api_outage)
        app.router.add_post("/faults/ssh-down", self._ssh_down)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        rt.endpoints["admin"] = self.url
        rt.endpoints["admin_token_file"] = str(path)

    async def stop(self) -> None:
        self._tasks.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        return f"fault admin at {self.url} (Bearer token in {self.rt.state_dir / 'admin-token'})"

    # -- plumbing ------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        got = request.headers.get("Authorization", "")
        want = f"Bearer {self.token}"
        if not hmac.compare_digest(got.encode(), want.encode()):
            return _error(401, "missing or wrong bearer token (see <state_dir>/admin-token)",
                          headers={"WWW-Authenticate": 'Bearer realm="twin-admin"'})
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                return _error(e.status, e.reason)
            raise

    async def _json(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Bad("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _Bad("the body must be a JSON object")
        return body

    def _background(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    def _component(self, name: str) -> Any:
        try:
            return self.rt.component(name)
        except KeyError:
            return None

    # -- routes --------------------------------------------------------------------------
    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.rt.faults.as_dict())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except _Bad as e:
            return _error(400, str(e))
        known = list(self.rt.faults.__dataclass_fields__)
        unknown = [k for k in body if k not in known]
        if unknown:
            return _error(400, f"unknown fault(s): {', '.join(sorted(unknown))}; known: "
                               f"{', '.join(known)}")
        before_down = set(self.rt.faults.ssh_down)
        ssh = self._component("ssh")
        if "ssh_down" in body and ssh is not None:
            nodes = body["ssh_down"] if isinstance(body["ssh_down"], list) else [body["ssh_down"]]
            unknown_nodes = [n for n in nodes if n not in getattr(ssh, "ports", {})]
            if unknown_nodes:
                return _error(400, f"unknown node(s) in ssh_down: {', '.join(map(str, unknown_nodes))}; "
                                   f"known: {', '.join(getattr(ssh, 'ports', {}))}")
        if "containerd_template" in body:
            wanted = body["containerd_template"]
            wanted = wanted if isinstance(wanted, list) else [wanted]
            unknown_nodes = [n for n in wanted if n not in self.rt.nodes]
            if unknown_nodes:
                return _error(400, f"unknown node(s) in containerd_template: "
                                   f"{', '.join(map(str, unknown_nodes))}; known: {', '.join(self.rt.nodes)}")
        try:
            for k, v in body.items():
                self.rt.faults.set(k, v)
        except (TypeError, ValueError) as e:
            return _error(400, f"bad value: {e}")
        if "containerd_template" in body:
            nodes = self._component("nodes")
            if nodes is not None and hasattr(nodes, "apply_containerd_template"):
                nodes.apply_containerd_template()
        if "ssh_down" in body:
            if ssh is not None:
                now_down = set(self.rt.faults.ssh_down)
                for node in sorted(now_down - before_down):
                    await _maybe(ssh.set_down(node, True))
                for node in sorted(before_down - now_down):
                    await _maybe(ssh.set_down(node, False))
        if "api_down_seconds" in body and self.rt.faults.api_down_seconds > 0 \
                and not self.rt.faults.api_down_on_restart:
            api = self._component("apiserver")
            if api is not None and hasattr(api, "outage"):
                self._background(api.outage(self.rt.faults.api_down_seconds))
        log.info("faults set: %s", ", ".join(sorted(body)))
        return web.json_response(self.rt.faults.as_dict())

    async def _api_outage(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            seconds = float(body.get("seconds"))
        except _Bad as e:
            return _error(400, str(e))
        except (TypeError, ValueError):
            return _error(400, 'expected {"seconds": N} with N a number of cluster seconds')
        if seconds <= 0:
            return _error(400, "seconds must be > 0")
        api = self._component("apiserver")
        if api is None or not hasattr(api, "outage"):
            return _error(409, "this twin runs no API server component")
        self._background(api.outage(seconds))
        return web.json_response({"outage_seconds": seconds,
                                  "wall_seconds": self.rt.clock.real(seconds)}, status=202)

    async def _ssh_down(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
        except _Bad as e:
            return _error(400, str(e))
        node = body.get("node")
        if not isinstance(node, str) or not node:
            return _error(400, 'expected {"node": NAME, "down": true|false}')
        down = bool(body.get("down", True))
        ssh = self._component("ssh")
        if ssh is None:
            return _error(409, "this twin runs no SSH servers")
        try:
            await _maybe(ssh.set_down(node, down))
        except KeyError as e:
            return _error(404, str(e.args[0]) if e.args else f"unknown node {node!r}")
        return web.json_response({"node": node, "down": down,
                                  "ssh_down": sorted(self.rt.faults.ssh_down)})


class _Bad(ValueError):
    pass


async def _maybe(result: Any) -> Any:
    if asyncio.iscoroutine(result):
        return await result
    return result


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status, headers=headers)
