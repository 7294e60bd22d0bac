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
  ``block-for-eviction-if-contains-last-      Longhorn has first copied every replica
  replica``                                   that has no healthy copy elsewhere
  ``block-for-eviction``                      Longhorn has moved every replica off the node
  ``allow-if-replica-is-stopped``             the replicas with no copy elsewhere are
                                              stopped (their volume detached)
  ``always-allow``                            at once (Longhorn warns: the last replica of a
                                              running volume can be corrupted)
  ==========================================  ===========================================

So under the default policy a volume whose every replica sits on one node blocks that
node's drain until ``node_by_node.drain_timeout``. :func:`verdict` lists such volumes
with what to do before the migration starts; a policy that moves or stops replicas is
named with its cost.

Example:
    >>> rows = [storage.VolumeRow("pvc-1", "attached", "healthy", "a", "rwo", ["a"])]
    >>> v = drain_verdict("block-if-contains-last-replica", rows)
    >>> v.ok, v.details[0].split(":")[0]
    (False, 'pvc-1')
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import storage
from .node_by_node_gates import Verdict

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DEFAULT_POLICY", "POLICIES", "drain_verdict", "read_policy", "verdict"]

DEFAULT_POLICY = "block-if-contains-last-replica"
POLICIES = (DEFAULT_POLICY, "block-for-eviction-if-contains-last-replica", "block-for-eviction",
            "allow-if-replica-is-stopped", "always-allow")
_MESSAGE = ("Longhorn lets each node's drain through: its instance-manager PDB goes once the node's "
            "volumes have detached, and no volume keeps its only replica on the node being drained")


def _single_node(rows: list[storage.VolumeRow]) -> list[storage.VolumeRow]:
    return [r for r in rows if len(set(r.replica_nodes)) == 1]


def drain_verdict(policy: str, rows: list[storage.VolumeRow]) -> Verdict:
    """The gate from the ``node-drain-policy`` value and the volumes (pure).

    Example:
        >>> two = storage.VolumeRow("pvc-2", "attached", "healthy", "a", "rwo", ["a", "b"])
        >>> drain_verdict("block-if-contains-last-replica", [two]).ok
        True
        >>> drain_verdict("surprise", [two]).ok
        False
    """
    lonely = _single_node(rows)
    facts = {"policy": policy, "volumes": len(rows),
             "single_node_volumes": {r.name: r.replica_nodes[0] for r in lonely}}
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
                        "migration: Longhorn then copies those replicas away before each drain (the drain "
                        "takes as long as the copy)",
                        "or allow-if-replica-is-stopped: the volume is down while its node is drained"], facts)
    details = {
        DEFAULT_POLICY: [f"every one of the {len(rows)} volumes has replicas on two nodes or more"],
        "block-for-eviction-if-contains-last-replica": [
            f"{w}: Longhorn copies it to another node before that node's drain ends" for w in where]
        or ["no volume keeps every replica on one node: Longhorn moves nothing"],
        "block-for-eviction": ["Longhorn moves every replica off each drained node before its drain ends: "
                               "each drain takes as long as copying that node's replicas (check "
                               "node_by_node.drain_timeout)"],
        "allow-if-replica-is-stopped": [f"{w}: down while that node is drained (its replica stopped)"
                                        for w in where] or ["no volume keeps every replica on one node"],
        "always-allow": ["Longhorn lets a drain stop a volume's last running replica (Longhorn warns of "
                         "data corruption): the runbook's storage wait between nodes is what protects "
                         "the volumes"],
    }[policy]
    return Verdict("nbn-longhorn-drain", True, _MESSAGE, [f"node-drain-policy {policy}"] + details, [], facts)


def read_policy(s: Session) -> str:
    """The ``node-drain-policy`` setting's value (Longhorn's default when the object is missing)."""
    obj = s.cluster.request("GET", f"/apis/{storage.LONGHORN_API}/namespaces/{storage.LONGHORN_NS}"
                                   "/settings/node-drain-policy", ok_missing=True)
    return str((obj or {}).get("value") or DEFAULT_POLICY)


def verdict(s: Session) -> Verdict | None:
    """The gate read from the cluster; None when Longhorn is not installed."""
    if not storage.installed(s.cluster):
        return None
    return drain_verdict(read_policy(s), storage.read_volumes(s.cluster))
