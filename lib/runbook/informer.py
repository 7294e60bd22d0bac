"""A local copy of a resource, read once and then kept current from the API's watch.

What client-go's reflector and informer give ``kubectl drain`` and the controllers, in
our own code: an :class:`Informer` LISTs one resource (optionally in one namespace, or
narrowed by a label or field selector) once, remembers the list's ``resourceVersion``
and then applies the watch's events from that version to a dict of objects by
``namespace/name``:

- ``ADDED`` / ``MODIFIED`` put the object, ``DELETED`` drops it, each moves the version;
- ``BOOKMARK`` (asked for with ``allowWatchBookmarks``) only moves the version, so a
  watch that ends quietly (``timeoutSeconds``) resumes from a recent one;
- a stream that drops resumes from the last version seen, without a LIST;
- a version too old to resume from (410 Gone: the answer to the watch, or an ``ERROR``
  event with code 410, once the server's history no longer reaches back) or any other
  ``ERROR`` event: the informer LISTs again, and follows the watch from the new list;
- a watch that cannot be opened at all (the server does not serve watches for it, a
  proxy in between refuses streams): the informer re-LISTs instead, at a bounded rate:
  a LIST that took ``d`` seconds is followed by the next no sooner than
  ``max(poll, d / look_share)`` seconds after it started (a LIST of 50,000 pods is ~1 s
  of the API server's work: then one every 4 s), and tries the watch again each time.

Every read goes through the cluster's one choke point (:meth:`runbook.cluster.Cluster.pages`
for the LIST, :meth:`~runbook.cluster.Cluster.watch_stream` for the watch, parsed by
:func:`runbook.watches.stream_events`). One thread per informer follows the watch; readers
take copies under a lock. Objects are never changed in place (an event replaces them),
so a reader may keep what it got; it must not change it.

Example:
    >>> with Informers(cluster, ["pods", "poddisruptionbudgets"]) as seen:   # doctest: +SKIP
    ...     while not done(seen["pods"].items()):
    ...         seen.wait(1.0)        # back at the next pod or PDB event, 1 s at most
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from .watches import Expired, OpenStreams, settled_wait, stream_events, targets

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Informer", "Informers", "POLL_SECONDS", "LOOK_SHARE", "rest_after", "object_key"]

log = logging.getLogger("runbook.informer")

#: Seconds between two LISTs when no watch can be opened (the shortest gap).
POLL_SECONDS = 1.0
#: The most of its time a reader spends LISTing when it has to (see :func:`rest_after`).
LOOK_SHARE = 0.25
#: Seconds before a dropped stream is resumed, doubled up to 2 s while resumes fail.
RESUME_DELAY = 0.2


def rest_after(cost: float, share: float = LOOK_SHARE) -> float:
    """Seconds to wait after a read that took ``cost`` seconds, so that such reads take
    at most ``share`` of the time.

    Example:
        >>> rest_after(1.0, 0.25)
        3.0
    """
    return max(0.0, cost * (1.0 / share - 1.0))


def object_key(obj: dict) -> str:
    """``namespace/name`` of an object (``name`` for one that is not namespaced).

    Example:
        >>> object_key({"metadata": {"namespace": "shop", "name": "web-1"}})
        'shop/web-1'
    """
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{ns}/{md.get('name')}" if ns else str(md.get("name"))


class Informer:
    """One resource's objects, LISTed once and then kept current from its watch.

    Args:
        cluster: the :class:`~runbook.cluster.Cluster` (its loopback guard and token).
        resource: a name of ``runbook.cluster.RESOURCES`` (``"pods"``).
        namespace: only this namespace (None: all of them).
        label_selector, field_selector: only the objects they select (the watch then
            reports an object that stops matching as ``DELETED``).
        changed: the event set on every change (shared by an :class:`Informers` group).
        poll: the shortest gap between two LISTs while no watch can be opened.
        look_share: the most of the time spent LISTing while no watch can be opened.

    Attributes:
        lists: LISTs made (the first, each re-LIST after a 410 and each poll).
        expired: watches that answered 410 Gone (each followed by a re-LIST).
        events: ADDED/MODIFIED/DELETED events applied.
        error: the last failure to LIST or watch, for a person reading a log (or None).
    """

    def __init__(self, cluster: Cluster, resource: str, namespace: str | None = None, *,
                 label_selector: str | None = None, field_selector: str | None = None,
                 changed: threading.Event | None = None, poll: float = POLL_SECONDS,
                 look_share: float = LOOK_SHARE, limit: int = 500) -> None:
        self.cluster = cluster
        self.resource, self.namespace = resource, namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.changed = changed or threading.Event()
        self.poll, self.look_share, self.limit = poll, look_share, limit
        self.lists = self.expired = self.events = 0
        self.error: str | None = None
        self._objects: dict[str, dict] = {}
        self._rv: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._streams = OpenStreams()
        self._thread: threading.Thread | None = None
        self._watching = False
        self._polling = False
        self._last_list = (0.0, 0.0)     # (monotonic start, seconds) of the last LIST

    # -- the readers' side ----------------------------------------------------------------
    def start(self) -> "Informer":
        """LIST now, in the caller's thread (a failure raises its ClusterError here), then
        follow the watch in a thread of its own."""
        if self._thread is not None:
            return self
        self._list()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"informer-{self.resource}"
                                        + (f"-{self.namespace}" if self.namespace else ""))
        self._thread.start()
        return self

    def items(self) -> list[dict]:
        """The objects as last seen (a new list; the objects themselves are shared)."""
        with self._lock:
            return list(self._objects.values())

    def get(self, name: str, namespace: str | None = None) -> dict | None:
        """One object as last seen, None when absent."""
        with self._lock:
            return self._objects.get(f"{namespace}/{name}" if namespace else name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    @property
    def version(self) -> str | None:
        """The resourceVersion the copy is current with (None before a LIST succeeded)."""
        return self._rv

    @property
    def watching(self) -> bool:
        """True while a watch keeps the copy current (False: it is re-LISTed instead)."""
        return self._watching

    def wait(self, timeout: float) -> bool:
        """Sleep until the copy changes or ``timeout`` seconds pass; True when it changed."""
        if timeout <= 0 or not self.changed.wait(timeout):
            return False
        self.changed.clear()
        return True

    def close(self) -> None:
        """Stop following the watch (an open stream is shut, so its thread ends at once)."""
        self._stop.set()
        self._streams.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> "Informer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the LIST -----------------------------------------------------------------------------
    def _list(self) -> None:
        from .cluster import RESOURCES

        api_version, plural, _ = RESOURCES[self.resource]
        started = time.monotonic()
        objects: dict[str, dict] = {}
        rv: str | None = None
        for page in self.cluster.pages(api_version, plural, self.namespace, limit=self.limit,
                                       label_selector=self.label_selector,
                                       field_selector=self.field_selector):
            if rv is None:     # every page of one list is of the first page's version
                rv = str((page.get("metadata") or {}).get("resourceVersion") or "") or None
            for obj in page.get("items") or ():
                objects[object_key(obj)] = obj
        self.lists += 1
        self._last_list = (started, time.monotonic() - started)
        with self._lock:
            before = {k: (o.get("metadata") or {}).get("resourceVersion") for k, o in self._objects.items()}
            self._objects, self._rv = objects, rv
        if self.lists > 1 and before != {k: (o.get("metadata") or {}).get("resourceVersion")
                                         for k, o in objects.items()}:
            self.changed.set()     # a re-LIST that found something new (the first is read anyway)

    def _paced_list(self) -> bool:
        """Re-LIST no sooner than the pace allows; False when stopped meanwhile."""
        started, cost = self._last_list
        gap = max(self.poll if self._polling else 0.0, cost + rest_after(cost, self.look_share))
        if self._stop.wait(max(0.0, started + gap - time.monotonic())):
            return False
        self._list()
        return True

    # -- the watching thread ------------------------------------------------------------------
    def _run(self) -> None:
        delay = RESUME_DELAY
        while not self._stop.is_set():
            opened: list[bool] = []
            try:
                if self._rv is None and not self._paced_list():
                    return
                if self._rv is None:          # the type is not served: nothing to watch yet
                    self._polling = True
                    continue
                for etype, obj in stream_events(self.cluster, self.resource, self.namespace, self._rv,
                                                stop=self._stop, streams=self._streams,
                                                label_selector=self.label_selector,
                                                field_selector=self.field_selector,
                                                opened=lambda: opened.append(self._opened())):
                    self._apply(etype, obj)
                delay = RESUME_DELAY          # the server ended it (timeoutSeconds): resume
            except Expired as e:              # 410: the version is gone from the history
                self.expired += 1
                self.error = f"watch {self.resource}: {e}"
                self._rv = None
            except Exception as e:  # noqa: BLE001 - the API away, a reset, a refused watch
                if self._stop.is_set():
                    return
                self.error = f"{'watch' if self._rv else 'list'} {self.resource}: {type(e).__name__}: {e}"
                log.debug("informer %s", self.error)
                self._watching = False
                if opened and not isinstance(e, RuntimeError):
                    self._stop.wait(delay)    # a dropped stream: resume from the last version
                    delay = min(delay * 2, 2.0)
                else:                          # no watch (or an ERROR event): LIST instead
                    self._polling = self._polling or not opened
                    if self._rv is None:       # the LIST itself failed: not at once again
                        self._stop.wait(delay)
                        delay = min(delay * 2, 2.0)
                    self._rv = None

    def _opened(self) -> bool:
        self._watching, self._polling, self.error = True, False, None
        return True

    def _apply(self, etype: str, obj: dict) -> None:
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            key = object_key(obj)
            with self._lock:
                if etype == "DELETED":
                    self._objects.pop(key, None)
                else:
                    self._objects[key] = obj
                self._rv = rv or self._rv
            self.events += 1
            self.changed.set()
        elif etype == "BOOKMARK" and rv:
            self._rv = rv


class Informers:
    """Informers on several resources that wake one waiter (a drain reads pods and PDBs).

    Args:
        cluster: the :class:`~runbook.cluster.Cluster`.
        resources: names of ``runbook.cluster.RESOURCES``, or ``(name, namespace)``.
        settle: seconds to let a burst of events (a ReplicaSet's replacements) arrive
            before the waiter looks, so one burst costs one look.
        poll, look_share: as for :class:`Informer`.

    Example:
        >>> seen = Informers(cluster, ["pods"]).start()      # doctest: +SKIP
        >>> len(seen["pods"]), seen.lists                     # doctest: +SKIP
        (50000, 1)
    """

    def __init__(self, cluster: Cluster, resources: Iterable[Any], *, settle: float = 0.05,
                 poll: float = POLL_SECONDS, look_share: float = LOOK_SHARE) -> None:
        self.settle = settle
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._by_name: dict[tuple[str, str | None], Informer] = {}
        for target in targets(resources):
            self._by_name[target] = Informer(cluster, *target, changed=self.changed, poll=poll,
                                             look_share=look_share)

    def __getitem__(self, target: str | tuple[str, str | None]) -> Informer:
        """``seen["pods"]`` (all namespaces) or ``seen["pods", "kube-system"]``."""
        return self._by_name[(target, None) if isinstance(target, str) else target]

    def start(self) -> "Informers":
        """LIST each resource (in the caller's thread), then follow their watches."""
        for inf in self._by_name.values():
            inf.start()
        return self

    @property
    def lists(self) -> int:
        """LISTs made by all of them."""
        return sum(inf.lists for inf in self._by_name.values())

    @property
    def watching(self) -> bool:
        """True while every one of them follows a watch."""
        return all(inf.watching for inf in self._by_name.values())

    def wait(self, timeout: float) -> bool:
        """Sleep until one of them changes or ``timeout`` seconds pass; True when woken by a
        change (then a short settle lets the rest of its burst in)."""
        return settled_wait(self.changed, self._stop, timeout, self.settle)

    def close(self) -> None:
        """Stop every watch."""
        self._stop.set()
        for inf in self._by_name.values():
            inf.close()

    def __enter__(self) -> "Informers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
