"""Watches and subscribers: every change fanned out to open watches and controllers.

Every write produces an event ``(type, obj)`` (ADDED, MODIFIED or DELETED). A watch is a
queue fed by the store, filtered by namespace and selectors; it resumes from a bounded
history ring per resource (``Gone``, 410, once the ring no longer reaches back), can
start with the current objects and an initial-events-end BOOKMARK (what ``helm --wait``
needs), and yields periodic bookmarks. A reader that cannot keep up is cut off with a
410, as a real server does. Subscribers are synchronous callbacks called after every
change; a failing one is logged and never breaks the write.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from twin.selectors import FieldSelector, LabelSelector

from .buckets import Bucket
from .errors import BadRequest, Gone
from .objects import json_copy, meta_of, render
from .resource_types import ResourceType

if TYPE_CHECKING:
    from .core import Store

log = logging.getLogger("twin.store")

MAX_WATCH_QUEUE = 200_000
_CLOSED = object()


@dataclass
class WatchEvent:
    type: str              # ADDED | MODIFIED | DELETED | BOOKMARK | ERROR
    object: dict
    resource_version: int = 0


class Watch:
    """An open watch. Created by :meth:`Store.watch`; events arrive via :meth:`next`."""

    async def next(self, timeout: float | None = None) -> WatchEvent | None:  # pragma: no cover
        """The next matching event, or None on timeout."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError


#: ``fn(event_type, rtype, obj, old)``: called after every change (must not block).
Subscriber = Callable[[str, ResourceType, dict, "dict | None"], None]


class StoreWatch(Watch):
    """A watcher: a queue fed by the store, filtered by namespace and selectors."""

    def __init__(self, store: "Store", bucket: Bucket, rtype: ResourceType,
                 namespace: str | None, lsel: LabelSelector, fsel: FieldSelector,
                 start_rv: int) -> None:
        self._store = store
        self._bucket = bucket
        self.rtype = rtype
        self.namespace = namespace
        self._lsel = lsel
        self._fsel = fsel
        self._queue: asyncio.Queue = asyncio.Queue()
        self._closed = False
        self._drained = False       # the close sentinel has been read
        self.last_rv = start_rv

    # -- feeding (store side, synchronous) ----------------------------------------------
    def _matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and meta_of(obj).get("namespace", "") != self.namespace:
            return False
        return self._lsel.matches_object(obj) and self._fsel.matches(obj)

    def _put(self, etype: str, obj: dict, rv: int) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= MAX_WATCH_QUEUE:
            # A reader that cannot keep up is cut off, as a real server does; the client
            # re-lists on the 410.
            self._expire()
            return
        self.last_rv = max(self.last_rv, rv)
        self._queue.put_nowait((etype, obj, rv))

    def _offer(self, etype: str, obj: dict, old: dict | None, rv: int) -> None:
        new_match = self._matches(obj)
        if etype == "MODIFIED":
            old_match = self._matches(old)
            if new_match and old_match:
                self._put("MODIFIED", obj, rv)
            elif new_match:
                self._put("ADDED", obj, rv)
            elif old_match:
                # Leaving the selection looks like a deletion, carrying the event's RV.
                gone = dict(old)
                gone["metadata"] = dict(meta_of(old), resourceVersion=str(rv))
                self._put("DELETED", gone, rv)
        elif new_match:
            self._put(etype, obj, rv)

    def _expire(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "watch closed: the client was too slow", "reason": "Expired",
                  "code": 410}
        self._queue.put_nowait(("ERROR", status, self.last_rv))
        self._detach()

    def _detach(self) -> None:
        self._closed = True
        self._bucket.watchers.discard(self)
        self._queue.put_nowait(_CLOSED)

    # -- reading (API server side) ------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the watch is closed and every queued event has been read."""
        return self._closed and (self._drained or self._queue.qsize() <= 1)

    def pending(self) -> int:
        """Events queued and not yet read."""
        n = self._queue.qsize()
        return n - 1 if self._closed and not self._drained and n else n

    async def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next matching event, or None on timeout or once the watch is closed."""
        if self._queue.empty():
            if self._closed:
                return None
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except asyncio.TimeoutError:
                return None
        else:
            item = self._queue.get_nowait()
        if item is _CLOSED:
            self._drained = True
            return None
        etype, obj, rv = item
        if etype in ("BOOKMARK", "ERROR"):
            return WatchEvent(etype, json_copy(obj), rv)
        return WatchEvent(etype, render(obj, self.rtype), rv)

    def bookmark(self) -> WatchEvent:
        """A BOOKMARK event at the newest version this watcher is known to be current
        with (the store's version when nothing is queued), for periodic bookmarks."""
        rv = self._store.resource_version if self._queue.empty() else self.last_rv
        return WatchEvent("BOOKMARK", {
            "kind": self.rtype.kind, "apiVersion": self.rtype.api_version,
            "metadata": {"resourceVersion": str(rv)}}, rv)

    def close(self) -> None:
        if not self._closed:
            self._detach()

    def __aiter__(self) -> "StoreWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        ev = await self.next()
        if ev is None:
            raise StopAsyncIteration
        return ev


class WatchMixin:
    """The :class:`~twin.store.Store`'s side of watches: open them, subscribe, emit.

    Uses the store's ``_rv``, ``_subscribers``, ``_bucket()`` and ``_selectors()``.
    """

    _rv: int
    _subscribers: list[Subscriber]

    def _emit(self, bucket: Bucket, etype: str, obj: dict, old: dict | None) -> None:
        rv = int(meta_of(obj).get("resourceVersion") or self._rv)
        bucket.record(rv, etype, obj, old)
        for w in list(bucket.watchers):
            w._offer(etype, obj, old, rv)
        for fn in list(self._subscribers):
            try:
                fn(etype, bucket.rtype, obj, old)
            except Exception:  # a broken controller must never break a write
                log.exception("store subscriber %r failed on %s %s", fn, etype,
                              meta_of(obj).get("name"))

    def watch(self, rtype: ResourceType, namespace: str | None = None, *,
              label_selector: str | None = None, field_selector: str | None = None,
              resource_version: str | None = None, send_initial_events: bool = False,
              initial_events_bookmark: bool = True) -> Watch:
        """Open a watch.

        Args:
            resource_version: None, "0" or the current version: from now. An older
                version replays the events after it from the history ring, or raises
                Gone when the ring no longer reaches back that far.
            send_initial_events: first queue ADDED for every current matching object
                (in (namespace, name) order), then, if ``initial_events_bookmark``, a
                BOOKMARK whose object carries the annotation
                ``k8s.io/initial-events-end: "true"`` (what helm --wait needs). The
                resource_version is then ignored (state "not older than" it).
        """
        bucket = self._bucket(rtype)
        lsel, fsel = self._selectors(label_selector, field_selector)
        ns = namespace if (rtype.namespaced and namespace) else None
        start = self._rv
        replay: list[tuple[int, str, dict, dict | None]] = []
        if resource_version not in (None, "", "0") and not send_initial_events:
            try:
                since = int(resource_version)
            except ValueError:
                raise BadRequest(f"invalid resourceVersion {resource_version!r}") from None
            if since < start:
                if since < bucket.floor:
                    raise Gone(f"too old resource version: {since} ({bucket.floor + 1})")
                for ev in reversed(bucket.history):
                    if ev[0] <= since:
                        break
                    replay.append(ev)
                replay.reverse()
                start = since
        w = StoreWatch(self, bucket, rtype, ns, lsel, fsel, start)
        if send_initial_events:
            if ns is not None:
                objs = bucket.objects.get(ns) or {}
                initial = [objs[n] for n in (bucket.ns_keys[ns].view() if objs else [])]
            else:
                initial = [bucket.get(k[0], k[1]) for k in bucket.all_keys.view()]
            for obj in initial:
                if obj is not None and w._matches(obj):
                    w._put("ADDED", obj, int(meta_of(obj).get("resourceVersion") or 0))
            w.last_rv = self._rv
            if initial_events_bookmark:
                w._put("BOOKMARK", {
                    "kind": rtype.kind, "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": str(self._rv),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}},
                    self._rv)
        for rv, etype, obj, old in replay:
            w._offer(etype, obj, old, rv)
        bucket.watchers.add(w)
        return w

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Register a change callback; returns an unsubscribe function."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)
        return unsubscribe
