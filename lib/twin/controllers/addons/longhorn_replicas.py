"""Longhorn replicas coming back: restart, rebuild, replenishment, stale cleanup.

:class:`ReplicaHealing` is the part of a volume's reconcile (:class:`.longhorn_pass.VolumePass`)
that runs while the volume is attached:

- a failed replica that is usable again (its instance manager runs, the engine reaches
  it) and not stale restarts (``replica-restart``), waits for a rebuild slot
  (``concurrent-replica-rebuild-per-node-limit`` per node), is rebuilt as WO for
  :func:`.longhorn_rules.rebuild_seconds` of the volume's ``actualSize`` and turns RW;
- one still unusable after ``replica-replenishment-wait-interval`` is replaced by a new
  replica on a node without one of this volume, reachable from the engine (none: the
  volume's ``Scheduled`` condition says ``ReplicaSchedulingFailure``);
- a failed replica older than ``spec.staleReplicaTimeout`` minutes is deleted.
"""
from __future__ import annotations

import uuid
from typing import Any

from ...store import json_copy
from .common import meta, now_rfc3339
from .longhorn_instances import instance_path
from .longhorn_rules import LONGHORN_NS, REPLICA_START_SECONDS, rebuild_seconds, setting_seconds

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
                self.deleted.add(rn)
                self._forget_rebuild(rn)
                modes.pop(rn, None)
                (self.es.get("replicaAddressMap") or {}).pop(rn, None)
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
        if live and not any(self.failed(rn) for rn in live) and \
                self.active() + len(self.created) < self.wanted():
            # fewer replicas than numberOfReplicas and none left to restart (a failed one
            # went stale): the volume controller schedules a new one where a node is usable
            # (volume_controller.go replenishReplicas)
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
        seconds = rebuild_seconds(actual)
        self.c.rebuild_until[rn] = self.now + seconds
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


    def active(self) -> int:
        """Replicas RW, rebuilding or restarting (the ones the volume counts on)."""
        modes = self.modes()
        return sum(1 for rn in self.reps if modes.get(rn) in ("RW", "WO") or rn in self.c.restart_until)


    def replenish(self, node: str, failed: str) -> None:
        """A new replica where none of this volume is, reachable from the engine."""
        spare = sum(1 for rn in self.reps if rn != failed and self.failed(rn)
                    and rn not in self.c.restart_until and self.ctl.ims.running(self.rnode(rn))
                    and self.path(node, rn))
        if self.active() + len(self.created) + spare >= self.wanted():
            return
        taken = {self.rnode(rn) for rn in self.reps if rn not in self.deleted}
        for cand in sorted(self.ctl.ims.by_node):
            if cand in taken or not self.ctl.ims.running(cand):
                continue
            if not instance_path(self.ctl.rt, self.ctl.ims, node, cand)[0]:
                continue
            self.created.append(new_replica(self.reps[failed], cand, self.ctl.ims))
            self._condition("Scheduled", "True", "", "")
            self.wake(self.now + 0.5)
            return
        self._condition("Scheduled", "False", "ReplicaSchedulingFailure",
                        "replica scheduling failed: no node without a replica of this volume is usable")


    def _condition(self, ctype: str, status: str, reason: str, message: str) -> None:
        for cond in self.vst.setdefault("conditions", []):
            if cond.get("type") == ctype:
                if cond.get("status") != status:
                    cond["lastTransitionTime"] = now_rfc3339()
                cond.update(status=status, reason=reason, message=message)
                return


def new_replica(failed: dict, node: str, ims: Any) -> dict:
    """A replica of the same volume on ``node`` (replenishment); it starts failed-free and
    stopped, and the next pass restarts and rebuilds it like a reused one."""
    spec = json_copy(failed.get("spec") or {})
    vol = spec.get("volumeName", "")
    name = f"{vol}-r-{uuid.uuid4().hex[:8]}"
    ts = now_rfc3339()
    spec.update(nodeID=node, healthyAt="", lastHealthyAt="", failedAt=ts, lastFailedAt="",
                desireState="stopped", rebuildRetryCount=0,
                dataDirectoryName=f"{vol}-{uuid.uuid4().hex[:8]}")
    labels = dict((failed.get("metadata") or {}).get("labels") or {})
    labels["longhornnode"] = node
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
