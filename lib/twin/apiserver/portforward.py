"""``pods/portforward`` and the SPDY transport of ``pods/exec``.

kubectl >= 1.31 opens port-forward as a WebSocket carrying SPDY
(``SPDY/3.1+portforward.k8s.io``) and falls back to ``POST`` + ``Upgrade: SPDY/3.1``
(``X-Stream-Protocol-Version: portforward.k8s.io``); exec falls back to SPDY with the
``v4.channel.k8s.io`` (down to ``channel.k8s.io``) stream protocol. In both cases the
streams are SPDY streams (:mod:`.spdy`):

- port-forward: per local connection an ``error`` and a ``data`` stream with the same
  ``requestID`` and the pod ``port``. What answers is :mod:`twin.podexec.ports` (the
  container that declares the port, speaking HTTP); a port nothing listens on gets the
  kubelet's "connection refused" on the error stream.
- exec: ``error``, ``stdin``, ``stdout``, ``stderr`` (and ``resize`` with a TTY): once
  every stream the query asked for is open, stdin is read to its end, the command runs
  (:func:`twin.podexec.run`) and the output and the final ``Status`` are written.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from ..podexec import ports
from .remotecommand import final_status
from .responses import HTTPError
from .spdy import RawUpgrade, Session, Stream

PORTFORWARD_WS = "SPDY/3.1+portforward.k8s.io"
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
STREAM_WAIT_SECONDS = 30.0
MAX_HTTP_REQUEST = 64 * 1024


def negotiate(request: web.Request, supported: tuple[str, ...]) -> str:
    """The stream protocol both sides speak (the client's order), or the real 403."""
    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", [])
               for v in h.split(",") if v.strip()]
    for p in offered:
        if p in supported:
            return p
    if not offered:
        return supported[0]
    raise HTTPError(403, "Forbidden", f"unable to upgrade: unable to negotiate protocol: client "
                                      f"supports {offered}, server supports {list(supported)}")


class PortForwardRoutes:
    """The :class:`APIServer`'s port-forward and SPDY exec requests (uses ``rt``)."""

    rt: Any

    async def _spdy(self, request: web.Request, proto: str,
                    on_stream: Callable[[Stream, Session], Awaitable[None]]) -> web.StreamResponse:
        """Upgrade the HTTP connection to SPDY and serve it until it ends."""
        resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                       "X-Stream-Protocol-Version": proto})
        await resp.prepare(request)
        raw = RawUpgrade()
        request.protocol.set_parser(raw)   # every byte after the 101 goes to the session
        transport = request.transport

        async def write(data: bytes) -> None:
            if transport is not None and not transport.is_closing():
                transport.write(data)

        def close() -> None:
            if transport is not None:
                transport.close()

        session: Session = Session(raw.read, write, lambda s: on_stream(s, session), close)
        await session.run()
        close()
        return resp

    # -- port-forward -----------------------------------------------------------------------
    async def _portforward(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        t = self.rt.store.lookup("", "v1", "pods")
        self.rt.store.get(t, ns, name)   # 404 for a pod that does not exist
        pairs: dict[str, dict[str, Stream]] = {}

        async def on_stream(stream: Stream, session: Session) -> None:
            rid = stream.headers.get("requestid", "")
            pair = pairs.setdefault(rid, {})
            pair[stream.kind] = stream
            if stream.kind == "data" or len(pair) == 2:
                for _ in range(int(STREAM_WAIT_SECONDS * 10)):
                    if "error" in pair and "data" in pair:
                        break
                    await asyncio.sleep(0.1)
                if stream.kind == "data":
                    await self._forward(ns, name, pair, stream)
                    pairs.pop(rid, None)

        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse(protocols=(PORTFORWARD_WS,))
            await ws.prepare(request)

            async def read() -> bytes | None:
                msg = await ws.receive()
                return bytes(msg.data) if msg.type == WSMsgType.BINARY else None

            session: Session = Session(read, ws.send_bytes, lambda s: on_stream(s, session), ws.close)
            await session.run()
            await ws.close()
            return ws
        if request.headers.get("Upgrade", "").lower().startswith("spdy/"):
            return await self._spdy(request, negotiate(request, PORTFORWARD_PROTOCOLS), on_stream)
        raise HTTPError(400, "BadRequest", "Upgrade request required")

    async def _forward(self, ns: str, name: str, pair: dict[str, Stream], data: Stream) -> None:
        err = pair.get("error")
        try:
            port = int(data.headers.get("port", "0"))
        except ValueError:
            port = 0
        t = self.rt.store.lookup("", "v1", "pods")
        pod = self.rt.store.try_get(t, ns, name)
        container, why = ports.listener(self.rt, pod, port) if pod else (None, f'pods "{name}" not found')
        if container is None:
            if err is not None:
                await err.write(why.encode(), fin=True)
            await data.close()
            return
        request = bytearray()
        while b"\r\n\r\n" not in request and len(request) < MAX_HTTP_REQUEST:
            chunk = await data.incoming.get()
            if chunk is None:
                break
            request += chunk
        if request:
            await data.write(ports.answer_http(container, pod, bytes(request)), fin=True)
        else:
            await data.close()
        if err is not None:
            await err.close()

    # -- exec over SPDY -------------------------------------------------------------------
    async def _exec_spdy(self, request: web.Request, pod: dict, container: str,
                         argv: list[str]) -> web.StreamResponse:
        proto = negotiate(request, EXEC_PROTOCOLS)
        q = request.query
        flag = lambda k, d="false": q.get(k, d) in ("true", "1")  # noqa: E731
        tty = flag("tty")
        wanted = {"error"} | {k for k in ("stdin", "stdout", "stderr") if flag(k)}
        if tty:
            wanted.discard("stderr")
        streams: dict[str, Stream] = {}
        ready = asyncio.Event()

        async def on_stream(stream: Stream, session: Session) -> None:
            streams[stream.kind] = stream
            if wanted <= set(streams) and not ready.is_set():
                ready.set()
                await self._exec_streams(pod, container, argv, streams, proto, tty, session)

        return await self._spdy(request, proto, on_stream)

    async def _exec_streams(self, pod: dict, container: str, argv: list[str],
                            streams: dict[str, Stream], proto: str, tty: bool,
                            session: Session) -> None:
        stdin = await streams["stdin"].read_all() if "stdin" in streams else b""
        rc, out, err = self._run(pod, container, argv, stdin, tty)   # type: ignore[attr-defined]
        status, err = final_status(argv, rc, err)
        if "stdout" in streams:
            await streams["stdout"].write(out, fin=True)
        if "stderr" in streams:
            await streams["stderr"].write(err, fin=True)
        body = json.dumps(status).encode() if proto.startswith("v4.") else \
            (b"" if status["status"] == "Success" else status["message"].encode())
        await streams["error"].write(body, fin=True)
        await asyncio.sleep(0.05)   # let the client read the last frames before the close
        await session.shutdown()
