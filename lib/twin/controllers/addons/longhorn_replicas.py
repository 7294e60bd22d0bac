"""Longhorn replicas coming back: restart, rebuild, replenishment, stale cleanup.

:class:`ReplicaHealing` is the part of a volume's reconcile (:class:`.longhorn_pass.VolumePass`)
that runs while the volume is attached:

- a failed replica that is usable again (its instance manager runs, the engine reaches
  it) and not stale restarts (``replica-restart``), waits for a rebuild slot
  (``concurrent-replica-rebuild-per-node-limit`` per node), is rebuilt as WO for the
  time :func:`.longhorn_rebuild.rebuild_plan` gives (a new replica copies the volume's
  ``actualSize`` in full; a returning one compares its data and skips hashed snapshot
  files) and turns RW;
- one still unusable after ``replica-replenishment-wait-interval`` is replaced by a new
  replica on a node without one of this volume, reachable from the engine (none: the
  volume's ``Scheduled`` condition says ``ReplicaSchedulingFailure``);
- a failed replica older than ``spec.staleReplicaTimeout`` minutes is deleted;
- eviction (``spec.evictionRequested``, set by :mod:`.longhorn_eviction`): an evicting
  replica does not count towards ``numberOfReplicas`` (``getReplenishReplicasCount``), so
  the volume gets one more replica where the scheduler allows
  (:func:`.longhorn_scheduler.place_replica`), one rebuild at a time; once more
  replicas are healthy than the volume wants, the evicting one is deleted
  (``cleanupEvictionRequestedReplicas``, the last healthy replica always kept). A failed
  evicting replica is never reused, only replaced.

New replicas go where :func:`.longhorn_scheduler.place_replica` allows and, in the
twin, only where the engine reaches them (Longhorn would schedule it and fail the rebuild).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from ...store import json_copy
from .common import meta, now_rfc3339
from .longhorn_instances import instance_path
from .longhorn_rebuild import fast_rebuild_on, rebuild_plan
from .longhorn_rules import LONGHORN_NS, REPLICA_START_SECONDS, setting_on, setting_seconds
from .longhorn_scheduler import place_replica, soft_anti_affinity

log = logging.getLogger("twin.controllers.addons.longhorn")

__all__ = ["ReplicaHealing", "new_replica"]


class ReplicaHealing:
    """Mixin of :class:`.longhorn_pass.VolumePass` (it provides ``reps``, ``c``, ``now``...)."""

    reps: dict[str, dict]
    c: Any
    ctl: Any
    now: float

    def heal(self, node: str) -> None:
        """Failed replicas restart and rebuild; stale ones go; missing ones are replenished."""
        modes = self.modes()
        limit = int(setting_seconds(self.settings, "concurrent-replica-rebuild-per-node-limit"))
        wait = setting_seconds(self.settings, "replica-replenishment-wait-interval")
        stale = float(self.vs.get("staleReplicaTimeout") or 0) * 60.0
        actual = self.vst.get("actualSize") or 0
        for rn in sorted(self.reps):
            rnode = self.rnode(rn)
            if modes.get(rn) == "WO":
                until = self.c.rebuild_until.get(rn)
                if until is not None and self.now >= until - 1e-6:
                    self.rebuilt(rn)
                elif until is not None:
                    self.wake(until)
                continue
            if not self.failed(rn):
                continue
            failed_for = self.now - self.c.failed_at.setdefault(rn, self.now)
            if stale and failed_for >= stale:
                self.remove(rn)
                continue
            if self.evicting(rn) and rn not in self.c.restart_until:
                self.replenish(node, rn)    # never reused (IsPotentiallyReusableReplica)
                continue
            usable = self.ctl.ims.running(rnode) and self.path(node, rn)
            if rn in self.c.restart_until:
                if not usable:
                    self.c.restart_until.pop(rn)
                elif self.now >= self.c.restart_until[rn] - 1e-6:
                    if len(self.ctl.rebuilding.setdefault(rnode, set())) < limit:
                        self.start_rebuild(rn, actual)
                    else:
                        self.wake(self.now + 1.0)
                else:
                    self.wake(self.c.restart_until[rn])
            elif usable and self.active() < self.wanted():
                r = self.reps[rn]
                r["spec"]["desireState"] = "running"
                r["status"]["currentState"] = "starting"
                self.c.restart_until[rn] = self.now + REPLICA_START_SECONDS
                self.wake(self.c.restart_until[rn])
            elif usable:
                continue    # enough replicas without it: it waits to go stale
            elif failed_for >= wait:
                self.replenish(node, rn)
            else:
                self.wake(self.c.failed_at[rn] + wait)
        live = [rn for rn in sorted(self.reps) if rn not in self.deleted]
        if live and not any(self.failed(rn) for rn in live) and "WO" not in modes.values() and \
                self.active() + len(self.created) < self.wanted():
            # fewer replicas than numberOfReplicas (evicting ones not counted) and none left
            # to restart: the volume controller schedules a new one where a node is usable,
            # once no rebuild runs (volume_controller.go replenishReplicas, EvictReplicas)
            self.replenish(node, live[0])


    def start_rebuild(self, rn: str, actual: Any) -> None:
        r = self.reps[rn]
        node = self.rnode(rn)
        self.c.replica_epoch[rn] = self.ctl.ims.epoch_of(node)
        r["spec"]["failedAt"] = ""
        r["spec"]["healthyAt"] = ""
        r["status"].update(currentState="running", started=True,
                           instanceManagerName=self.ctl.ims.name(node) or "",
                           ip=self.ctl.ims.ip(node) or r["status"].get("ip"))
        self.c.restart_until.pop(rn, None)
        plan = rebuild_plan(actual, held_data=bool(r["spec"].get("lastHealthyAt")),
                            failed_at=str(r["spec"].get("lastFailedAt") or ""),
                            snapshots=self._snapshots(), fast=fast_rebuild_on(self.settings))
        log.info("longhorn: replica %s of volume %s: %s rebuild, %.1f s (%s)", rn, self.name,
                 plan.kind, plan.seconds, plan.why)
        self.c.rebuild_until[rn] = self.now + plan.seconds
        self.ctl.rebuilding.setdefault(node, set()).add(rn)
        self.modes()[rn] = "WO"
        ts = now_rfc3339()
        self.est.setdefault("replicaTransitionTimeMap", {})[rn] = ts
        self.es.setdefault("replicaAddressMap", {})[rn] = f"{r['status'].get('ip')}:{r['status'].get('port')}"
        src = next((x for x, m in self.modes().items() if m == "RW" and x in self.reps), "")
        self.est.setdefault("rebuildStatus", {})[self._addr(rn)] = {
            "error": "", "isRebuilding": True, "progress": 0, "state": "in_progress",
            "fromReplicaAddress": self._addr(src) if src else ""}
        self.events.append(("Normal", "Rebuilding", f"Start rebuilding replica {rn} with Address "
                            f"{self._addr(rn)} for normal engine {meta(self.e)['name']} and volume {self.name}"))
        self.wake(self.c.rebuild_until[rn])


    def _snapshots(self) -> list[dict]:
        """The volume's snapshots (``snapshots.longhorn.io`` status), when the controller
        knows them (:meth:`.longhorn_volumes.LonghornVolumes.snapshots`)."""
        known = getattr(self.ctl, "snapshots", None)
        return list(known(self.name)) if callable(known) else []

    def rebuilt(self, rn: str) -> None:
        ts = now_rfc3339()
        r = self.reps[rn]
        r["spec"]["healthyAt"] = r["spec"]["lastHealthyAt"] = ts
        r["spec"]["failedAt"] = ""
        self.modes()[rn] = "RW"
        self.est.setdefault("replicaTransitionTimeMap", {})[rn] = ts
        self._forget_rebuild(rn)
        self.events.append(("Normal", "Rebuilt", f"Replica {rn} of volume {self.name} rebuilt"))


    def wanted(self) -> int:
        return int(self.vs.get("numberOfReplicas") or 3)


    def evicting(self, rn: str) -> bool:
        return bool((self.reps[rn].get("spec") or {}).get("evictionRequested"))

    def active(self) -> int:
        """Replicas RW, rebuilding or restarting and not evicting (the ones the volume
        counts on; getReplenishReplicasCount)."""
        modes = self.modes()
        return sum(1 for rn in self.reps if not self.evicting(rn)
                   and (modes.get(rn) in ("RW", "WO") or rn in self.c.restart_until))

    def remove(self, rn: str) -> None:
        """Delete replica ``rn`` (its engine forgets it)."""
        self.deleted.add(rn)
        self._forget_rebuild(rn)
        self.modes().pop(rn, None)
        (self.es.get("replicaAddressMap") or {}).pop(rn, None)
        (self.est.get("currentReplicaAddressMap") or {}).pop(rn, None)

    def cleanup_evicted(self) -> None:
        """cleanupEvictionRequestedReplicas: with more healthy replicas than the volume
        wants, delete one evicting replica per reconcile; the last healthy one stays while
        no healthy replica is left that is not evicting."""
        live = [rn for rn in sorted(self.reps) if rn not in self.deleted]
        healthy = [rn for rn in live if (self.reps[rn].get("spec") or {}).get("healthyAt") and not self.failed(rn)]
        if len(healthy) <= self.wanted():
            return
        keep = "" if any(not self.evicting(rn) for rn in healthy) else \
            next((rn for rn in reversed(healthy) if self.evicting(rn)), "")
        rn = next((rn for rn in live if self.evicting(rn) and rn != keep), None)
        if rn is None:
            return
        log.info("longhorn: evicted replica %s of volume %s from node %s", rn, self.name, self.rnode(rn))
        self.remove(rn)
        self.wake(self.now + 0.5)


    def replenish(self, node: str, template: str) -> None:
        """One new replica (spec from ``template``) where the replica scheduler allows and
        the engine on ``node`` reaches; none: ``Scheduled`` False, ReplicaSchedulingFailure."""
        spare = sum(1 for rn in self.reps if rn != template and self.failed(rn) and not self.evicting(rn)
                    and rn not in self.c.restart_until and self.ctl.ims.running(self.rnode(rn))
                    and self.path(node, rn))
        if self.active() + len(self.created) + spare >= self.wanted():
            return
        facts, load = self.ctl.scheduling_nodes()
        occupying = [{"node": self.rnode(rn), "evicting": self.evicting(rn), "name": rn,
                      "disk": (self.reps[rn].get("spec") or {}).get("diskID") or ""} for rn in sorted(self.reps)
                     if rn not in self.deleted and not self.failed(rn)]
        occupying += [{"node": r["spec"]["nodeID"], "evicting": False, "name": r["metadata"]["name"],
                       "disk": r["spec"].get("diskID") or ""} for r in self.created]
        cands, excluded = place_replica(
            facts, occupying, load=load, volume={"spec": self.vs, "status": self.vst}, settings=self.settings,
            node_soft=soft_anti_affinity(self.vs.get("replicaSoftAntiAffinity"),
                                         self.settings.get("replica-soft-anti-affinity")),
            zone_soft=soft_anti_affinity(self.vs.get("replicaZoneSoftAntiAffinity"),
                                         self.settings.get("replica-zone-soft-anti-affinity")),
            cordoned_unschedulable=setting_on(self.settings, "disable-scheduling-on-cordoned-node"))
        for cand, disk in cands:
            ok, why = instance_path(self.ctl.rt, self.ctl.ims, node, cand)
            if not ok:
                excluded[cand] = f"not reachable from the engine on {node} ({why})"
                continue
            self.created.append(new_replica(self.reps[template], cand, self.ctl.ims, disk))
            self._condition("Scheduled", "True", "", "")
            self.wake(self.now + 0.5)
            return
        self._condition("Scheduled", "False", "ReplicaSchedulingFailure",
                        "replica scheduling failed: no node may take a new replica of this volume: " +
                        "; ".join(f"{n}: {why}" for n, why in sorted(excluded.items())))


    def _condition(self, ctype: str, status: str, reason: str, message: str) -> None:
        for cond in self.vst.setdefault("conditions", []):
            if cond.get("type") == ctype:
                if cond.get("status") != status:
                    cond["lastTransitionTime"] = now_rfc3339()
                cond.update(status=status, reason=reason, message=message)
                return


def new_replica(failed: dict, node: str, ims: Any, disk: dict | None = None) -> dict:
    """A replica of the same volume on ``node`` (replenishment), on ``disk`` (one of
    :func:`.place_replica`'s; its UUID and path become ``diskID``/``diskPath``, label
    ``longhorndiskuuid``); it starts failed-free and stopped, and the next pass restarts
    and rebuilds it like a reused one."""
    spec = json_copy(failed.get("spec") or {})
    vol = spec.get("volumeName", "")
    name = f"{vol}-r-{uuid.uuid4().hex[:8]}"
    ts = now_rfc3339()
    spec.update(nodeID=node, healthyAt="", lastHealthyAt="", failedAt=ts, lastFailedAt="",
                desireState="stopped", rebuildRetryCount=0, evictionRequested=False,
                dataDirectoryName=f"{vol}-{uuid.uuid4().hex[:8]}")
    labels = dict((failed.get("metadata") or {}).get("labels") or {})
    labels["longhornnode"] = node
    if disk and disk.get("uuid"):
        spec.update(diskID=disk["uuid"], diskPath=disk.get("path") or spec.get("diskPath") or "")
        labels["longhorndiskuuid"] = disk["uuid"]
    return {"apiVersion": "longhorn.io/v1beta2", "kind": "Replica",
            "metadata": {"name": name, "namespace": LONGHORN_NS, "labels": labels,
                         "ownerReferences": json_copy((failed.get("metadata") or {}).get("ownerReferences") or [])},
            "spec": spec,
            "status": {"ownerID": node, "instanceManagerName": ims.name(node) or "",
                       "currentState": "stopped", "currentImage": (failed.get("status") or {}).get("currentImage", ""),
                       "ip": ims.ip(node) or "", "storageIP": ims.ip(node) or "",
                       "port": (failed.get("status") or {}).get("port", 10000), "started": False,
                       "logFetched": False, "salvageExecuted": False, "conditions": [],
                       "evictionRequested": False}}
