"""Pod templates and the pods built from them (pure): hashing, comparing, defaulting.

- :func:`pod_template_hash`: the Deployment controller's short template hash (FNV-32a,
  safe-encoded); :func:`templates_equal` compares templates ignoring that label.
- :func:`workload_defaults`: the apps/v1 spec defaults a real API server adds.
- :func:`new_pod`: a pod from a template with the API server's pod defaults, the
  DaemonSet tolerations (:func:`daemonset_tolerations`) and the DefaultTolerationSeconds
  admission tolerations (:func:`default_tolerations`).
"""
from __future__ import annotations

import copy
import json
import math
import random
from typing import Any

from ..kubelet import qos_class
from ..scheduler import TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE, _condition

HASH_LABEL = "pod-template-hash"
REVISION_HASH_LABEL = "controller-revision-hash"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # k8s rand.SafeEncodeString alphabet


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Map each character onto the vowel-free alphabet Kubernetes uses in names."""
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def pod_template_hash(template: dict | None, collision_count: int = 0) -> str:
    """Stable short hash of a pod template, like the Deployment controller's.

    FNV-32a over a canonical rendering of the template (plus the collision count),
    written in decimal and safe-encoded: e.g. ``"5d8c7b6f9"``. The
    ``pod-template-hash`` label itself is ignored, so an RS template hashes like its
    Deployment's.

    Example:
        >>> pod_template_hash({"spec": {"containers": [{"name": "a", "image": "x"}]}}) == \\
        ...     pod_template_hash({"spec": {"containers": [{"image": "x", "name": "a"}]}})
        True
    """
    data = canonical(strip_hash(template)) + (f"/{collision_count}" if collision_count else "")
    return safe_encode(str(_fnv32a(data.encode())))


def _prune(value: Any) -> Any:
    """Drop None, {} and [] recursively: a typed client (kubectl rollout undo) sends
    ``resources: {}`` and ``creationTimestamp: null`` where the original had nothing."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _prune(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def strip_hash(template: dict | None) -> dict:
    """A pruned copy of a pod template without the ``pod-template-hash`` label."""
    # _prune builds new dicts and lists (leaves are immutable), so it is already a copy.
    t = _prune(template or {})
    md = t.get("metadata")
    if isinstance(md, dict):
        labels = md.get("labels")
        if isinstance(labels, dict):
            labels.pop(HASH_LABEL, None)
            if not labels:
                md.pop("labels", None)
        md.pop("creationTimestamp", None)
        if not md:
            t.pop("metadata", None)
    return t


def templates_equal(a: dict | None, b: dict | None) -> bool:
    return canonical(strip_hash(a)) == canonical(strip_hash(b))


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(SAFE_ALPHABET) for _ in range(n))


def pod_ready(pod: dict) -> bool:
    c = _condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_active(pod: dict) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool, default: int) -> int:
    """An intOrString field such as maxUnavailable ("25%" or 2) against ``total``."""
    if value is None:
        return default
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = float(value[:-1])
        except ValueError:
            return default
        x = total * pct / 100.0
        return int(math.ceil(x) if round_up else math.floor(x))
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def daemonset_tolerations(pod_spec: dict) -> list[dict]:
    """The template tolerations plus those the DaemonSet controller always adds."""
    tols = list(pod_spec.get("tolerations") or [])
    auto = [(TAINT_NOT_READY, "NoExecute"), (TAINT_UNREACHABLE, "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            (TAINT_UNSCHEDULABLE, "NoSchedule")]
    if pod_spec.get("hostNetwork"):
        auto.append(("node.kubernetes.io/network-unavailable", "NoSchedule"))
    for key, effect in auto:
        if not any(t.get("key") == key and t.get("effect") == effect and
                   (t.get("operator") or "Equal") == "Exists" for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": effect})
    return tols

def workload_defaults(kind: str, obj: dict) -> bool:
    """Fill the apps/v1 spec defaults a real API server adds; True when something changed.

    kubectl (``rollout status``) and helm (``--wait``) read ``updateStrategy.type``: a
    DaemonSet or StatefulSet without it is "not RollingUpdate" to them. The controllers
    apply this as a fallback on objects created without the defaults; the API server
    can call it at create time so ``generation`` stays 1. The pod template is never
    touched (it feeds the template hash).
    """
    spec = obj.setdefault("spec", {})
    before = canonical(spec)
    if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        spec.setdefault("replicas", 1)
    if kind == "Deployment":
        strat = spec.setdefault("strategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "DaemonSet":
        strat = spec.setdefault("updateStrategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
    elif kind == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strat = spec.setdefault("updateStrategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            strat.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("revisionHistoryLimit", 10)
    return canonical(spec) != before


def default_tolerations(tolerations: list[dict] | None) -> list[dict]:
    """Add the DefaultTolerationSeconds admission tolerations (300 s) when absent."""
    tols = list(tolerations or [])
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        if not any((t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"))
                   and t.get("effect") in (None, "", "NoExecute") for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300})
    return tols


def new_pod(template: dict, *, name: str, namespace: str, owner: dict,
            extra_labels: dict | None = None, node_name: str | None = None,
            daemonset: bool = False) -> dict:
    """A pod from a pod template, with the defaults the API server would add."""
    tmd = template.get("metadata") or {}
    labels = dict(tmd.get("labels") or {})
    labels.update(extra_labels or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy",
                     "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
        c.setdefault("resources", {})
    if daemonset:
        spec["tolerations"] = daemonset_tolerations(spec)
    spec["tolerations"] = default_tolerations(spec.get("tolerations"))
    if node_name:
        spec["nodeName"] = node_name
    md: dict = {"name": name, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": owner.get("apiVersion", "apps/v1"),
                                     "kind": owner["kind"], "name": owner["metadata"]["name"],
                                     "uid": owner["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}]}
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec,
            "status": {"phase": "Pending", "qosClass": qos_class(spec)}}


def owner_ref_for(obj: dict, kind: str, api_version: str = "apps/v1") -> dict:
    """The controlling ownerReference a controller puts on what it creates or adopts."""
    return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def revision_hash_of(pod: dict) -> str | None:
    """The ``controller-revision-hash`` label of a DaemonSet or StatefulSet pod."""
    return ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL)


def created_at(obj: dict) -> str:
    """``metadata.creationTimestamp`` (RFC 3339 sorts as text), "" when unset."""
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""
