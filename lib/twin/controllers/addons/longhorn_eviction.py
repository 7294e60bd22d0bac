"""Replica eviction from a cordoned node: the part of longhorn-manager's node controller that
the two ``block-for-eviction`` drain policies switch on.

On every sync of a node (by the longhorn-manager pod of that node) Longhorn sets each
replica's ``spec.evictionRequested`` (``node_controller.go`` syncReplicaEvictionRequested
and shouldEvictReplica, longhorn-manager v1.7.2; design: longhorn/longhorn
``enhancements/20230905-automatically-evict-replicas-while-draining.md``):

- false when the node is down (Kubernetes node not Ready) or gone;
- false on a schedulable node: the drain policies act on cordon, not on drain;
- ``block-for-eviction``: true for every replica of the cordoned node;
- ``block-for-eviction-if-contains-last-replica``: true only for a replica whose volume
  has no healthy, PDB-protected replica on another node (the test of
  :meth:`.longhorn_pdb.InstanceManagerPDBs.protected_nodes`);
- any other policy: false (an eviction under way is cancelled).

Each change is an event on the Replica: ``EvictionAutomatic`` "Requesting replica …
eviction from node …", or ``EvictionCanceled`` "Cancelling …". The volume controller then
moves the replica (:mod:`.longhorn_pass`, :mod:`.longhorn_replicas`): it keeps or gets the
volume attached (the volume-eviction controller's attachment ticket on the volume's owner
node, which a workload on another node does not interrupt), schedules one more replica
(:func:`.longhorn_scheduler.replica_candidates`), rebuilds it from a healthy one, then
deletes the evicted replica; the instance manager's PDB goes once the node holds no
replica Longhorn waits for. With no eligible node the replica stays, the volume's
``Scheduled`` condition says ``ReplicaSchedulingFailure``, and the drain waits for ever
(until the node is uncordoned or the policy changes; a replica already rebuilding for a
cancelled eviction is kept).

Not modelled: eviction a person requests on a Longhorn node or disk (``spec.evictionRequested``
of a ``nodes.longhorn.io``: the scheduler puts nothing new there, but nothing moves its
replicas off), so ``node.status.autoEvicting`` is not shown either.
"""
from __future__ import annotations

import logging
from typing import Any

from .common import find_type, meta
from .longhorn_rules import LONGHORN_NS

log = logging.getLogger("twin.controllers.addons.longhorn")

__all__ = ["ReplicaEvictions", "should_evict_replica", "EVICTING_POLICIES"]

#: The node-drain-policy values under which Longhorn evicts replicas by itself.
EVICTING_POLICIES = ("block-for-eviction", "block-for-eviction-if-contains-last-replica")


def should_evict_replica(policy: str, node: str, cordoned: bool, copy_elsewhere: bool) -> tuple[bool, str]:
    """Whether Longhorn wants a replica off its node now, and the reason it records.

    Args:
        policy: the ``node-drain-policy`` setting.
        node: the state of the replica's Kubernetes node: ``ready``, ``not-ready`` or
            ``missing``.
        cordoned: the node's ``spec.unschedulable``.
        copy_elsewhere: the volume has a healthy replica on another schedulable node
            whose running instance manager still has its PDB.

    Example:
        >>> should_evict_replica("block-for-eviction", "ready", True, True)
        (True, 'EvictionAutomatic')
        >>> should_evict_replica("block-for-eviction-if-contains-last-replica", "ready", True, True)
        (False, 'EvictionCanceled')
    """
    if node == "missing":
        return False, "KubernetesNodeGone"
    if node != "ready":
        return False, "KubernetesNodeNotReady"
    if not cordoned:
        return False, "EvictionCanceled"
    if policy == EVICTING_POLICIES[0]:
        return True, "EvictionAutomatic"
    if policy == EVICTING_POLICIES[1] and not copy_elsewhere:
        return True, "EvictionAutomatic"
    return False, "EvictionCanceled"


class ReplicaEvictions:
    """Set ``spec.evictionRequested`` on the replicas as the node controllers do.

    Example (inside the twin's loop)::

        lh.evictions.sync()
        lh.evictions.requested        # {'pvc-…-r-1a2b3c4d': 'fast-heron'}
    """

    def __init__(self, rt: Any, volumes: Any, pdbs: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.volumes = volumes
        self.pdbs = pdbs
        self.nodes_t = find_type(self.store, "", "nodes")
        #: replica -> node, for the replicas Longhorn wants moved now
        self.requested: dict[str, str] = {}

    def _node_state(self, node: str) -> tuple[str, bool]:
        n = self.store.peek(self.nodes_t, None, node) if self.nodes_t is not None else None
        if n is None:
            return "missing", False
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or ())
        return ("ready" if ready else "not-ready"), bool((n.get("spec") or {}).get("unschedulable"))

    def sync(self) -> None:
        """syncReplicaEvictionRequested for every node whose longhorn-manager runs."""
        t = self.volumes.t.get("replicas")
        if t is None:
            return
        policy = self.volumes.settings().get("node-drain-policy", "")
        replicas = list(self.store.iter_objects(t, LONGHORN_NS))
        if policy not in EVICTING_POLICIES:
            # nothing to request; only requests left from an earlier policy to cancel
            replicas = [r for r in replicas if (r.get("spec") or {}).get("evictionRequested")]
        protected = self.pdbs.protected_nodes(replicas) if policy == EVICTING_POLICIES[1] else {}
        nodes: dict[str, tuple[str, bool] | None] = {}
        for r in replicas:
            sp = r.get("spec") or {}
            node = sp.get("nodeID") or ""
            if not node:
                continue
            if node not in nodes:
                nodes[node] = self._node_state(node) if self.volumes.manager_ready(node) else None
            facts = nodes[node]
            if facts is None:
                continue   # the node controller of this node is its longhorn-manager: not running
            elsewhere = bool(protected.get(sp.get("volumeName") or "", set()) - {node})
            want, reason = should_evict_replica(policy, facts[0], facts[1], elsewhere)
            name = meta(r)["name"]
            if want:
                self.requested[name] = node
            else:
                self.requested.pop(name, None)
            if bool(sp.get("evictionRequested")) != want:
                self._set(r, want, reason, node)
        live = {meta(r)["name"] for r in replicas}
        for name in [n for n in self.requested if n not in live]:
            del self.requested[name]    # deleted (evicted), or no longer requested

    def _set(self, replica: dict, want: bool, reason: str, node: str) -> None:
        name = meta(replica)["name"]

        def fn(o: dict) -> None:
            o.setdefault("spec", {})["evictionRequested"] = want
        try:
            self.store.mutate(self.volumes.t["replicas"], LONGHORN_NS, name, fn)
        except Exception:
            log.debug("longhorn: eviction request of replica %s not written", name, exc_info=True)
            return
        verb = "Requesting" if want else "Cancelling"
        disk = (replica.get("spec") or {}).get("diskID") or ""
        msg = f"{verb} replica {name} eviction from node {node} and disk {disk}"
        log.info("longhorn: %s (node-drain-policy, %s)", msg, reason)
        self.volumes.record_event(replica, "Normal", reason, msg, "longhorn-node-controller")
