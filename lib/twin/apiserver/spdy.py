"""SPDY/3.1 framing, the stream multiplexing kubectl speaks for exec and port-forward.

Kubernetes still carries ``kubectl port-forward`` (and the fallback of ``kubectl exec``)
over SPDY/3.1: either after an HTTP ``Upgrade: SPDY/3.1`` or tunnelled inside a
WebSocket (subprotocol ``SPDY/3.1+portforward.k8s.io``, kubectl >= 1.31). This module
is the server side of a session over any byte transport: frames are parsed and written
as in the SPDY/3 draft (control frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS,
PING, GOAWAY, HEADERS, WINDOW_UPDATE; data frames), header blocks are zlib-compressed
with the protocol's fixed dictionary, one compression context per direction. Each
stream the client opens is answered with a SYN_REPLY and handed to ``on_stream``.
Flow control is not enforced (neither does the Go client the twin talks to).
"""
from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any, Awaitable, Callable

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_DATA = 16 * 1024


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 2.6.10.1):
    length-prefixed header names and values, then common value fragments."""
    words = ("options head post put delete trace accept accept-charset accept-encoding "
             "accept-language accept-ranges age allow authorization cache-control connection "
             "content-base content-encoding content-language content-length content-location "
             "content-md5 content-range content-type date etag expect expires from host "
             "if-match if-modified-since if-none-match if-range if-unmodified-since "
             "last-modified location max-forwards pragma proxy-authenticate "
             "proxy-authorization range referer retry-after server te trailer "
             "transfer-encoding upgrade user-agent vary via warning www-authenticate method "
             "get status").split() + ["200 OK", "version", "HTTP/1.1", "url", "public",
                                      "set-cookie", "keep-alive", "origin"]
    tail = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417"
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server "
            "Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug "
            "Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset="
            "iso-8859-1,utf-,*,enq=0.")
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


class SpdyError(Exception):
    """A malformed SPDY session (the session ends)."""


class Stream:
    """One SPDY stream of a session: its headers, what arrives on it, and writes."""

    def __init__(self, session: "Session", stream_id: int, headers: dict[str, str]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.remote_closed = False
        self.local_closed = False

    @property
    def kind(self) -> str:
        return self.headers.get("streamtype", "")

    async def read_all(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """Everything the client sends until it half-closes the stream."""
        out = bytearray()
        while len(out) <= limit:
            chunk = await self.incoming.get()
            if chunk is None:
                break
            out += chunk
        return bytes(out)

    async def write(self, data: bytes, *, fin: bool = False) -> None:
        if self.local_closed:
            return
        for i in range(0, max(len(data), 1), MAX_DATA):
            part = data[i:i + MAX_DATA]
            last = fin and i + MAX_DATA >= len(data)
            await self.session.send_data(self.id, part, fin=last)
        if fin:
            self.local_closed = True

    async def close(self) -> None:
        """Half-close our side (an empty data frame with FIN)."""
        if not self.local_closed:
            self.local_closed = True
            await self.session.send_data(self.id, b"", fin=True)


class Session:
    """The server side of one SPDY/3.1 session over a byte transport.

    Args:
        read: returns the next bytes from the client, or None at the end.
        write: sends bytes to the client.
        on_stream: called (as a task) for each stream the client opens.
        close: closes the transport (:meth:`shutdown`).
    """

    def __init__(self, read: Callable[[], Awaitable[bytes | None]],
                 write: Callable[[bytes], Awaitable[None]],
                 on_stream: Callable[[Stream], Awaitable[None]],
                 close: Callable[[], Any] | None = None) -> None:
        self._read, self._write, self._on_stream, self._close = read, write, on_stream, close
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self.streams: dict[int, Stream] = {}
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self.closed = False

    # -- writing --------------------------------------------------------------------------
    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            if not self.closed:
                await self._write(frame)

    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v.encode())) + v.encode()
            for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        await self._send(struct.pack(">II", stream_id & 0x7FFFFFFF,
                                     ((FLAG_FIN if fin else 0) << 24) | len(data)) + data)

    async def reply(self, stream_id: int, headers: dict[str, str] | None = None) -> None:
        await self._send(self._control(SYN_REPLY, 0, struct.pack(">I", stream_id)
                                       + self._header_block(headers or {})))

    async def reset(self, stream_id: int, status: int = 5) -> None:
        await self._send(self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status)))

    async def shutdown(self) -> None:
        """End the session: the transport is closed, :meth:`run` returns."""
        self.closed = True
        if self._close is not None:
            res = self._close()
            if asyncio.iscoroutine(res):
                await res

    # -- reading --------------------------------------------------------------------------
    def _parse_headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        if len(raw) < 4:
            raise SpdyError("short header block")
        (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (klen,) = struct.unpack_from(">I", raw, pos)
            key = raw[pos + 4:pos + 4 + klen].decode()
            pos += 4 + klen
            (vlen,) = struct.unpack_from(">I", raw, pos)
            out[key.lower()] = raw[pos + 4:pos + 4 + vlen].decode().split("\x00")[0]
            pos += 4 + vlen
        return out

    async def _frame(self, head: bytes, payload: bytes) -> None:
        if head[0] & 0x80:
            ftype = struct.unpack_from(">H", head, 2)[0]
            flags = head[4]
            if ftype == SYN_STREAM:
                sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
                stream = Stream(self, sid, self._parse_headers(payload[10:]))
                self.streams[sid] = stream
                await self.reply(sid)
                if flags & FLAG_FIN:
                    stream.remote_closed = True
                    stream.incoming.put_nowait(None)
                task = asyncio.ensure_future(self._on_stream(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif ftype == HEADERS:
                self._parse_headers(payload[4:])   # keeps the compression context in step
            elif ftype == RST_STREAM:
                sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
                s = self.streams.get(sid)
                if s is not None:
                    s.local_closed = True
                    if not s.remote_closed:
                        s.remote_closed = True
                        s.incoming.put_nowait(None)
            elif ftype == PING:
                await self._send(self._control(PING, 0, payload[:4]))
            elif ftype == GOAWAY:
                self.closed = True
            return
        sid = struct.unpack_from(">I", head)[0] & 0x7FFFFFFF
        s = self.streams.get(sid)
        if s is None or s.remote_closed:
            return
        if payload:
            s.incoming.put_nowait(payload)
        if head[4] & FLAG_FIN:
            s.remote_closed = True
            s.incoming.put_nowait(None)

    async def run(self) -> None:
        """Read frames until the transport ends or the client says GOAWAY."""
        buf = bytearray()
        try:
            while not self.closed:
                chunk = await self._read()
                if chunk is None:
                    break
                buf += chunk
                while len(buf) >= 8:
                    length = int.from_bytes(buf[5:8], "big")
                    if len(buf) < 8 + length:
                        break
                    head, payload = bytes(buf[:8]), bytes(buf[8:8 + length])
                    del buf[:8 + length]
                    await self._frame(head, payload)
        finally:
            self.closed = True
            for s in self.streams.values():
                if not s.remote_closed:
                    s.remote_closed = True
                    s.incoming.put_nowait(None)
            for t in list(self._tasks):
                t.cancel()


class RawUpgrade:
    """The bytes of an HTTP connection after ``101 Switching Protocols`` (aiohttp's payload
    parser interface), for a session that is not a WebSocket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(None)

    async def read(self) -> bytes | None:
        return await self.queue.get()


__all__ = ["DICTIONARY", "RawUpgrade", "Session", "SpdyError", "Stream"]
