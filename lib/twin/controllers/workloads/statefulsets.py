"""The StatefulSet controller: pods ``<sts>-0..N-1`` with stable names and claims.

With ``OrderedReady`` (default) pod i+1 is created only once pod i is Running and
Ready; ``Parallel`` creates them all. ``volumeClaimTemplates`` become PVCs
``<tpl>-<sts>-<i>`` that are Bound at once (no provisioner is modelled). RollingUpdate
replaces pods from the highest ordinal down, one at a time, honouring ``partition``.
A StatefulSet only adopts orphans with its own pod names.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from ...store import AlreadyExists
from ..base import Cache, ObjKey
from .templates import (REVISION_HASH_LABEL, canonical, new_pod, pod_active, pod_ready,
                        pod_template_hash, revision_hash_of, strip_hash)
from .workload_base import POD, STS, WorkloadBase


_ORDINAL = re.compile(r"^(.*)-(\d+)$")


class StatefulSetController(WorkloadBase):
    kind_key = STS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("statefulset", store, cache, clock, types)
        self._revisions: dict[str, tuple[str, str]] = {}

    def update_revision(self, sts: dict) -> str:
        """``<sts>-<hash>`` of the current template (a converged fixture's value is kept)."""
        md = sts["metadata"]
        template = (sts.get("spec") or {}).get("template") or {}
        fp = canonical(strip_hash(template))
        known = self._revisions.get(md["uid"])
        if known is not None and known[0] == fp:
            return known[1]
        rev = f"{md['name']}-{pod_template_hash(template)}"
        st = sts.get("status") or {}
        if known is None and st.get("updateRevision") and \
                st.get("observedGeneration") in (None, md.get("generation")):
            rev = st["updateRevision"]
        self._revisions[md["uid"]] = (fp, rev)
        return rev

    def first_sight(self, obj: dict) -> None:
        if obj["metadata"]["uid"] not in self._revisions:
            self.update_revision(obj)

    def reconcile(self, key: ObjKey) -> None:
        sts = self._live(key)
        if sts is None:
            return
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        replicas = int(spec.get("replicas", 1))
        update_rev = self.update_revision(sts)
        ordered = (spec.get("podManagementPolicy") or "OrderedReady") == "OrderedReady"
        def member(p: dict) -> bool:
            m = _ORDINAL.match(p["metadata"]["name"])
            return bool(m and m.group(1) == name)
        pods = self._owned_pods(sts, "StatefulSet", member)
        by_ord: dict[int, dict] = {}
        for p in pods:
            m = _ORDINAL.match(p["metadata"]["name"])
            if m and m.group(1) == name:
                by_ord[int(m.group(2))] = p
            else:
                self._delete(POD, p)   # not one of ours by identity
        for i in range(replicas):
            p = by_ord.get(i)
            if p is None:
                self._ensure_claims(sts, i)
                self._create_pod(self._pod(sts, i, update_rev), fixed_name=True)
                if ordered:
                    break
            elif ordered and not ((p.get("status") or {}).get("phase") == "Running" and pod_ready(p)):
                break
        extra = sorted((i for i in by_ord if i >= replicas), reverse=True)
        if extra:
            self._delete(POD, by_ord[extra[0]])
            if not ordered:
                for i in extra[1:]:
                    self._delete(POD, by_ord[i])
        self._rolling_update(sts, update_rev, replicas)
        sts = self.cache.get(STS, *key)
        if sts is not None:
            self._write_status(STS, sts, self._status(sts, update_rev))

    def _rolling_update(self, sts: dict, update_rev: str, replicas: int) -> None:
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        name = sts["metadata"]["name"]
        pods = {p["metadata"]["name"]: p for p in self.cache.owned(POD, sts["metadata"]["uid"]) if pod_active(p)}
        current = [pods.get(f"{name}-{i}") for i in range(replicas)]
        if any(p is None or not pod_ready(p) for p in current):
            return   # one pod at a time, and only when all are Ready
        for i in range(replicas - 1, partition - 1, -1):
            p = current[i]
            if revision_hash_of(p) != update_rev:
                self._delete(POD, p)
                return

    def _status(self, sts: dict, update_rev: str) -> dict:
        pods = [p for p in self.cache.owned(POD, sts["metadata"]["uid"]) if pod_active(p)]
        prev = sts.get("status") or {}
        replicas = int((sts.get("spec") or {}).get("replicas", 1))
        ready = sum(1 for p in pods if pod_ready(p))
        updated = sum(1 for p in pods if revision_hash_of(p) == update_rev)
        current_rev = prev.get("currentRevision") or update_rev
        if updated == replicas and len(pods) == replicas and ready == replicas:
            current_rev = update_rev
        current = sum(1 for p in pods if revision_hash_of(p) == current_rev)
        status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                  "currentReplicas": current, "updatedReplicas": updated,
                  "currentRevision": current_rev, "updateRevision": update_rev,
                  "observedGeneration": sts["metadata"].get("generation", 1),
                  "collisionCount": int(prev.get("collisionCount") or 0)}
        return status

    def _pod(self, sts: dict, i: int, rev: str) -> dict:
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        template = copy.deepcopy(spec.get("template") or {})
        tspec = template.setdefault("spec", {})
        volumes = tspec.setdefault("volumes", [])
        have = {v.get("name") for v in volumes}
        for tpl in spec.get("volumeClaimTemplates") or ():
            vname = (tpl.get("metadata") or {}).get("name")
            if vname and vname not in have:
                volumes.append({"name": vname,
                                "persistentVolumeClaim": {"claimName": f"{vname}-{name}-{i}"}})
        if not volumes:
            tspec.pop("volumes")
        tspec["hostname"] = f"{name}-{i}"
        if spec.get("serviceName"):
            tspec["subdomain"] = spec["serviceName"]
        return new_pod(template, name=f"{name}-{i}", namespace=sts["metadata"].get("namespace"),
                       owner=sts, extra_labels={REVISION_HASH_LABEL: rev,
                                                "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                                                "apps.kubernetes.io/pod-index": str(i)})

    def _ensure_claims(self, sts: dict, i: int) -> None:
        spec = sts.get("spec") or {}
        ns = sts["metadata"].get("namespace")
        pvc_rt = self.types.get("persistentvolumeclaims")
        if pvc_rt is None:
            return
        labels = dict(((spec.get("selector") or {}).get("matchLabels")) or {})
        for tpl in spec.get("volumeClaimTemplates") or ():
            vname = (tpl.get("metadata") or {}).get("name")
            if not vname:
                continue
            pvc_name = f"{vname}-{sts['metadata']['name']}-{i}"
            if self.store.peek(pvc_rt, ns, pvc_name) is not None:
                continue
            pspec = copy.deepcopy(tpl.get("spec") or {})
            pspec.setdefault("volumeMode", "Filesystem")
            storage = ((pspec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            md = copy.deepcopy(tpl.get("metadata") or {})
            md.update(name=pvc_name, namespace=ns)
            md["labels"] = {**labels, **(md.get("labels") or {})}
            # No provisioner is modelled: the claim is Bound at once.
            md.setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
            pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": pspec,
                   "status": {"phase": "Bound", "accessModes": pspec.get("accessModes") or ["ReadWriteOnce"],
                              "capacity": {"storage": storage}}}
            try:
                self.store.create(pvc, rtype=pvc_rt)
            except AlreadyExists:
                pass
