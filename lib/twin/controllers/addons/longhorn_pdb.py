"""The PodDisruptionBudgets longhorn-manager keeps on its instance-manager pods.

A real Longhorn cluster has one PDB per running instance manager, named after it, in
``longhorn-system``, ``minAvailable: 1``, selecting the instance manager's pod by its
labels (``instance_manager_controller.go`` syncInstanceManagerPDB and
generateInstanceManagerPDBManifest, longhorn-manager v1.7.2). So a ``kubectl drain`` is
refused that pod ("Cannot evict pod as it would violate the pod's disruption budget")
until longhorn-manager deletes the PDB, which it does only once the node is cordoned
and (canDeleteInstanceManagerPDB):

1. no engine runs in the node's instance manager any more (every volume attached there
   has detached: the drain must first move the pods that use them);
2. by the ``node-drain-policy`` setting (default ``block-if-contains-last-replica``):

   * ``always-allow``: nothing more;
   * ``block-for-eviction``: no replica left on the node at all;
   * ``block-if-contains-last-replica`` / ``block-for-eviction-if-contains-last-replica``:
     every replica on the node has a healthy replica of the same volume on another node
     that is schedulable and whose running instance manager still has its PDB
     (``ListVolumePDBProtectedHealthyReplicasRO``); a replica that never held data
     (``healthyAt`` and ``failedAt`` empty) does not count;
   * ``allow-if-replica-is-stopped``: the same, for the replicas not stopped.

   Under the two ``block-for-eviction`` policies Longhorn also moves the replicas off the
   cordoned node by itself (:mod:`.longhorn_eviction`), so the PDB goes once those
   replicas are rebuilt elsewhere and deleted; with no eligible node for them it stays,
   and the drain waits for ever.

On a schedulable node a running instance manager without a PDB gets one back (after an
uncordon). The cluster-autoscaler mode (``kubernetes-cluster-autoscaler-enabled``) is not
modelled: minicloud does not run one. The PDBs of a node are synced by the
longhorn-manager pod of that node (the instance manager's controller), so not while it is
down.
"""
from __future__ import annotations

import logging
from typing import Any

from .common import find_type, meta
from .longhorn_rules import LONGHORN_NS

log = logging.getLogger("twin.controllers.addons.longhorn")

__all__ = ["InstanceManagerPDBs", "DRAIN_POLICIES"]

DRAIN_POLICIES = ("block-if-contains-last-replica", "block-for-eviction",
                  "block-for-eviction-if-contains-last-replica", "allow-if-replica-is-stopped",
                  "always-allow")


def _healthy(replica: dict) -> bool:
    sp = replica.get("spec") or {}
    return bool(sp.get("healthyAt")) and not sp.get("failedAt")


class InstanceManagerPDBs:
    """Create and delete the instance managers' PDBs as longhorn-manager does.

    Example (inside the twin's loop)::

        lh.pdbs.sync()
        lh.pdbs.blocked["set-hog"]   # 'some volumes are still attached: pvc-…'
    """

    def __init__(self, rt: Any, ims: Any, volumes: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.ims = ims
        self.volumes = volumes
        self.t = find_type(self.store, "policy", "poddisruptionbudgets")
        self.nodes_t = find_type(self.store, "", "nodes")
        #: node -> why its cordoned instance manager keeps its PDB (for logs and describe)
        self.blocked: dict[str, str] = {}

    # ------------------------------------------------------------------ reads
    def _unschedulable(self, node: str) -> bool:
        n = self.store.peek(self.nodes_t, None, node) if self.nodes_t is not None else None
        return bool(((n or {}).get("spec") or {}).get("unschedulable"))

    def _replicas(self) -> list[dict]:
        t = self.volumes.t.get("replicas")
        return list(self.store.iter_objects(t, LONGHORN_NS)) if t is not None else []

    def has_pdb(self, im_name: str) -> bool:
        return self.t is not None and self.store.peek(self.t, LONGHORN_NS, im_name) is not None

    def can_delete(self, node: str, im_name: str) -> tuple[bool, str]:
        """canDeleteInstanceManagerPDB for the all-in-one instance manager of ``node``."""
        im = self.store.peek(self.ims.t, LONGHORN_NS, im_name) or {}
        engines = (im.get("status") or {}).get("instanceEngines") or {}
        if engines:
            return False, "some volumes are still attached: " + ", ".join(sorted(engines))
        policy = self.volumes.settings().get("node-drain-policy", DRAIN_POLICIES[0])
        if policy == "always-allow":
            return True, ""
        replicas = self._replicas()
        here = [r for r in replicas if (r.get("spec") or {}).get("nodeID") == node]
        if policy == "block-for-eviction" and here:
            return False, "some replicas block eviction: " + ", ".join(sorted(meta(r)["name"] for r in here))
        if policy == "allow-if-replica-is-stopped":
            here = [r for r in here if (r.get("spec") or {}).get("desireState") != "stopped"
                    or (r.get("status") or {}).get("currentState") != "stopped"]
        protected = self.protected_nodes(replicas)
        for r in sorted(here, key=lambda r: meta(r)["name"]):
            sp = r.get("spec") or {}
            unused = not sp.get("healthyAt") and not sp.get("failedAt")
            if not (protected.get(sp.get("volumeName") or "", set()) - {node}) and not unused:
                return False, f"replica {meta(r)['name']} has no pdb on another node"
        return True, ""

    def protected_nodes(self, replicas: list[dict]) -> dict[str, set[str]]:
        """Volume -> the nodes holding a healthy replica of it that a PDB protects
        (``ListVolumePDBProtectedHealthyReplicasRO``): the node is schedulable, its
        instance manager runs and still has its PDB.

        Example:
            >>> pdbs.protected_nodes(replicas)["pvc-1"]  # doctest: +SKIP
            {'fast-skunk', 'set-hog'}
        """
        out: dict[str, set[str]] = {}
        for r in replicas:
            sp = r.get("spec") or {}
            node = sp.get("nodeID") or ""
            if not node or not _healthy(r) or self._unschedulable(node):
                continue
            if self.ims.running(node) and self.has_pdb(self.ims.name(node) or ""):
                out.setdefault(sp.get("volumeName") or "", set()).add(node)
        return out

    # ------------------------------------------------------------------ writes
    def _create(self, node: str, im_name: str) -> None:
        im = self.store.peek(self.ims.t, LONGHORN_NS, im_name) or {}
        body = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": im_name, "namespace": LONGHORN_NS},
                "spec": {"minAvailable": 1,
                         "selector": {"matchLabels": dict(meta(im).get("labels") or {})}}}
        try:
            self.store.create(body, rtype=self.t)
            log.info("longhorn: created PDB %s (instance manager on %s)", im_name, node)
        except Exception:
            log.debug("longhorn: PDB %s not created", im_name, exc_info=True)

    def _delete(self, node: str, im_name: str) -> None:
        try:
            self.store.delete(self.t, LONGHORN_NS, im_name)
            log.info("longhorn: removed PDB %s since node %s is marked unschedulable", im_name, node)
        except Exception:
            log.debug("longhorn: PDB %s not deleted", im_name, exc_info=True)

    def sync(self) -> None:
        """syncInstanceManagerPDB for every running instance manager."""
        if self.t is None or self.ims.t is None:
            return
        for node, name in sorted(self.ims.by_node.items()):
            if not self.ims.running(node) or not self.volumes.manager_ready(node):
                continue
            exists = self.has_pdb(name)
            if not self._unschedulable(node):
                self.blocked.pop(node, None)
                if not exists:
                    self._create(node, name)
                continue
            if not exists:
                continue
            ok, why = self.can_delete(node, name)
            if ok:
                self.blocked.pop(node, None)
                self._delete(node, name)
            elif self.blocked.get(node) != why:
                self.blocked[node] = why
                log.info("longhorn: node %s is marked unschedulable but removing PDB %s is blocked: %s",
                         node, name, why)
