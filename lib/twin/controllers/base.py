"""Controller plumbing shared by the twin's workload controllers.

Two pieces, modelled on client-go's informer + workqueue pair:

- :class:`Cache` keeps a read-only view of the objects the controllers care about
  (pods, nodes, replicasets, ...), fed by the store's synchronous subscriber
  callbacks, with the indexes the controllers need (pods by node, objects by
  controlling owner uid, orphans by namespace). Reads never copy and never scan the
  whole store, which is what keeps a 50,000-pod twin cheap.
- :class:`Controller` owns a de-duplicating work queue of keys, processes it on the
  event loop with one asyncio task, supports delayed requeues in cluster seconds, and
  retries failed reconciles with exponential backoff instead of dying.

Everything runs on the twin's single event-loop thread: subscriber callbacks only
update dicts and enqueue keys, they never block.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Hashable, Iterable

from ..ticker import cancel_and_wait

log = logging.getLogger("twin.controllers")

Key = Hashable
ObjKey = tuple[str, str]          # (namespace or "", name)

#: (group, plural) of every kind the workload controllers cache.
CACHED_KINDS: tuple[tuple[str, str], ...] = (
    ("", "pods"),
    ("", "nodes"),
    ("apps", "replicasets"),
    ("apps", "deployments"),
    ("apps", "daemonsets"),
    ("apps", "statefulsets"),
    ("policy", "poddisruptionbudgets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
)


def obj_key(obj: dict) -> ObjKey:
    """``(namespace, name)`` of an object ("" namespace for cluster-scoped ones)."""
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


def controller_ref(obj: dict) -> dict | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


class Cache:
    """Informer-like read view of the store for the cached kinds, with indexes.

    The cache holds references to the objects the store hands to subscribers (or
    yields from ``iter_objects``): callers must treat them as read-only and write
    through ``store.mutate``/``create``/``delete``.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[ObjKey, dict]] = {k: {} for k in CACHED_KINDS}
        # pods by spec.nodeName
        self.pods_by_node: dict[str, set[ObjKey]] = {}
        # objects (pods, replicasets) by the uid of their controlling owner
        self.by_owner: dict[tuple[str, str], dict[str, set[ObjKey]]] = {
            ("", "pods"): {}, ("apps", "replicasets"): {}, ("batch", "jobs"): {}}
        # objects without a controlling owner, by namespace (adoption candidates)
        self.orphans: dict[tuple[str, str], dict[str, set[ObjKey]]] = {
            ("", "pods"): {}, ("apps", "replicasets"): {}, ("batch", "jobs"): {}}

    # -- feeding ------------------------------------------------------------------
    def load(self, store: Any, rtype: Any) -> int:
        """Fill one kind from the store (one pass, no copies). Returns the count."""
        n = 0
        for obj in store.iter_objects(rtype):
            self.put(rtype.key, obj, None)
            n += 1
        return n

    def put(self, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        """Record the current version of an object (ADDED or MODIFIED)."""
        table = self.objects.get(kind)
        if table is None:
            return
        key = obj_key(obj)
        prev = table.get(key)
        if prev is not None and prev is not obj:
            self._unindex(kind, key, prev)
        elif prev is obj:
            # The store may update its objects in place: the previous version is then
            # only known from ``old``.
            if old is not None:
                self._unindex(kind, key, old)
        table[key] = obj
        self._index(kind, key, obj)

    def remove(self, kind: tuple[str, str], obj: dict) -> None:
        table = self.objects.get(kind)
        if table is None:
            return
        key = obj_key(obj)
        prev = table.pop(key, None)
        self._unindex(kind, key, prev if prev is not None else obj)
        if prev is not None and prev is not obj:
            self._unindex(kind, key, obj)

    def _index(self, kind: tuple[str, str], key: ObjKey, obj: dict) -> None:
        if kind == ("", "pods"):
            node = (obj.get("spec") or {}).get("nodeName")
            if node:
                self.pods_by_node.setdefault(node, set()).add(key)
        if kind in self.by_owner:
            ref = controller_ref(obj)
            if ref and ref.get("uid"):
                self.by_owner[kind].setdefault(ref["uid"], set()).add(key)
            else:
                self.orphans[kind].setdefault(key[0], set()).add(key)

    def _unindex(self, kind: tuple[str, str], key: ObjKey, obj: dict) -> None:
        if kind == ("", "pods"):
            node = (obj.get("spec") or {}).get("nodeName")
            if node and node in self.pods_by_node:
                self.pods_by_node[node].discard(key)
        if kind in self.by_owner:
            ref = controller_ref(obj)
            if ref and ref.get("uid"):
                s = self.by_owner[kind].get(ref["uid"])
                if s is not None:
                    s.discard(key)
                    if not s:
                        del self.by_owner[kind][ref["uid"]]
            else:
                s = self.orphans[kind].get(key[0])
                if s is not None:
                    s.discard(key)

    # -- reads ----------------------------------------------------------------------
    def get(self, kind: tuple[str, str], namespace: str, name: str) -> dict | None:
        return self.objects[kind].get((namespace or "", name))

    def all(self, kind: tuple[str, str]) -> Iterable[dict]:
        return self.objects[kind].values()

    def owned(self, kind: tuple[str, str], uid: str) -> list[dict]:
        """Objects of ``kind`` whose controlling owner has ``uid``."""
        table = self.objects[kind]
        keys = self.by_owner[kind].get(uid) or ()
        return [table[k] for k in list(keys) if k in table]

    def orphans_in(self, kind: tuple[str, str], namespace: str) -> list[dict]:
        table = self.objects[kind]
        return [table[k] for k in list(self.orphans[kind].get(namespace) or ()) if k in table]

    def pods_on(self, node: str) -> list[dict]:
        table = self.objects[("", "pods")]
        return [table[k] for k in list(self.pods_by_node.get(node) or ()) if k in table]


class Controller:
    """A work queue of keys processed by one asyncio task.

    Subclasses implement :meth:`reconcile` (synchronous: the store is synchronous, and
    any wait is expressed as :meth:`requeue_after`) and feed keys with :meth:`enqueue`.

    Args:
        name: for logs and ``describe()``.
        clock: the twin's :class:`~twin.clock.Clock`; every delay is in cluster seconds.
        batch: keys processed before yielding to the loop (keeps the API responsive).
    """

    max_backoff = 60.0      # cluster seconds
    base_backoff = 0.5

    def __init__(self, name: str, clock: Any, *, batch: int = 50) -> None:
        self.name = name
        self.clock = clock
        self.batch = batch
        self._queue: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._delayed: dict[Key, tuple[float, asyncio.Task]] = {}
        self._failures: dict[Key, int] = {}
        self._stopping = False
        self.processed = 0
        self.errors = 0

    # -- queue ----------------------------------------------------------------------
    def enqueue(self, key: Key) -> None:
        """Queue ``key`` once (a key already waiting is not queued twice)."""
        if self._stopping or key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._wakeup.set()

    def requeue_after(self, key: Key, cluster_seconds: float) -> None:
        """Queue ``key`` again after a delay in cluster seconds.

        Only the earliest pending delay per key is kept, so a reconcile may call this
        on every pass without piling up timers.
        """
        if self._stopping:
            return
        due = self.clock.cluster_now() + max(0.0, cluster_seconds)
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= due + 1e-9:
                return
            pending[1].cancel()
        task = asyncio.get_running_loop().create_task(self._later(key, cluster_seconds))
        self._delayed[key] = (due, task)

    async def _later(self, key: Key, cluster_seconds: float) -> None:
        try:
            await self.clock.sleep(cluster_seconds)
        except asyncio.CancelledError:
            return
        cur = self._delayed.get(key)
        if cur is not None and cur[1] is asyncio.current_task():
            del self._delayed[key]
        self.enqueue(key)

    def forget(self, key: Key) -> None:
        """Drop a delayed requeue and the failure count of ``key`` (object gone or done)."""
        pending = self._delayed.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        self._failures.pop(key, None)

    def pending(self) -> int:
        return len(self._queue)

    def idle(self) -> bool:
        """True when nothing is queued or delayed (used by tests to wait for quiescence)."""
        return not self._queue and not self._delayed and not self._busy

    _busy = False

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ctrl-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        for _, t in list(self._delayed.values()):
            t.cancel()
        self._delayed.clear()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            for _ in range(self.batch):
                if not self._queue:
                    break
                key = self._queue.popleft()
                self._queued.discard(key)
                self._busy = True
                try:
                    self.reconcile(key)
                    self._failures.pop(key, None)
                except Exception:
                    # A broken reconcile must never kill the loop: log it and retry with
                    # backoff, as client-go's rate-limited queue does.
                    self.errors += 1
                    n = self._failures.get(key, 0) + 1
                    self._failures[key] = n
                    delay = min(self.max_backoff, self.base_backoff * (2 ** (n - 1)))
                    log.exception("%s: reconcile %r failed (attempt %d), retry in %.1fs",
                                  self.name, key, n, delay)
                    self.requeue_after(key, delay)
                finally:
                    self._busy = False
                    self.processed += 1
            await asyncio.sleep(0)

    # -- to implement ------------------------------------------------------------------
    def reconcile(self, key: Key) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_event(self, event_type: str, kind: tuple[str, str], obj: dict,
                 old: dict | None) -> None:
        """Map a store change to keys (default: nothing)."""


def run_safely(fn: Callable[[], Any], what: str) -> Any:
    """Call ``fn``; log and swallow an exception (for subscriber callbacks)."""
    try:
        return fn()
    except Exception:
        log.exception("%s failed", what)
        return None
