"""The DaemonSet controller: one pod per eligible node, rolling updates.

Eligible: nodeSelector, required node affinity, taints vs the template's tolerations
plus the automatic DaemonSet tolerations; ``spec.nodeName`` is set directly.
RollingUpdate honours ``maxUnavailable`` (default 1): old pods are deleted at most that
many unavailable at a time and recreated with the new template once the old pod is gone
(a node never runs two daemon pods while one terminates); ``OnDelete`` leaves
them. Pods on nodes with an untolerated NoExecute taint or no longer matching the
selector are deleted; an untolerated NoSchedule taint only stops new pods
(``numberMisscheduled``).
"""
from __future__ import annotations

from typing import Any

from ..base import Cache, ObjKey
from ..scheduler import matches_node_selector, matches_required_affinity, untolerated_taints
from .templates import (REVISION_HASH_LABEL, canonical, created_at, daemonset_tolerations, new_pod,
                        pod_active, pod_ready, pod_template_hash, random_suffix,
                        resolve_int_or_percent, revision_hash_of, strip_hash)
from .workload_base import DS, MAX_CREATES_PER_PASS, NODE, POD, WorkloadBase


def daemonset_node_decision(pod_spec: dict, node: dict) -> tuple[bool, bool]:
    """``(should_run, should_continue_running)`` of a DaemonSet pod on ``node``."""
    if not matches_node_selector(pod_spec.get("nodeSelector"), node) or \
            not matches_required_affinity(pod_spec.get("affinity"), node):
        return False, False
    taints = (node.get("spec") or {}).get("taints")
    tols = daemonset_tolerations(pod_spec)
    if untolerated_taints(tols, taints, ("NoExecute",)):
        return False, False
    if untolerated_taints(tols, taints, ("NoSchedule",)):
        return False, True
    return True, True


class DaemonSetController(WorkloadBase):
    kind_key = DS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("daemonset", store, cache, clock, types)
        self._revisions: dict[str, tuple[str, str]] = {}   # ds uid -> (template fingerprint, hash)

    def current_hash(self, ds: dict, pods: list[dict]) -> str:
        """The revision hash of the DaemonSet's current template.

        At first sight of a converged DaemonSet (observedGeneration == generation) whose
        pods all carry one ``controller-revision-hash``, that value is kept, so a
        fixture built with another hash function is not rolled out at start.
        """
        md = ds["metadata"]
        template = (ds.get("spec") or {}).get("template") or {}
        fp = canonical(strip_hash(template))
        known = self._revisions.get(md["uid"])
        if known is not None and known[0] == fp:
            return known[1]
        h = pod_template_hash(template)
        observed = (ds.get("status") or {}).get("observedGeneration")
        if known is None and observed in (None, md.get("generation")):
            seen = {((p.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL) for p in pods}
            if len(seen) == 1 and None not in seen:
                h = seen.pop()
        self._revisions[md["uid"]] = (fp, h)
        return h

    def first_sight(self, obj: dict) -> None:
        if obj["metadata"]["uid"] not in self._revisions:
            pods = [p for p in self.cache.owned(POD, obj["metadata"]["uid"]) if pod_active(p)]
            self.current_hash(obj, pods)

    def reconcile(self, key: ObjKey) -> None:
        ds = self._live(key)
        if ds is None:
            return
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        tspec = template.get("spec") or {}
        pods = self._owned_pods(ds, "DaemonSet")
        cur_hash = self.current_hash(ds, pods)
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
        nodes = {n["metadata"]["name"]: n for n in self.cache.all(NODE)}
        decisions = {name: daemonset_node_decision(tspec, n) for name, n in nodes.items()}
        # A node whose old daemon pod is still terminating gets its new one once it is gone.
        terminating = {(p.get("spec") or {}).get("nodeName") for p in self.cache.owned(POD, ds["metadata"]["uid"])
                       if (p.get("metadata") or {}).get("deletionTimestamp")}
        created = 0
        for name, (run, cont) in decisions.items():
            here = by_node.get(name) or []
            if run and not here and name not in terminating and created < MAX_CREATES_PER_PASS:
                pod = new_pod(template, name=f"{ds['metadata']['name']}-{random_suffix()}",
                              namespace=key[0], owner=ds, node_name=name, daemonset=True,
                              extra_labels={REVISION_HASH_LABEL: cur_hash,
                                            "pod-template-generation": str(ds["metadata"].get("generation", 1))})
                self._create_pod(pod)
                created += 1
            elif here and not cont:
                for p in here:
                    self._delete(POD, p)
            elif len(here) > 1:
                keep = sorted(here, key=lambda p: (revision_hash_of(p) != cur_hash, not pod_ready(p), created_at(p)))[0]
                for p in here:
                    if p is not keep:
                        self._delete(POD, p)
        for name, here in by_node.items():
            if name and name not in nodes:
                for p in here:
                    self._delete(POD, p)
        if created >= MAX_CREATES_PER_PASS:
            self.enqueue(key)
        self._rolling_update(ds, cur_hash, decisions)
        ds = self.cache.get(DS, *key)
        if ds is not None:
            self._write_status(DS, ds, self._status(ds, cur_hash, decisions))

    def _rolling_update(self, ds: dict, cur_hash: str, decisions: dict) -> None:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return
        pods = [p for p in self.cache.owned(POD, ds["metadata"]["uid"]) if pod_active(p)]
        on_run_nodes = [p for p in pods if decisions.get((p.get("spec") or {}).get("nodeName"), (False,))[0]]
        desired = sum(1 for run, _ in decisions.values() if run)
        max_unavail = resolve_int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                             desired, round_up=True, default=1)
        max_unavail = max(1, max_unavail)
        have_nodes = {(p.get("spec") or {}).get("nodeName") for p in on_run_nodes}
        unavailable = (desired - len(have_nodes)) + sum(1 for p in on_run_nodes if not pod_ready(p))
        old = [p for p in on_run_nodes if revision_hash_of(p) != cur_hash]
        # Old pods that are not Ready cost nothing to replace; Ready ones only within budget.
        for p in [p for p in old if not pod_ready(p)]:
            self._delete(POD, p)
        budget = max_unavail - unavailable
        for p in sorted([p for p in old if pod_ready(p)], key=lambda p: (p.get("spec") or {}).get("nodeName") or ""):
            if budget <= 0:
                break
            self._delete(POD, p)
            budget -= 1

    def _status(self, ds: dict, cur_hash: str, decisions: dict) -> dict:
        pods = [p for p in self.cache.owned(POD, ds["metadata"]["uid"]) if pod_active(p)]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
        desired = current = mis = ready = updated = 0
        for name, (run, _cont) in decisions.items():
            here = by_node.get(name) or []
            if run:
                desired += 1
                if here:
                    current += 1
                    if any(pod_ready(p) for p in here):
                        ready += 1
                    if any(revision_hash_of(p) == cur_hash for p in here):
                        updated += 1
            elif here:
                mis += 1
        status = {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                  "numberMisscheduled": mis, "numberReady": ready, "numberAvailable": ready,
                  "updatedNumberScheduled": updated,
                  "numberUnavailable": max(0, desired - ready),
                  "observedGeneration": ds["metadata"].get("generation", 1)}
        if not status["numberAvailable"]:
            status.pop("numberAvailable")
        if not status["numberUnavailable"]:
            status.pop("numberUnavailable")
        if not status["updatedNumberScheduled"]:
            status.pop("updatedNumberScheduled")
        return status
