"""Watches over HTTP: a chunked stream of ``{"type", "object"}`` lines per event.

Legacy semantics (no resourceVersion or "0": synthetic ADDED events first),
``sendInitialEvents`` with its initial-events-end bookmark (what ``helm --wait`` needs),
periodic BOOKMARKs when asked, Table rows when asked, and an expired resourceVersion
answered as the real server does: a 200 stream with one 410 ERROR event.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from .. import tables
from ..store import Gone, ResourceType
from .responses import JSON, HTTPError, accept_table, dumps, status_body

DEFAULT_WATCH_TIMEOUT = 1800.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class WatchRoutes:
    """The :class:`APIServer`'s watch requests (uses its ``rt``, ``bookmark_interval`` and
    ``_watches``, which it cancels when it stops listening)."""

    rt: Any
    bookmark_interval: float
    _watches: set[asyncio.Task]

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
        table_v = accept_table(request.headers.get("Accept", ""))
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
        return dumps({"type": ev.type, "object": obj}) + b"\n"

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
        return dumps({"type": "ERROR", "object": status_body(code, reason, message)}) + b"\n"
