"""Waiting on the API's events rather than on a clock.

A wait (:meth:`runbook.cluster.Cluster.wait_for`, Velero's, Cilium's) re-checks its
condition as soon as the cluster changes: :class:`Changes` keeps a watch open on each
resource the condition reads (from the collection's current ``resourceVersion``, with
bookmarks, as client-go's reflector does) and wakes the waiter on every event. The
clock stays as the fallback: the waiter re-checks after its interval anyway (for what
no watch sees, such as a node's devices read over SSH), and where a watch cannot be
opened (a CRD not registered yet, the API away during a k3s restart) it simply polls.
A timeout keeps its meaning: the waiter's own deadline decides, never the watch.

Example:
    >>> with Changes(cluster, ["nodes"]) as changes:               # doctest: +SKIP
    ...     while not all_ready(cluster.list("nodes")):
    ...         changes.wait(1.0)        # returns at the next node event, 1 s at most
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .paging import loads

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Changes", "settled_wait", "Target", "targets", "log_wait", "Expired", "OpenStreams", "decode_event",
           "stream_events", "WATCH_SECONDS", "READ_TIMEOUT"]

log = logging.getLogger("runbook.watches")

#: A resource of ``runbook.cluster.RESOURCES``, optionally with a namespace.
Target = "str | tuple[str, str | None]"

#: Seconds a watch stays open before the server ends it (then it resumes from its
#: last resourceVersion); the read timeout allows for the bookmarks in between.
WATCH_SECONDS = 60
READ_TIMEOUT = WATCH_SECONDS + 30


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list for a fresh one."""


class OpenStreams:
    """The watch responses open right now, so that a stop can shut them from another
    thread (a blocked read ends at once instead of at the next event or bookmark)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Any] = set()

    def add(self, resp: Any) -> None:
        with self._lock:
            self._open.add(resp)

    def discard(self, resp: Any) -> None:
        with self._lock:
            self._open.discard(resp)

    def shutdown(self) -> None:
        """Shut every open response (their readers see the end of the stream)."""
        with self._lock:
            streams = list(self._open)
        for resp in streams:
            _shutdown(resp)


def stream_events(cluster: Cluster, resource: str, namespace: str | None, rv: str, *,
                  stop: threading.Event, streams: OpenStreams,
                  label_selector: str | None = None, field_selector: str | None = None,
                  opened: Any = None) -> Iterator[tuple[str, dict]]:
    """The events of one watch of ``resource`` from ``rv`` (with bookmarks), as
    ``(type, object)`` until the server ends it (``timeoutSeconds``) or ``stop`` is set.

    ``opened()`` is called once the server accepted the watch (before any event).

    Raises:
        Expired: ``rv`` is too old: a 410 answer, or an ERROR event with code 410.
        RuntimeError: any other ERROR event.
        ClusterError: the watch could not be opened (another status).
    """
    from .cluster import RESOURCES, resource_path
    from .errors import ClusterError

    api_version, plural, _ = RESOURCES[resource]
    try:
        resp = cluster.watch_stream(
            resource_path(api_version, plural, namespace),
            {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
             "timeoutSeconds": WATCH_SECONDS, "labelSelector": label_selector,
             "fieldSelector": field_selector}, read_timeout=READ_TIMEOUT)
    except ClusterError as e:
        if e.status == 410:       # older servers answer the open itself with 410 Gone
            raise Expired(str(e)) from e
        raise
    streams.add(resp)
    try:
        if opened is not None:
            opened()
        buf = b""
        for chunk in resp.stream(65536, decode_content=True):
            if stop.is_set():
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield decode_event(loads(line))
    finally:
        streams.discard(resp)
        _shutdown(resp)


def settled_wait(changed: threading.Event, stop: threading.Event, timeout: float,
                 settle: float) -> bool:
    """Wait up to ``timeout`` s for ``changed``; once set, ``settle`` s more (ended early by
    ``stop``) let the rest of a burst of events in, then clear it. True when woken by it."""
    if timeout <= 0 or not changed.wait(timeout):
        return False
    if settle > 0:
        stop.wait(min(settle, timeout))
    changed.clear()
    return True


def targets(spec: Iterable[Any]) -> list[tuple[str, str | None]]:
    """``["nodes", ("pods", "kube-system")]`` -> ``[("nodes", None), ("pods", "kube-system")]``."""
    return [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in spec]


class Changes:
    """Watches on some resources; :meth:`wait` sleeps until one of them changes.

    Args:
        cluster: the :class:`~runbook.cluster.Cluster` (its loopback guard and token).
        resources: names of ``runbook.cluster.RESOURCES``, or ``(name, namespace)``.
        settle: seconds to let a burst of events (a rollout's pods) arrive before the
            waiter re-checks, so one burst costs one check.
    """

    def __init__(self, cluster: Cluster, resources: Sequence[Any], *, settle: float = 0.05) -> None:
        self.cluster = cluster
        self.targets = targets(resources)
        self.settle = settle
        self.events = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams = OpenStreams()
        self._watching: dict[tuple[str, str | None], bool] = {t: False for t in self.targets}

    # -- the waiter's side ----------------------------------------------------------------
    def __enter__(self) -> "Changes":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> "Changes":
        """Open the watches now (:meth:`wait` opens them at its first call otherwise)."""
        if self._threads:
            return self
        for t in self.targets:
            th = threading.Thread(target=self._run, args=t, daemon=True,
                                  name=f"watch-{t[0]}" + (f"-{t[1]}" if t[1] else ""))
            th.start()
            self._threads.append(th)
        return self

    @property
    def watching(self) -> bool:
        """True while every target has a watch open (else the waiter is polling)."""
        return bool(self._watching) and all(self._watching.values())

    def wait(self, timeout: float) -> bool:
        """Sleep until a watched resource changes or ``timeout`` seconds pass.

        The watches open at the first call, so a condition true at once costs none. Once
        a watch is open it wakes the waiter for a re-check: what changed between the
        waiter's last check and the watch's starting point is seen that way.

        Returns True when woken by a change (then a short settle lets its burst in).
        """
        self.start()
        return settled_wait(self._changed, self._stop, timeout, self.settle)

    def close(self) -> None:
        """Stop watching (open streams are shut so their threads end at once)."""
        self._stop.set()
        self._streams.shutdown()
        for th in self._threads:
            th.join(timeout=2.0)

    # -- the watching threads ---------------------------------------------------------------
    def _run(self, resource: str, namespace: str | None) -> None:
        key = (resource, namespace)
        rv: str | None = None
        delay = 0.2
        resumed = True        # the first start is a resume too: re-check once it is open
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._current_version(resource, namespace)
                    if rv is None:          # not served (yet): the waiter polls
                        self._watching[key] = False
                        self._stop.wait(2.0)
                        continue
                    if resumed:             # what changed while no watch was open
                        self._changed.set()
                        resumed = False
                self._watching[key] = True
                for etype, version in self._events(resource, namespace, rv):
                    rv = version or rv
                    if etype != "BOOKMARK":
                        self.events += 1
                        self._changed.set()
                delay = 0.2                 # the server ended the watch: resume from rv
            except Expired:
                rv, resumed = None, True
            except Exception as e:  # noqa: BLE001 - the API away, a reset: poll meanwhile
                if self._stop.is_set():
                    return
                log.debug("watch %s: %s: %s", resource, type(e).__name__, e)
                self._watching[key] = False
                rv, resumed = None, True
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def _current_version(self, resource: str, namespace: str | None) -> str | None:
        from .cluster import RESOURCES, resource_path

        api_version, plural, _ = RESOURCES[resource]
        page = self.cluster.request("GET", resource_path(api_version, plural, namespace),
                                    query={"limit": 1}, ok_missing=True, retry_for=0.0)
        if page is None:
            return None
        return str((page.get("metadata") or {}).get("resourceVersion") or "") or None

    def _events(self, resource: str, namespace: str | None, rv: str) -> Iterator[tuple[str, str | None]]:
        for etype, obj in stream_events(self.cluster, resource, namespace, rv, stop=self._stop,
                                        streams=self._streams):
            yield etype, (obj.get("metadata") or {}).get("resourceVersion")


def log_wait(cluster: Any, what: str, seconds: float, **kw: Any) -> None:
    """Log a wait that is not :meth:`~runbook.cluster.Cluster.wait_for`'s (Velero's,
    Cilium's) the same way, when the cluster object keeps a wait log."""
    fn = getattr(cluster, "log_wait", None)
    if fn is not None:
        fn(what, seconds, **kw)


def decode_event(ev: dict) -> tuple[str, dict]:
    """``(type, object)`` of one decoded watch line (a BOOKMARK's object carries only its
    ``metadata.resourceVersion``).

    Raises:
        Expired: an ERROR event with code 410 (the version is too old: re-list).
        RuntimeError: any other ERROR event.

    Example:
        >>> decode_event({"type": "DELETED", "object": {"metadata": {"name": "a"}}})
        ('DELETED', {'metadata': {'name': 'a'}})
    """
    etype = ev.get("type", "")
    obj = ev.get("object") or {}
    if etype == "ERROR":
        if obj.get("code") == 410:
            raise Expired(obj.get("message", "resourceVersion too old"))
        raise RuntimeError(f"watch error: {obj.get('code')} {obj.get('message', '')}")
    return etype, obj


def _shutdown(resp: Any) -> None:
    try:
        if hasattr(resp, "shutdown"):
            resp.shutdown()     # urllib3 >= 2.3: unblocks a read in another thread
        resp.close()
    except Exception:  # noqa: BLE001 - already closed
        pass
