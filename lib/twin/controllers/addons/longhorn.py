"""Longhorn (longhorn-manager) and the other operators whose custom resources own pods.

:class:`LonghornModel` runs the Longhorn parts, one module each:

- :mod:`.longhorn_rules`: settings, the stages and their delays (data), pure rules;
- :mod:`.longhorn_instances`: instance managers and share managers from their pods,
  and :func:`~.longhorn_instances.pod_path`, which asks the network model's ``reach``
  whether pod traffic crosses between two nodes;
- :mod:`.longhorn_volumes`, :mod:`.longhorn_pass`, :mod:`.longhorn_replicas`: volumes,
  engines and replicas over time (degraded, faulted, rebuilt, detached unexpectedly,
  salvaged, reattached);
- :mod:`.longhorn_workloads`: which pods mount which volume, the kubelet's wait for
  attach and mount, and the deletion of workload pods after a remount request;
- :mod:`.longhorn_pdb`: the PodDisruptionBudget on each instance manager's pod, removed
  on a cordoned node only once its volumes have detached and, by ``node-drain-policy``,
  its replicas have healthy copies elsewhere (what makes a drain wait for Longhorn);
- :mod:`.longhorn_nodes`: the status of each ``nodes.longhorn.io`` (Ready, Schedulable,
  zone, disks: what is scheduled on them and their room), whose spec (tags, scheduling,
  disks) the :mod:`.longhorn_scheduler` reads;
- :mod:`.longhorn_eviction`: under the ``block-for-eviction`` policies, the replicas of a
  cordoned node marked for eviction, which the volumes then move to nodes the
  :mod:`.longhorn_scheduler` allows (what lets such a drain finish, slowly).

:class:`OperatorPods` recreates the pods a custom resource owns, as its operator does.
:data:`OPERATOR_PODS` says, per owner kind, who recreates the pod, where, and what harm
its disappearance does in the twin (the harm itself is modelled by the modules above):

=================================  ========================================================
owner (pods in the fixture)        harm modelled while the pod is gone or new
=================================  ========================================================
InstanceManager (one per node)     its engines and replicas stop: volumes whose engine ran
                                   there detach unexpectedly (faulted), Longhorn deletes
                                   their workload pods and reattaches; replicas there fail
                                   and are rebuilt. Not recreated while the node is
                                   cordoned or its longhorn-manager pod is not Ready.
ShareManager (one per RWX volume)  the NFS share stops: the volume detaches and reattaches
                                   to the new pod's node; pods that mount it meanwhile wait
                                   ("share not yet available"); running NFS clients are
                                   not deleted (same ClusterIP, Longhorn leaves them).
=================================  ========================================================

Pods owned through a workload (Prometheus and Alertmanager StatefulSets of the
prometheus-operator, the engine-image DaemonSet of an EngineImage) are recreated by the
workload controllers; what their absence harms is modelled where it happens: a
recreated pod mounting a Longhorn volume waits for the volume, and while a node's
engine-image pod is not Ready no volume attaches there.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from ...store import json_copy
from ...ticker import TaskSet
from .common import find_type, meta, network_instant, pod_reachable, pod_ready
from .longhorn_eviction import ReplicaEvictions
from .longhorn_instances import InstanceManagers, ShareManagers
from .longhorn_nodes import LonghornNodes, manager_state
from .longhorn_pdb import InstanceManagerPDBs
from .longhorn_rules import LONGHORN, LONGHORN_NS, STAGE
from .longhorn_volumes import LonghornVolumes

log = logging.getLogger("twin.controllers.addons")


@dataclass(frozen=True)
class OperatorPodPolicy:
    """How an operator recreates the pod its custom resource owns.

    Attributes:
        operator: who recreates it.
        same_node: recreated on the pod's node (else the scheduler places it).
        needs_manager: only while the operator's pod on that node is Ready
            (``app=<operator>`` in the pod's namespace).
        not_on_cordoned: not recreated while the node is unschedulable.
        harm: what its absence does (modelled elsewhere, see the module table).
    """

    operator: str
    same_node: bool
    needs_manager: bool
    not_on_cordoned: bool
    harm: str


OPERATOR_PODS: dict[tuple[str, str], OperatorPodPolicy] = {
    (LONGHORN, "InstanceManager"): OperatorPodPolicy(
        "longhorn-manager", same_node=True, needs_manager=True, not_on_cordoned=True,
        harm="engines and replicas stop: volumes detach unexpectedly, workload pods are "
             "deleted and come back once reattached; replicas are rebuilt"),
    (LONGHORN, "ShareManager"): OperatorPodPolicy(
        "longhorn-manager", same_node=False, needs_manager=False, not_on_cordoned=False,
        harm="the RWX volume's NFS share stops; it reattaches to the new pod's node"),
}
#: Any other custom resource owning a pod: recreated under its name on its node.
DEFAULT_POLICY = OperatorPodPolicy("its operator", same_node=True, needs_manager=False,
                                   not_on_cordoned=False, harm="none modelled")


class OperatorPods:
    """Operators recreate the pods their custom resources own (see :data:`OPERATOR_PODS`).

    A pod whose controlling owner is a custom resource (not a Deployment, ReplicaSet,
    DaemonSet, StatefulSet or Job) is recreated under the same name a couple of cluster
    seconds after it is deleted, as long as its owner still exists. While the policy's
    conditions do not hold (node cordoned, operator pod not Ready) the operator retries
    every few seconds.
    """

    delay = float(STAGE["instance-manager-recreate"].after)   # cluster seconds
    retry = 3.0

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._tasks = TaskSet("operator-pods")
        self.recreated: list[tuple[str, str]] = []
        #: ``wanted(pod) -> bool``: whether the operator wants the pod at all now (a share
        #: manager of a volume no pod uses is stopped, not recreated)
        self.wanted: Callable[[dict], bool] = lambda pod: True

    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        if etype != "DELETED" or (rtype.group, rtype.plural) != ("", "pods"):
            return
        ref = next((r for r in meta(obj).get("ownerReferences") or () if r.get("controller")), None)
        if ref is None:
            return
        api = ref.get("apiVersion", "")
        group = api.split("/")[0] if "/" in api else ""
        if group in ("", "apps", "batch"):
            return
        policy = OPERATOR_PODS.get((group, ref.get("kind", "")), DEFAULT_POLICY)
        self._tasks.spawn(self._recreate(obj, ref, policy))

    def _blocked(self, pod: dict, policy: OperatorPodPolicy) -> str:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        store = self.rt.store
        if policy.not_on_cordoned and node:
            n = store.peek(find_type(store, "", "nodes"), None, node)
            if n is not None and (n.get("spec") or {}).get("unschedulable"):
                return f"node {node} is cordoned"
        if policy.needs_manager and node:
            pods_t = find_type(store, "", "pods")
            mine = [p for p in store.iter_objects(pods_t, meta(pod).get("namespace"))
                    if (meta(p).get("labels") or {}).get("app") == policy.operator]
            if mine and not any((p.get("spec") or {}).get("nodeName") == node and pod_ready(p) for p in mine):
                return f"{policy.operator} on {node} is not Ready"
        return ""

    async def _recreate(self, pod: dict, ref: dict, policy: OperatorPodPolicy) -> None:
        await self.rt.clock.sleep(self.delay)
        store = self.rt.store
        md = meta(pod)
        owner_t = store.lookup_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        pod_t = store.lookup("", "v1", "pods")
        while True:
            if owner_t is None or store.try_get(owner_t, md.get("namespace"), ref.get("name", "")) is None:
                return  # the owner is gone: the operator has nothing to recreate
            if store.try_get(pod_t, md.get("namespace"), md["name"]) is not None:
                return
            if not self.wanted(pod):
                return  # the operator stopped it on purpose (see LonghornModel.share_managers)
            why = self._blocked(pod, policy)
            if not why:
                break
            log.info("%s: not recreating %s/%s yet: %s", policy.operator, md.get("namespace"), md["name"], why)
            await self.rt.clock.sleep(self.retry)
        ann = {k: v for k, v in (md.get("annotations") or {}).items() if not k.startswith("twin.phase22.io/")}
        spec = dict(pod.get("spec") or {})
        if not policy.same_node:
            spec.pop("nodeName", None)
        fresh = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                              "labels": dict(md.get("labels") or {}), "annotations": ann,
                              "ownerReferences": list(md.get("ownerReferences") or [])},
                 "spec": spec}
        try:
            store.create(fresh)
            self.recreated.append((md.get("namespace") or "", md["name"]))
        except Exception:
            log.debug("operator pods: %s/%s not recreated", md.get("namespace"), md["name"], exc_info=True)

    async def stop(self) -> None:
        self._tasks.cancel()


class LonghornModel:
    """longhorn-manager: instance managers, share managers, volumes, workload pods.

    Example (inside the twin's loop)::

        lh = rt.component("addons").longhorn
        lh.volumes.volume("pvc-…")["status"]["robustness"]     # 'healthy'
    """

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.ims = InstanceManagers(rt)
        self.sms = ShareManagers(rt)
        self.volumes = LonghornVolumes(rt, self.ims, self.sms)
        self.pdbs = InstanceManagerPDBs(rt, self.ims, self.volumes)
        self.evictions = ReplicaEvictions(rt, self.volumes, self.pdbs)
        self.nodes = LonghornNodes(rt, self.volumes.settings, lambda node: manager_state(rt.store, node))
        self.enabled = self.volumes.t["volumes"] is not None
        self._signature: tuple = ()
        self._ticks = 0
        self._lh_pods_changed = False
        self._stopped_shares: dict[str, dict] = {}     # volume -> the share-manager pod it had

    def start(self) -> None:
        if not self.enabled:
            return
        self.ims.load()
        self.volumes.load()
        try:
            kubelet = self.rt.component("workloads").kubelet
            kubelet.volume_gates.append(self.volumes.users.gate)
        except (KeyError, AttributeError):
            log.info("longhorn: no kubelet to hold pods until their volumes attach")
        self.volumes.start()
        self.nodes.sync()
        self.evictions.sync()
        self.pdbs.sync()

    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        if not self.enabled:
            return
        key = (rtype.group, rtype.plural)
        if key == ("", "pods"):
            for vol in self.volumes.users.on_pod(etype, obj):
                self.volumes.enqueue(vol)
            if meta(obj).get("namespace") == LONGHORN_NS and not self._lh_pods_changed:
                # instance managers, share managers, engine-image and manager pods: what
                # every attach, rebuild and salvage depends on (looked at once the store's
                # callbacks are done: no write from inside one)
                self._lh_pods_changed = True
                asyncio.get_running_loop().call_soon(self._longhorn_pods_changed)
        elif key in ((LONGHORN, "engines"), (LONGHORN, "replicas")):
            self.volumes.on_instance(rtype.plural, etype, obj)
        elif key == (LONGHORN, "volumes") and etype != "DELETED":
            self.volumes.enqueue(meta(obj)["name"])

    def _longhorn_pods_changed(self) -> None:
        self._lh_pods_changed = False
        self.ims.refresh()
        self.enqueue_all()

    def enqueue_all(self) -> None:
        for name in list(self.volumes.engine_of):
            self.volumes.enqueue(name)

    sweep_every = 10      # ticks between passes over every volume, whatever changed

    def network_signature(self) -> tuple:
        """What the data paths depend on and may change without a store event: each
        node's working CNI and machine state, and whether each instance-manager and
        share-manager pod has a data path."""
        net = None
        try:
            net = self.rt.component("network")
        except (KeyError, AttributeError):
            pass
        nodes = tuple(sorted(self.ims.by_node))
        sig: list[Any] = [(n, net.working_cni(n) if net is not None else None,
                           bool(getattr(self.rt.nodes.get(n), "up", True))) for n in nodes]
        sig += [pod_reachable(self.rt, self.ims.pod(n) or {})[0] for n in nodes]
        sig += [pod_reachable(self.rt, self.sms.pod(v) or {})[0] for v in sorted(self.volumes.engine_of)
                if (self.volumes.volume(v) or {}).get("spec", {}).get("accessMode") == "rwx"]
        sig.append(repr(getattr(getattr(self.rt, "faults", None), "firewall", None)))   # blocked tunnels
        return tuple(sig)

    def tick(self) -> None:
        """Each second: instance managers from their pods and nodes; every volume again
        when the network changed (it changes without store events), and every
        :attr:`sweep_every` ticks anyway; the instances each manager runs."""
        if not self.enabled:
            return
        changed = bool(self.ims.refresh())
        with network_instant(self.rt):
            sig = self.network_signature()
        self._ticks += 1
        if changed or sig != self._signature or self._ticks % self.sweep_every == 0:
            if sig != self._signature:
                # a share may have become reachable: pods waiting to mount it look again
                for name in list(self.volumes.engine_of):
                    self.volumes.kick(name)
            self._signature = sig
            self.enqueue_all()
        self._record_instances()
        self.nodes.sync()
        self.evictions.sync()
        self.pdbs.sync()
        self.share_managers()

    # ------------------------------------------------------------------ share managers
    def _rwx(self) -> list[str]:
        return [v for v in sorted(self.volumes.engine_of)
                if ((self.volumes.volume(v) or {}).get("spec") or {}).get("accessMode") == "rwx"]

    def _users(self, volume: str) -> list[dict]:
        return [p for p in self.volumes.users.pods(volume) if not meta(p).get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def pod_wanted(self, pod: dict) -> bool:
        """Whether longhorn-manager wants ``pod`` now: a share manager only while a pod
        uses its RWX volume (``share_manager_controller.go``: a share manager no workload
        needs is stopped and its pod deleted)."""
        name = meta(pod).get("name") or ""
        if meta(pod).get("namespace") != LONGHORN_NS or not name.startswith("share-manager-"):
            return True
        return bool(self._users(name[len("share-manager-"):]))

    def share_managers(self) -> None:
        """Stop the share manager of an RWX volume no pod uses (its pod deleted; the volume
        then detaches), and start it again (a new pod) once a pod uses the volume."""
        store = self.rt.store
        for vol in self._rwx():
            pod = self.sms.pod(vol)
            users = self._users(vol)
            if pod is not None and not users and not meta(pod).get("deletionTimestamp"):
                self._stopped_shares[vol] = json_copy(pod)
                log.info("longhorn: share manager of %s stopped: no pod uses the volume", vol)
                try:
                    store.delete(self.sms.pods_t, LONGHORN_NS, meta(pod)["name"])
                except Exception:
                    log.debug("longhorn: share-manager pod of %s not deleted", vol, exc_info=True)
            elif pod is None and users and vol in self._stopped_shares:
                old = self._stopped_shares.pop(vol)
                md = meta(old)
                spec = dict(old.get("spec") or {})
                spec.pop("nodeName", None)
                fresh = {"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": md["name"], "namespace": LONGHORN_NS,
                                      "labels": dict(md.get("labels") or {}),
                                      "annotations": {k: v for k, v in (md.get("annotations") or {}).items()
                                                      if not k.startswith("twin.phase22.io/")},
                                      "ownerReferences": list(md.get("ownerReferences") or [])},
                         "spec": spec}
                log.info("longhorn: share manager of %s started: a pod uses the volume", vol)
                try:
                    store.create(fresh)
                except Exception:
                    log.debug("longhorn: share-manager pod of %s not created", vol, exc_info=True)

    def _record_instances(self) -> None:
        engines: dict[str, dict[str, int]] = {}
        replicas: dict[str, dict[str, int]] = {}
        store = self.rt.store
        for kind, out in (("engines", engines), ("replicas", replicas)):
            t = self.volumes.t[kind]
            for o in store.iter_objects(t, LONGHORN_NS):
                st = o.get("status") or {}
                if st.get("currentState") == "running":
                    node = (o.get("spec") or {}).get("nodeID", "")
                    out.setdefault(node, {})[meta(o)["name"]] = int(st.get("port") or 0)
        for node in self.ims.by_node:
            try:
                self.ims.record_instances(node, engines.get(node, {}), replicas.get(node, {}))
            except Exception:
                log.debug("longhorn: instances of %s not recorded", node, exc_info=True)

    async def stop(self) -> None:
        if self.enabled:
            await self.volumes.stop()

    def idle(self) -> bool:
        return not self.enabled or self.volumes.pending() == 0

    def describe(self) -> str:
        if not self.enabled:
            return "longhorn: not installed"
        states: dict[str, int] = {}
        for name in self.volumes.engine_of:
            st = (self.volumes.volume(name) or {}).get("status") or {}
            k = f"{st.get('state')}/{st.get('robustness')}"
            states[k] = states.get(k, 0) + 1
        return "longhorn: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
