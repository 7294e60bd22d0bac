"""``pods/exec``: a command in a container, over the WebSocket channel protocol or SPDY.

kubectl >= 1.30 opens ``GET .../pods/NAME/exec?command=...&stdin=...&stdout=...`` as a
WebSocket with the subprotocols ``v5.channel.k8s.io`` (down to ``channel.k8s.io``) and
falls back to SPDY (``POST`` + ``Upgrade: SPDY/3.1``, :mod:`.spdy`) when the upgrade is
refused. Both carry the same streams:

- WebSocket: every binary message starts with its channel byte: 0 stdin, 1 stdout,
  2 stderr, 3 error (the final ``Status``), 4 resize; v5 adds 255 "close" (the client's
  end of stdin: ``[255, 0]``). ``base64.channel.k8s.io`` and ``v4.base64.channel.k8s.io``
  send text messages: the channel as an ASCII digit, then base64.
- SPDY: one stream per ``streamType`` header (error, stdin, stdout, stderr, resize).

The command runs once stdin is complete (at once without stdin), through
:func:`twin.podexec.run`; its stdout and stderr are sent, then the ``Status``:
``Success``, ``NonZeroExitCode`` with the exit code as a cause (kubectl exits with it),
or the runtime's start failure (an executable not in the image). Before any of this the
real checks answer as the API server and kubelet do: a completed pod, an unknown or
ambiguous container, a container that is not running.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import WSMsgType, web

from .. import podexec
from .responses import HTTPError

WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
                "v2.channel.k8s.io", "channel.k8s.io", "v4.base64.channel.k8s.io",
                "base64.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_STDIN = 16 * 1024 * 1024


def exec_target(pod: dict, container: str | None) -> str:
    """The container an exec/attach/port-forward goes to; raises the real errors."""
    name = pod["metadata"]["name"]
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise HTTPError(400, "BadRequest", "cannot exec into a container in a completed pod; "
                                           f"current phase is {phase}")
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or ()]
    all_names = names + [c.get("name") for c in list(spec.get("initContainers") or ())
                         + list(spec.get("ephemeralContainers") or ())]
    if not container:
        if len(names) != 1:
            raise HTTPError(400, "BadRequest", f"a container name must be specified for pod {name}, "
                                               f"choose one of: [{' '.join(names)}]")
        container = names[0]
    if container not in all_names:
        raise HTTPError(400, "BadRequest", f"container {container} is not valid for pod {name}")
    return container


def container_running(pod: dict, container: str) -> bool:
    st = pod.get("status") or {}
    for cs in [*(st.get("containerStatuses") or ()), *(st.get("initContainerStatuses") or ()),
               *(st.get("ephemeralContainerStatuses") or ())]:
        if cs.get("name") == container:
            return "running" in (cs.get("state") or {})
    return False


def final_status(argv: list[str], rc: int, stderr: bytes) -> tuple[dict, bytes]:
    """The error channel's ``Status`` for a finished command, and the stderr still to send."""
    if rc in (126, 127) and stderr.startswith(b"OCI runtime exec failed"):
        msg = stderr.decode(errors="replace").strip()
        return ({"metadata": {}, "status": "Failure", "reason": "InternalError",
                 "message": "Internal error occurred: error executing command in container: "
                            "failed to exec in container: failed to start exec: " + msg,
                 "details": {"causes": [{"message": msg}]}, "code": 500}, b"")
    if rc == 0:
        return {"metadata": {}, "status": "Success"}, stderr
    return ({"metadata": {}, "status": "Failure",
             "message": f"command terminated with non-zero exit code: error executing command "
                        f"[{' '.join(argv)}], exit code {rc}",
             "reason": "NonZeroExitCode",
             "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}, stderr)


class RemoteCommandRoutes:
    """The :class:`APIServer`'s exec requests (uses ``rt``; SPDY from :class:`SpdyRoutes`)."""

    rt: Any

    def _exec_request(self, request: web.Request, ns: str, name: str) -> tuple[dict, str, list[str]]:
        t = self.rt.store.lookup("", "v1", "pods")
        pod = self.rt.store.get(t, ns, name)
        q = request.query
        container = exec_target(pod, q.get("container"))
        argv = list(q.getall("command", []))
        if not argv:
            raise HTTPError(400, "BadRequest", "you must specify at least 1 command")
        if not container_running(pod, container):
            raise HTTPError(400, "BadRequest", f'container not found ("{container}")')
        return pod, container, argv

    async def _exec(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod, container, argv = self._exec_request(request, ns, name)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._exec_websocket(request, pod, container, argv)
        if request.headers.get("Upgrade", "").lower().startswith("spdy/"):
            return await self._exec_spdy(request, pod, container, argv)   # type: ignore[attr-defined]
        raise HTTPError(400, "BadRequest", "Upgrade request required")

    def _run(self, pod: dict, container: str, argv: list[str], stdin: bytes,
             tty: bool) -> tuple[int, bytes, bytes]:
        rc, out, err = podexec.run(self.rt, pod, container, argv, stdin)
        if tty and not (rc in (126, 127) and err.startswith(b"OCI runtime exec failed")):
            out, err = (out + err).replace(b"\n", b"\r\n"), b""
        return rc, out, err

    async def _exec_websocket(self, request: web.Request, pod: dict, container: str,
                              argv: list[str]) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, max_msg_size=MAX_STDIN)
        await ws.prepare(request)
        proto = ws.ws_protocol or "channel.k8s.io"
        b64 = "base64" in proto
        q = request.query
        want_stdin = q.get("stdin") in ("true", "1")
        tty = q.get("tty") in ("true", "1")
        stdin = bytearray()
        if want_stdin:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data:
                    chan, data = msg.data[0], msg.data[1:]
                elif msg.type == WSMsgType.TEXT and msg.data:
                    chan, data = int(msg.data[0]), base64.b64decode(msg.data[1:])
                else:
                    break
                if chan == STDIN:
                    stdin += data
                elif chan == CLOSE and data[:1] == bytes([STDIN]):
                    break
                if len(stdin) > MAX_STDIN:
                    break
        rc, out, err = self._run(pod, container, argv, bytes(stdin), tty)
        status, err = final_status(argv, rc, err)

        async def send(chan: int, data: bytes) -> None:
            if ws.closed:
                return
            if b64:
                await ws.send_str(str(chan) + base64.b64encode(data).decode())
            else:
                await ws.send_bytes(bytes([chan]) + data)

        if out and q.get("stdout", "true") in ("true", "1"):
            await send(STDOUT, out)
        if err and q.get("stderr", "true") in ("true", "1"):
            await send(STDERR, err)
        if proto.startswith(("v4.", "v5.")):
            await send(ERROR, json.dumps(status).encode())
        elif status["status"] != "Success":
            await send(ERROR, status["message"].encode())
        await ws.close()
        return ws
