"""A tiny scripted HTTP API server on 127.0.0.1, and a kubeconfig that points at it.

A uniquely named module (not conftest) so no other test folder's helpers can shadow it."""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit



@dataclass
class Stream:
    """A streamed answer (a watch): ``events`` as JSON lines in chunks, then, with
    ``hold``, the stream stays open until that event is set (or ``hold_for`` seconds
    pass); with ``drop``, it is cut in the middle of a chunk (a connection that broke),
    else it ends cleanly (the server's ``timeoutSeconds``)."""

    events: list[dict] = field(default_factory=list)
    hold: threading.Event | None = None
    hold_for: float = 10.0
    drop: bool = False


# (status, body dict, Stream or None) returned for one request; a handler may also be a
# callable. Status 0: the connection is closed without an answer (a server that went away).
Reply = tuple[int, "dict | Stream | None"]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]
    #: the client's (address, port): which connection the request came on
    peer: tuple = ()
    #: the request target as sent (origin form ``/path?query``, or an absolute URL)
    target: str = ""


@dataclass
class FakeAPI:
    """Routes ``(method, path)`` to a list of replies, consumed in order (the last repeats)."""

    port: int = 0
    routes: dict[tuple[str, str], list[Reply] | Callable[[Recorded], Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def reply(self, rec: Recorded) -> Reply:
        self.requests.append(rec)
        route = self.routes.get((rec.method, rec.path))
        if route is None:
            return 404, {"kind": "Status", "reason": "NotFound", "message": f"{rec.path} not found"}
        if callable(route):
            return route(rec)
        return route.pop(0) if len(route) > 1 else route[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def _any(self) -> None:
            u = urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            rec = Recorded(self.command, u.path, parse_qs(u.query), self.rfile.read(n) if n else b"",
                           {k.lower(): v for k, v in self.headers.items()}, self.client_address, self.path)
            status, body = api.reply(rec)
            if status == 0:
                self.close_connection = True
                return
            if isinstance(body, Stream):
                self._stream(status, body)
                return
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, status: int, s: Stream) -> None:
            self.close_connection = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for ev in s.events:
                    data = json.dumps(ev).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                if s.hold is not None:
                    s.hold.wait(s.hold_for)
                if s.drop:
                    self.wfile.write(b"100\r\n{\"type\": \"MODI")    # a chunk cut short
                else:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass    # the client closed the watch first

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return H


def start_server(api: FakeAPI, port: int = 0, *, keep_alive: bool = False) -> ThreadingHTTPServer:
    """Serve ``api`` on loopback; with ``keep_alive``, HTTP/1.1 (connections kept open
    between requests, as an API server keeps them), else HTTP/1.0 (one per request)."""
    handler = _handler(api)
    if keep_alive:
        handler.protocol_version = "HTTP/1.1"
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.daemon_threads = True
    api.port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}
contexts:
- name: ctx
  context: {{cluster: c, user: u}}
current-context: ctx
users:
- name: u
  user: {{token: unit-test-token}}
""")
    return path


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
