"""Argo CD's view of an object (pure): the "git" copy, drift, re-applying, health.

Drift is a desired field missing or different in the live object, or the object
deleted. Fields added by others (controllers' annotations, ...) are not drift, as with
Argo CD's diff that only looks at the fields git sets; annotations are not compared at
all. ``ignoreDifferences`` JSON pointers are honoured. The controllers that use this
are :mod:`.argocd` and :mod:`.applicationsets`.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from ...store import json_copy
from .common import meta, service_spec_portable

ARGO = "argoproj.io"
ResKey = tuple[str, str, str, str]          # (group, kind, namespace, name)
AppKey = tuple[str, str]                    # (namespace, name)
CHILD_POLICY_POINTERS = {("argoproj.io", "Application"): "/spec/syncPolicy",
                         ("argoproj.io", "ApplicationSet"): "/spec/template/spec/syncPolicy"}


def desired_of(obj: dict) -> dict:
    """The "git" copy of a live object: labels and every top-level field but status and
    metadata (annotations left out: controllers write them), without what the server
    allocates (a Service's cluster IPs and node ports, a PVC's bound volume), which git
    never holds."""
    md = meta(obj)
    out = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
           "metadata": {"name": md.get("name")}}
    if md.get("namespace"):
        out["metadata"]["namespace"] = md["namespace"]
    if md.get("labels"):
        out["metadata"]["labels"] = json_copy(md["labels"])
    for k, v in obj.items():
        if k not in ("apiVersion", "kind", "metadata", "status"):
            out[k] = json_copy(v)
    spec = out.get("spec")
    if isinstance(spec, dict):
        if obj.get("kind") == "Service":
            out["spec"] = service_spec_portable(spec)
            for k in ("ipFamilies", "ipFamilyPolicy"):
                out["spec"].pop(k, None)
        elif obj.get("kind") == "PersistentVolumeClaim":
            spec.pop("volumeName", None)
    return out


def _subset(want: Any, have: Any) -> bool:
    """Every field of ``want`` is in ``have`` with the same value (lists: same length,
    element-wise subset)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(_subset(a, b) for a, b in zip(want, have))
    return want == have


def _pointer_parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/") if p]


def remove_pointer(obj: dict, pointer: str) -> None:
    """Delete the field at a JSON pointer (nothing when absent)."""
    parts = _pointer_parts(pointer)
    node: Any = obj
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return
        node = node[p]
    if isinstance(node, dict) and parts:
        node.pop(parts[-1], None)


def get_pointer(obj: dict, pointer: str) -> tuple[bool, Any]:
    """``(found, value)`` at a JSON pointer."""
    node: Any = obj
    for p in _pointer_parts(pointer):
        if not isinstance(node, dict) or p not in node:
            return False, None
        node = node[p]
    return True, node


def set_pointer(obj: dict, pointer: str, value: Any) -> None:
    """Set a copy of ``value`` at a JSON pointer, creating the dicts on the way."""
    parts = _pointer_parts(pointer)
    node = obj
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)


def drift(want: dict, live: dict | None, ignore: Iterable[str] = ()) -> bool:
    """Whether ``live`` drifted from ``want`` (pure).

    Example:
        >>> want = desired_of({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 2}})
        >>> drift(want, {"kind": "Deployment", "metadata": {"name": "a", "annotations": {"x": "y"}},
        ...              "spec": {"replicas": 2, "paused": False}})
        False
        >>> drift(want, {"metadata": {"name": "a"}, "spec": {"replicas": 0}})
        True
        >>> drift(want, None)
        True
    """
    if live is None:
        return True
    # Compared in place (no copy of ``want``): an ignored pointer is a key path skipped,
    # as removing it from a copy would (a pointer through a list removes nothing there).
    ignored = {tuple(_pointer_parts(p)) for p in ignore}
    ignored.update({("apiVersion",), ("kind",)})
    above = {path[:i] for path in ignored for i in range(1, len(path))}
    return not _subset_skipping(want, live, (), ignored, above)


def _subset_skipping(want: Any, have: Any, path: tuple[str, ...], ignored: set[tuple[str, ...]],
                     above: set[tuple[str, ...]]) -> bool:
    """:func:`_subset` of a dict ``want`` with the key paths in ``ignored`` left out
    (``above``: the paths that lead to one)."""
    if not isinstance(want, dict):
        return _subset(want, have)
    if not isinstance(have, dict):
        return False
    for k, v in want.items():
        at = path + (k,)
        if at in ignored:
            continue
        if k not in have:
            return False
        if not (_subset_skipping(v, have[k], at, ignored, above) if at in above else _subset(v, have[k])):
            return False
    return True


def apply_desired(want: dict, live: dict, ignore: Iterable[str] = ()) -> dict:
    """``live`` with ``want``'s fields put back (dicts merged, other values replaced),
    keeping the live value at every ignored pointer."""
    def merge(dst: Any, src: Any) -> Any:
        if isinstance(src, dict) and isinstance(dst, dict):
            for k, v in src.items():
                dst[k] = merge(dst.get(k), v)
            return dst
        return copy.deepcopy(src)
    out = copy.deepcopy(live)
    w = copy.deepcopy(want)
    w.pop("apiVersion", None)
    w.pop("kind", None)
    for p in ignore:
        remove_pointer(w, p)
    merge(out, w)
    return out


def _automated(app: dict) -> dict | None:
    auto = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
    if auto is None or auto.get("enabled", True) is False:
        return None
    return auto


def self_heals(app: dict) -> bool:
    auto = _automated(app)
    return bool(auto and auto.get("selfHeal"))


def ignored_pointers(app: dict, rk: ResKey, parent_reverts: bool) -> list[str]:
    """The JSON pointers a diff of resource ``rk`` ignores: the app's ``ignoreDifferences``
    entries for it, plus a parent's implicit entry for its child apps' sync policy
    (left out when ``parent_reverts``, the ``argocd_parent_reverts`` fault)."""
    out = []
    for d in (app.get("spec") or {}).get("ignoreDifferences") or ():
        if (d.get("group") or "") != rk[0] or d.get("kind") != rk[1]:
            continue
        if d.get("name") and d["name"] != rk[3]:
            continue
        if d.get("namespace") and d["namespace"] != rk[2]:
            continue
        out.extend(d.get("jsonPointers") or ())
    implicit = CHILD_POLICY_POINTERS.get((rk[0], rk[1]))
    if implicit and not parent_reverts:
        out.append(implicit)
    return out


HEALTH_ORDER = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")


def resource_health(kind: str, obj: dict | None) -> tuple[str, str]:
    """Argo CD's built-in health of one live object: (status, message).

    Example:
        >>> resource_health("Deployment", {"spec": {"replicas": 2}, "status": {"updatedReplicas": 2,
        ...                 "availableReplicas": 1, "replicas": 2}})[0]
        'Progressing'
        >>> resource_health("Service", None)[0]
        'Missing'
    """
    if obj is None:
        return "Missing", ""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Deployment":
        if spec.get("paused"):
            return "Suspended", "Deployment is paused"
        want = spec.get("replicas", 1)
        if st.get("updatedReplicas", 0) < want:
            return "Progressing", (f"Waiting for rollout to finish: {st.get('updatedReplicas', 0)} out "
                                   f"of {want} new replicas have been updated...")
        if st.get("availableReplicas", 0) < st.get("updatedReplicas", 0):
            return "Progressing", (f"Waiting for rollout to finish: {st.get('availableReplicas', 0)} of "
                                   f"{st.get('updatedReplicas', 0)} updated replicas are available...")
    elif kind == "StatefulSet":
        want = spec.get("replicas", 1)
        if st.get("readyReplicas", 0) < want:
            return "Progressing", f"Waiting for {want - st.get('readyReplicas', 0)} pods to be ready..."
    elif kind == "DaemonSet":
        if st.get("numberAvailable", 0) < st.get("desiredNumberScheduled", 0):
            return "Progressing", (f"Waiting for daemon set rollout to finish: {st.get('numberAvailable', 0)} "
                                   f"of {st.get('desiredNumberScheduled', 0)} updated pods are available...")
    elif kind == "PersistentVolumeClaim":
        if st.get("phase") == "Pending":
            return "Progressing", "PVC is pending"
        if st.get("phase") == "Lost":
            return "Degraded", "PVC is lost"
    elif kind in ("Service", "Ingress"):
        if (kind == "Ingress" or spec.get("type") == "LoadBalancer") and \
                not ((st.get("loadBalancer") or {}).get("ingress")):
            return "Progressing", "Waiting for the load balancer address"
    elif kind == "Application":
        h = (st.get("health") or {}).get("status")
        if h in HEALTH_ORDER:
            return h, (st.get("health") or {}).get("message", "")
    return "Healthy", ""
