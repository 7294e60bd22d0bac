"""``nodes.longhorn.io``: the status longhorn-manager's node controller keeps on each Longhorn node.

One ``nodes.longhorn.io`` per Kubernetes node Longhorn runs on (the fixture makes them,
:mod:`twin.fixtures.minicloud.longhorn_nodes`). Each pass (:meth:`LonghornNodes.sync`,
once a cluster second) rewrites what ``controller/node_controller.go`` (longhorn-manager
v1.7.2, syncNode) keeps in ``status``; the ``spec`` is the operator's (``kubectl edit
nodes.longhorn.io``: ``allowScheduling``, ``tags``, each disk's ``allowScheduling``,
``evictionRequested``, ``storageReserved``, ``tags``) and is only read, by this pass and
by the replica scheduler (:func:`.longhorn_scheduler.lh_node_facts`).

:func:`node_conditions` (setReadyAndSchedulableConditions):

- ``Ready``: False with ``ManagerPodMissing`` (no longhorn-manager pod on the node),
  ``ManagerPodDown`` (not Ready and Running), ``KubernetesNodeNotReady`` (kubelet's
  Ready not True; Longhorn ignores a False younger than 30 s, the twin does not) or
  ``KubernetesNodePressure`` (a Disk/PID/Memory pressure or NetworkUnavailable
  condition True), ``KubernetesNodeGone`` (no Kubernetes node); else True.
- ``Schedulable``: False, reason ``KubernetesNodeCordoned``, while the node is cordoned
  and ``disable-scheduling-on-cordoned-node`` is true; else True.
- ``status.region`` / ``status.zone``: the Kubernetes node's ``topology.kubernetes.io/
  region`` / ``zone`` labels (types.GetRegionAndZone).

:func:`disk_status` (updateDiskStatusSchedulableCondition), only while the node's own
longhorn-manager runs (the disk monitor is that pod's; otherwise the disk status stays
as it was, stale, as on a real cluster):

- ``scheduledReplica``: every replica whose ``spec.diskID`` is the disk's UUID, with its
  volume size; ``storageScheduled`` their sum;
- ``storageAvailable``: what the disk's filesystem has free: ``storageMaximum`` less what
  was used by other files when the twin started and the actual size of the replicas on
  the disk now (the twin has no statfs);
- ``Schedulable``: False with ``DiskPressure`` when :func:`.longhorn_scheduler.room` for
  nothing (``IsSchedulableToDisk(0, 0)``) fails, else True; ``Ready`` stays True (a disk
  a spec adds gets a status and a UUID).

Not modelled: MountPropagation and the environment checks (kept as the fixture wrote
them), events on condition changes, node and disk eviction requests (the scheduler does
take an evicting disk out, but nothing moves its replicas), orphaned replica data.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterable, Mapping

from .common import find_type, meta, now_rfc3339, pod_ready
from .longhorn_rules import LONGHORN, LONGHORN_NS, setting_on
from .longhorn_scheduler import room

log = logging.getLogger("twin.controllers.addons.longhorn")

__all__ = ["LonghornNodes", "node_conditions", "disk_status", "manager_state", "ZONE_LABEL", "REGION_LABEL"]

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
_PRESSURE = ("DiskPressure", "PIDPressure", "MemoryPressure", "NetworkUnavailable")


def node_conditions(name: str, kube_node: Mapping | None, manager: str,
                    cordoned_unschedulable: bool) -> dict[str, tuple[str, str, str]]:
    """``Ready`` and ``Schedulable`` of a Longhorn node: type -> (status, reason, message).

    Args:
        name: the node.
        kube_node: its Kubernetes Node (None: gone).
        manager: its longhorn-manager pod: ``ready``, ``down`` or ``missing``.
        cordoned_unschedulable: the ``disable-scheduling-on-cordoned-node`` setting.

    Example:
        >>> n = {"spec": {"unschedulable": True}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        >>> c = node_conditions("a", n, "ready", True); c["Ready"][0], c["Schedulable"][:2]
        ('True', ('False', 'KubernetesNodeCordoned'))
    """
    if kube_node is None:
        return {"Ready": ("False", "KubernetesNodeGone",
                          f"Kubernetes node missing: node {name} has been removed from the cluster")}
    ready = ("True", "", f"Node {name} is ready")
    if manager == "missing":
        ready = ("False", "ManagerPodMissing", f"Manager pod is missing: node {name} has no manager pod running on it")
    elif manager == "down":
        ready = ("False", "ManagerPodDown", f"Node {name} is down: manager pod is not running")
    for c in (kube_node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready" and c.get("status") != "True":
            ready = ("False", "KubernetesNodeNotReady", f"Kubernetes node {name} not ready: {c.get('reason', '')}")
        elif c.get("type") in _PRESSURE and c.get("status") == "True":
            ready = ("False", "KubernetesNodePressure",
                     f"Kubernetes node {name} has pressure: {c.get('reason', '')}, {c.get('message', '')}")
    cordoned = bool((kube_node.get("spec") or {}).get("unschedulable"))
    sched = (("False", "KubernetesNodeCordoned", f"Node {name} is cordoned")
             if cordoned and cordoned_unschedulable else ("True", "", ""))
    return {"Ready": ready, "Schedulable": sched}


def disk_status(node: str, disk_name: str, spec: Mapping, old: Mapping, replicas: Iterable[tuple[str, int, int]],
                other_used: int, settings: Mapping[str, str]) -> dict[str, Any]:
    """A disk's new ``diskStatus`` entry (conditions as type -> (status, reason, message)
    under ``"_conditions"``, merged by the caller).

    Args:
        node: the node.
        disk_name: the disk's key in ``spec.disks``.
        spec: the disk's spec.
        old: its current status entry.
        replicas: ``(name, volume size, actual size)`` of each replica on the disk.
        other_used: bytes other files use on the disk's filesystem.
        settings: Longhorn settings by name.

    Example:
        >>> st = disk_status("a", "d", {"path": "/var/lib/longhorn/", "storageReserved": 30},
        ...                  {"diskUUID": "u", "storageMaximum": 100}, [("r1", 40, 10)], 5,
        ...                  {"storage-over-provisioning-percentage": "100",
        ...                   "storage-minimal-available-percentage": "25"})
        >>> st["storageScheduled"], st["storageAvailable"], st["_conditions"]["Schedulable"][0]
        (40, 85, 'True')
    """
    reps = sorted(replicas)
    mx = int(old.get("storageMaximum") or 0)
    out = dict(old)
    out["scheduledReplica"] = {r: size for r, size, _ in reps}
    out["storageScheduled"] = sum(size for _, size, _ in reps)
    out["storageAvailable"] = max(0, mx - other_used - sum(actual for _, _, actual in reps))
    out["diskPath"] = spec.get("path") or old.get("diskPath") or ""
    out["diskType"] = spec.get("diskType") or "filesystem"
    out["diskName"] = disk_name
    try:
        over = int(settings.get("storage-over-provisioning-percentage") or 100)
        minimal = int(settings.get("storage-minimal-available-percentage") or 25)
    except ValueError:
        over, minimal = 100, 25
    info = {"maximum": mx, "available": out["storageAvailable"], "reserved": int(spec.get("storageReserved") or 0),
            "scheduled": out["storageScheduled"]}
    path = out["diskPath"]
    sched = (("True", "", f"Disk {disk_name}({path}) on node {node} is schedulable") if room(0, 0, info, over, minimal)
             else ("False", "DiskPressure",
                   f"Disk {disk_name} ({path}) on the node {node} has {info['available']} available, but requires "
                   f"reserved {info['reserved']}, minimal {minimal}% to schedule more replicas"))
    out["_conditions"] = {"Ready": ("True", "", f"Disk {disk_name}({path}) on node {node} is ready"),
                          "Schedulable": sched}
    return out


def _merge_conditions(old: list | None, want: Mapping[str, tuple[str, str, str]], now: str) -> list[dict]:
    """Longhorn's SetCondition: keep the others, change the named ones in place
    (``lastTransitionTime`` moves only when the status does)."""
    out = [dict(c) for c in old or () if isinstance(c, dict)]
    for ctype, (status, reason, message) in want.items():
        c = next((x for x in out if x.get("type") == ctype), None)
        if c is None:
            c = {"type": ctype, "lastProbeTime": "", "lastTransitionTime": now}
            out.append(c)
        elif c.get("status") != status:
            c["lastTransitionTime"] = now
        c.update(status=status, reason=reason, message=message)
    return out


class LonghornNodes:
    """The node controller's status pass over every ``nodes.longhorn.io`` (module docstring).

    Example (inside the twin's loop)::

        lh = rt.component("addons").longhorn
        lh.nodes.sync()       # what LonghornModel.tick does each cluster second
    """

    def __init__(self, rt: Any, settings: Any, manager_state: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.settings = settings            # () -> settings by name
        self.manager_state = manager_state  # node -> "ready" | "down" | "missing"
        self.t = find_type(self.store, LONGHORN, "nodes")
        self.other_used: dict[str, int] = {}     # disk UUID -> bytes of other files

    def _replicas_by_disk(self) -> dict[str, list[tuple[str, int, int]]]:
        rt_, vt = find_type(self.store, LONGHORN, "replicas"), find_type(self.store, LONGHORN, "volumes")
        actual = {meta(v)["name"]: int((v.get("status") or {}).get("actualSize") or 0)
                  for v in (self.store.iter_objects(vt, LONGHORN_NS) if vt is not None else ())}
        out: dict[str, list[tuple[str, int, int]]] = {}
        for r in self.store.iter_objects(rt_, LONGHORN_NS) if rt_ is not None else ():
            sp = r.get("spec") or {}
            if sp.get("diskID"):
                out.setdefault(str(sp["diskID"]), []).append(
                    (meta(r)["name"], int(sp.get("volumeSize") or 0), actual.get(sp.get("volumeName") or "", 0)))
        return out

    def sync(self) -> None:
        """Bring every Longhorn node's status up to date (writes only what changed)."""
        if self.t is None:
            self.t = find_type(self.store, LONGHORN, "nodes")
            if self.t is None:
                return
        settings = self.settings()
        nodes_t = find_type(self.store, "", "nodes")
        by_disk: dict[str, list[tuple[str, int, int]]] | None = None
        now = now_rfc3339()
        for obj in list(self.store.iter_objects(self.t, LONGHORN_NS)):
            name = meta(obj)["name"]
            kube = self.store.peek(nodes_t, None, name) if nodes_t is not None else None
            manager = self.manager_state(name)
            st = dict(obj.get("status") or {})
            st["conditions"] = _merge_conditions(st.get("conditions"), node_conditions(
                name, kube, manager, setting_on(settings, "disable-scheduling-on-cordoned-node")), now)
            if kube is not None:
                labels = meta(kube).get("labels") or {}
                st["region"], st["zone"] = labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, "")
            if kube is not None and manager == "ready":
                if by_disk is None:
                    by_disk = self._replicas_by_disk()
                st["diskStatus"] = self._disks(name, (obj.get("spec") or {}).get("disks") or {},
                                               st.get("diskStatus") or {}, by_disk, settings, now)
            if st != (obj.get("status") or {}):
                self._write(name, st)

    def _disks(self, node: str, spec_disks: Mapping, old: Mapping, by_disk: Mapping, settings: Mapping,
               now: str) -> dict:
        out = {}
        for dname, dspec in sorted(spec_disks.items()):
            prev = dict(old.get(dname) or {})
            if not prev.get("diskUUID"):     # a disk the operator added: the monitor finds it
                prev.update(diskUUID=_disk_uuid(node, dname), storageMaximum=prev.get("storageMaximum") or 0,
                            filesystemType="ext4", diskDriver="", instanceManagerName="")
            uuid = prev["diskUUID"]
            reps = by_disk.get(uuid, [])
            if uuid not in self.other_used:
                used = sum(actual for _, _, actual in reps)
                self.other_used[uuid] = max(0, int(prev.get("storageMaximum") or 0)
                                            - int(prev.get("storageAvailable") or 0) - used)
            new = disk_status(node, dname, dspec, prev, reps, self.other_used[uuid], settings)
            new["conditions"] = _merge_conditions(prev.get("conditions"), new.pop("_conditions"), now)
            out[dname] = new
        return out

    def _write(self, name: str, status: dict) -> None:
        def fn(o: dict) -> None:
            o["status"] = status
        try:
            self.store.mutate(self.t, LONGHORN_NS, name, fn)
        except Exception:
            log.debug("longhorn: node %s status not written", name, exc_info=True)


def _disk_uuid(node: str, disk: str) -> str:
    h = hashlib.sha256(f"{node}/{disk}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def manager_state(store: Any, node: str) -> str:
    """The longhorn-manager pod of ``node`` (label ``app=longhorn-manager``): ``ready``,
    ``down`` or ``missing`` (``ready`` when the cluster has no manager pod at all, as
    :meth:`.LonghornVolumes.manager_ready`)."""
    pods_t = find_type(store, "", "pods")
    found = False
    for p in store.iter_objects(pods_t, LONGHORN_NS) if pods_t is not None else ():
        if (meta(p).get("labels") or {}).get("app") != "longhorn-manager":
            continue
        found = True
        if (p.get("spec") or {}).get("nodeName") == node:
            return "ready" if pod_ready(p) else "down"
    return "missing" if found else "ready"   # a fixture without manager pods: taken as running
