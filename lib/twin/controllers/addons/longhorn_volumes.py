"""Longhorn volumes, engines and replicas over time: longhorn-manager's volume controller.

One reconcile per ``volumes.longhorn.io`` (key: its name), re-run when a data path may
have changed (:meth:`.LonghornModel.tick`), on store events, and at each stage's due time.
This module holds the controller (reads, writes, events, remount deletions); one pass
of the state machine is :class:`.longhorn_pass.VolumePass`, replica healing
:class:`.longhorn_replicas.ReplicaHealing`. The stages, their delays and their sources
are :data:`.longhorn_rules.STAGES`; in short:

- **attached**: every RW/WO replica the engine cannot reach (:func:`.instance_path`,
  its instance manager gone) is marked ERR after ``engine-replica-timeout`` (at once if
  its process is gone); with RW replicas left the volume is ``degraded``, with none it
  is ``faulted`` and detaches. An engine whose instance manager stops (pod deleted,
  node rebooted) "died unexpectedly": the volume detaches (faulted), and once detached
  with usable replicas it asks for a remount, so Longhorn deletes the workload pods
  (:class:`.VolumeUsers`) and reattaches where their replacements run.
- A failed replica that is usable again (instance manager running, reachable from the
  engine, not stale) restarts and is rebuilt (WO) in the time
  :func:`.longhorn_rebuild.rebuild_plan` gives for its ``status.actualSize`` and the
  volume's hashed snapshots (:meth:`LonghornVolumes.snapshots`), at most ``concurrent-replica-rebuild-per-node-limit`` at once
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
from typing import Any

from ...store import json_copy
from ..base import Controller
from .common import find_type, meta, network_instant, now_rfc3339, pod_ready
from .longhorn_instances import InstanceManagers, ShareManagers
from .longhorn_pass import VolumeClock, VolumePass
from .longhorn_rebuild import REBUILD_SETTINGS
from .longhorn_rules import LONGHORN, LONGHORN_NS, REMOUNT_DELETE_DELAY, SETTINGS, setting_on
from .longhorn_scheduler import lh_node_facts
from .longhorn_workloads import VolumeUsers

log = logging.getLogger("twin.controllers.addons.longhorn")

__all__ = ["LonghornVolumes", "VolumeClock"]


class LonghornVolumes(Controller):
    """The volume controller (see the module docstring). Keys are volume names."""

    def __init__(self, rt: Any, ims: InstanceManagers, sms: ShareManagers) -> None:
        super().__init__("longhorn-volumes", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.ims = ims
        self.sms = sms
        self.t = {k: find_type(self.store, LONGHORN, k)
                  for k in ("volumes", "engines", "replicas", "settings", "engineimages", "snapshots")}
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
        out = dict(SETTINGS, **REBUILD_SETTINGS)
        for name in list(out):
            s = self.store.peek(t, LONGHORN_NS, name) if t is not None else None
            if s is not None and s.get("value") is not None:
                out[name] = str(s["value"])
        return out

    def snapshots(self, vol: str) -> list[dict]:
        """The ``status`` of each ``snapshots.longhorn.io`` of ``vol`` (label
        ``longhornvolume``, or ``spec.volume``), plus its name; none when the cluster does not
        serve the type (the minicloud fixture: all data in the volume head)."""
        t = self.t.get("snapshots") or find_type(self.store, LONGHORN, "snapshots")
        if t is None:
            return []
        self.t["snapshots"] = t         # the CRD may be installed after the twin started
        out = []
        for s in self.store.iter_objects(t, LONGHORN_NS):
            md = meta(s)
            if (md.get("labels") or {}).get("longhornvolume", (s.get("spec") or {}).get("volume")) != vol:
                continue
            st = dict(s.get("status") or {})
            st.setdefault("name", md["name"])
            out.append(st)
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
        """Whether the longhorn-manager pod of ``node`` runs (True without any)."""
        return self._node_pod_ready(node, "", ("app", "longhorn-manager"))

    def scheduling_nodes(self) -> tuple[list[dict], dict[str, int]]:
        """What the replica scheduler reads of each node (:func:`.place_replica`'s
        ``nodes``: the Kubernetes node, the Longhorn pods on it and its
        ``nodes.longhorn.io``), and the bytes of replicas each node holds (its ``load``)."""
        nodes_t = find_type(self.store, "", "nodes")
        lhn_t = self.t.get("nodes") or find_type(self.store, LONGHORN, "nodes")
        self.t["nodes"] = lhn_t
        out = []
        for name in sorted(self.ims.by_node):
            n = self.store.peek(nodes_t, None, name) if nodes_t is not None else None
            kube_ready = n is not None and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (n.get("status") or {}).get("conditions") or ())
            fact = {"name": name, "ready": kube_ready and self.manager_ready(name),
                    "cordoned": bool(((n or {}).get("spec") or {}).get("unschedulable")),
                    "instance_manager": self.ims.running(name),
                    "engine_image": self.engine_image_ready(name),
                    "zone": (meta(n).get("labels") or {}).get("topology.kubernetes.io/zone", "")}
            lhn = self.store.peek(lhn_t, LONGHORN_NS, name) if lhn_t is not None else None
            if lhn is not None:     # its nodes.longhorn.io: scheduling, tags, disks (zone: the live label)
                fact.update({k: v for k, v in lh_node_facts(lhn).items() if k != "zone"})
            out.append(fact)
        load: dict[str, int] = {}
        t = self.t["replicas"]
        for r in self.store.iter_objects(t, LONGHORN_NS) if t is not None else ():
            sp = r.get("spec") or {}
            size = ((self.volume(sp.get("volumeName") or "") or {}).get("status") or {}).get("actualSize") or 0
            load[sp.get("nodeID") or ""] = load.get(sp.get("nodeID") or "", 0) + int(size)
        return out, load

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
        p = VolumePass(self, name, c, v, e, reps, self.clock.cluster_now(), self.settings())
        with network_instant(self.rt):   # the pass reads data paths, changes no node
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
            self.record_event(v, etype, reason, msg)
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

    def record_event(self, obj: dict, etype: str, reason: str, message: str,
                     component: str = "longhorn-volume-controller") -> None:
        """An Event on a Longhorn object (Volume, Replica), as longhorn-manager records it."""
        if self.events_t is None:
            return
        md = meta(obj)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md.get('name')}.", "namespace": LONGHORN_NS},
              "involvedObject": {"apiVersion": obj.get("apiVersion") or "longhorn.io/v1beta2",
                                 "kind": obj.get("kind") or "Volume",
                                 "name": md.get("name"), "namespace": LONGHORN_NS, "uid": md.get("uid")},
              "reason": reason, "message": message, "type": etype, "count": 1,
              "source": {"component": component},
              "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
              "reportingComponent": component}
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
