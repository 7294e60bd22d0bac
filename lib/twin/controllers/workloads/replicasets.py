"""The ReplicaSet controller: pods ``<rs>-<5 chars>`` with a controlling ownerReference.

Missing pods are created (at most :data:`~.workload_base.MAX_CREATES_PER_PASS` per
pass); surplus pods are deleted least useful first (unscheduled, pending, not Ready,
newest). Orphans matching the selector are adopted.
"""
from __future__ import annotations

from typing import Any

from ..base import Cache, ObjKey
from .templates import created_at, new_pod, pod_active, pod_ready, random_suffix
from .workload_base import MAX_CREATES_PER_PASS, POD, RS, WorkloadBase


def replicaset_status(rs: dict, pods: list[dict]) -> dict:
    """The ``status`` of a ReplicaSet from its active pods."""
    tlabels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    fully = sum(1 for p in pods
                if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v
                       for k, v in tlabels.items()))
    ready = sum(1 for p in pods if pod_ready(p))
    status: dict = {"replicas": len(pods), "fullyLabeledReplicas": fully, "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": (rs.get("metadata") or {}).get("generation", 1)}
    for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if not status[k]:
            status.pop(k)
    prev = rs.get("status") or {}
    if prev.get("conditions"):
        status["conditions"] = prev["conditions"]
    return status


class ReplicaSetController(WorkloadBase):
    kind_key = RS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("replicaset", store, cache, clock, types)

    def reconcile(self, key: ObjKey) -> None:
        rs = self._live(key)
        if rs is None:
            return
        pods = self._owned_pods(rs, "ReplicaSet")
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = want - len(pods)
        if diff > 0:
            n = min(diff, MAX_CREATES_PER_PASS)
            template = (rs.get("spec") or {}).get("template") or {}
            for _ in range(n):
                name = f"{rs['metadata']['name']}-{random_suffix()}"
                self._create_pod(new_pod(template, name=name, namespace=key[0], owner=rs))
            if diff > n:
                self.enqueue(key)
        elif diff < 0:
            # Delete the least useful pods first: unscheduled, pending, not ready, newest.
            def rank(p: dict) -> tuple:
                spec = p.get("spec") or {}
                phase = (p.get("status") or {}).get("phase")
                return (bool(spec.get("nodeName")), phase == "Running", pod_ready(p),
                        _neg(created_at(p)))
            for victim in sorted(pods, key=rank)[: -diff]:
                self._delete(POD, victim)
        rs = self.cache.get(RS, *key)
        if rs is None:
            return
        pods = [p for p in self.cache.owned(POD, rs["metadata"]["uid"]) if pod_active(p)]
        self._write_status(RS, rs, replicaset_status(rs, pods))


def _neg(ts: str) -> tuple:
    # Newest first when sorting ascending.
    return tuple(-ord(c) for c in ts)
