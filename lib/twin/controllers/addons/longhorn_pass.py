"""One reconcile of one Longhorn volume (:class:`VolumePass`): the attach/detach state
machine of longhorn-manager's volume controller, on copies of the Volume, its Engine and
its Replicas, collecting the writes and events that :class:`.LonghornVolumes` applies.

``attached`` -> (engine's instance manager gone) DetachedUnexpectedly, ``detaching`` ->
``detached`` (remount requested when usable replicas are left) -> ``attaching`` ->
``attached``; replicas the engine cannot reach for ``engine-replica-timeout`` are ERR
(``degraded``; none RW: ``faulted``, detach, auto-salvage later). Replica rebuilds and
replenishment are :class:`.longhorn_replicas.ReplicaHealing`. The stages and their
delays: :data:`.longhorn_rules.STAGES`.

While a replica of the volume is evicting (:mod:`.longhorn_eviction`), the
volume-eviction controller's attachment ticket (``volume_eviction_controller.go``, on the
volume's owner node, priority 800) holds it: an attached volume stays where it is even
when its workload moved to another node (the volume-attachment controller does not
interrupt that ticket for a workload's: ``shouldDoDetach``), so the moved pod waits for
the eviction; a detached volume is attached where a workload wants it (that ticket wins
on priority) or else on its owner node, to rebuild the new replica.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .common import now_rfc3339
from .longhorn_instances import instance_path
from .longhorn_replicas import ReplicaHealing
from .longhorn_rules import (ATTACH_SECONDS, DETACH_GRACE_SECONDS, DETACH_SECONDS, LONGHORN_NS,
                             attach_node, replicas_lost, robustness, salvage_candidates,
                             setting_on, setting_seconds)

__all__ = ["VolumeClock", "VolumePass"]


@dataclass
class VolumeClock:
    """What the volume controller remembers between passes (cluster seconds)."""

    until: float = 0.0                                        # end of attaching/detaching
    engine_epoch: int = -1                                    # IM epoch the engine runs under
    replica_epoch: dict[str, int] = field(default_factory=dict)
    down_since: dict[str, float] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)
    restart_until: dict[str, float] = field(default_factory=dict)
    rebuild_until: dict[str, float] = field(default_factory=dict)
    leaving_since: float | None = None   # since when no pod on the attached node needs it
    faulted: bool = False            # no usable replica: waits for auto-salvage
    unexpected: bool = False         # detached against the user's will: remount afterwards
    remount_at: float | None = None
    remount_uids: set[str] = field(default_factory=set)
    blocked: str = ""                # why it cannot attach now


class VolumePass(ReplicaHealing):
    """One reconcile of one volume: works on copies, collects writes and events."""

    def __init__(self, ctl: Any, name: str, c: VolumeClock, v: dict, e: dict,
                 reps: dict[str, dict], now: float, settings: dict[str, str]) -> None:
        self.ctl, self.name, self.c, self.v, self.e, self.reps = ctl, name, c, v, e, reps
        self.now, self.settings = now, settings
        self.vs, self.vst = v.setdefault("spec", {}), v.setdefault("status", {})
        self.es, self.est = e.setdefault("spec", {}), e.setdefault("status", {})
        self.events: list[tuple[str, str, str]] = []
        self.created: list[dict] = []
        self.deleted: set[str] = set()
        self.kick = False
        self.due: float | None = None

    # -- helpers ------------------------------------------------------------------------
    def wake(self, at: float) -> None:
        self.due = at if self.due is None else min(self.due, at)

    def modes(self) -> dict[str, str]:
        # the engine's own map, also when it is empty or null: writes must land in it
        m = self.est.get("replicaModeMap")
        if not isinstance(m, dict):
            m = self.est["replicaModeMap"] = {}
        return m

    def rnode(self, rn: str) -> str:
        return (self.reps[rn].get("spec") or {}).get("nodeID", "")

    def alive(self, rn: str) -> bool:
        node = self.rnode(rn)
        return self.ctl.ims.running(node) and self.c.replica_epoch.get(rn) == self.ctl.ims.epoch_of(node)

    def path(self, src: str, rn: str) -> bool:
        return instance_path(self.ctl.rt, self.ctl.ims, src, self.rnode(rn))[0]

    def failed(self, rn: str) -> bool:
        return bool((self.reps[rn].get("spec") or {}).get("failedAt"))

    def fail(self, rn: str, error: bool = False) -> None:
        r = self.reps[rn]
        ts = now_rfc3339()
        if not r["spec"].get("failedAt"):
            r["spec"]["failedAt"] = ts
            r["spec"]["lastFailedAt"] = ts
            self.c.failed_at[rn] = self.now
        r["spec"]["desireState"] = "stopped"
        r["status"]["currentState"] = "error" if error else "stopped"
        r["status"]["started"] = False
        self._forget_rebuild(rn)
        if self.modes().get(rn) not in (None, "ERR"):
            self.modes()[rn] = "ERR"
            self.est.setdefault("replicaTransitionTimeMap", {})[rn] = ts

    def _forget_rebuild(self, rn: str) -> None:
        self.c.rebuild_until.pop(rn, None)
        self.c.restart_until.pop(rn, None)
        self.c.down_since.pop(rn, None)
        for names in self.ctl.rebuilding.values():
            names.discard(rn)
        (self.est.get("rebuildStatus") or {}).pop(self._addr(rn), None)

    def _addr(self, rn: str) -> str:
        st = self.reps[rn].get("status") or {}
        return f"tcp://{st.get('ip')}:{st.get('port')}"

    def set_robustness(self, value: str) -> None:
        old = self.vst.get("robustness")
        if value == old:
            return
        self.vst["robustness"] = value
        if value == "degraded":
            self.vst["lastDegradedAt"] = now_rfc3339()
            self.events.append(("Normal", "Degraded", f"volume {self.name} became degraded"))
        elif value == "healthy" and old == "degraded":
            self.events.append(("Normal", "Healthy", f"volume {self.name} became healthy"))
        if value != "degraded":
            self.vst["lastDegradedAt"] = ""

    def request_remount(self) -> None:
        self.vst["remountRequestedAt"] = ts = now_rfc3339()
        self.c.remount_at = self.now
        self.c.remount_uids = self.ctl.users.uids(self.name)
        self.events.append(("Normal", "Remount", f"Volume {self.name} requested remount at {ts}"))

    def target(self) -> str:
        """Where the volume should be attached now ("" = detached): its workload's node,
        or, while a replica is evicting, the eviction ticket's (see the module docstring)."""
        node, _ = attach_node(self.vs.get("accessMode", "rwo"), self.vst.get("currentNodeID") or "",
                              self.ctl.users.pod_nodes(self.name), self.ctl.sms.node(self.name))
        if not any(self.evicting(rn) for rn in self.reps if rn not in self.deleted):
            return node
        current = self.vst.get("currentNodeID") or ""
        if current and self.vst.get("state") in ("attached", "attaching"):
            return current
        return node or self.owner()

    def owner(self) -> str:
        """The node whose longhorn-manager owns the volume (``status.ownerID`` while that
        manager runs, else the first node whose manager runs: isControllerResponsibleFor)."""
        own = self.vst.get("ownerID") or ""
        if own and self.ctl.manager_ready(own):
            return own
        return next((n for n in sorted(self.ctl.ims.by_node) if self.ctl.manager_ready(n)), "")

    # -- the state machine ----------------------------------------------------------------
    def run(self) -> None:
        state = self.vst.get("state") or "detached"
        if state == "attached":
            self.attached()
        elif state == "detaching":
            if self.now >= self.c.until - 1e-6:
                self.finish_detach()
            else:
                self.wake(self.c.until)
        elif state == "attaching":
            node = self.vst.get("currentNodeID") or ""
            if not self.ctl.ims.running(node):
                self.start_detach()
            elif self.now >= self.c.until - 1e-6:
                self.finish_attach(node)
            else:
                self.wake(self.c.until)
        else:
            self.detached()
        self.cleanup_evicted()
        self.vst.setdefault("kubernetesStatus", {})["workloadsStatus"] = self.ctl.users.workloads_status(self.name)
        if self.vs.get("accessMode") == "rwx":
            here = self.vst.get("state") == "attached" and \
                self.vst.get("currentNodeID") == self.ctl.sms.node(self.name)
            was = ((self.ctl.store.peek(self.ctl.sms.t, LONGHORN_NS, self.name) or {}).get("status") or {}).get("state")
            state = self.ctl.sms.sync(self.name, here)
            self.vst["shareState"] = state
            if state == "running" and was != "running":
                self.kick = True

    def start_detach(self) -> None:
        self.vst["state"] = "detaching"
        self.es["desireState"] = "stopped"
        self.est["currentState"] = "stopping"
        self.c.until = self.now + DETACH_SECONDS
        self.wake(self.c.until)

    def attached(self) -> None:
        node = self.es.get("nodeID") or self.vst.get("currentNodeID") or ""
        ims = self.ctl.ims
        if not (ims.running(node) and self.c.engine_epoch == ims.epoch_of(node)):
            self.events.append(("Warning", "DetachedUnexpectedly",
                                f"Engine of volume {self.name} dead unexpectedly, reattach the volume"))
            self.est["currentState"] = "error"
            for rn in self.reps:
                if self.rnode(rn) == node or not self.alive(rn):
                    self.fail(rn, error=True)
            self.set_robustness("faulted")
            self.c.unexpected = True
            self.c.faulted = not any(not self.failed(rn) for rn in self.reps)
            self.start_detach()
            return
        if self.target() != node:
            # The attach/detach controller detaches once no pod on the node needs the
            # volume; a replacement scheduled there meanwhile keeps it attached.
            since = self.c.leaving_since = self.c.leaving_since if self.c.leaving_since is not None \
                else self.now
            if self.now >= since + DETACH_GRACE_SECONDS - 1e-6:
                self.c.leaving_since = None
                self.start_detach()
                return
            self.wake(since + DETACH_GRACE_SECONDS)
        else:
            self.c.leaving_since = None
        timeout = setting_seconds(self.settings, "engine-replica-timeout")
        modes = self.modes()
        for rn, mode in list(modes.items()):
            if rn not in self.reps or mode == "ERR":
                continue
            if not self.alive(rn):
                self.c.down_since[rn] = min(self.c.down_since.get(rn, self.now), self.now - timeout)
            elif self.path(node, rn):
                self.c.down_since.pop(rn, None)
            else:
                self.c.down_since.setdefault(rn, self.now)
                self.wake(self.c.down_since[rn] + timeout)
        for rn in replicas_lost(modes, self.c.down_since, self.now, timeout):
            self.fail(rn, error=not self.alive(rn))
        if not any(m == "RW" for m in modes.values()):
            self.set_robustness("faulted")
            self.c.faulted = self.c.unexpected = True
            self.start_detach()
            return
        self.heal(node)
        rw = sum(1 for m in modes.values() if m == "RW")
        self.set_robustness(robustness("attached", rw, self.wanted(), False))

    def finish_detach(self) -> None:
        self.vst.update(state="detached", currentNodeID="")
        self.events.append(("Normal", "Detached", f"volume {self.name} has been detached"))
        self.es["desireState"] = "stopped"
        self.est.update(currentState="stopped", replicaModeMap={}, currentReplicaAddressMap={},
                        rebuildStatus={}, endpoint="", started=False)
        for rn, r in self.reps.items():
            self._forget_rebuild(rn)
            if not self.failed(rn):
                r["spec"]["desireState"] = "stopped"
                r["status"].update(currentState="stopped", started=False)
        self.c.down_since.clear()
        self.set_robustness("faulted" if self.c.faulted else "unknown")
        if self.c.unexpected and not self.c.faulted:
            self.request_remount()
            self.c.unexpected = False
        self.detached()

    def detached(self) -> None:
        self.vst["state"] = "detached"
        want = self.target()
        if self.c.faulted:
            if not self.salvage(want):
                self.set_robustness("faulted")
                return
        if not want:
            self.set_robustness("unknown")
            self.c.blocked = ""
            return
        why = self.attach_blocker(want)
        self.c.blocked = why
        if why:
            self.set_robustness("unknown")
            return
        self.vs["nodeID"] = want
        self.vst.update(state="attaching", currentNodeID=want, ownerID=want)
        self.es["nodeID"] = want
        self.es["desireState"] = "running"
        self.e.setdefault("metadata", {}).setdefault("labels", {})["longhornnode"] = want
        self.est.update(currentState="starting", ownerID=want,
                        instanceManagerName=self.ctl.ims.name(want) or "")
        self.c.until = self.now + ATTACH_SECONDS
        self.wake(self.c.until)

    def attach_blocker(self, node: str) -> str:
        if not self.ctl.ims.running(node):
            return f"instance manager on {node} is not running"
        if not self.ctl.engine_image_ready(node):
            return f"engine image is not deployed on {node}"
        if not any(not self.failed(rn) and self.ctl.ims.running(self.rnode(rn)) and self.path(node, rn)
                   for rn in self.reps):
            return f"no usable replica is reachable from {node}"
        return ""

    def salvage(self, want: str) -> bool:
        """Auto-salvage (faulted and detached): True when the volume is usable again."""
        if not setting_on(self.settings, "auto-salvage"):
            return False
        src = want or next(iter(sorted(self.ctl.ims.by_node)), "")
        usable = [rn for rn in self.reps if self.ctl.ims.running(self.rnode(rn)) and src
                  and self.path(src, rn)]
        healthy = [rn for rn, r in self.reps.items() if (r.get("spec") or {}).get("healthyAt")
                   or (r.get("spec") or {}).get("lastHealthyAt")]
        picked = salvage_candidates(self.c.failed_at, healthy, usable)
        if not picked:
            return False
        for rn in picked:
            self.reps[rn]["spec"]["failedAt"] = ""
            self.c.failed_at.pop(rn, None)
            self.events.append(("Warning", "AutoSalvaged",
                                f"Replica {rn} of volume {self.name} will be automatically salvaged"))
        self.c.faulted = False
        self.c.unexpected = False
        self.set_robustness("unknown")
        self.request_remount()
        return True

    def finish_attach(self, node: str) -> None:
        ims = self.ctl.ims
        self.c.engine_epoch = ims.epoch_of(node)
        ts = now_rfc3339()
        modes: dict[str, str] = {}
        addrs: dict[str, str] = {}
        for rn, r in sorted(self.reps.items()):
            if self.failed(rn):
                continue
            rnode = self.rnode(rn)
            if ims.running(rnode) and self.path(node, rn):
                self.c.replica_epoch[rn] = ims.epoch_of(rnode)
                r["spec"]["desireState"] = "running"
                r["status"].update(currentState="running", started=True,
                                   instanceManagerName=ims.name(rnode) or "", ip=ims.ip(rnode) or "")
                modes[rn] = "RW"
                addrs[rn] = f"{r['status']['ip']}:{r['status'].get('port')}"
            else:
                self.fail(rn)
        self.es["replicaAddressMap"] = dict(addrs)
        self.est.update(currentState="running", started=True, ip=ims.ip(node) or "",
                        storageIP=ims.ip(node) or "", instanceManagerName=ims.name(node) or "",
                        replicaModeMap=modes, currentReplicaAddressMap=dict(addrs),
                        replicaTransitionTimeMap={rn: ts for rn in modes},
                        endpoint=f"/dev/longhorn/{self.name}")
        if not modes:
            self.set_robustness("faulted")
            self.c.faulted = self.c.unexpected = True
            self.start_detach()
            return
        self.vst["state"] = "attached"
        self.events.append(("Normal", "Attached", f"volume {self.name} has been attached to {node}"))
        self.kick = True
        self.set_robustness(robustness("attached", len(modes), self.wanted(), False))
