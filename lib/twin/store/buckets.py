"""Storage of one resource (group, plural): objects per namespace, sorted keys, history.

Keys are kept sorted lazily so that paging finds its start by bisection and never costs
the whole resource per page; the history ring serves watch resumes.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from typing import TYPE_CHECKING, Any

from .resource_types import ResourceType

if TYPE_CHECKING:
    from .watch import StoreWatch


class SortedKeys:
    """A sorted list of keys maintained lazily.

    Adds and removals are buffered and folded in on the next read: a few of them by
    bisection, a large batch (a fixture load) by one sort. Reads are then O(log n) to
    find a page start, so paging never costs O(total) per page.
    """

    __slots__ = ("_keys", "_added", "_removed")

    def __init__(self) -> None:
        self._keys: list = []
        self._added: set = set()
        self._removed: set = set()

    def add(self, key: Any) -> None:
        if key in self._removed:
            self._removed.discard(key)   # still present in _keys
        else:
            self._added.add(key)

    def discard(self, key: Any) -> None:
        if key in self._added:
            self._added.discard(key)
        else:
            self._removed.add(key)

    def view(self) -> list:
        if self._added or self._removed:
            pending = len(self._added) + len(self._removed)
            if pending <= 32 + len(self._keys) // 256:
                keys = self._keys
                for k in self._removed:
                    i = bisect_left(keys, k)
                    if i < len(keys) and keys[i] == k:
                        del keys[i]
                for k in self._added:
                    insort(keys, k)
            else:
                removed = self._removed
                keys = [k for k in self._keys if k not in removed] if removed else self._keys
                keys.extend(self._added)
                keys.sort()     # timsort: a sorted run plus a tail is cheap
                self._keys = keys
            self._added = set()
            self._removed = set()
        return self._keys

    def __len__(self) -> int:
        return len(self._keys) + len(self._added) - len(self._removed)


class Bucket:
    """Storage of one (group, plural): objects per namespace, sorted keys, history."""

    def __init__(self, rtype: ResourceType, history: int) -> None:
        self.rtype = rtype                       # storage version (used for subscribers)
        self.objects: dict[str, dict[str, dict]] = {}   # namespace ("" if cluster) -> name -> obj
        self.all_keys = SortedKeys()             # (namespace, name)
        self.ns_keys: dict[str, SortedKeys] = {}         # namespace -> names
        self.history: deque[tuple[int, str, dict, dict | None]] = deque(maxlen=max(1, history))
        self.floor = 0                           # events with rv <= floor left the ring
        self.watchers: set[StoreWatch] = set()
        self.size = 0

    def get(self, ns: str, name: str) -> dict | None:
        objs = self.objects.get(ns)
        return objs.get(name) if objs else None

    def put(self, ns: str, name: str, obj: dict) -> None:
        objs = self.objects.get(ns)
        if objs is None:
            objs = self.objects[ns] = {}
            self.ns_keys[ns] = SortedKeys()
        if name not in objs:
            self.size += 1
            self.all_keys.add((ns, name))
            self.ns_keys[ns].add(name)
        objs[name] = obj

    def pop(self, ns: str, name: str) -> dict | None:
        objs = self.objects.get(ns)
        if not objs or name not in objs:
            return None
        obj = objs.pop(name)
        self.size -= 1
        self.all_keys.discard((ns, name))
        self.ns_keys[ns].discard(name)
        if not objs:
            del self.objects[ns]
            del self.ns_keys[ns]
        return obj

    def record(self, rv: int, etype: str, obj: dict, old: dict | None) -> None:
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0][0]
        self.history.append((rv, etype, obj, old))

