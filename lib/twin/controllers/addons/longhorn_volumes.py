"""Longhorn volumes, engines and replicas over time: longhorn-manager's volume controller.

One reconcile per ``volumes.longhorn.io`` (key: its name), re-run each second by the
add-ons ticker (the network changes without a store event) and at each stage's due
time. The stages, their delays and their sources are :data:`.longhorn_rules.STAGES`;
in short:

- **attached**: every RW/WO replica the engine cannot reach (:func:`.instance_path`,
  its instance manager gone) is marked ERR after ``engine-replica-timeout`` (at once if
  its process is gone); with RW replicas left the volume is ``degraded``, with none it
  is ``faulted`` and detaches. An engine whose instance manager stops (pod deleted,
  node rebooted) "died unexpectedly": the volume detaches (faulted), and once detached
  with usable replicas it asks for a remount, so Longhorn deletes the workload pods
  (:class:`.VolumeUsers`) and reattaches where their replacements run.
- A failed replica that is usable again (instance manager running, reachable from the
  engine, not stale) restarts and is rebuilt (WO) in :func:`.rebuild_seconds` of its
  ``status.actualSize``, at most ``concurrent-replica-rebuild-per-node-limit`` at once
  per node, then RW: the volume is ``healthy`` again. One that stays unusable past
  ``replica-replenishment-wait-interval`` is replaced on a node without a replica of
  the volume, if one is reachable; failed replicas are deleted once stale
  (``spec.staleReplicaTimeout`` minutes).
- **detached** and faulted: auto-salvage brings back the replicas that failed last
  (within a minute) once one of them is usable from the attach node, and requests a
  remount. Detached volumes report robustness ``unknown``.
- **detached** with a user: it attaches (``attaching`` for a few seconds) to the node
  of its pod (RWO) or of its share-manager pod (RWX) when that node's instance manager
  runs, the engine image is deployed there and a usable replica is reachable.

Simplifications, all of the twin: no Longhorn VolumeAttachment objects (the pods that
mount a volume are its attachment tickets); a volume is assumed to be written to while
attached (as the node-disconnection test plan's "data writing" cases); a salvage is
only tried when the salvaged replicas are reachable (Longhorn tries, fails and loops).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ...store import json_copy
from ..base import Controller
from .common import find_type, meta, now_rfc3339, pod_ready
from .longhorn_instances import InstanceManagers, ShareManagers, instance_path
from .longhorn_rules import (ATTACH_SECONDS, DETACH_GRACE_SECONDS, DETACH_SECONDS, LONGHORN,
                             LONGHORN_NS, REMOUNT_DELETE_DELAY, REPLICA_START_SECONDS, SETTINGS,
                             attach_node, rebuild_seconds, replicas_lost, robustness,
                             salvage_candidates, setting_on, setting_seconds)
from .longhorn_workloads import VolumeUsers

log = logging.getLogger("twin.controllers.addons.longhorn")


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


class LonghornVolumes(Controller):
    """The volume controller (see the module docstring). Keys are volume names."""

    def __init__(self, rt: Any, ims: InstanceManagers, sms: ShareManagers) -> None:
        super().__init__("longhorn-volumes", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.ims = ims
        self.sms = sms
        self.t = {k: find_type(self.store, LONGHORN, k)
                  for k in ("volumes", "engines", "replicas", "settings", "engineimages")}
        self.events_t = find_type(self.store, "", "events")
        self.users = VolumeUsers(rt, self.volume, self.sms.ready)
        self.clocks: dict[str, VolumeClock] = {}
        self.engine_of: dict[str, str] = {}
        self.replicas_of: dict[str, set[str]] = {}
        self.rebuilding: dict[str, set[str]] = {}     # node -> replicas being rebuilt there

    # ------------------------------------------------------------------ reads
    def volume(self, name: str) -> dict | None:
        t = self.t["volumes"]
        return self.store.peek(t, LONGHORN_NS, name) if t is not None else None

    def settings(self) -> dict[str, str]:
        t = self.t["settings"]
        out = dict(SETTINGS)
        for name in SETTINGS:
            s = self.store.peek(t, LONGHORN_NS, name) if t is not None else None
            if s is not None and s.get("value") is not None:
                out[name] = str(s["value"])
        return out

    def load(self) -> None:
        """Adopt the engines, replicas and volumes the store holds (a converged fixture)."""
        if self.t["volumes"] is None:
            return
        for kind in ("engines", "replicas"):
            for o in self.store.iter_objects(self.t[kind], LONGHORN_NS):
                self.on_instance(kind, "ADDED", o)
        self.users.load()
        for v in self.store.iter_objects(self.t["volumes"], LONGHORN_NS):
            name = meta(v)["name"]
            c = self.clocks.setdefault(name, VolumeClock())
            node = (v.get("status") or {}).get("currentNodeID") or ""
            if (v.get("status") or {}).get("state") == "attached" and node:
                c.engine_epoch = self.ims.epoch_of(node)
            for r in self._replicas(name).values():
                rn = meta(r)["name"]
                c.replica_epoch[rn] = self.ims.epoch_of((r.get("spec") or {}).get("nodeID", ""))
                if (r.get("spec") or {}).get("failedAt"):
                    c.failed_at[rn] = self.clock.cluster_now()
            self.enqueue(name)

    def on_instance(self, kind: str, etype: str, obj: dict) -> None:
        """Keep the engine/replica indexes of a volume current."""
        md = meta(obj)
        vol = (obj.get("spec") or {}).get("volumeName") or ""
        if kind == "engines":
            if etype == "DELETED":
                if self.engine_of.get(vol) == md["name"]:
                    del self.engine_of[vol]
            else:
                self.engine_of[vol] = md["name"]
        else:
            names = self.replicas_of.setdefault(vol, set())
            (names.discard if etype == "DELETED" else names.add)(md["name"])
        if vol:
            self.enqueue(vol)

    def _replicas(self, vol: str) -> dict[str, dict]:
        t = self.t["replicas"]
        out = {}
        for n in sorted(self.replicas_of.get(vol, ())):
            r = self.store.peek(t, LONGHORN_NS, n)
            if r is not None:
                out[n] = r
        return out

    # ------------------------------------------------------------------ node facts
    def _node_pod_ready(self, node: str, prefix: str, label: tuple[str, str] | None = None) -> bool:
        """A longhorn-system pod on ``node`` named ``prefix*`` (or labelled) is Ready;
        True when the cluster has no such pod at all (a fixture without it)."""
        found = False
        pods_t = find_type(self.store, "", "pods")
        for p in self.store.iter_objects(pods_t, LONGHORN_NS):
            md = meta(p)
            match = md.get("name", "").startswith(prefix) if label is None else \
                (md.get("labels") or {}).get(label[0]) == label[1]
            if not match:
                continue
            found = True
            if (p.get("spec") or {}).get("nodeName") == node and pod_ready(p):
                return True
        return not found

    def engine_image_ready(self, node: str) -> bool:
        return self._node_pod_ready(node, "engine-image-")

    def manager_ready(self, node: str) -> bool:
        return self._node_pod_ready(node, "", ("app", "longhorn-manager"))

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, name: str) -> None:
        vol0 = self.volume(name)
        ename = self.engine_of.get(name)
        eng0 = self.store.peek(self.t["engines"], LONGHORN_NS, ename) if ename else None
        if vol0 is None or eng0 is None:
            self.clocks.pop(name, None)
            return
        c = self.clocks.setdefault(name, VolumeClock())
        reps0 = self._replicas(name)
        v, e = json_copy(vol0), json_copy(eng0)
        reps = {n: json_copy(r) for n, r in reps0.items()}
        p = _Pass(self, name, c, v, e, reps, self.clock.cluster_now(), self.settings())
        p.run()
        self._write("volumes", vol0, v)
        self._write("engines", eng0, e)
        for n, r in reps.items():
            if n in p.deleted:
                self._delete_replica(n)
            else:
                self._write("replicas", reps0[n], r)
        for r in p.created:
            try:
                self.store.create(r, rtype=self.t["replicas"])
            except Exception:
                log.debug("longhorn: replica %s not created", meta(r)["name"], exc_info=True)
        for etype, reason, msg in p.events:
            self._event(v, etype, reason, msg)
        if p.kick:
            self.kick(name)
        self._remount(name, c, p.now)
        if p.due is not None:
            self.requeue_after(name, max(0.05, p.due - p.now))

    def _write(self, kind: str, old: dict, new: dict) -> None:
        if new == old:
            return
        md = meta(new)

        def fn(o: dict) -> None:
            for k in ("spec", "status"):
                if k in new:
                    o[k] = new[k]
            o["metadata"]["labels"] = md.get("labels") or {}
        try:
            self.store.mutate(self.t[kind], LONGHORN_NS, md["name"], fn)
        except Exception:
            log.debug("longhorn: %s %s not written", kind, md["name"], exc_info=True)

    def _delete_replica(self, name: str) -> None:
        try:
            self.store.delete(self.t["replicas"], LONGHORN_NS, name)
        except Exception:
            log.debug("longhorn: replica %s not deleted", name, exc_info=True)

    def _event(self, vol: dict, etype: str, reason: str, message: str) -> None:
        if self.events_t is None:
            return
        md = meta(vol)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md.get('name')}.", "namespace": LONGHORN_NS},
              "involvedObject": {"apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
                                 "name": md.get("name"), "namespace": LONGHORN_NS, "uid": md.get("uid")},
              "reason": reason, "message": message, "type": etype, "count": 1,
              "source": {"component": "longhorn-volume-controller"},
              "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
              "reportingComponent": "longhorn-volume-controller"}
        try:
            self.store.create(ev)
        except Exception:
            log.debug("longhorn: event not recorded", exc_info=True)

    def kick(self, vol: str) -> None:
        """Pods waiting for this volume (and its share manager) get a new kubelet decision."""
        try:
            kubelet = self.rt.component("workloads").kubelet
        except (KeyError, AttributeError):
            return
        for p in self.users.pods(vol) + [x for x in [self.sms.pod(vol)] if x is not None]:
            kubelet.enqueue((meta(p).get("namespace") or "", meta(p).get("name")))

    def _remount(self, vol: str, c: VolumeClock, now: float) -> None:
        """kubernetes_pod_controller: delete the pods that mounted the volume before the
        remount request, REMOUNT_DELETE_DELAY after it (each by the manager of its node)."""
        if c.remount_at is None:
            return
        v = self.volume(vol) or {}
        regular_rwx = (v.get("spec") or {}).get("accessMode") == "rwx" and \
            not (v.get("spec") or {}).get("migratable")
        if regular_rwx or not setting_on(self.settings(), "auto-delete-pod-when-volume-detached-unexpectedly"):
            c.remount_at, c.remount_uids = None, set()
            return
        if now < c.remount_at + REMOUNT_DELETE_DELAY - 1e-6:
            self.requeue_after(vol, c.remount_at + REMOUNT_DELETE_DELAY - now)
            return
        left = set()
        for p in self.users.pods(vol):
            uid = meta(p).get("uid")
            if uid in c.remount_uids and not self.manager_ready((p.get("spec") or {}).get("nodeName", "")):
                left.add(uid)
        self.users.delete_for_remount(vol, c.remount_uids - left)
        c.remount_uids = left
        if not left:
            c.remount_at = None
        else:
            self.requeue_after(vol, 1.0)


class _Pass:
    """One reconcile of one volume: works on copies, collects writes and events."""

    def __init__(self, ctl: LonghornVolumes, name: str, c: VolumeClock, v: dict, e: dict,
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
        return self.est.setdefault("replicaModeMap", {}) or {}

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
        node, _ = attach_node(self.vs.get("accessMode", "rwo"), self.vst.get("currentNodeID") or "",
                              self.ctl.users.pod_nodes(self.name), self.ctl.sms.node(self.name))
        return node

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
        taken = {self.rnode(rn) for rn in self.reps}
        for cand in sorted(self.ctl.ims.by_node):
            if cand in taken or not self.ctl.ims.running(cand):
                continue
            if not instance_path(self.ctl.rt, self.ctl.ims, node, cand)[0]:
                continue
            self.created.append(_new_replica(self.reps[failed], cand, self.ctl.ims))
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


def _new_replica(failed: dict, node: str, ims: InstanceManagers) -> dict:
    """A replica of the same volume on ``node`` (replenishment); it starts failed-free and
    stopped, and the next pass restarts and rebuilds it like a reused one."""
    import uuid
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
