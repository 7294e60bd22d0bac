"""Deletion: finalizers, garbage collection of dependents, namespace termination.

``delete`` on an object with finalizers only sets ``deletionTimestamp`` (and
``deletionGracePeriodSeconds``); the object goes when an update empties its finalizers.
Removing an object collects its dependents (objects whose ``ownerReferences`` name its
uid) recursively: "Background" deletes them after the owner, "Foreground" before it,
"Orphan" strips the reference instead; a dependent with another live owner only loses
the reference, as the real garbage collector does. Deleting a namespace marks it
Terminating, deletes everything inside at once, and removes it once nothing is left.

Pods are deleted gracefully (:func:`pod_grace_seconds`): a bound, running pod only gets
``deletionTimestamp`` (now + grace) and ``deletionGracePeriodSeconds``; the kubelet
stops its containers and deletes it again with grace 0, which removes it (or leaves it
to its finalizers). A second delete may only shorten the grace period.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .buckets import Bucket
from .errors import BadRequest, Conflict
from .objects import json_copy, meta_of
from .resource_types import CRD_KEY, NAMESPACE_KEY, POD_KEY, ResourceType

DEFAULT_POD_GRACE_SECONDS = 30


def pod_grace_seconds(pod: dict, requested: int | None) -> int:
    """The grace period of deleting ``pod`` (the API server's pod strategy).

    ``requested`` (DeleteOptions.gracePeriodSeconds) wins over
    ``spec.terminationGracePeriodSeconds`` (30 by default); a pod not bound to a node
    or already Succeeded/Failed goes at once (0); a negative value means 1.

    Example:
        >>> pod_grace_seconds({"spec": {"nodeName": "n"}}, None)
        30
        >>> pod_grace_seconds({"spec": {}}, 10)
        0
    """
    spec = pod.get("spec") or {}
    if requested is not None:
        period = int(requested)
    else:
        period = int(spec.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_SECONDS) or 0)
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        period = 0
    return 1 if period < 0 else period


def _in_seconds(seconds: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class GarbageCollectionMixin:
    """The :class:`~twin.store.Store`'s deletions.

    Uses the store's ``_buckets``, ``_uids`` and ``_dependents`` (kept by ``_index``),
    and its ``_replace``, ``_emit``, ``_next_rv``, ``_now`` and ``_crd_unregister``.
    """

    _buckets: dict[tuple[str, str], Bucket]
    _uids: dict[str, tuple[tuple[str, str], str, str]]
    _dependents: dict[str, set[str]]

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
            if want and want != meta_of(stored).get(k):
                raise Conflict(f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                               f"Precondition failed: {k}: {want}, in object meta: "
                               f"{meta_of(stored).get(k)}")
        final = self._delete(bucket, ns, name, propagation, grace_period)
        return self._render(final, rtype)

    def _delete(self, bucket: Bucket, ns: str, name: str, propagation: str,
                grace_period: int | None) -> dict:
        stored = bucket.get(ns, name)
        assert stored is not None
        meta = stored["metadata"]
        if propagation == "Orphan":
            self._orphan(meta.get("uid"))
        if bucket.rtype.key == POD_KEY:
            # Pods terminate gracefully: the kubelet stops the containers, then deletes
            # the pod with grace 0 (deletionGracePeriodSeconds 0 lets it go).
            grace = pod_grace_seconds(stored, grace_period)
            if grace > 0 or meta.get("deletionGracePeriodSeconds"):
                return self._graceful(bucket, ns, name, stored, grace)
            grace_period = grace
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

    def _graceful(self, bucket: Bucket, ns: str, name: str, stored: dict, grace: int) -> dict:
        """Set or shorten a pod's graceful deletion; with grace 0 (force) it goes now
        unless finalizers hold it."""
        meta = stored["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and int(current) <= grace:
            return stored   # already terminating at least as fast
        if grace == 0 and not meta.get("finalizers"):
            return self._remove(bucket, ns, name, "Background")
        new = json_copy(stored)
        new["metadata"]["deletionTimestamp"] = _in_seconds(grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        bucket.put(ns, name, new)
        self._emit(bucket, "MODIFIED", new, stored)
        return new

    def _remove(self, bucket: Bucket, ns: str, name: str, propagation: str) -> dict:
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
            if nsobj is not None and meta_of(nsobj).get("deletionTimestamp"):
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
            if dep is None or meta_of(dep).get("deletionTimestamp"):
                continue
            # A dependent with another live owner only loses the reference (real GC).
            alive = [r for r in meta_of(dep).get("ownerReferences") or ()
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

    def _strip_owner(self, bucket: Bucket, ns: str, name: str, owner_uid: str) -> None:
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
        if nsobj is None or not meta_of(nsobj).get("deletionTimestamp"):
            return
        if meta_of(nsobj).get("finalizers"):
            return
        for bucket in self._buckets.values():
            if bucket.rtype.namespaced and bucket.objects.get(ns):
                return
        self._remove(nsb, "", ns, "Background")

    def namespace_contents(self, ns: str) -> int:
        """How many objects live in namespace ``ns`` (all resources)."""
        return sum(len(b.objects.get(ns) or {}) for b in self._buckets.values()
                   if b.rtype.namespaced)
