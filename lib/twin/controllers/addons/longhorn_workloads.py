"""Longhorn and the pods that mount its volumes: who uses which volume, the kubelet's wait
for attach and mount, and Longhorn's deletion of workload pods after a remount request.

- :class:`VolumeUsers` indexes pods by the Longhorn volumes they mount: a pod volume
  ``persistentVolumeClaim`` -> the claim's PV -> ``spec.csi`` with driver
  ``driver.longhorn.io`` -> ``volumeHandle`` (= the Volume's name).
- :meth:`VolumeUsers.gate` is registered with the kubelet (``kubelet.volume_gates``): a
  pod does not get its sandbox before its Longhorn volumes are usable on its node. It
  stays ``ContainerCreating`` with the CSI error as message, and a ``FailedAttachVolume``
  (attach side) or ``FailedMount`` (mount side) Warning event, as on a cluster:

  - RWO: attached to another node -> Kubernetes' "Multi-Attach error"; faulted ->
    ``volume <v> is not ready for workloads``; not attached (yet) to the pod's node ->
    ``failed to attach to node``;
  - RWX: the share manager is not running -> ``volume <v> share not yet available``;
    its pod has no data path (e.g. an unmanaged pod after a CNI swap) -> the NFS mount
    times out;
  - a share-manager pod itself waits until its volume is attached to its node (the
    twin's shortcut: a real one runs, unready, until its NFS server starts).

- :meth:`VolumeUsers.delete_for_remount` is longhorn-manager's
  ``handlePodDeletionIfVolumeRequestRemount``: with the setting
  ``auto-delete-pod-when-volume-detached-unexpectedly`` on, the pods that mounted the
  volume before the remount request, and have a controller, are deleted (grace 30 s)
  :data:`~.longhorn_rules.REMOUNT_DELETE_DELAY` seconds after the request; regular RWX
  volumes are left alone (NFS clients survive a share-manager restart behind the same
  ClusterIP).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Iterable

from ..kubelet import PodFate, has_sandbox
from .common import find_type, meta, now_rfc3339, pod_reachable
from .longhorn_rules import CSI_DRIVER, LONGHORN_NS, WORKLOAD_DELETE_GRACE, remount_victims

log = logging.getLogger("twin.controllers.addons.longhorn")

PodKey = tuple[str, str]


def attachment_id(volume: str, node: str) -> str:
    """The CSI attachment id (name of the VolumeAttachment) for ``volume`` on ``node``."""
    return "csi-" + hashlib.sha256(f"{volume}{CSI_DRIVER}{node}".encode()).hexdigest()


class VolumeUsers:
    """Pods by Longhorn volume, the kubelet's volume gate and remount deletions.

    Args:
        rt: the twin runtime.
        volume: callable giving the current Volume object for a name (None if absent).
        share_ready: callable ``(volume) -> (bool, reason)`` for RWX volumes.
    """

    def __init__(self, rt: Any, volume: Callable[[str], dict | None],
                 share_ready: Callable[[str], tuple[bool, str]]) -> None:
        self.rt = rt
        self.store = rt.store
        self.volume = volume
        self.share_ready = share_ready
        self.pods_t = find_type(self.store, "", "pods")
        self.pvc_t = find_type(self.store, "", "persistentvolumeclaims")
        self.pv_t = find_type(self.store, "", "persistentvolumes")
        self.events_t = find_type(self.store, "", "events")
        self.by_volume: dict[str, set[PodKey]] = {}
        self.by_pod: dict[PodKey, tuple[str, ...]] = {}
        self._events: set[tuple[str, str, str]] = set()
        self.deleted: list[tuple[str, str, str]] = []    # (namespace, pod, volume) for tests/describe

    # ------------------------------------------------------------------ index
    def load(self) -> None:
        for p in self.store.iter_objects(self.pods_t):
            self.on_pod("ADDED", p)

    def volumes_of(self, pod: dict) -> tuple[str, ...]:
        """The Longhorn volumes ``pod`` mounts (through its claims)."""
        md = meta(pod)
        ns = md.get("namespace")
        out = []
        for v in (pod.get("spec") or {}).get("volumes") or ():
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim or self.pvc_t is None or self.pv_t is None:
                continue
            pvc = self.store.peek(self.pvc_t, ns, claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = self.store.peek(self.pv_t, None, pv_name) if pv_name else None
            csi = ((pv or {}).get("spec") or {}).get("csi") or {}
            if csi.get("driver") == CSI_DRIVER and csi.get("volumeHandle"):
                out.append(csi["volumeHandle"])
        return tuple(out)

    def on_pod(self, etype: str, pod: dict) -> set[str]:
        """Update the index; returns the volumes whose users changed."""
        md = meta(pod)
        key = (md.get("namespace") or "", md.get("name") or "")
        before = self.by_pod.pop(key, ())
        for v in before:
            self.by_volume.get(v, set()).discard(key)
        now: tuple[str, ...] = () if etype == "DELETED" else self.volumes_of(pod)
        if now:
            self.by_pod[key] = now
            for v in now:
                self.by_volume.setdefault(v, set()).add(key)
        if etype == "DELETED":
            self._events = {e for e in self._events if e[0] != f"{key[0]}/{key[1]}"}
        return set(before) | set(now)

    def pods(self, volume: str) -> list[dict]:
        """The pods mounting ``volume``, oldest first (read-only store objects)."""
        out = []
        for ns, name in sorted(self.by_volume.get(volume, ())):
            p = self.store.peek(self.pods_t, ns, name)
            if p is not None:
                out.append(p)
        out.sort(key=lambda p: (meta(p).get("creationTimestamp") or "", meta(p).get("name") or ""))
        return out

    def pod_nodes(self, volume: str) -> list[str]:
        """Nodes of the scheduled, not finished pods mounting ``volume``, oldest pod first."""
        out = []
        for p in self.pods(volume):
            node = (p.get("spec") or {}).get("nodeName")
            if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                out.append(node)
        return out

    def workloads_status(self, volume: str) -> list[dict]:
        """``status.kubernetesStatus.workloadsStatus`` as longhorn-manager writes it."""
        out = []
        for p in self.pods(volume):
            ref = next((r for r in meta(p).get("ownerReferences") or () if r.get("controller")), {})
            out.append({"podName": meta(p).get("name"), "podStatus": (p.get("status") or {}).get("phase", ""),
                        "workloadName": ref.get("name", ""), "workloadType": ref.get("kind", "")})
        return out

    # ------------------------------------------------------------------ kubelet gate
    def gate(self, pod: dict, node: dict | None) -> PodFate | None:
        """The kubelet's wait for attach and mount (None: the pod may start)."""
        if has_sandbox(pod):
            return None
        md = meta(pod)
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        sm = next((r.get("name") for r in md.get("ownerReferences") or ()
                   if r.get("kind") == "ShareManager" and r.get("controller")), None)
        if sm and md.get("namespace") == LONGHORN_NS:
            # The share manager serves NFS once its volume is attached to its node.
            st = (self.volume(sm) or {}).get("status") or {}
            if st.get("state") != "attached" or st.get("currentNodeID") != node_name:
                return PodFate("Pending", False, "ContainerCreating",
                               f"volume {sm} hasn't been attached yet")
            return None
        vols = self.by_pod.get((md.get("namespace") or "", md.get("name") or ""))
        if not vols:
            return None
        for v in vols:
            held = self._held(pod, v, node_name)
            if held is not None:
                reason, message = held
                self._event(pod, reason, message)
                return PodFate("Pending", False, "ContainerCreating", message)
        return None

    def _held(self, pod: dict, vol: str, node: str) -> tuple[str, str] | None:
        obj = self.volume(vol)
        if obj is None:
            return ("FailedAttachVolume", f'AttachVolume.Attach failed for volume "{vol}" : rpc error: '
                    f"code = NotFound desc = volume {vol} not found")
        spec, st = obj.get("spec") or {}, obj.get("status") or {}
        if st.get("robustness") == "faulted":
            return ("FailedAttachVolume", f'AttachVolume.Attach failed for volume "{vol}" : rpc error: '
                    f"code = Aborted desc = volume {vol} is not ready for workloads")
        if spec.get("accessMode") == "rwx":
            ok, why = self.share_ready(vol)
            if not ok:
                return ("FailedMount", f'MountVolume.MountDevice failed for volume "{vol}" : {why}')
            return None
        cur = st.get("currentNodeID") or ""
        if cur and cur != node and st.get("state") in ("attached", "attaching"):
            users = [meta(p).get("name") for p in self.pods(vol)
                     if (p.get("spec") or {}).get("nodeName") == cur]
            if users:
                return ("FailedAttachVolume", f'Multi-Attach error for volume "{vol}" Volume is '
                        f"already used by pod(s) {', '.join(users)}")
        if st.get("state") != "attached" or cur != node:
            return ("FailedAttachVolume", f'AttachVolume.Attach failed for volume "{vol}" : rpc error: '
                    f"code = DeadlineExceeded desc = volume {vol} failed to attach to node {node} "
                    f"with attachmentID {attachment_id(vol, node)}")
        return None

    def _event(self, pod: dict, reason: str, message: str) -> None:
        md = meta(pod)
        key = (f"{md.get('namespace')}/{md.get('name')}", reason, message)
        if key in self._events or self.events_t is None:
            return
        self._events.add(key)
        source = "attachdetach-controller" if reason == "FailedAttachVolume" else "kubelet"
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md.get('name')}.", "namespace": md.get("namespace")},
              "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": md.get("name"),
                                 "namespace": md.get("namespace"), "uid": md.get("uid")},
              "reason": reason, "message": message, "type": "Warning", "count": 1,
              "source": {"component": source}, "firstTimestamp": now_rfc3339(),
              "lastTimestamp": now_rfc3339(), "reportingComponent": source}
        try:
            self.store.create(ev)
        except Exception:
            log.debug("longhorn: event not recorded", exc_info=True)

    # ------------------------------------------------------------------ remount
    def uids(self, volume: str) -> set[str]:
        """Uids of the pods mounting ``volume`` now (remembered at a remount request)."""
        return {meta(p).get("uid") for p in self.pods(volume) if meta(p).get("uid")}

    def delete_for_remount(self, volume: str, requested_uids: Iterable[str]) -> list[str]:
        """Delete the pods Longhorn deletes after a remount request; returns their names."""
        pods = self.pods(volume)
        names = remount_victims(pods, requested_uids)
        ns_of = {meta(p).get("name"): meta(p).get("namespace") for p in pods}
        for name in names:
            ns = ns_of[name]
            try:
                self.store.delete(self.pods_t, ns, name, grace_period=WORKLOAD_DELETE_GRACE)
            except Exception:
                log.debug("longhorn: pod %s/%s not deleted", ns, name, exc_info=True)
                continue
            self.deleted.append((ns or "", name, volume))
            log.info("longhorn: deleted pod %s/%s so that Kubernetes remounts volume %s", ns, name, volume)
        return names

    def share_path(self, sm_pod: dict | None) -> tuple[bool, str]:
        """Whether NFS clients reach the share-manager pod (its data path)."""
        if sm_pod is None:
            return False, "no share-manager pod"
        return pod_reachable(self.rt, sm_pod)
