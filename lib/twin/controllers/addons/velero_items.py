"""What a Velero backup includes and what a restore does with each item (pure).

Velero's built-in exclusions, its default restore order, the namespace/resource/label
filters of a Backup or Restore spec, and the decision per backed-up item (create,
update, or skip: owned, identical, exists). :mod:`.velero` runs the backups and
restores and documents the behaviour as a whole.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ...selectors import from_label_selector
from ...store import json_copy
from .common import meta, service_spec_portable

VELERO = "velero.io"


def parse_go_duration(text: str | None, default: float) -> float:
    """Seconds of a Go duration such as ``720h0m0s`` (``default`` when empty/invalid).

    >>> parse_go_duration("720h0m0s", 0)
    2592000.0
    >>> parse_go_duration("1h30m", 0)
    5400.0
    """
    if not text:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return default
    return sum(float(n) * units[u] for n, u in parts)


def strip_server_fields(obj: dict) -> dict:
    """A copy without what the server owns (uid, resourceVersion, status, ...)."""
    out = json_copy(obj)
    md = out.setdefault("metadata", {})
    for k in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        md.pop(k, None)
    out.pop("status", None)
    return out


def _content(obj: dict) -> dict:
    """What a restore/diff compares: labels, annotations and every non-meta field."""
    md = meta(obj)
    return {"labels": md.get("labels") or {}, "annotations": md.get("annotations") or {},
            **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}}


#: Resources Velero never backs up (its built-in exclusions).
VELERO_EXCLUDED = frozenset({
    ("", "nodes"), ("", "events"), ("events.k8s.io", "events"),
    (VELERO, "backups"), (VELERO, "restores"), (VELERO, "backuprepositories"),
    (VELERO, "resticrepositories"), ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
})

#: Velero's default restore order: these first, in this order, then the rest.
RESTORE_PRIORITY = (
    ("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"),
    ("storage.k8s.io", "storageclasses"), ("", "persistentvolumes"),
    ("", "persistentvolumeclaims"), ("", "serviceaccounts"), ("", "secrets"),
    ("", "configmaps"), ("", "limitranges"), ("", "pods"), ("apps", "replicasets"),
    ("", "endpoints"), ("", "services"),
)

#: Kinds skipped on restore when a controller owns them (the owner recreates them).
OWNED_SKIP = frozenset({("", "pods"), ("apps", "replicasets"), ("", "endpoints"),
                        ("discovery.k8s.io", "endpointslices"),
                        ("apps", "controllerrevisions")})


def _resource_matches(patterns: Iterable[str], group: str, plural: str) -> bool:
    for p in patterns:
        p = p.strip().lower()
        if p == "*" or p == plural or p == (f"{plural}.{group}" if group else plural):
            return True
    return False


@dataclass
class ItemFilter:
    """Which items a Backup/Restore spec selects (namespaces, resources, cluster scope).

    Example:
        >>> f = ItemFilter.from_spec({"includedNamespaces": ["*"], "excludedNamespaces": ["kube-system"]})
        >>> f.includes("", "configmaps", True, "default"), f.includes("", "configmaps", True, "kube-system")
        (True, False)
        >>> f.includes("", "nodes", False, "")
        False
    """

    included_ns: list[str] = field(default_factory=lambda: ["*"])
    excluded_ns: list[str] = field(default_factory=list)
    included_res: list[str] = field(default_factory=lambda: ["*"])
    excluded_res: list[str] = field(default_factory=list)
    cluster: bool | None = None
    labels: Any = None

    @classmethod
    def from_spec(cls, spec: dict) -> "ItemFilter":
        sel = spec.get("labelSelector")
        return cls(included_ns=list(spec.get("includedNamespaces") or ["*"]),
                   excluded_ns=list(spec.get("excludedNamespaces") or []),
                   included_res=list(spec.get("includedResources") or ["*"]),
                   excluded_res=list(spec.get("excludedResources") or []),
                   cluster=spec.get("includeClusterResources"),
                   labels=from_label_selector(sel) if isinstance(sel, dict) else None)

    @property
    def all_namespaces(self) -> bool:
        return "*" in self.included_ns and not self.excluded_ns

    def namespace_ok(self, ns: str) -> bool:
        if ns in self.excluded_ns:
            return False
        return "*" in self.included_ns or ns in self.included_ns

    def includes(self, group: str, plural: str, namespaced: bool, ns: str,
                 obj: dict | None = None) -> bool:
        if (group, plural) in VELERO_EXCLUDED:
            return False
        if _resource_matches(self.excluded_res, group, plural):
            return False
        if not _resource_matches(self.included_res, group, plural):
            return False
        if self.labels is not None and obj is not None and not self.labels.matches_object(obj):
            return False
        if namespaced:
            return self.namespace_ok(ns)
        if (group, plural) == ("", "namespaces"):
            # The Namespace objects of included namespaces always go along.
            return obj is None or self.namespace_ok(meta(obj).get("name") or "")
        if self.cluster is None:
            return self.all_namespaces
        return bool(self.cluster)


@dataclass
class BackupItem:
    group: str
    plural: str
    namespaced: bool
    obj: dict

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.plural, meta(self.obj).get("namespace") or "",
                meta(self.obj).get("name") or "")


@dataclass
class RestoreDecision:
    """What a restore does with one backed-up item.

    action: ``create`` | ``update`` | ``skip-owned`` | ``skip-identical`` | ``skip-exists``
    (the last one counts a warning).
    """

    action: str
    reason: str

    @property
    def restores(self) -> bool:
        return self.action in ("create", "update")


def restore_decision(group: str, plural: str, backed: dict, live: dict | None,
                     policy: str) -> RestoreDecision:
    """Decide one item of a restore (pure).

    Example:
        >>> cm = {"metadata": {"name": "a", "namespace": "d"}, "data": {"k": "1"}}
        >>> restore_decision("", "configmaps", cm, None, "none").action
        'create'
        >>> restore_decision("", "configmaps", cm, dict(cm, data={"k": "2"}), "none").action
        'skip-exists'
        >>> restore_decision("", "configmaps", cm, dict(cm, data={"k": "2"}), "update").action
        'update'
    """
    owner = next((r for r in meta(backed).get("ownerReferences") or () if r.get("controller")), None)
    if (group, plural) in OWNED_SKIP and owner is not None:
        return RestoreDecision("skip-owned", f"owned by {owner.get('kind')} {owner.get('name')}")
    if live is None:
        return RestoreDecision("create", "not in the cluster")
    want, have = _content(clean_for_restore(group, plural, backed)), _content(live)
    # Restore labels are not a difference worth a warning.
    for c in (want, have):
        c["labels"] = {k: v for k, v in c["labels"].items() if not k.startswith("velero.io/")}
    if plural == "services":
        for c in (want, have):
            c["spec"] = service_spec_portable(c.get("spec") or {})
    if want == have:
        return RestoreDecision("skip-identical", "already exists, identical")
    if policy == "update":
        return RestoreDecision("update", "exists and differs; existingResourcePolicy: update")
    return RestoreDecision("skip-exists", "already exists and differs from the backup "
                                          "(not overwritten: existingResourcePolicy is none)")


def clean_for_restore(group: str, plural: str, obj: dict) -> dict:
    """The object as Velero creates it: no server fields; Services without clusterIP
    (unless headless) and nodePorts, so the new cluster allocates them."""
    out = strip_server_fields(obj)
    if (group, plural) == ("", "services"):
        out["spec"] = service_spec_portable(out.get("spec") or {})
    if (group, plural) == ("", "pods"):
        # The scheduler places a restored pod again (its old node may be gone).
        (out.get("spec") or {}).pop("nodeName", None)
    return out


def restore_order(items: list[BackupItem]) -> list[BackupItem]:
    """Velero's priority order, then the remaining resources by name; cluster-scoped
    before namespaced within a resource, then by namespace/name."""
    prio = {k: i for i, k in enumerate(RESTORE_PRIORITY)}
    return sorted(items, key=lambda it: (prio.get((it.group, it.plural), len(prio)),
                                         it.plural, it.group, it.key[2], it.key[3]))
