"""Longhorn's lifecycle as data: the settings it reads, its stages and their delays, and
the pure rules the twin's Longhorn model applies (no store, no clock).

Everything here can be checked against Longhorn v1.7.2 without running the twin:

- :data:`SETTINGS`: the ``settings.longhorn.io`` the model reads, with Longhorn's
  defaults (``types/setting.go``); the live values come from the Setting objects, so an
  operator may change them with ``kubectl edit settings.longhorn.io``.
- :data:`STAGES`: one row per transition of a Volume, Engine, Replica,
  InstanceManager or workload Pod: when it happens, after how long, what it changes,
  and where Longhorn says so.
- The rules: :func:`robustness`, :func:`replicas_lost`, :func:`salvage_candidates`,
  :func:`rebuild_seconds` (a full copy; :mod:`.longhorn_rebuild` says when
  a returning replica's data is reused), :func:`attach_node`, :func:`remount_victims`. Golden cases
  for them live in ``tests/unit/twin_addons/golden/longhorn_rules.json``.

Sources (longhorn/longhorn-manager at v1.7.2 unless said otherwise):
``controller/volume_controller.go`` (ReconcileEngineReplicaState, ReconcileVolumeState,
auto-salvage, ``AutoSalvageTimeLimit`` = 1 min), ``controller/kubernetes_pod_controller.go``
(``handlePodDeletionIfVolumeRequestRemount``, ``remountRequestDelayDuration`` = 5 s),
``controller/instance_manager_controller.go`` (``syncStatusWithPod``, ``handlePod``),
``csi/controller_server.go`` (ControllerPublishVolume), and the Longhorn test plan
"Node disconnection test" (longhorn-tests ``docs/content/manual/pre-release/
node-not-ready/node-disconnection``): while data is written, an engine marks a replica
it cannot reach ERR; a replica beside the engine survives; with no replica left the
volume faults, and auto-salvage brings it back once replicas are usable again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

LONGHORN = "longhorn.io"
LONGHORN_NS = "longhorn-system"
CSI_DRIVER = "driver.longhorn.io"
MiB = 1024 * 1024

#: The Longhorn settings the model reads, with Longhorn's defaults (types/setting.go).
SETTINGS: Mapping[str, str] = {
    # In seconds: an engine marks a replica ERR when it does not answer within this.
    "engine-replica-timeout": "8",
    # In seconds: how long Longhorn waits for a failed replica to come back (and reuses
    # its data) before it schedules a new replica for a degraded volume.
    "replica-replenishment-wait-interval": "600",
    # All replicas failed: pick the usable ones and reattach.
    "auto-salvage": "true",
    # Volume detached unexpectedly: delete the workload pods (those with a controller),
    # so that Kubernetes remounts the volume in their replacements.
    "auto-delete-pod-when-volume-detached-unexpectedly": "true",
    # Replicas rebuilt at once on one node.
    "concurrent-replica-rebuild-per-node-limit": "5",
    "default-replica-count": "3",
    # A new replica may go to a node (zone) that already holds one of the volume.
    "replica-soft-anti-affinity": "false",
    "replica-zone-soft-anti-affinity": "true",
    # A new replica may go to a disk that already holds one of the volume (last resort).
    "replica-disk-soft-anti-affinity": "true",
    # A volume without a nodeSelector (diskSelector) may use tagged nodes (disks).
    "allow-empty-node-selector-volume": "true",
    "allow-empty-disk-selector-volume": "true",
    # Disk room (IsSchedulableToDisk): the volume sizes scheduled on a disk stay within this
    # percentage of (storageMaximum - storageReserved), and more than this percentage of the
    # disk stays free after the new replica's actual size.
    "storage-over-provisioning-percentage": "100",
    "storage-minimal-available-percentage": "25",
    # storageReserved of the default disk Longhorn creates on each node (percent of its size).
    "storage-reserved-percentage-for-default-disk": "30",
    # No new replica on a cordoned node (its Longhorn node is not Schedulable).
    "disable-scheduling-on-cordoned-node": "true",
    "node-down-pod-deletion-policy": "do-nothing",
    # When a cordoned node's instance-manager PDB may go (see longhorn_pdb.py).
    "node-drain-policy": "block-if-contains-last-replica",
}

# Delays Longhorn does not make a setting of (cluster seconds).
ATTACH_SECONDS = 5.0            # engine process + replicas started, frontend (/dev/longhorn/<v>) up
DETACH_SECONDS = 3.0            # frontend down, engine and replicas stopped
#: The attach/detach controller detaches once no pod on the node uses the volume; a
#: replacement pod scheduled on the same node within this grace keeps it attached.
DETACH_GRACE_SECONDS = 3.0
REPLICA_START_SECONDS = 2.0     # instance manager starts a (failed) replica's process again
REBUILD_SETUP_SECONDS = 3.0     # WO mode, rebuild snapshot, file list (rebuilding docs, steps 1-3)
#: Rebuild rate: the replica's data crosses the node network (1 GbE carries ~117 MB/s).
REBUILD_BYTES_PER_SECOND = 100 * MiB
REMOUNT_DELETE_DELAY = 5.0      # kubernetes_pod_controller.go remountRequestDelayDuration
AUTO_SALVAGE_TIME_LIMIT = 60.0  # volume_controller.go AutoSalvageTimeLimit
WORKLOAD_DELETE_GRACE = 30      # the pod deletion's gracePeriodSeconds


@dataclass(frozen=True)
class Stage:
    """One transition of a Longhorn object, as data.

    Attributes:
        name: the stage's name (the model refers to it).
        kind: the object that changes (Volume, Engine, Replica, InstanceManager, Pod).
        when: the condition, in words.
        after: cluster seconds, or the name of the setting that gives them.
        then: what changes.
        source: where Longhorn says so.
    """

    name: str
    kind: str
    when: str
    after: float | str
    then: str
    source: str


STAGES: tuple[Stage, ...] = (
    Stage("replica-lost", "Replica",
          "the engine cannot reach the replica's instance manager (pod network down between "
          "their nodes, replica's instance manager gone)",
          "engine-replica-timeout",
          "engine replicaModeMap ERR; replica spec.failedAt set, desireState stopped; volume "
          "degraded (lastDegradedAt) while another replica is RW",
          "volume_controller.go ReconcileEngineReplicaState; node-disconnection test plan"),
    Stage("volume-faulted", "Volume", "no replica left RW in the engine", 0.0,
          "robustness faulted; engine stopped; volume detaching, then detached",
          "volume_controller.go isAutoSalvageNeeded / ReconcileVolumeState"),
    Stage("engine-dead", "Volume",
          "the engine's instance manager stops (its pod deleted, its node down or rebooted)",
          0.0,
          "event DetachedUnexpectedly 'Engine of volume dead unexpectedly, reattach the "
          "volume'; robustness faulted; volume detaching, then detached; replicas on that "
          "instance manager failed",
          "volume_controller.go ReconcileVolumeState (engine InstanceStateError)"),
    Stage("detaching", "Volume", "engine stopping", DETACH_SECONDS, "state detached; "
          "robustness unknown (faulted while no replica is usable)",
          "volume_controller.go: detached volumes report robustness unknown"),
    Stage("auto-salvage", "Volume",
          "detached and faulted, auto-salvage on, a replica failed within 1 min of the last "
          "failure is usable again (its instance manager runs and the engine's node reaches it)",
          0.0, "failedAt cleared on those replicas; remountRequestedAt set; robustness unknown",
          "volume_controller.go auto-salvage, AutoSalvageTimeLimit"),
    Stage("attaching", "Volume",
          "a workload pod (or share manager) on node N needs the volume; the instance manager "
          "on N runs; the engine image is deployed on N; a usable replica is reachable from N",
          ATTACH_SECONDS, "state attached on N; engine running on N; reachable replicas RW",
          "csi/controller_server.go ControllerPublishVolume; volume attachment state machine"),
    Stage("remount-delete", "Pod",
          "a pod with a controller, started before the volume's remountRequestedAt (auto-delete "
          "setting on, volume not a regular RWX volume)",
          REMOUNT_DELETE_DELAY,
          "pod deleted (grace 30 s); its controller creates a replacement, which waits in "
          "ContainerCreating until the volume is attached to its node",
          "kubernetes_pod_controller.go handlePodDeletionIfVolumeRequestRemount"),
    Stage("replica-restart", "Replica",
          "a failed replica is usable again (its instance manager runs, the engine reaches it) "
          "within the replenishment wait interval",
          REPLICA_START_SECONDS, "replica running again, added to the engine as WO (rebuilding)",
          "volume_controller.go replenishReplicas (reuse a failed replica)"),
    Stage("rebuild", "Replica", "a WO replica is rebuilt from a RW one (at most the per-node "
          "rebuild limit at once): in full when it is new, else a delta (every byte compared) "
          "or fast (hashed snapshot files skipped) one, see longhorn_rebuild.py",
          "rebuild_plan(status.actualSize, reused data, snapshots)",
          "replica RW; spec.healthyAt set; the volume healthy once numberOfReplicas are RW",
          "docs: advanced-resources/rebuilding; longhorn-engine sync.go AddReplica, sparse-tools "
          "SyncContent; concurrent-replica-rebuild-per-node-limit"),
    Stage("replenish", "Replica",
          "a replica stays failed past replica-replenishment-wait-interval and a node without a "
          "replica of the volume is reachable",
          "replica-replenishment-wait-interval",
          "a new replica on that node, rebuilt as above; the failed one is removed",
          "volume_controller.go replenishReplicas; replica-replenishment-wait-interval"),
    Stage("eviction-requested", "Replica",
          "its node is cordoned (and Ready) and node-drain-policy is block-for-eviction, or "
          "block-for-eviction-if-contains-last-replica and its volume has no healthy PDB-protected "
          "replica on another node",
          0.0, "spec.evictionRequested true, event EvictionAutomatic; false again (EvictionCanceled) "
          "once the node is uncordoned or the policy no longer asks for it",
          "node_controller.go syncReplicaEvictionRequested, shouldEvictReplica"),
    Stage("eviction-attach", "Volume", "a replica of it is evicting and it is detached", ATTACH_SECONDS,
          "attached on its owner node (or where a workload wants it); an attached volume stays "
          "attached where it is until no replica is evicting, a workload elsewhere waits",
          "volume_eviction_controller.go; volume_attachment_controller.go shouldDoDetach"),
    Stage("eviction-replica", "Replica",
          "attached, a replica evicting, fewer non-evicting replicas than numberOfReplicas, no "
          "rebuild running, the scheduler finds a node (none: Scheduled False, "
          "ReplicaSchedulingFailure, and the eviction waits)",
          0.0, "one new replica there, restarted and rebuilt as in replica-restart and rebuild",
          "volume_controller.go EvictReplicas, replenishReplicas; scheduler/replica_scheduler.go"),
    Stage("eviction-done", "Replica",
          "more healthy replicas than numberOfReplicas and one of them evicting", 0.0,
          "the evicting replica deleted (one per reconcile, the last healthy one kept); the volume "
          "detaches if no workload on its node needs it",
          "volume_controller.go cleanupEvictionRequestedReplicas"),
    Stage("instance-manager-pod", "InstanceManager",
          "its pod is deleted, or not Running and Ready",
          0.0, "currentState error (pod gone or terminating) or starting; the engines and "
          "replicas it ran stop (their processes lived in the pod)",
          "instance_manager_controller.go syncStatusWithPod"),
    Stage("instance-manager-recreate", "InstanceManager",
          "no pod, longhorn-manager runs on the node, the node is not cordoned", 2.0,
          "a new pod under the same name on the same node; running once Ready",
          "instance_manager_controller.go handlePod (cordoned node: not recreated)"),
)

STAGE: Mapping[str, Stage] = {s.name: s for s in STAGES}


def setting_seconds(settings: Mapping[str, str], name: str) -> float:
    """A numeric setting in seconds (Longhorn's default when unset or not a number).

    Example:
        >>> setting_seconds({"engine-replica-timeout": "12"}, "engine-replica-timeout")
        12.0
        >>> setting_seconds({}, "replica-replenishment-wait-interval")
        600.0
    """
    raw = settings.get(name, SETTINGS.get(name, "0"))
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float(SETTINGS.get(name, "0"))


def setting_on(settings: Mapping[str, str], name: str) -> bool:
    """A boolean setting (Longhorn writes ``"true"``/``"false"``)."""
    return str(settings.get(name, SETTINGS.get(name, "false"))).strip().lower() == "true"


def robustness(state: str, rw: int, wanted: int, faulted: bool) -> str:
    """What ``status.robustness`` says for a volume.

    Args:
        state: the volume's ``status.state``.
        rw: replicas in RW mode in the engine.
        wanted: ``spec.numberOfReplicas``.
        faulted: no usable replica is left (the volume faulted and is not salvaged yet).

    Example:
        >>> robustness("attached", 1, 3, False), robustness("detached", 0, 3, False)
        ('degraded', 'unknown')
    """
    if faulted:
        return "faulted"
    if state != "attached":
        return "unknown"
    if rw <= 0:
        return "faulted"
    return "healthy" if rw >= wanted else "degraded"


def replicas_lost(modes: Mapping[str, str], down_since: Mapping[str, float], now: float,
                  timeout: float) -> list[str]:
    """The RW/WO replicas the engine marks ERR now: unreachable for ``timeout`` seconds.

    Args:
        modes: replica name -> mode in the engine (RW, WO, ERR).
        down_since: replica name -> cluster time since which the engine cannot reach it
            (absent: reachable).
        now: cluster time.
        timeout: ``engine-replica-timeout``.

    Example:
        >>> replicas_lost({"a": "RW", "b": "RW"}, {"b": 10.0}, 19.0, 8.0)
        ['b']
    """
    out = []
    for name, mode in sorted(modes.items()):
        since = down_since.get(name)
        if mode in ("RW", "WO") and since is not None and now - since >= timeout - 1e-9:
            out.append(name)
    return out


def salvage_candidates(failed_at: Mapping[str, float], healthy_before: Iterable[str],
                       usable: Iterable[str]) -> list[str]:
    """Replicas auto-salvage brings back: they held data (were healthy once), are usable
    now, and failed within :data:`AUTO_SALVAGE_TIME_LIMIT` of the last failure.

    Example:
        >>> salvage_candidates({"a": 100.0, "b": 30.0, "c": 95.0}, ["a", "b", "c"], ["a", "b"])
        ['a']
    """
    had_data = set(healthy_before)
    ok = [n for n in usable if n in had_data and n in failed_at]
    if not ok:
        return []
    last = max(failed_at[n] for n in failed_at if n in had_data) if had_data & set(failed_at) else 0.0
    return sorted(n for n in ok if last - failed_at[n] <= AUTO_SALVAGE_TIME_LIMIT + 1e-9)


def rebuild_seconds(actual_size: int | str | None) -> float:
    """Cluster seconds a full replica rebuild (every byte sent) takes for a volume holding
    ``actual_size`` bytes; :func:`.longhorn_rebuild.rebuild_plan` says when less is sent.

    Example:
        >>> rebuild_seconds(0), rebuild_seconds(1024 ** 3)
        (3.0, 13.24)
    """
    try:
        size = max(0, int(actual_size or 0))
    except (TypeError, ValueError):
        size = 0
    return round(REBUILD_SETUP_SECONDS + size / REBUILD_BYTES_PER_SECOND, 2)


def attach_node(access: str, current: str, pod_nodes: Iterable[str],
                share_manager_node: str | None) -> tuple[str, str | None]:
    """Where a volume should be attached, and the multi-attach conflict if any.

    Args:
        access: ``spec.accessMode`` (rwo, rwop, rwx).
        current: the node it is attached (or attaching) to now, "" if none.
        pod_nodes: the nodes of the pods mounting it, oldest pod first.
        share_manager_node: for rwx, the node of its share-manager pod (None: no pod).

    Returns:
        ``(node, conflict)``: node "" = detach; conflict names a node whose pods cannot
        mount an RWO volume attached elsewhere (Kubernetes' Multi-Attach error).

    Example:
        >>> attach_node("rwo", "a", ["b", "a"], None)
        ('a', 'b')
        >>> attach_node("rwx", "", ["a", "b"], "c")
        ('c', None)
    """
    nodes = [n for n in pod_nodes if n]
    if access == "rwx":
        return (share_manager_node or "", None) if nodes else ("", None)
    if not nodes:
        return "", None
    target = current if current in nodes else nodes[0]
    other = next((n for n in nodes if n != target), None)
    return target, other


def remount_victims(pods: Iterable[Mapping], requested_uids: Iterable[str]) -> list[str]:
    """Names of the pods Longhorn deletes after a remount request: pods that already ran
    when it was requested (``requested_uids``), have a controller, and are not being
    deleted. Bare pods are never deleted (the setting's note).

    Example:
        >>> remount_victims([{"metadata": {"name": "p", "uid": "u",
        ...     "ownerReferences": [{"controller": True}]}}], ["u"])
        ['p']
    """
    want = set(requested_uids)
    out = []
    for p in pods:
        md = p.get("metadata") or {}
        if md.get("uid") not in want or md.get("deletionTimestamp"):
            continue
        if not any(r.get("controller") for r in md.get("ownerReferences") or ()):
            continue
        out.append(md.get("name", ""))
    return sorted(out)
