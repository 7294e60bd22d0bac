"""What Longhorn does to a node drain, and the node-by-node gate about it (``nbn-longhorn-drain``).

longhorn-manager keeps a PodDisruptionBudget (``minAvailable: 1``) on every running
instance-manager pod of a schedulable node, named after the instance manager
(``instance_manager_controller.go`` syncInstanceManagerPDB, longhorn-manager v1.7). A
drain is refused that pod until longhorn-manager deletes the PDB, which it does only on
a cordoned node and only once (canDeleteInstanceManagerPDB):

* no volume is attached to the node any more: the drain's other evictions stop the pods
  that use them first, so these PDBs are *transient*, not the "allows no disruption,
  forever" kind that ``nbn-pdb`` lists;
* the ``node-drain-policy`` setting (Longhorn docs, "Node Drain Policy Recommendations";
  default ``block-if-contains-last-replica``) is satisfied:

  ==========================================  ===========================================
  policy                                      the PDB goes when
  ==========================================  ===========================================
  ``block-if-contains-last-replica``          each replica on the node has a healthy copy
                                              on another schedulable node
  ``block-for-eviction-if-contains-last-      Longhorn has moved away every replica that
  replica``                                   has no healthy copy elsewhere
  ``block-for-eviction``                      Longhorn has moved every replica off the node
  ``allow-if-replica-is-stopped``             the replicas with no copy elsewhere are
                                              stopped (their volume detached)
  ``always-allow``                            at once (Longhorn warns: the last replica of a
                                              running volume can be corrupted)
  ==========================================  ===========================================

The two ``block-for-eviction`` policies move replicas by themselves as soon as the node is
cordoned (``node_controller.go`` shouldEvictReplica sets ``spec.evictionRequested``; the
volume controller rebuilds one more replica elsewhere, then deletes the evicted one), so
such a drain finishes, as slowly as the copies. Two costs: a volume attached to the
drained node stays attached there until its replicas are moved (the eviction's attachment
ticket is not interrupted by a workload's), so its pod, moved by the drain, waits that
long; and a replica moves only to a schedulable node holding no replica of its volume
unless replica soft anti-affinity allows sharing one (``replica-soft-anti-affinity``, or
the volume's own ``replicaSoftAntiAffinity``). With no such node Longhorn cannot move it
(the volume's ``Scheduled`` condition says ``ReplicaSchedulingFailure``), keeps the PDB,
and the drain waits for ever: under ``block-for-eviction`` a volume with a replica on
every node does that to every drain. Zones, node and disk tags and disk room narrow the
choice further (:mod:`runbook.longhorn_placement`, read from ``nodes.longhorn.io``).

So under the default policy a volume whose every replica sits on one node blocks that
node's drain until ``node_by_node.drain_timeout``, and under ``block-for-eviction`` a
volume Longhorn cannot move does. :func:`verdict` lists such volumes with what to do
before the migration starts; a policy that moves or stops replicas is named with its cost.

Example:
    >>> rows = [storage.VolumeRow("pvc-1", "attached", "healthy", "a", "rwo", ["a"])]
    >>> v = drain_verdict("block-if-contains-last-replica", rows)
    >>> v.ok, v.details[0].split(":")[0]
    (False, 'pvc-1')
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Mapping

from . import longhorn_placement as placement
from . import storage
from .node_by_node_gates import Verdict

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DEFAULT_POLICY", "POLICIES", "drain_verdict", "read_policy", "unmovable_volumes", "verdict"]

DEFAULT_POLICY = "block-if-contains-last-replica"
POLICIES = (DEFAULT_POLICY, "block-for-eviction-if-contains-last-replica", "block-for-eviction",
            "allow-if-replica-is-stopped", "always-allow")
_MESSAGE = ("Longhorn lets each node's drain through: its instance-manager PDB goes once the node's "
            "volumes have detached, and no volume keeps its only replica on the node being drained")


def _single_node(rows: list[storage.VolumeRow]) -> list[storage.VolumeRow]:
    return [r for r in rows if len(set(r.replica_nodes)) == 1]


_HELD = "no other node may take it (it holds a replica of the volume already)"


def _unmovable(rows: list[storage.VolumeRow], nodes: Collection[str] | None,
               shareable: Collection[str]) -> dict[str, str]:
    """Volumes Longhorn cannot move a replica of off a drained node, from the node names
    alone: no other node without a replica of the volume (or, with soft anti-affinity, no
    other node at all). Unknown nodes: none is said unmovable. (With ``nodes.longhorn.io``
    at hand :func:`unmovable_volumes` knows more: zones, tags, room.)"""
    if not nodes:
        return {}
    out = {}
    for r in rows:
        held = set(r.replica_nodes)
        free = set(nodes) - held if r.name not in shareable else set(nodes)
        if any(not (free - {n}) for n in held):
            out[r.name] = _HELD
    return out


def unmovable_volumes(volumes: list[dict], replicas: list[dict], lh_nodes: list[dict],
                      settings: Mapping[str, str]) -> dict[str, str]:
    """Volume → why Longhorn could not place a replica it moves off one of the volume's
    nodes when that node is drained (:func:`runbook.longhorn_placement.why_unmovable`);
    volumes it can always move are left out (pure)."""
    nodes = placement.nodes_from(lh_nodes)
    sched = placement.Scheduling.from_values(settings)
    out = {}
    for v in volumes:
        name = v["metadata"]["name"]
        held = sorted({(r.get("spec") or {}).get("nodeID") for r in replicas
                       if (r.get("spec") or {}).get("volumeName") == name} - {None, ""})
        for n in held:
            why = placement.why_unmovable(v, replicas, n, nodes, sched)
            if why:
                out[name] = f"when {n} is drained, {why}"
                break
    return out


def _patch_setting(name: str) -> str:
    return (f"`kubectl -n longhorn-system patch settings.longhorn.io {name} --type merge "
            "-p '{\"value\":\"true\"}'`")


#: what to do about each reason (a phrase of the reason → the action), in this order
_FIXES = (
    ("zone without a replica", "set replica-zone-soft-anti-affinity to true for the migration "
     f"({_patch_setting('replica-zone-soft-anti-affinity')}): the moved replica may then go to a zone "
     "that holds another replica of its volume"),
    ("holds a replica of the volume already", "set replica-soft-anti-affinity to true for the migration "
     f"({_patch_setting('replica-soft-anti-affinity')}): the moved replica may then share a node with "
     "another replica of its volume"),
    ("nodeSelector", "tag another schedulable node with the volume's nodeSelector tags (Longhorn UI, Node, "
     "Edit node and disks), or clear the volume's nodeSelector"),
    ("disk on the other", "make room on another node's Longhorn disk (or add a disk, or allow scheduling on "
     "one): the replica needs its actual size free above storage-minimal-available-percentage"),
    ("no other Longhorn node is schedulable", "make another Longhorn node schedulable (Ready, uncordoned, "
     "scheduling allowed)"),
    ("replica-disk-soft-anti-affinity", "set replica-disk-soft-anti-affinity to true for the migration "
     f"({_patch_setting('replica-disk-soft-anti-affinity')})"),
)


def drain_verdict(policy: str, rows: list[storage.VolumeRow], *, nodes: Collection[str] | None = None,
                  shareable: Collection[str] = (), stuck: Mapping[str, str] | None = None) -> Verdict:
    """The gate from the ``node-drain-policy`` value and the volumes (pure).

    Args:
        policy: the ``node-drain-policy`` setting.
        rows: the volumes and their replicas' nodes.
        nodes: the nodes Longhorn may put replicas on (None: not known; then no volume
            is said to be unmovable).
        shareable: volumes whose replicas may share a node (replica soft anti-affinity).
        stuck: volume → why Longhorn cannot move a replica of it off a drained node
            (:func:`unmovable_volumes`, from ``nodes.longhorn.io``); given, it replaces
            the estimate from ``nodes`` and ``shareable``.

    Example:
        >>> two = storage.VolumeRow("pvc-2", "attached", "healthy", "a", "rwo", ["a", "b"])
        >>> drain_verdict("block-if-contains-last-replica", [two]).ok
        True
        >>> drain_verdict("surprise", [two]).ok
        False
        >>> stuck = drain_verdict("block-for-eviction", [two], nodes=["a", "b"])
        >>> stuck.ok, stuck.details[0].split(":")[0]
        (False, 'pvc-2')
    """
    lonely = _single_node(rows)
    why = dict(stuck) if stuck is not None else _unmovable(rows, nodes, shareable)
    facts = {"policy": policy, "volumes": len(rows),
             "single_node_volumes": {r.name: r.replica_nodes[0] for r in lonely},
             "nodes": len(nodes) if nodes else None,
             "unmovable_volumes": sorted(why)}
    if policy not in POLICIES:
        return Verdict("nbn-longhorn-drain", False, _MESSAGE,
                       [f"settings.longhorn.io/node-drain-policy is {policy!r}, which this runbook does not know"],
                       [f"set it to one of {', '.join(POLICIES)} (Longhorn's own values)"], facts)
    where = [f"{r.name}: every replica on {r.replica_nodes[0]}" + (f" (attached to {r.node})" if r.node else "")
             for r in lonely]
    if policy == DEFAULT_POLICY and lonely:
        return Verdict("nbn-longhorn-drain", False, _MESSAGE,
                       [f"{w}: node-drain-policy {policy} keeps that node's instance-manager PDB, so its "
                        "drain waits until node_by_node.drain_timeout" for w in where],
                       ["give each listed volume a second replica before the migration (Longhorn UI, or "
                        "`kubectl -n longhorn-system patch volumes.longhorn.io <volume> --type merge -p "
                        "'{\"spec\":{\"numberOfReplicas\":2}}'`) and wait until it is healthy",
                        "or set node-drain-policy to block-for-eviction-if-contains-last-replica for the "
                        "migration: Longhorn then moves those replicas away before each drain (the drain "
                        "takes as long as the copy, and a volume attached there waits for it)",
                        "or allow-if-replica-is-stopped: the volume is down while its node is drained"], facts)
    # the replicas these policies move: all of them, or those without a copy elsewhere
    moved = {r.name for r in (rows if policy == "block-for-eviction" else lonely)}
    blocked = [r for r in rows if r.name in moved and r.name in why] if policy in POLICIES[1:3] else []
    if blocked:
        reasons = " ".join(why[r.name] for r in blocked)
        fixes = [fix for key, fix in _FIXES if key in reasons]
        return Verdict("nbn-longhorn-drain", False, _MESSAGE,
                       [f"{r.name}: replicas on {', '.join(sorted(set(r.replica_nodes)))}: node-drain-policy "
                        f"{policy} moves the replica off a drained node first and {why[r.name]}, so Longhorn "
                        "keeps the instance-manager PDB (Scheduled: ReplicaSchedulingFailure) and the drain "
                        "waits until node_by_node.drain_timeout" for r in blocked],
                       fixes + ["or set node-drain-policy to block-for-eviction-if-contains-last-replica (Longhorn "
                                "moves only the replicas without a healthy copy elsewhere) or "
                                "block-if-contains-last-replica (it moves none)",
                                "or lower those volumes' numberOfReplicas below the number of nodes"], facts)
    details = {
        DEFAULT_POLICY: [f"every one of the {len(rows)} volumes has replicas on two nodes or more"],
        "block-for-eviction-if-contains-last-replica": [
            f"{w}: Longhorn moves it to another node before that node's drain ends (a pod using it "
            "waits for the copy)" for w in where]
        or ["no volume keeps every replica on one node: Longhorn moves nothing"],
        "block-for-eviction": ["Longhorn moves every replica off each drained node before its drain ends: "
                               "each drain takes as long as copying that node's replicas (check "
                               "node_by_node.drain_timeout), and a volume attached to the drained node "
                               "stays there until then, its moved pod waiting"],
        "allow-if-replica-is-stopped": [f"{w}: down while that node is drained (its replica stopped)"
                                        for w in where] or ["no volume keeps every replica on one node"],
        "always-allow": ["Longhorn lets a drain stop a volume's last running replica (Longhorn warns of "
                         "data corruption): the runbook's storage wait between nodes is what protects "
                         "the volumes"],
    }[policy]
    return Verdict("nbn-longhorn-drain", True, _MESSAGE, [f"node-drain-policy {policy}"] + details, [], facts)


def _setting(s: Session, name: str) -> str:
    """A ``settings.longhorn.io`` object's value ("" when it is missing)."""
    obj = s.cluster.request("GET", f"/apis/{storage.LONGHORN_API}/namespaces/{storage.LONGHORN_NS}"
                                   f"/settings/{name}", ok_missing=True)
    return str((obj or {}).get("value") or "")


def read_policy(s: Session) -> str:
    """The ``node-drain-policy`` setting's value (Longhorn's default when the object is missing)."""
    return _setting(s, "node-drain-policy") or DEFAULT_POLICY


def read_shareable(s: Session) -> set[str]:
    """Volumes whose replicas may share a node: the volume's ``replicaSoftAntiAffinity``
    (``enabled``/``disabled``), else the ``replica-soft-anti-affinity`` setting."""
    default = _setting(s, "replica-soft-anti-affinity").lower() == "true"
    out = set()
    for v in s.cluster.iter_collection(storage.LONGHORN_API, "volumes", storage.LONGHORN_NS):
        own = (v.get("spec") or {}).get("replicaSoftAntiAffinity")
        if own == "enabled" or (own != "disabled" and default):
            out.add(v["metadata"]["name"])
    return out


def read_nodes(s: Session) -> list[str]:
    """The nodes Longhorn runs on (those with an instance manager; every node when none
    is listed)."""
    ims = s.cluster.iter_collection(storage.LONGHORN_API, "instancemanagers", storage.LONGHORN_NS)
    nodes = {(im.get("spec") or {}).get("nodeID") or "" for im in ims} - {""}
    return sorted(nodes) or [n["metadata"]["name"] for n in s.cluster.list("nodes")]


def read_settings(s: Session) -> dict[str, str]:
    """Every ``settings.longhorn.io`` value by name."""
    return {o["metadata"]["name"]: str(o.get("value") or "")
            for o in s.cluster.iter_collection(storage.LONGHORN_API, "settings", storage.LONGHORN_NS)}


def verdict(s: Session) -> Verdict | None:
    """The gate read from the cluster; None when Longhorn is not installed.

    Where Longhorn could put a moved replica comes from ``nodes.longhorn.io`` (zones, tags,
    disks and their room: :mod:`runbook.longhorn_placement`); without those objects, from
    the nodes that run an instance manager and the soft anti-affinity settings only."""
    if not storage.installed(s.cluster):
        return None
    vols = list(s.cluster.iter_collection(storage.LONGHORN_API, "volumes", storage.LONGHORN_NS))
    reps = list(s.cluster.iter_collection(storage.LONGHORN_API, "replicas", storage.LONGHORN_NS))
    rows = storage.volume_rows(vols, reps)
    lh_nodes = list(s.cluster.iter_collection(storage.LONGHORN_API, "nodes", storage.LONGHORN_NS))
    if lh_nodes:
        settings = read_settings(s)
        return drain_verdict(settings.get("node-drain-policy") or DEFAULT_POLICY, rows,
                             nodes=[n["metadata"]["name"] for n in lh_nodes],
                             stuck=unmovable_volumes(vols, reps, lh_nodes, settings))
    return drain_verdict(read_policy(s), rows, nodes=read_nodes(s), shareable=read_shareable(s))
