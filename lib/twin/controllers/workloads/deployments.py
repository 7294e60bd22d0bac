"""The Deployment controller: ReplicaSets per template revision, and rollout status.

A Deployment owns ReplicaSets ``<deploy>-<pod-template-hash>`` (hash of the pod
template, label ``pod-template-hash``, annotation ``deployment.kubernetes.io/revision``
on both). A template change creates a new ReplicaSet at full size and scales the old
ones down as the real controller does (:mod:`.rollouts`: ``maxSurge`` and
``maxUnavailable`` honoured, percentages rounding up for surge and down for
unavailable); ``Recreate`` scales the old ones to 0 and waits for their pods to be gone. Old
ReplicaSets beyond ``revisionHistoryLimit`` (default 10) are deleted. The current
ReplicaSet is found by comparing templates (ignoring ``pod-template-hash``), as the
real controller does, so a fixture with another hash function is not rolled out.
``progressDeadlineSeconds`` (cluster time) gives ``ProgressDeadlineExceeded``.
:func:`deployment_status` is what ``kubectl rollout status`` reads.
"""
from __future__ import annotations

import copy
from typing import Any

from ...store import AlreadyExists
from ..base import Cache, ObjKey, controller_ref
from ..scheduler import now_rfc3339
from .rollouts import fenceposts, new_rs_replicas, old_pods_running, old_rs_targets
from .templates import (HASH_LABEL, owner_ref_for, pod_active, pod_template_hash,
                        resolve_int_or_percent, templates_equal)
from .workload_base import DEPLOY, POD, RS, WorkloadBase, compiled_selector

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _set_cond(conds: list[dict], ctype: str, status: str, reason: str, message: str,
              now: str, *, with_update_time: bool = True) -> None:
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            if c.get("status") != status or c.get("reason") != reason or c.get("message") != message:
                if with_update_time:
                    c["lastUpdateTime"] = now
            c.update(status=status, reason=reason, message=message)
            return
    c = {"type": ctype, "status": status, "reason": reason, "message": message,
         "lastTransitionTime": now}
    if with_update_time:
        c["lastUpdateTime"] = now
    conds.append(c)


def deployment_status(deploy: dict, new_rs: dict | None, rses: list[dict], now: str,
                      created: bool = False) -> dict:
    """The ``status`` of a Deployment from its ReplicaSets (what rollout status reads)."""
    spec = deploy.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    prev = deploy.get("status") or {}

    def st(rs: dict, f: str) -> int:
        return int((rs.get("status") or {}).get(f) or 0)
    replicas = sum(st(r, "replicas") for r in rses)
    updated = st(new_rs, "replicas") if new_rs else 0
    ready = sum(st(r, "readyReplicas") for r in rses)
    available = sum(st(r, "availableReplicas") for r in rses)
    total_spec = sum(int((r.get("spec") or {}).get("replicas") or 0) for r in rses)
    status: dict = {"observedGeneration": (deploy.get("metadata") or {}).get("generation", 1),
                    "replicas": replicas, "updatedReplicas": updated,
                    "readyReplicas": ready, "availableReplicas": available,
                    "unavailableReplicas": max(0, total_spec - available)}
    if not ready:
        status.pop("readyReplicas")
    if not available:
        status.pop("availableReplicas")
    for k in ("replicas", "updatedReplicas"):
        if not status[k]:
            status.pop(k)
    if not status["unavailableReplicas"]:
        status.pop("unavailableReplicas")
    strategy = spec.get("strategy") or {}
    max_unavail = 0
    if (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
        max_unavail = resolve_int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                             desired, round_up=False, default=desired // 4)
    conds = [dict(c) for c in prev.get("conditions") or ()]
    if available >= desired - max_unavail:
        _set_cond(conds, "Available", "True", "MinimumReplicasAvailable",
                  "Deployment has minimum availability.", now)
    else:
        _set_cond(conds, "Available", "False", "MinimumReplicasUnavailable",
                  "Deployment does not have minimum availability.", now)
    if new_rs is not None:
        rs_name = new_rs["metadata"]["name"]
        complete = (updated == desired and replicas == desired and available >= desired
                    and st(new_rs, "availableReplicas") >= desired)
        if complete:
            _set_cond(conds, "Progressing", "True", "NewReplicaSetAvailable",
                      f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        elif created:
            _set_cond(conds, "Progressing", "True", "NewReplicaSetCreated",
                      f'Created new replica set "{rs_name}"', now)
        else:
            _set_cond(conds, "Progressing", "True", "ReplicaSetUpdated",
                      f'ReplicaSet "{rs_name}" is progressing.', now)
    order = {"Available": 0, "Progressing": 1}
    conds.sort(key=lambda c: order.get(c.get("type"), 9))
    status["conditions"] = conds
    if prev.get("collisionCount") is not None:
        status["collisionCount"] = prev["collisionCount"]
    return status


def _revision(obj: dict) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


class DeploymentController(WorkloadBase):
    kind_key = DEPLOY

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("deployment", store, cache, clock, types)
        self._progress: dict[ObjKey, tuple[tuple, float]] = {}   # key -> (progress signature, since)

    def _owned_rses(self, d: dict) -> list[dict]:
        md = d["metadata"]
        orphans = self.cache.orphans_in(RS, md.get("namespace") or "")
        sel = compiled_selector((d.get("spec") or {}).get("selector")) if orphans else None
        for orphan in orphans:
            if sel is not None and sel.matches_object(orphan):
                self._adopt(RS, orphan, d, "Deployment")
        return [r for r in self.cache.owned(RS, md["uid"])
                if not (r.get("metadata") or {}).get("deletionTimestamp")]

    def reconcile(self, key: ObjKey) -> None:
        d = self._live(key)
        if d is None:
            if self.cache.get(DEPLOY, *key) is None:
                self._progress.pop(key, None)
            return
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        desired = int(spec.get("replicas", 1))
        rses = self._owned_rses(d)
        new_rs = next((r for r in sorted(rses, key=_revision, reverse=True)
                       if templates_equal((r.get("spec") or {}).get("template"), template)), None)
        olds = [r for r in rses if r is not new_rs]
        max_rev = max((_revision(r) for r in rses), default=0)
        strategy = (spec.get("strategy") or {}).get("type") or "RollingUpdate"
        rs_rt = self._rt(RS)
        created = False
        if not spec.get("paused"):
            surge, unavailable = fenceposts((spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxSurge"),
                                            (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable"),
                                            desired) if strategy == "RollingUpdate" else (0, 0)
            active_olds = [r for r in olds if int((r.get("spec") or {}).get("replicas") or 0)]
            if strategy == "Recreate":
                for r in active_olds:
                    self._scale(r, 0, desired, desired)
                running = old_pods_running(olds) or any(
                    pod_active(p) or (p.get("metadata") or {}).get("deletionTimestamp")
                    for r in olds for p in self.cache.owned(POD, r["metadata"]["uid"]))
                target = 0 if running else desired
            else:
                target = new_rs_replicas(desired, surge, new_rs, rses)
            if new_rs is None:
                created = True
                new_rs = self._create_rs(d, template, max_rev + 1, target, desired + surge)
            else:
                if _revision(new_rs) < max_rev:
                    # A rollback to an older template: that RS becomes the newest revision.
                    rev = str(max_rev + 1)
                    new_rs = self.store.mutate(rs_rt, key[0], new_rs["metadata"]["name"], lambda o: o[
                        "metadata"].setdefault("annotations", {}).__setitem__(REVISION_ANNOTATION, rev))
                self._scale(new_rs, target, desired, desired + surge)
            new_rs = self.cache.get(RS, key[0], new_rs["metadata"]["name"]) or new_rs
            if strategy != "Recreate":
                for name, replicas in old_rs_targets(desired, unavailable, new_rs, active_olds).items():
                    rs = next(r for r in active_olds if r["metadata"]["name"] == name)
                    self._scale(rs, replicas, desired, desired + surge)
            self._cleanup(d, olds)
            rev = str(_revision(new_rs))
            if ((d["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)) != rev:
                def ann(o: dict) -> None:
                    o["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = rev
                d = self.store.mutate(self._rt(DEPLOY), key[0], key[1], ann)
        d = self.cache.get(DEPLOY, *key)
        if d is None:
            return
        rses = [r for r in self.cache.owned(RS, d["metadata"]["uid"])]
        if new_rs is not None:
            new_rs = self.cache.get(RS, key[0], new_rs["metadata"]["name"])
        status = deployment_status(d, new_rs, rses, now_rfc3339(), created)
        self._progress_deadline(key, d, new_rs, status)
        self._write_status(DEPLOY, d, status)

    def _progress_deadline(self, key: ObjKey, d: dict, new_rs: dict | None, status: dict) -> None:
        """ProgressDeadlineExceeded after progressDeadlineSeconds (cluster time) without progress.

        Progress is any change of the new ReplicaSet or of the replica counts, as the
        real controller refreshes ``lastUpdateTime`` on each.
        """
        uid = d["metadata"]["uid"]
        prog = next((c for c in status.get("conditions") or () if c.get("type") == "Progressing"), None)
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        if prog is None or prog.get("reason") == "NewReplicaSetAvailable" or deadline is None \
                or (d.get("spec") or {}).get("paused"):
            if self._progress.pop(key, None) is not None:
                self.forget(key)
            return
        sig = (uid, (new_rs or {}).get("metadata", {}).get("name"), status.get("updatedReplicas"),
               status.get("readyReplicas"), status.get("availableReplicas"), status.get("replicas"))
        now = self.clock.cluster_now()
        cur = self._progress.get(key)
        if cur is None or cur[0] != sig:
            cur = self._progress[key] = (sig, now)
        waited = now - cur[1]
        if waited >= float(deadline):
            prev = next((c for c in (d.get("status") or {}).get("conditions") or ()
                         if c.get("type") == "Progressing"), None)
            if prev is not None and prev.get("reason") == "ProgressDeadlineExceeded":
                # Already reported: keep it byte for byte (no write, no event loop).
                status["conditions"] = [dict(prev) if c.get("type") == "Progressing" else c
                                        for c in status["conditions"]]
                return
            rs_name = sig[1] or d["metadata"]["name"]
            _set_cond(status["conditions"], "Progressing", "False", "ProgressDeadlineExceeded",
                      f'ReplicaSet "{rs_name}" has timed out progressing.', now_rfc3339())
        else:
            self.requeue_after(key, float(deadline) - waited + 0.01)

    def _create_rs(self, d: dict, template: dict, revision: int, replicas: int, max_replicas: int) -> dict:
        md = d["metadata"]
        collision = 0
        while True:
            h = pod_template_hash(template, collision)
            tpl = copy.deepcopy(template)
            tpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            sel = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
            sel.setdefault("matchLabels", {})[HASH_LABEL] = h
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels[HASH_LABEL] = h
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": f"{md['name']}-{h}", "namespace": md.get("namespace"),
                               "labels": labels,
                               "annotations": {REVISION_ANNOTATION: str(revision),
                                               "deployment.kubernetes.io/desired-replicas":
                                                   str((d.get("spec") or {}).get("replicas", 1)),
                                               "deployment.kubernetes.io/max-replicas":
                                                   str(max_replicas)},
                               "ownerReferences": [owner_ref_for(d, "Deployment")]},
                  "spec": {"replicas": replicas, "selector": sel, "template": tpl,
                           **({"minReadySeconds": d["spec"]["minReadySeconds"]}
                              if (d.get("spec") or {}).get("minReadySeconds") else {})},
                  "status": {"replicas": 0}}
            try:
                return self.store.create(rs, rtype=self._rt(RS))
            except AlreadyExists:
                existing = self.cache.get(RS, md.get("namespace") or "", f"{md['name']}-{h}")
                ref = controller_ref(existing) if existing else None
                if existing is not None and ref and ref.get("uid") == md["uid"]:
                    # Ours already, with another template (an edited RS): take it over.
                    def fix(o: dict) -> None:
                        o["spec"]["template"] = tpl
                        o["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)
                    return self.store.mutate(self._rt(RS), md.get("namespace"), f"{md['name']}-{h}", fix)
                collision += 1
                if collision > 5:
                    raise

    def _scale(self, rs: dict, replicas: int, desired: int, max_replicas: int) -> None:
        cur = (rs.get("spec") or {}).get("replicas")
        ann = (rs.get("metadata") or {}).get("annotations") or {}
        if cur == replicas and ann.get("deployment.kubernetes.io/desired-replicas") == str(desired) \
                and ann.get("deployment.kubernetes.io/max-replicas") == str(max_replicas):
            return

        def put(o: dict) -> None:
            o["spec"]["replicas"] = replicas
            a = o["metadata"].setdefault("annotations", {})
            a["deployment.kubernetes.io/desired-replicas"] = str(desired)
            a["deployment.kubernetes.io/max-replicas"] = str(max_replicas)
        self.store.mutate(self._rt(RS), rs["metadata"].get("namespace"), rs["metadata"]["name"], put)

    def _cleanup(self, d: dict, olds: list[dict]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit", 10)
        if limit is None:
            return
        idle = [r for r in olds
                if not int((r.get("spec") or {}).get("replicas") or 0)
                and not int((r.get("status") or {}).get("replicas") or 0)]
        idle.sort(key=_revision)
        for r in idle[: max(0, len(idle) - int(limit))]:
            self._delete(RS, r)
