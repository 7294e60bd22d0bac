"""Reads: get, list with selectors and consistent paging, and the indexed lookups.

``get`` and ``list`` return deep copies: callers may mutate what they receive. ``list``
filters by label selector (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``) and
field selector (any dotted path; ``=``, ``==``, ``!=``), and pages with ``limit`` and
``continue``. Cost is proportional to the objects of that resource (and namespace),
never to the whole store; ``spec.nodeName`` selections of pods use an index.
"""
from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Iterable

from twin.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

from .buckets import Bucket
from .conversion import to_served
from .errors import BadRequest
from .resource_types import POD_KEY, ResourceType


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None



def encode_continue(rv: int, ns: str, name: str) -> str:
    raw = json.dumps({"v": 1, "rv": rv, "ns": ns, "name": name}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        return int(data["rv"]), str(data["ns"]), str(data["name"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BadRequest(f"invalid continue token: {e}") from None



class ReadsMixin:
    """The :class:`~twin.store.Store`'s reads.

    Uses the store's ``_rv``, ``_buckets``, ``_uids``, ``_dependents`` and ``_by_node``
    (kept by ``_index``), and its ``_bucket``, ``_ns``, ``_not_found`` and ``_render``.
    """

    _rv: int
    _buckets: dict[tuple[str, str], Bucket]
    _uids: dict[str, tuple[tuple[str, str], str, str]]
    _dependents: dict[str, set[str]]
    _by_node: dict[str, set[str]]

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
            list_rv, cns, cname = decode_continue(continue_token)
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
            token = encode_continue(list_rv, last[0], last[1])
            if not filtered:
                remaining = n - i
        if copy:
            items = [self._render(o, rtype) for o in items]
        elif rtype.storage:
            items = [to_served(dict(o, apiVersion=rtype.api_version, kind=rtype.kind), rtype.group)
                     for o in items]
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
