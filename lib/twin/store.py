"""The twin's object store: the one source of truth of the rehearsal cluster.

CONTRACT (shared by the API server, every controller, the fixtures and the node model).
Everything runs on the twin's single asyncio event-loop thread; the store itself is
synchronous and not thread-safe. Objects are plain JSON-like dicts exactly as the
Kubernetes API would serialise them (``apiVersion``, ``kind``, ``metadata``, ``spec``,
``status``).

Resource types
    ``ResourceType`` describes one served (group, version, plural). Storage is keyed by
    ``(group, plural)`` so a CRD served at several versions shares one set of objects;
    ``apiVersion`` in returned objects is rewritten to the version asked for.
    Built-in types are registered by ``builtin_types()``; CRDs are registered when a
    CustomResourceDefinition object is created (and unregistered when it is deleted).

Identity and versions
    ``create`` sets ``metadata.uid``, ``resourceVersion`` (a global, monotonically
    increasing integer rendered as a string), ``generation`` (1) and
    ``creationTimestamp`` (RFC 3339, UTC, seconds). Every write bumps
    ``resourceVersion``; a change to anything but ``status``/``metadata`` bumps
    ``generation``. ``metadata.generateName`` is honoured.

Reads
    ``get`` and ``list`` return deep copies: callers may mutate what they receive.
    ``list`` supports label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
    ``!key``), field selectors (``metadata.name``, ``metadata.namespace``,
    ``status.phase``, ``spec.nodeName``; ``=``, ``==``, ``!=``), and ``limit``/``continue``
    pagination. Cost is proportional to the objects of that resource (and namespace),
    never to the whole store; ``spec.nodeName`` selections use an index.

Deletion
    ``delete`` on an object with finalizers sets ``deletionTimestamp`` (and
    ``deletionGracePeriodSeconds``) and keeps it until an ``update`` empties the
    finalizers. Removing an object garbage-collects its dependents (objects whose
    ``metadata.ownerReferences`` name its uid), recursively ("Background" propagation);
    ``propagation="Orphan"`` strips the owner reference instead.

Watches and subscribers
    Every change produces an event ``(type, obj)`` with type ADDED, MODIFIED or DELETED.
    ``watch()`` returns a ``Watch`` whose ``next()`` yields events after a given
    resourceVersion; a bounded history ring (per resource) serves resumes and raises
    ``Gone`` (410) when the version is older than the ring. ``subscribe(fn)`` registers a
    synchronous callback ``fn(event_type, rtype, obj, old)`` called after every change:
    controllers use it to schedule work (they must not block).

Twin-specific choices (beyond the contract)
    * Namespaces: a namespaced ``create`` into a namespace that does not exist raises
      NotFound, into one that is terminating raises Forbidden. ``delete`` of a
      namespace sets ``deletionTimestamp`` and ``status.phase: Terminating``, deletes
      everything inside at once, and removes the namespace as soon as nothing is left
      (objects holding finalizers keep it Terminating until they go).
    * ``update(..., preserve_status=True)`` keeps the stored ``status`` when the type has
      a status subresource: this is what a real server does on a main-resource PUT or
      PATCH, so the API server passes it; ``mutate()`` (controllers) writes everything.
    * An update that changes nothing is a no-op: no new resourceVersion, no event (as
      on a real server; it also keeps controllers from looping on their own writes).
    * Watch objects and list items are copies; the ``obj``/``old`` handed to subscribers
      are the stored dicts and must be treated as read-only.
    * ``propagation="Foreground"`` deletes the dependents first, then the owner.
    * Core ``events`` and ``events.k8s.io`` events are stored separately.
    * Field selectors accept any dotted path (a missing field is ``""``).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
import marshal
import random
import re
import uuid
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from twin.selectors import _check_key as _check_label_key
from twin.selectors import _check_value as _check_label_value
from twin.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

log = logging.getLogger(__name__)

DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


class StoreError(Exception):
    """Base of store errors; maps onto a Kubernetes ``Status`` (code, reason)."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


class Invalid(StoreError):
    code = 422
    reason = "Invalid"


class BadRequest(StoreError):
    code = 400
    reason = "BadRequest"


class Forbidden(StoreError):
    code = 403
    reason = "Forbidden"


class Gone(StoreError):
    code = 410
    reason = "Expired"


@dataclass(frozen=True)
class ResourceType:
    """One served resource, as discovery reports it."""

    group: str            # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = DEFAULT_VERBS
    categories: tuple[str, ...] = ()
    list_kind: str = ""   # defaults to kind + "List"
    status_subresource: bool = True
    scale_subresource: bool = False
    table_columns: tuple[dict, ...] = ()   # additionalPrinterColumns for CRDs (Table output)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: shared by every version of the resource."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``plural.group`` as a real server names it in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


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


Subscriber = Callable[[str, ResourceType, dict, "dict | None"], None]

# ---------------------------------------------------------------------------------------
# helpers

_CLOSED = object()
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"   # what the real generateName uses
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PATH_SEGMENT_KINDS = {("rbac.authorization.k8s.io", p)
                       for p in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")}
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
POD_KEY = ("", "pods")
MAX_WATCH_QUEUE = 200_000


def json_copy(obj: Any) -> Any:
    """A deep copy of JSON-like data, several times faster than ``copy.deepcopy``.

    ``marshal`` round-trips dicts/lists/str/int/float/bool/None in C; anything else
    (a datetime slipped in by a caller) falls back to ``deepcopy``.
    """
    try:
        return marshal.loads(marshal.dumps(obj))
    except ValueError:
        return copy.deepcopy(obj)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validate_name(key: tuple[str, str], name: str) -> str | None:
    """The reason ``name`` is not valid for the resource, or None."""
    if key in _PATH_SEGMENT_KINDS:
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not be '.' or '..' and may not contain '/' or '%'"
        return None
    if key == NAMESPACE_KEY:
        if len(name) > 63 or not _LABEL_RE.match(name):
            return ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character")
        return None
    if key == ("", "services"):
        if len(name) > 63 or not _DNS1035_RE.match(name):
            return ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                    "'-', start with an alphabetic character, and end with an alphanumeric "
                    "character")
        return None
    if len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


class _SortedKeys:
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


class _Bucket:
    """Storage of one (group, plural): objects per namespace, sorted keys, history."""

    def __init__(self, rtype: ResourceType, history: int) -> None:
        self.rtype = rtype                       # storage version (used for subscribers)
        self.objects: dict[str, dict[str, dict]] = {}   # namespace ("" if cluster) -> name -> obj
        self.all_keys = _SortedKeys()            # (namespace, name)
        self.ns_keys: dict[str, _SortedKeys] = {}        # namespace -> names
        self.history: deque[tuple[int, str, dict, dict | None]] = deque(maxlen=max(1, history))
        self.floor = 0                           # events with rv <= floor left the ring
        self.watchers: set[_StoreWatch] = set()
        self.size = 0

    def get(self, ns: str, name: str) -> dict | None:
        objs = self.objects.get(ns)
        return objs.get(name) if objs else None

    def put(self, ns: str, name: str, obj: dict) -> None:
        objs = self.objects.get(ns)
        if objs is None:
            objs = self.objects[ns] = {}
            self.ns_keys[ns] = _SortedKeys()
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


def _meta(obj: dict) -> dict:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _owner_uids(obj: dict) -> set[str]:
    return {r.get("uid") for r in _meta(obj).get("ownerReferences") or () if r.get("uid")}


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class _StoreWatch(Watch):
    """A watcher: a queue fed by the store, filtered by namespace and selectors."""

    def __init__(self, store: "Store", bucket: _Bucket, rtype: ResourceType,
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
        if self.namespace is not None and _meta(obj).get("namespace", "") != self.namespace:
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
                gone["metadata"] = dict(_meta(old), resourceVersion=str(rv))
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
        return WatchEvent(etype, self._store._render(obj, self.rtype), rv)

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

    def __aiter__(self) -> "_StoreWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        ev = await self.next()
        if ev is None:
            raise StopAsyncIteration
        return ev


def _encode_continue(rv: int, ns: str, name: str) -> str:
    raw = json.dumps({"v": 1, "rv": rv, "ns": ns, "name": name}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        return int(data["rv"]), str(data["ns"]), str(data["name"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BadRequest(f"invalid continue token: {e}") from None


# ---------------------------------------------------------------------------------------


class Store:
    """In-memory object store (see module docstring for the contract).

    Example:
        >>> s = Store()
        >>> ns = s.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        >>> cm = s.create({"apiVersion": "v1", "kind": "ConfigMap",
        ...                "metadata": {"name": "c", "namespace": "demo"}, "data": {"a": "1"}})
        >>> s.get(s.lookup("", "v1", "configmaps"), "demo", "c")["data"]
        {'a': '1'}
    """

    def __init__(self, *, history_per_resource: int = 5000, register_builtins: bool = True,
                 now: Callable[[], str] | None = None, seed: int | None = None) -> None:
        self._history = history_per_resource
        self._rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._kinds: dict[tuple[str, str], ResourceType] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}   # uid -> (key, ns, name)
        self._dependents: dict[str, set[str]] = {}   # owner uid -> dependent uids
        self._by_node: dict[str, set[str]] = {}       # spec.nodeName -> "ns/name" of pods
        self._subscribers: list[Subscriber] = []
        self._crd_types: dict[str, list[ResourceType]] = {}   # CRD name -> its served types
        self._now = now or _now
        self._random = random.Random(seed)
        if register_builtins:
            for rt in builtin_types():
                self.register(rt)

    # -- types ------------------------------------------------------------------
    def register(self, rtype: ResourceType) -> None:
        """Serve ``rtype`` (replacing a previous registration of the same version)."""
        old = self._types.get((rtype.group, rtype.version, rtype.plural))
        if old is not None:
            self._kinds.pop((old.api_version, old.kind), None)
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._kinds[(rtype.api_version, rtype.kind)] = rtype
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            self._buckets[rtype.key] = _Bucket(rtype, self._history)
        elif bucket.rtype.version == rtype.version or not self._served(bucket.rtype):
            bucket.rtype = rtype

    def _served(self, rtype: ResourceType) -> bool:
        return self._types.get((rtype.group, rtype.version, rtype.plural)) is rtype

    def unregister(self, group: str, version: str, plural: str) -> None:
        """Stop serving one version; the objects stay until the last version goes with
        :meth:`drop_resource` (CRD deletion does both)."""
        rtype = self._types.pop((group, version, plural), None)
        if rtype is None:
            return
        if self._kinds.get((rtype.api_version, rtype.kind)) is rtype:
            del self._kinds[(rtype.api_version, rtype.kind)]
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            return
        others = [t for t in self._types.values() if t.key == rtype.key]
        if bucket.rtype is rtype and others:
            bucket.rtype = others[0]
        for w in list(bucket.watchers):
            if w.rtype.version == version:
                w.close()

    def resource_types(self) -> list[ResourceType]:
        return list(self._types.values())

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def lookup_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._kinds.get((api_version, kind))

    def _rtype_for(self, obj: dict) -> ResourceType:
        av, kind = obj.get("apiVersion"), obj.get("kind")
        rtype = self._kinds.get((av, kind)) if av and kind else None
        if rtype is None:
            raise BadRequest(f"no kind {kind!r} is registered for version {av!r}")
        return rtype

    def _bucket(self, rtype: ResourceType) -> _Bucket:
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            raise NotFound(f"the server could not find the requested resource ({rtype.qualified})",
                           details={"group": rtype.group, "kind": rtype.plural})
        return bucket

    # -- reads --------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def _ns(self, rtype: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rtype.namespaced else ""

    def _not_found(self, rtype: ResourceType, name: str) -> NotFound:
        return NotFound(f'{rtype.qualified} "{name}" not found',
                        details={"name": name, "group": rtype.group, "kind": rtype.plural})

    def _render(self, obj: dict, rtype: ResourceType) -> dict:
        out = json_copy(obj)
        out["apiVersion"] = rtype.api_version
        out["kind"] = rtype.kind
        return out

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        """A copy of the object; raises NotFound."""
        obj = self._bucket(rtype).get(self._ns(rtype, namespace), name)
        if obj is None:
            raise self._not_found(rtype, name)
        return self._render(obj, rtype)

    def try_get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None:
        bucket = self._buckets.get(rtype.key)
        obj = bucket.get(self._ns(rtype, namespace), name) if bucket else None
        return None if obj is None else self._render(obj, rtype)

    def peek(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None:
        """The stored object itself, without a copy (read-only), or None."""
        bucket = self._buckets.get(rtype.key)
        return bucket.get(self._ns(rtype, namespace), name) if bucket else None

    @staticmethod
    def _selectors(label_selector: str | None,
                   field_selector: str | None) -> tuple[LabelSelector, FieldSelector]:
        try:
            return parse_label_selector(label_selector), parse_field_selector(field_selector)
        except SelectorError as e:
            raise BadRequest(str(e)) from None

    def list(self, rtype: ResourceType, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None,
             limit: int = 0, continue_token: str | None = None,
             copy: bool = True) -> ListResult:
        """Objects in (namespace, name) order, filtered and paged.

        A continue token encodes the list's resourceVersion and the last key returned;
        the next page starts right after that key (found by bisection), so pages stay
        consistent under concurrent writes: objects that exist throughout come exactly
        once. ``copy=False`` returns the stored dicts (read-only) for callers that only
        serialise them; their apiVersion is then the storage version's.
        """
        bucket = self._bucket(rtype)
        lsel, fsel = self._selectors(label_selector, field_selector)
        ns_filter = namespace if (rtype.namespaced and namespace) else None
        list_rv = self._rv
        after: tuple[str, str] | None = None
        if continue_token:
            list_rv, cns, cname = _decode_continue(continue_token)
            after = (cns, cname)
        if limit < 0:
            raise BadRequest("limit must not be negative")

        node = fsel.equals("spec.nodeName") if rtype.key == POD_KEY else None
        if node is not None:
            keys: list = sorted(tuple(k.split("/", 1)) for k in self._by_node.get(node, ()))
            if ns_filter is not None:
                keys = [k for k in keys if k[0] == ns_filter]
            start = bisect_right(keys, after) if after else 0

            def fetch(k: Any) -> tuple[tuple[str, str], dict | None]:
                return k, bucket.get(k[0], k[1])
        elif ns_filter is not None:
            sk = bucket.ns_keys.get(ns_filter)
            keys = sk.view() if sk is not None else []
            start = bisect_right(keys, after[1]) if after and after[0] == ns_filter else 0
            if after and after[0] != ns_filter:
                start = len(keys) if after[0] > ns_filter else 0
            objs = bucket.objects.get(ns_filter) or {}

            def fetch(k: Any) -> tuple[tuple[str, str], dict | None]:
                return (ns_filter, k), objs.get(k)
        else:
            keys = bucket.all_keys.view()
            start = bisect_right(keys, after) if after else 0

            def fetch(k: Any) -> tuple[tuple[str, str], dict | None]:
                return k, bucket.get(k[0], k[1])

        filtered = not (lsel.empty and fsel.empty)
        items: list[dict] = []
        last: tuple[str, str] | None = None
        i, n = start, len(keys)
        while i < n:
            key, obj = fetch(keys[i])
            i += 1
            if obj is None or (filtered and not (lsel.matches_object(obj) and fsel.matches(obj))):
                continue
            items.append(obj)
            if limit and len(items) >= limit:
                last = key
                break
        token = None
        remaining = None
        if last is not None and i < n:
            token = _encode_continue(list_rv, last[0], last[1])
            if not filtered:
                remaining = n - i
        if copy:
            items = [self._render(o, rtype) for o in items]
        elif any(o.get("apiVersion") != rtype.api_version for o in items):
            items = [dict(o, apiVersion=rtype.api_version, kind=rtype.kind) for o in items]
        return ListResult(items, str(list_rv), token, remaining)

    def count(self, rtype: ResourceType, namespace: str | None = None) -> int:
        bucket = self._bucket(rtype)
        if rtype.namespaced and namespace:
            return len(bucket.objects.get(namespace) or {})
        return bucket.size

    def iter_objects(self, rtype: ResourceType, namespace: str | None = None) -> Iterable[dict]:
        """Read-only iteration over the stored objects (no copies: do not mutate)."""
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            return
        if rtype.namespaced and namespace:
            yield from list((bucket.objects.get(namespace) or {}).values())
            return
        for objs in list(bucket.objects.values()):
            yield from list(objs.values())

    def pods_on_node(self, node: str) -> list[dict]:
        """Stored pods whose ``spec.nodeName`` is ``node`` (read-only, via the index)."""
        bucket = self._buckets.get(POD_KEY)
        if bucket is None:
            return []
        out = []
        for k in sorted(self._by_node.get(node, ())):
            ns, name = k.split("/", 1)
            obj = bucket.get(ns, name)
            if obj is not None:
                out.append(obj)
        return out

    def dependents(self, uid: str) -> list[dict]:
        """Stored objects whose ownerReferences name ``uid`` (read-only)."""
        out = []
        for dep in self._sorted_dependents(uid):
            obj = self._by_uid(dep)
            if obj is not None:
                out.append(obj)
        return out

    def _sorted_dependents(self, uid: str) -> list[str]:
        """Dependent uids of ``uid`` in a stable (resource, namespace, name) order."""
        deps = self._dependents.get(uid, ())
        return sorted(deps, key=lambda d: self._uids.get(d) or (("", ""), "", d))

    def _by_uid(self, uid: str) -> dict | None:
        loc = self._uids.get(uid)
        if loc is None:
            return None
        bucket = self._buckets.get(loc[0])
        return bucket.get(loc[1], loc[2]) if bucket else None

    # -- indexes ------------------------------------------------------------------
    def _index(self, key: tuple[str, str], ns: str, name: str, new: dict | None,
               old: dict | None) -> None:
        new_uid = _meta(new).get("uid") if new else None
        old_uid = _meta(old).get("uid") if old else None
        if old_uid and old_uid != new_uid:
            self._uids.pop(old_uid, None)
        if new_uid:
            self._uids[new_uid] = (key, ns, name)
        old_owners = _owner_uids(old) if old else set()
        new_owners = _owner_uids(new) if new else set()
        if old_owners != new_owners or old_uid != new_uid:
            for o in old_owners:
                deps = self._dependents.get(o)
                if deps is not None:
                    deps.discard(old_uid)
                    if not deps:
                        del self._dependents[o]
            for o in new_owners:
                self._dependents.setdefault(o, set()).add(new_uid)
        if key == POD_KEY:
            pkey = f"{ns}/{name}"
            old_node = (old.get("spec") or {}).get("nodeName") or "" if old else None
            new_node = (new.get("spec") or {}).get("nodeName") or "" if new else None
            if old_node != new_node:
                if old_node is not None:
                    pods = self._by_node.get(old_node)
                    if pods is not None:
                        pods.discard(pkey)
                        if not pods:
                            del self._by_node[old_node]
                if new_node is not None:
                    self._by_node.setdefault(new_node, set()).add(pkey)

    # -- change fan-out -----------------------------------------------------------
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, bucket: _Bucket, etype: str, obj: dict, old: dict | None) -> None:
        rv = int(_meta(obj).get("resourceVersion") or self._rv)
        bucket.record(rv, etype, obj, old)
        for w in list(bucket.watchers):
            w._offer(etype, obj, old, rv)
        for fn in list(self._subscribers):
            try:
                fn(etype, bucket.rtype, obj, old)
            except Exception:  # a broken controller must never break a write
                log.exception("store subscriber %r failed on %s %s", fn, etype,
                              _meta(obj).get("name"))

    # -- writes -------------------------------------------------------------------
    def create(self, obj: dict, *, rtype: ResourceType | None = None,
               reset_status: bool = False) -> dict:
        """Store a new object and return it as stored (a copy).

        ``reset_status=True`` drops the ``status`` sent by the client for types with a
        status subresource, as a real server's create does (the API server passes it;
        fixtures and controllers keep the default and may seed a status).

        Raises AlreadyExists, Invalid (bad or missing name or labels), NotFound
        (namespace absent) or Forbidden (namespace terminating).
        """
        rtype = rtype or self._rtype_for(obj)
        bucket = self._bucket(rtype)
        if not isinstance(obj, dict):
            raise BadRequest("object must be a JSON object")
        new = json_copy(obj)
        meta = new.get("metadata")
        if meta is None:
            meta = new["metadata"] = {}
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        if rtype.namespaced:
            ns = meta.get("namespace") or "default"
            meta["namespace"] = ns
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
            ns = ""
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise Invalid(f"{rtype.kind} is invalid: metadata.name: Required value: name or "
                              "generateName is required",
                              details={"kind": rtype.kind, "causes": [
                                  {"reason": "FieldValueRequired", "field": "metadata.name"}]})
            for _ in range(16):
                name = prefix + "".join(self._random.choice(_SUFFIX_CHARS) for _ in range(5))
                if bucket.get(ns, name) is None:
                    break
            meta["name"] = name
        if not isinstance(name, str):
            raise Invalid(f"{rtype.kind} is invalid: metadata.name must be a string")
        why = _validate_name(rtype.key, name)
        if why:
            raise Invalid(f'{rtype.kind} "{name}" is invalid: metadata.name: Invalid value: '
                          f'"{name}": {why}',
                          details={"name": name, "kind": rtype.kind, "causes": [
                              {"reason": "FieldValueInvalid", "field": "metadata.name",
                               "message": why}]})
        self._validate_meta(rtype, name, meta)
        if bucket.get(ns, name) is not None:
            raise AlreadyExists(f'{rtype.qualified} "{name}" already exists',
                                details={"name": name, "group": rtype.group,
                                         "kind": rtype.plural})
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        if reset_status and rtype.status_subresource:
            new.pop("status", None)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["generation"] = 1
        meta["creationTimestamp"] = self._now()
        self._defaults(rtype.key, new)
        crd_types = self._crd_prepare(new) if rtype.key == CRD_KEY else None
        meta["resourceVersion"] = str(self._next_rv())
        bucket.put(ns, name, new)
        self._index(rtype.key, ns, name, new, None)
        if crd_types is not None:
            self._crd_register(name, crd_types)
        self._emit(bucket, "ADDED", new, None)
        return self._render(new, rtype)

    @staticmethod
    def _validate_meta(rtype: ResourceType, name: str, meta: dict) -> None:
        """Labels must be valid (a real server answers 422 otherwise); annotations and
        labels must map strings to strings."""
        problems = []
        for field_name in ("labels", "annotations"):
            values = meta.get(field_name)
            if values is None:
                continue
            if not isinstance(values, dict):
                problems.append(f"metadata.{field_name}: must be a map of strings")
                continue
            for k, v in values.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    problems.append(f"metadata.{field_name}[{k!r}]: must be a string")
                    continue
                if field_name == "labels":
                    try:
                        _check_label_key(k)
                        _check_label_value(v)
                    except SelectorError as e:
                        problems.append(f"metadata.labels: Invalid value: {e}")
        if problems:
            raise Invalid(f'{rtype.kind} "{name}" is invalid: ' + "; ".join(problems),
                          details={"name": name, "kind": rtype.kind})

    def _defaults(self, key: tuple[str, str], obj: dict) -> None:
        """The few defaults a real API server adds that clients look at."""
        if key == NAMESPACE_KEY:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            status = obj.get("status") or {}
            status.setdefault("phase", "Active")
            obj["status"] = status
        elif key == POD_KEY:
            status = obj.get("status") or {}
            status.setdefault("phase", "Pending")
            obj["status"] = status

    def _check_namespace(self, ns: str) -> None:
        nsb = self._buckets.get(NAMESPACE_KEY)
        nsobj = nsb.get("", ns) if nsb else None
        if nsobj is None:
            raise NotFound(f'namespaces "{ns}" not found',
                           details={"name": ns, "group": "", "kind": "namespaces"})
        if _meta(nsobj).get("deletionTimestamp"):
            raise Forbidden(f"unable to create new content in namespace {ns} because it is "
                            "being terminated",
                            details={"name": ns, "kind": "namespaces"})

    def update(self, obj: dict, *, rtype: ResourceType | None = None,
               subresource: str | None = None, check_version: bool = True,
               preserve_status: bool = False) -> dict:
        """Replace an object. With ``check_version`` and a resourceVersion in ``obj``
        that differs from the stored one, raises Conflict. ``subresource="status"``
        only takes ``status`` from ``obj``. ``preserve_status=True`` keeps the stored
        status for types with a status subresource (what a real main-resource PUT does)."""
        rtype = rtype or self._rtype_for(obj)
        bucket = self._bucket(rtype)
        meta = _meta(obj)
        name = meta.get("name")
        if not name:
            raise BadRequest("metadata.name is required for an update")
        ns = self._ns(rtype, meta.get("namespace"))
        if rtype.namespaced and not ns:
            raise BadRequest("metadata.namespace is required for an update")
        stored = bucket.get(ns, name)
        if stored is None:
            raise self._not_found(rtype, name)
        if check_version:
            want = meta.get("resourceVersion")
            if want and str(want) != _meta(stored).get("resourceVersion"):
                raise Conflict(f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                               "the object has been modified; please apply your changes to "
                               "the latest version and try again",
                               details={"name": name, "group": rtype.group,
                                        "kind": rtype.plural})
        if subresource == "status":
            new = json_copy(stored)
            if "status" in obj:
                new["status"] = json_copy(obj["status"])
            else:
                new.pop("status", None)
        elif not subresource:
            new = json_copy(obj)
            if preserve_status and rtype.status_subresource:
                if "status" in stored:
                    new["status"] = json_copy(stored["status"])
                else:
                    new.pop("status", None)
        else:
            raise BadRequest(f"subresource {subresource!r} is not supported by update()")
        return self._replace(bucket, rtype, ns, name, stored, new)

    def _replace(self, bucket: _Bucket, rtype: ResourceType, ns: str, name: str,
                 stored: dict, new: dict) -> dict:
        smeta = stored["metadata"]
        nmeta = new.get("metadata")
        if not isinstance(nmeta, dict):
            nmeta = new["metadata"] = {}
        # Identity fields are the server's, whatever the client sent.
        for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation", "resourceVersion"):
            if k in smeta:
                nmeta[k] = smeta[k]
            else:
                nmeta.pop(k, None)
        new["apiVersion"] = stored.get("apiVersion")
        new["kind"] = stored.get("kind")
        if smeta.get("deletionTimestamp"):
            # Finalizers may only be removed from an object being deleted.
            added = set(nmeta.get("finalizers") or ()) - set(smeta.get("finalizers") or ())
            if added:
                raise Forbidden(f'{rtype.qualified} "{name}" is being deleted: no new '
                                f"finalizers may be added ({sorted(added)})")
        if new == stored:
            return self._render(stored, rtype)
        if nmeta.get("labels") != smeta.get("labels") or (
                nmeta.get("annotations") != smeta.get("annotations")):
            self._validate_meta(rtype, name, nmeta)
        if _spec_part(new) != _spec_part(stored):
            nmeta["generation"] = int(smeta.get("generation") or 0) + 1
        crd_types = self._crd_prepare(new) if rtype.key == CRD_KEY else None
        nmeta["resourceVersion"] = str(self._next_rv())
        bucket.put(ns, name, new)
        self._index(rtype.key, ns, name, new, stored)
        if crd_types is not None:
            self._crd_register(name, crd_types)
        self._emit(bucket, "MODIFIED", new, stored)
        if nmeta.get("deletionTimestamp") and not nmeta.get("finalizers"):
            final = self._remove(bucket, ns, name, "Background")
            return self._render(final, rtype)
        return self._render(new, rtype)

    def mutate(self, rtype: ResourceType, namespace: str | None, name: str,
               fn: Callable[[dict], Any], *, subresource: str | None = None) -> dict:
        """get + fn(obj) in place + update, for controllers (no version check)."""
        bucket = self._bucket(rtype)
        ns = self._ns(rtype, namespace)
        stored = bucket.get(ns, name)
        if stored is None:
            raise self._not_found(rtype, name)
        work = json_copy(stored)
        fn(work)
        if subresource == "status":
            new = json_copy(stored)
            if "status" in work:
                new["status"] = work["status"]
            else:
                new.pop("status", None)
        elif subresource:
            raise BadRequest(f"subresource {subresource!r} is not supported by mutate()")
        else:
            new = work
        return self._replace(bucket, rtype, ns, name, stored, new)

    # -- scale subresource ----------------------------------------------------------
    def get_scale(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        """The ``autoscaling/v1`` Scale of a deployment/replicaset/statefulset."""
        from twin.selectors import format_label_selector
        if not rtype.scale_subresource:
            raise NotFound(f"{rtype.qualified} has no scale subresource")
        obj = self.get(rtype, namespace, name)
        meta = obj["metadata"]
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": format_label_selector((obj.get("spec") or {}).get("selector"))},
        }

    def set_scale(self, rtype: ResourceType, namespace: str | None, name: str,
                  replicas: int, *, resource_version: str | None = None) -> dict:
        """Set ``spec.replicas`` through the scale subresource; returns the new Scale."""
        if not rtype.scale_subresource:
            raise NotFound(f"{rtype.qualified} has no scale subresource")
        stored = self.peek(rtype, namespace, name)
        if stored is None:
            raise self._not_found(rtype, name)
        if resource_version and resource_version != _meta(stored).get("resourceVersion"):
            raise Conflict(f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                           "the object has been modified")
        if not isinstance(replicas, int) or replicas < 0:
            raise Invalid(f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
        self.mutate(rtype, namespace, name,
                    lambda o: o.setdefault("spec", {}).__setitem__("replicas", replicas))
        return self.get_scale(rtype, namespace, name)

    # -- deletion -----------------------------------------------------------------
    def delete(self, rtype: ResourceType, namespace: str | None, name: str, *,
               propagation: str = "Background", grace_period: int | None = None,
               preconditions: dict | None = None) -> dict:
        """Delete an object; returns its last state (a copy).

        With finalizers, the object only gets ``deletionTimestamp`` and stays; otherwise it
        is removed and its dependents are garbage-collected (or orphaned).
        ``preconditions`` may hold ``uid``/``resourceVersion`` (as DeleteOptions).
        """
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise BadRequest(f"unknown propagationPolicy {propagation!r}")
        bucket = self._bucket(rtype)
        ns = self._ns(rtype, namespace)
        stored = bucket.get(ns, name)
        if stored is None:
            raise self._not_found(rtype, name)
        for k in ("uid", "resourceVersion"):
            want = (preconditions or {}).get(k)
            if want and want != _meta(stored).get(k):
                raise Conflict(f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                               f"Precondition failed: {k}: {want}, in object meta: "
                               f"{_meta(stored).get(k)}")
        final = self._delete(bucket, ns, name, propagation, grace_period)
        return self._render(final, rtype)

    def _delete(self, bucket: _Bucket, ns: str, name: str, propagation: str,
                grace_period: int | None) -> dict:
        stored = bucket.get(ns, name)
        assert stored is not None
        meta = stored["metadata"]
        if propagation == "Orphan":
            self._orphan(meta.get("uid"))
        is_ns = bucket.rtype.key == NAMESPACE_KEY
        if meta.get("finalizers") or is_ns:
            if meta.get("deletionTimestamp"):
                if is_ns:
                    self._maybe_finish_namespace(name)
                current = bucket.get(ns, name)
                return current if current is not None else stored
            new = json_copy(stored)
            new["metadata"]["deletionTimestamp"] = self._now()
            new["metadata"]["deletionGracePeriodSeconds"] = int(grace_period or 0)
            if is_ns:
                new.setdefault("status", {})["phase"] = "Terminating"
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            bucket.put(ns, name, new)
            self._emit(bucket, "MODIFIED", new, stored)
            if is_ns:
                self._empty_namespace(name)
                self._maybe_finish_namespace(name)
                current = bucket.get(ns, name)
                return current if current is not None else new
            return new
        if propagation == "Foreground":
            self._collect(meta.get("uid"), "Foreground")
        return self._remove(bucket, ns, name, propagation)

    def _remove(self, bucket: _Bucket, ns: str, name: str, propagation: str) -> dict:
        """Take the object out of storage, emit DELETED, then collect its dependents."""
        stored = bucket.pop(ns, name)
        assert stored is not None
        final = dict(stored)
        final["metadata"] = dict(stored["metadata"], resourceVersion=str(self._next_rv()))
        self._index(bucket.rtype.key, ns, name, None, stored)
        if bucket.rtype.key == CRD_KEY:
            self._crd_unregister(name, drop=True)
        self._emit(bucket, "DELETED", final, stored)
        uid = stored["metadata"].get("uid")
        if propagation == "Orphan":
            self._orphan(uid)
        else:
            self._collect(uid, "Background")
        if ns:
            nsb = self._buckets.get(NAMESPACE_KEY)
            nsobj = nsb.get("", ns) if nsb else None
            if nsobj is not None and _meta(nsobj).get("deletionTimestamp"):
                self._maybe_finish_namespace(ns)
        return final

    def _collect(self, uid: str | None, propagation: str) -> None:
        """Garbage-collect the dependents of a removed (or foreground-deleted) owner."""
        if not uid:
            return
        for dep_uid in self._sorted_dependents(uid):
            loc = self._uids.get(dep_uid)
            if loc is None:
                continue
            bucket = self._buckets.get(loc[0])
            dep = bucket.get(loc[1], loc[2]) if bucket else None
            if dep is None or _meta(dep).get("deletionTimestamp"):
                continue
            # A dependent with another live owner only loses the reference (real GC).
            alive = [r for r in _meta(dep).get("ownerReferences") or ()
                     if r.get("uid") != uid and r.get("uid") in self._uids
                     and r.get("uid") != dep_uid]
            if alive and propagation == "Background":
                self._strip_owner(bucket, loc[1], loc[2], uid)
            else:
                self._delete(bucket, loc[1], loc[2], propagation, None)
        if propagation == "Background":
            self._dependents.pop(uid, None)

    def _orphan(self, uid: str | None) -> None:
        if not uid:
            return
        for dep_uid in self._sorted_dependents(uid):
            loc = self._uids.get(dep_uid)
            bucket = self._buckets.get(loc[0]) if loc else None
            if bucket is not None and bucket.get(loc[1], loc[2]) is not None:
                self._strip_owner(bucket, loc[1], loc[2], uid)
        self._dependents.pop(uid, None)

    def _strip_owner(self, bucket: _Bucket, ns: str, name: str, owner_uid: str) -> None:
        stored = bucket.get(ns, name)
        if stored is None:
            return
        new = json_copy(stored)
        refs = [r for r in new["metadata"].get("ownerReferences") or ()
                if r.get("uid") != owner_uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._replace(bucket, bucket.rtype, ns, name, stored, new)

    def _empty_namespace(self, ns: str) -> None:
        for key, bucket in list(self._buckets.items()):
            if not bucket.rtype.namespaced or ns not in bucket.objects:
                continue
            for name in list(bucket.objects.get(ns, {})):
                if bucket.get(ns, name) is not None:
                    self._delete(bucket, ns, name, "Background", None)

    def _maybe_finish_namespace(self, ns: str) -> None:
        nsb = self._buckets.get(NAMESPACE_KEY)
        nsobj = nsb.get("", ns) if nsb else None
        if nsobj is None or not _meta(nsobj).get("deletionTimestamp"):
            return
        if _meta(nsobj).get("finalizers"):
            return
        for bucket in self._buckets.values():
            if bucket.rtype.namespaced and bucket.objects.get(ns):
                return
        self._remove(nsb, "", ns, "Background")

    def namespace_contents(self, ns: str) -> int:
        """How many objects live in namespace ``ns`` (all resources)."""
        return sum(len(b.objects.get(ns) or {}) for b in self._buckets.values()
                   if b.rtype.namespaced)

    # -- CRDs -----------------------------------------------------------------------
    def _crd_prepare(self, crd: dict) -> list[ResourceType]:
        """Validate a CRD, fill its status, and return the types it serves."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group") or ""
        plural = names.get("plural") or ""
        kind = names.get("kind") or ""
        name = _meta(crd).get("name")
        problems = []
        if not group or "." not in group:
            problems.append("spec.group: must be a DNS subdomain with at least one dot")
        if not plural or not kind:
            problems.append("spec.names.plural and spec.names.kind are required")
        if name != f"{plural}.{group}":
            problems.append(f"metadata.name: must be spec.names.plural+\".\"+spec.group "
                            f"({plural}.{group})")
        scope = spec.get("scope")
        if scope not in ("Namespaced", "Cluster"):
            problems.append("spec.scope: must be Namespaced or Cluster")
        versions = spec.get("versions") or []
        if not versions:
            problems.append("spec.versions: must have at least one version")
        if sum(1 for v in versions if v.get("storage")) != 1 and versions:
            problems.append("spec.versions: exactly one version must be the storage version")
        if problems:
            raise Invalid(f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: '
                          + "; ".join(problems), details={"name": name,
                                                          "kind": "CustomResourceDefinition"})
        for other in self._crd_types:
            if other == name:
                continue
            for rt in self._crd_types[other]:
                if rt.group == group and rt.kind == kind:
                    raise Invalid(f"spec.names.kind: {kind} is already used by {other}")
        if self._buckets.get((group, plural)) is not None and name not in self._crd_types:
            raise Invalid(f"{plural}.{group} is already served")
        types = []
        list_kind = names.get("listKind") or kind + "List"
        singular = names.get("singular") or kind.lower()
        storage = ""
        for v in versions:
            if v.get("storage"):
                storage = v["name"]
            if not v.get("served", True):
                continue
            sub = v.get("subresources") or {}
            cols = tuple(json_copy(c) for c in v.get("additionalPrinterColumns") or ())
            types.append(ResourceType(
                group=group, version=v["name"], plural=plural, kind=kind,
                namespaced=scope == "Namespaced", singular=singular,
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()), list_kind=list_kind,
                status_subresource="status" in sub, scale_subresource="scale" in sub,
                table_columns=cols))
        # Storage version first, so the bucket is keyed to it.
        types.sort(key=lambda t: t.version != storage)
        accepted = {"plural": plural, "singular": singular, "kind": kind, "listKind": list_kind}
        if names.get("shortNames"):
            accepted["shortNames"] = list(names["shortNames"])
        if names.get("categories"):
            accepted["categories"] = list(names["categories"])
        now = self._now()
        status = crd.get("status") if isinstance(crd.get("status"), dict) else {}
        stored_versions = list(status.get("storedVersions") or [])
        if storage and storage not in stored_versions:
            stored_versions.append(storage)
        crd["status"] = {
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "storedVersions": stored_versions,
        }
        old = next(iter(self._crd_types.get(name, ())), None)
        if old is not None:
            # Keep condition timestamps stable across updates (no spurious changes).
            prev = self._buckets[CRD_KEY].get("", name)
            prev_status = (prev or {}).get("status") or {}
            if prev_status.get("conditions"):
                crd["status"]["conditions"] = json_copy(prev_status["conditions"])
        return types

    def _crd_register(self, name: str, types: list[ResourceType]) -> None:
        # Only versions that stop being served go away: watches on the others stay open.
        keep = {(t.group, t.version, t.plural) for t in types}
        for rt in self._crd_types.get(name, []):
            if (rt.group, rt.version, rt.plural) not in keep:
                self.unregister(rt.group, rt.version, rt.plural)
        for rt in types:
            self.register(rt)
        self._crd_types[name] = list(types)

    def _crd_unregister(self, name: str, *, drop: bool) -> None:
        types = self._crd_types.get(name, [])
        if drop and types:
            # Objects go first, while their type is still served, so watchers see them go.
            self.drop_resource(types[0].group, types[0].plural, forget=False)
        self._crd_types.pop(name, None)
        for rt in types:
            self.unregister(rt.group, rt.version, rt.plural)
        if drop and types:
            bucket = self._buckets.pop((types[0].group, types[0].plural), None)
            for w in list(bucket.watchers if bucket else ()):
                w.close()

    def drop_resource(self, group: str, plural: str, *, forget: bool = True) -> None:
        """Delete every object of (group, plural) (DELETED events, no finalizers honoured);
        with ``forget``, also close its watches and drop the storage if nothing serves it."""
        bucket = self._buckets.get((group, plural))
        if bucket is None:
            return
        for ns, name in list(bucket.all_keys.view()):
            if bucket.get(ns, name) is not None:
                self._remove(bucket, ns, name, "Background")
        if forget:
            for w in list(bucket.watchers):
                w.close()
            if not any(t.key == (group, plural) for t in self._types.values()):
                del self._buckets[(group, plural)]

    # -- events -------------------------------------------------------------------
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
        w = _StoreWatch(self, bucket, rtype, ns, lsel, fsel, start)
        if send_initial_events:
            if ns is not None:
                objs = bucket.objects.get(ns) or {}
                initial = [objs[n] for n in (bucket.ns_keys[ns].view() if objs else [])]
            else:
                initial = [bucket.get(k[0], k[1]) for k in bucket.all_keys.view()]
            for obj in initial:
                if obj is not None and w._matches(obj):
                    w._put("ADDED", obj, int(_meta(obj).get("resourceVersion") or 0))
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


def _rt(group: str, version: str, plural: str, kind: str, namespaced: bool,
        short: tuple[str, ...] = (), *, status: bool = False, scale: bool = False,
        categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group=group, version=version, plural=plural, kind=kind,
                        namespaced=namespaced, singular=kind.lower(), short_names=short,
                        categories=categories, list_kind=kind + "List",
                        status_subresource=status, scale_subresource=scale)


def builtin_types() -> list[ResourceType]:
    """Every built-in resource the twin serves (core, apps, networking, rbac, policy,
    apiextensions, coordination, events, discovery ...)."""
    all_ = ("all",)
    rbac = "rbac.authorization.k8s.io"
    return [
        _rt("", "v1", "namespaces", "Namespace", False, ("ns",), status=True),
        _rt("", "v1", "nodes", "Node", False, ("no",), status=True),
        _rt("", "v1", "pods", "Pod", True, ("po",), status=True, categories=all_),
        _rt("", "v1", "services", "Service", True, ("svc",), status=True, categories=all_),
        _rt("", "v1", "endpoints", "Endpoints", True, ("ep",)),
        _rt("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
        _rt("", "v1", "secrets", "Secret", True),
        _rt("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
        _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",),
            status=True),
        _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), status=True),
        _rt("", "v1", "events", "Event", True, ("ev",)),
        _rt("", "v1", "limitranges", "LimitRange", True, ("limits",)),
        _rt("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), status=True),
        _rt("apps", "v1", "deployments", "Deployment", True, ("deploy",), status=True,
            scale=True, categories=all_),
        _rt("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), status=True, scale=True,
            categories=all_),
        _rt("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), status=True,
            categories=all_),
        _rt("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), status=True,
            scale=True, categories=all_),
        _rt("apps", "v1", "controllerrevisions", "ControllerRevision", True),
        _rt("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), status=True),
        _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
        _rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
        _rt(rbac, "v1", "roles", "Role", True),
        _rt(rbac, "v1", "rolebindings", "RoleBinding", True),
        _rt(rbac, "v1", "clusterroles", "ClusterRole", False),
        _rt(rbac, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
        _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",),
            status=True),
        _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions",
            "CustomResourceDefinition", False, ("crd", "crds"), status=True,
            categories=("api-extensions",)),
        _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
        _rt("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
        _rt("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
        _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    ]
