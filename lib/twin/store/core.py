"""The store itself: types it serves, identity and versions, creates and updates.

``create`` sets ``metadata.uid``, ``resourceVersion`` (a global, monotonically
increasing integer rendered as a string), ``generation`` (1) and ``creationTimestamp``
(RFC 3339, UTC, seconds); ``metadata.generateName`` is honoured. Every write bumps
``resourceVersion``; a change to anything but ``status``/``metadata`` bumps
``generation``; an update that changes nothing is a no-op (no new version, no event).
The indexes (uid, owner -> dependents, pods by node) are kept here, on every write.

Reads, watches, deletion and CRDs are the mixins of :mod:`.reads`, :mod:`.watch`,
:mod:`.garbage_collection` and :mod:`.crds`; they share this class's state.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from twin.selectors import format_label_selector

from .buckets import Bucket
from .conversion import to_storage
from .crds import CRDMixin
from .errors import AlreadyExists, BadRequest, Conflict, Forbidden, Invalid, NotFound
from .garbage_collection import GarbageCollectionMixin
from .objects import json_copy, meta_of, new_uid, owner_uids, render, spec_part, utc_now
from .reads import ReadsMixin
from .resource_types import CRD_KEY, NAMESPACE_KEY, POD_KEY, ResourceType, builtin_types
from .validation import apply_defaults, validate_meta, validate_name
from .watch import Subscriber, WatchMixin

_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"   # what the real generateName uses


class Store(ReadsMixin, WatchMixin, GarbageCollectionMixin, CRDMixin):
    """In-memory object store (the contract is in :mod:`twin.store`'s docstring).

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
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}   # uid -> (key, ns, name)
        self._dependents: dict[str, set[str]] = {}   # owner uid -> dependent uids
        self._by_node: dict[str, set[str]] = {}       # spec.nodeName -> "ns/name" of pods
        self._subscribers: list[Subscriber] = []
        self._crd_types: dict[str, list[ResourceType]] = {}   # CRD name -> its served types
        self._group_kinds: dict[tuple[str, str], ResourceType | None] = {}   # kind_type's answers
        self._now = now or utc_now
        self._random = random.Random(seed)
        if register_builtins:
            for rt in builtin_types():
                self.register(rt)

    # -- types ------------------------------------------------------------------
    def register(self, rtype: ResourceType) -> None:
        """Serve ``rtype`` (replacing a previous registration of the same version)."""
        self._group_kinds.clear()
        old = self._types.get((rtype.group, rtype.version, rtype.plural))
        if old is not None:
            self._kinds.pop((old.api_version, old.kind), None)
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._kinds[(rtype.api_version, rtype.kind)] = rtype
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            self._buckets[rtype.key] = Bucket(rtype, self._history)
        elif not rtype.storage and (bucket.rtype.version == rtype.version
                                    or not self._served(bucket.rtype)):
            bucket.rtype = rtype

    def _served(self, rtype: ResourceType) -> bool:
        return self._types.get((rtype.group, rtype.version, rtype.plural)) is rtype

    def unregister(self, group: str, version: str, plural: str) -> None:
        """Stop serving one version; the objects stay until the last version goes with
        :meth:`drop_resource` (CRD deletion does both)."""
        rtype = self._types.pop((group, version, plural), None)
        if rtype is None:
            return
        self._group_kinds.clear()
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

    def kind_type(self, group: str, kind: str) -> ResourceType | None:
        """The first served type of ``kind`` in API group ``group`` (any version), in
        registration order, or None; what a client naming a resource by group and
        kind (Argo CD's resource list) finds. Answers are kept until the types change.
        """
        key = (group, kind)
        try:
            return self._group_kinds[key]
        except KeyError:
            pass
        found = next((t for t in self._types.values() if t.group == group and t.kind == kind), None)
        self._group_kinds[key] = found
        return found

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

    def _bucket(self, rtype: ResourceType) -> Bucket:
        bucket = self._buckets.get(rtype.key)
        if bucket is None:
            raise NotFound(f"the server could not find the requested resource ({rtype.qualified})",
                           details={"group": rtype.group, "kind": rtype.plural})
        return bucket

    # -- identity and rendering ------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def _ns(self, rtype: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rtype.namespaced else ""

    def _not_found(self, rtype: ResourceType, name: str) -> NotFound:
        return NotFound(f'{rtype.qualified} "{name}" not found',
                        details={"name": name, "group": rtype.group, "kind": rtype.plural})

    def _render(self, obj: dict, rtype: ResourceType) -> dict:
        return render(obj, rtype)

    # -- indexes ------------------------------------------------------------------
    def _index(self, key: tuple[str, str], ns: str, name: str, new: dict | None,
               old: dict | None) -> None:
        new_uid = meta_of(new).get("uid") if new else None
        old_uid = meta_of(old).get("uid") if old else None
        if old_uid and old_uid != new_uid:
            self._uids.pop(old_uid, None)
        if new_uid:
            self._uids[new_uid] = (key, ns, name)
        old_owners = owner_uids(old) if old else set()
        new_owners = owner_uids(new) if new else set()
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

    # -- versions -------------------------------------------------------------------
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # -- writes -------------------------------------------------------------------
    def create(self, obj: dict, *, rtype: ResourceType | None = None,
               reset_status: bool = False, adopt: bool = False, copy_result: bool = True) -> dict:
        """Store a new object and return it as stored (a copy).

        ``reset_status=True`` drops the ``status`` sent by the client for types with a
        status subresource, as a real server's create does (the API server passes it;
        fixtures and controllers keep the default and may seed a status).

        For bulk loads (a fixture of 50,000 pods): ``adopt=True`` stores ``obj`` itself
        instead of a copy (the caller gives it up: it must not change it afterwards), and
        ``copy_result=False`` returns the stored object itself (read-only) instead of a
        copy. Each saves a deep copy per object.

        Raises AlreadyExists, Invalid (bad or missing name or labels), NotFound
        (namespace absent) or Forbidden (namespace terminating).
        """
        rtype = rtype or self._rtype_for(obj)
        bucket = self._bucket(rtype)
        if not isinstance(obj, dict):
            raise BadRequest("object must be a JSON object")
        new = obj if adopt else json_copy(obj)
        if rtype.storage:   # a view of another resource: store in that resource's shape
            new = to_storage(new, rtype.group)
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
        why = validate_name(rtype.key, name)
        if why:
            raise Invalid(f'{rtype.kind} "{name}" is invalid: metadata.name: Invalid value: '
                          f'"{name}": {why}',
                          details={"name": name, "kind": rtype.kind, "causes": [
                              {"reason": "FieldValueInvalid", "field": "metadata.name",
                               "message": why}]})
        validate_meta(rtype, name, meta)
        if bucket.get(ns, name) is not None:
            raise AlreadyExists(f'{rtype.qualified} "{name}" already exists',
                                details={"name": name, "group": rtype.group,
                                         "kind": rtype.plural})
        stored_as = bucket.rtype if rtype.storage else rtype
        new["apiVersion"] = stored_as.api_version
        new["kind"] = stored_as.kind
        if reset_status and rtype.status_subresource:
            new.pop("status", None)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta["uid"] = new_uid()
        meta["generation"] = 1
        meta["creationTimestamp"] = self._now()
        apply_defaults(rtype.key, new)
        crd_types = self._crd_prepare(new) if rtype.key == CRD_KEY else None
        meta["resourceVersion"] = str(self._next_rv())
        bucket.put(ns, name, new)
        self._index(rtype.key, ns, name, new, None)
        if crd_types is not None:
            self._crd_register(name, crd_types)
        self._emit(bucket, "ADDED", new, None)
        return self._render(new, rtype) if copy_result else new

    def _check_namespace(self, ns: str) -> None:
        nsb = self._buckets.get(NAMESPACE_KEY)
        nsobj = nsb.get("", ns) if nsb else None
        if nsobj is None:
            raise NotFound(f'namespaces "{ns}" not found',
                           details={"name": ns, "group": "", "kind": "namespaces"})
        if meta_of(nsobj).get("deletionTimestamp"):
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
        meta = meta_of(obj)
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
            if want and str(want) != meta_of(stored).get("resourceVersion"):
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
            new = to_storage(json_copy(obj), rtype.group) if rtype.storage else json_copy(obj)
            if preserve_status and rtype.status_subresource:
                if "status" in stored:
                    new["status"] = json_copy(stored["status"])
                else:
                    new.pop("status", None)
        else:
            raise BadRequest(f"subresource {subresource!r} is not supported by update()")
        return self._replace(bucket, rtype, ns, name, stored, new)

    def _replace(self, bucket: Bucket, rtype: ResourceType, ns: str, name: str,
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
            validate_meta(rtype, name, nmeta)
        if spec_part(new) != spec_part(stored):
            nmeta["generation"] = int(smeta.get("generation") or 0) + 1
        crd_types = self._crd_prepare(new) if rtype.key == CRD_KEY else None
        nmeta["resourceVersion"] = str(self._next_rv())
        bucket.put(ns, name, new)
        self._index(rtype.key, ns, name, new, stored)
        if crd_types is not None:
            self._crd_register(name, crd_types)
        self._emit(bucket, "MODIFIED", new, stored)
        if nmeta.get("deletionTimestamp") and not nmeta.get("finalizers") and \
                not nmeta.get("deletionGracePeriodSeconds"):   # a pod still terminating stays
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
        if resource_version and resource_version != meta_of(stored).get("resourceVersion"):
            raise Conflict(f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                           "the object has been modified")
        if not isinstance(replicas, int) or replicas < 0:
            raise Invalid(f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
        self.mutate(rtype, namespace, name,
                    lambda o: o.setdefault("spec", {}).__setitem__("replicas", replicas))
        return self.get_scale(rtype, namespace, name)
