"""PodDisruptionBudgets: the disruption controller's status and the eviction decision.

:func:`pdb_status` is the disruption controller's arithmetic (kube-controller-manager's
``disruption`` controller):

- the PDB's pods are those of its namespace matching its selector;
- ``currentHealthy``: those Ready and not being deleted (pods just evicted, listed in
  ``status.disruptedPods``, are not counted while they go);
- ``expectedPods`` and ``desiredHealthy``: with an integer ``minAvailable`` the pods
  found and that number; with ``maxUnavailable`` or a percentage, the replicas their
  controllers want (Deployment through its ReplicaSet, ReplicaSet, StatefulSet), and
  ``expected - maxUnavailable`` (percentages of maxUnavailable round up) or
  ``ceil(minAvailable% * expected)``;
- ``disruptionsAllowed = max(0, currentHealthy - desiredHealthy)``; the condition
  ``DisruptionAllowed`` (``SufficientPods`` / ``InsufficientPods``).

:func:`eviction_decision` is the eviction subresource's rule: a finished pod may always
go; a pod with no PDB may go; more than one PDB is an error (500); a PDB not yet
observed at its generation, or with no disruption left, refuses with 429
"Cannot evict pod as it would violate the pod's disruption budget."; an unhealthy pod
may go while the budget is met (``unhealthyPodEvictionPolicy`` IfHealthyBudget, the
default) or always (AlwaysAllow). An allowed eviction takes one disruption and records
the pod in ``disruptedPods`` (the API server writes that before it deletes the pod).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..base import Cache, ObjKey, controller_ref, obj_key
from ..scheduler import now_rfc3339
from .templates import pod_ready
from .workload_base import DEPLOY, RS, STS, WorkloadBase, compiled_selector

PDB = ("policy", "poddisruptionbudgets")
EVICTION_REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."
DISRUPTED_POD_TIMEOUT = 120.0   # cluster seconds a disrupted pod is expected to go in


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        x = total * float(value[:-1]) / 100.0
        return int(math.ceil(x) if round_up else math.floor(x))
    return int(value)


def pdb_pods(pdb: dict, namespace_pods: Any) -> list[dict]:
    """The pods a PDB selects among the pods of its namespace (an empty selector: none)."""
    sel = compiled_selector((pdb.get("spec") or {}).get("selector"))
    if sel is None:
        return []
    return [p for p in namespace_pods if sel.matches_object(p)]


def expected_scale(cache: Cache, pods: list[dict]) -> int | None:
    """The replicas the pods' controllers want, or None when a pod has a controller
    without a scale (DaemonSet, Job) or none at all."""
    total, seen = 0, set()
    for p in pods:
        ref = controller_ref(p)
        if ref is None:
            return None
        ns = p["metadata"].get("namespace") or ""
        kind, name = ref.get("kind"), ref.get("name")
        if kind == "ReplicaSet":
            rs = cache.get(RS, ns, name)
            dref = controller_ref(rs) if rs else None
            if dref is not None and dref.get("kind") == "Deployment":
                kind, name, obj = "Deployment", dref.get("name"), cache.get(DEPLOY, ns, dref.get("name"))
            else:
                obj = rs
        elif kind == "StatefulSet":
            obj = cache.get(STS, ns, name)
        else:
            return None
        if obj is None:
            return None
        if (kind, ns, name) not in seen:
            seen.add((kind, ns, name))
            total += int((obj.get("spec") or {}).get("replicas", 1))
    return total


@dataclass
class Counts:
    current: int
    desired: int
    expected: int
    allowed: int


def pdb_counts(cache: Cache, pdb: dict, pods: list[dict]) -> Counts:
    spec = pdb.get("spec") or {}
    disrupted = set(((pdb.get("status") or {}).get("disruptedPods") or {}).keys())
    current = sum(1 for p in pods if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                  and p["metadata"]["name"] not in disrupted)
    min_avail, max_unavail = spec.get("minAvailable"), spec.get("maxUnavailable")
    if max_unavail is None and isinstance(min_avail, int):
        expected, desired = len(pods), min_avail
    else:
        scale = expected_scale(cache, pods)
        expected = scale if scale is not None else len(pods)
        if max_unavail is not None:
            desired = max(0, expected - _int_or_percent(max_unavail, expected, round_up=True))
        else:
            desired = _int_or_percent(min_avail if min_avail is not None else 1, expected, round_up=True)
    return Counts(current, desired, expected, max(0, current - desired))


def pdb_status(cache: Cache, pdb: dict, namespace_pods: Any, now: str) -> dict:
    """The ``status`` the disruption controller writes for ``pdb`` (see module doc)."""
    pods = pdb_pods(pdb, namespace_pods)
    c = pdb_counts(cache, pdb, pods)
    prev = pdb.get("status") or {}
    names = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    disrupted = {k: v for k, v in (prev.get("disruptedPods") or {}).items() if k in names}
    gen = (pdb.get("metadata") or {}).get("generation", 1)
    allowed = c.allowed > 0
    old = next((x for x in prev.get("conditions") or () if x.get("type") == "DisruptionAllowed"), None)
    status_word = "True" if allowed else "False"
    cond = {"type": "DisruptionAllowed", "status": status_word,
            "reason": "SufficientPods" if allowed else "InsufficientPods", "message": "",
            "observedGeneration": gen,
            "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status_word
            else now}
    status = {"observedGeneration": gen, "disruptionsAllowed": c.allowed,
              "currentHealthy": c.current, "desiredHealthy": c.desired, "expectedPods": c.expected,
              "conditions": [cond]}
    if disrupted:
        status["disruptedPods"] = disrupted
    return status


@dataclass
class EvictionDecision:
    """``allowed`` with the PDB to charge (None: none), or the refusal's code/message."""

    allowed: bool
    pdb: dict | None = None
    code: int = 201
    reason: str = ""
    message: str = ""
    cause: str = ""


def eviction_decision(pod: dict, namespace_pdbs: Any) -> EvictionDecision:
    """May ``pod`` be evicted now, given the PDBs of its namespace (see module doc)?"""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed") or pod["metadata"].get("deletionTimestamp"):
        return EvictionDecision(True)
    pdbs = [b for b in namespace_pdbs
            if (sel := compiled_selector((b.get("spec") or {}).get("selector"))) is not None
            and sel.matches_object(pod)]
    if not pdbs:
        return EvictionDecision(True)
    if len(pdbs) > 1:
        return EvictionDecision(False, code=500, reason="InternalError",
                                message="This pod has more than one PodDisruptionBudget, which the "
                                        "eviction subresource does not support.")
    pdb = pdbs[0]
    st = pdb.get("status") or {}
    name = pdb["metadata"]["name"]
    policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
    if not pod_ready(pod):
        if policy == "AlwaysAllow" or \
                int(st.get("currentHealthy") or 0) >= int(st.get("desiredHealthy") or 0) > 0:
            return EvictionDecision(True)
    if st.get("observedGeneration") is None or \
            st["observedGeneration"] < pdb["metadata"].get("generation", 1):
        return EvictionDecision(False, code=429, reason="TooManyRequests", message=EVICTION_REFUSED,
                                cause=f"The disruption budget {name} is still being processed by the server.")
    allowed = int(st.get("disruptionsAllowed") or 0)
    if allowed < 0:
        return EvictionDecision(False, code=403, reason="Forbidden",
                                message="pdb disruptions allowed is negative")
    if allowed == 0:
        return EvictionDecision(False, code=429, reason="TooManyRequests", message=EVICTION_REFUSED,
                                cause=f"The disruption budget {name} needs {st.get('desiredHealthy', 0)} "
                                      f"healthy pods and has {st.get('currentHealthy', 0)} currently")
    return EvictionDecision(True, pdb=pdb)


def charge(pdb: dict, pod_name: str, now: str) -> None:
    """Take one disruption for ``pod_name`` (mutates a PDB copy for a status write)."""
    st = pdb.setdefault("status", {})
    st["disruptionsAllowed"] = int(st.get("disruptionsAllowed") or 0) - 1
    st.setdefault("disruptedPods", {})[pod_name] = now


class DisruptionController(WorkloadBase):
    """Keeps every PDB's status current as its pods come, go and change readiness."""

    kind_key = PDB

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("disruption", store, cache, clock, types)

    def pod_changed(self, pod: dict, old: dict | None) -> None:
        """Queue the PDBs selecting ``pod`` (or what it was)."""
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        for b in self.cache.objects[PDB].values():
            if (b["metadata"].get("namespace") or "") != ns:
                continue
            sel = compiled_selector((b.get("spec") or {}).get("selector"))
            if sel is not None and (sel.matches_object(pod) or (old is not None and sel.matches_object(old))):
                self.enqueue(obj_key(b))

    def reconcile(self, key: ObjKey) -> None:
        pdb = self.cache.get(PDB, *key)
        if pdb is None or pdb["metadata"].get("deletionTimestamp"):
            return
        pods = self.store.iter_objects(self.types["pods"], key[0] or None)
        status = pdb_status(self.cache, pdb, pods, now_rfc3339())
        if status.get("disruptedPods"):
            self.requeue_after(key, DISRUPTED_POD_TIMEOUT)
        self._write_status(PDB, pdb, status)
