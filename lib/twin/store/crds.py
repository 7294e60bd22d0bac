"""Custom resources: a CustomResourceDefinition registers the types it serves.

Creating or updating a CRD validates it (group, names, scope, exactly one storage
version), fills its status (accepted names, NamesAccepted and Established conditions,
stored versions) and serves each of its served versions; the objects of every version
share one storage. A version that stops being served closes its watches; deleting the
CRD deletes its objects (watchers see them go) and then its storage.
"""
from __future__ import annotations

from .buckets import Bucket
from .errors import Invalid
from .objects import json_copy, meta_of
from .resource_types import CRD_KEY, ResourceType


class CRDMixin:
    """The :class:`~twin.store.Store`'s CRD handling.

    Uses the store's ``_crd_types``, ``_types`` and ``_buckets``, and its ``register``,
    ``unregister``, ``_remove`` and ``_now``.
    """

    _crd_types: dict[str, list[ResourceType]]
    _types: dict[tuple[str, str, str], ResourceType]
    _buckets: dict[tuple[str, str], Bucket]

    def _crd_prepare(self, crd: dict) -> list[ResourceType]:
        """Validate a CRD, fill its status, and return the types it serves."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group") or ""
        plural = names.get("plural") or ""
        kind = names.get("kind") or ""
        name = meta_of(crd).get("name")
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
