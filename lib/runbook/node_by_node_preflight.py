"""01-preflight's gates of the node-by-node strategy, read from the cluster and the nodes.

The gates themselves are pure (:mod:`runbook.node_by_node_gates`); this module feeds
them what the cluster says and adds the CNI folder fact (docs/node-by-node.md, "Why
the Cilium guide does not work on k3s as written", 1):

* ``nbn-capacity``: every node's movable pods fit on the others while it is drained;
* ``nbn-cidr``: ``cilium.migration_cidr`` overlaps neither the cluster CIDR, the service
  CIDR nor a node's address, and holds a block for every node;
* ``nbn-pdb``: the PDBs that would block a drain, each with what to do; a PDB the params
  list under ``node_by_node.delete_instead_of_evict`` is an accepted outage (a warning,
  not a failure);
* ``nbn-longhorn-drain``: Longhorn's ``node-drain-policy`` lets each drain through (no
  volume keeps every replica on one node under the default policy), where Longhorn
  runs (:mod:`runbook.longhorn_drain`);
* ``nbn-cni-folders``: every node's containerd reads the same CNI folders (the values'
  ``cni.confPath``/``cni.binPath`` are cluster-wide), and they are k3s's own while flannel
  is on, where the CiliumNodeConfig's file must land (F7).

Example:
    >>> for v in node_by_node_preflight.verdicts(s):   # doctest: +SKIP
    ...     s.gate(v.ok, v.message, details=v.details, hint=v.hint, name=v.name)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from . import containerd, longhorn_drain, topology
from . import node_by_node_gates as g
from . import node_by_node_plan as nbp
from .node_by_node import NOT_THIS_STRATEGY, active

if TYPE_CHECKING:
    from .session import Session

__all__ = ["verdicts", "frame", "gate_all", "cni_verdict", "acceptance_verdict"]


def _workloads(s: Session) -> list[dict]:
    return [dict(o, kind=kind) for kind, res in (("ReplicaSet", "replicasets"), ("Deployment", "deployments"),
                                                  ("StatefulSet", "statefulsets")) for o in s.cluster.list(res)]


def cni_verdict(dirs: dict[str, tuple[str, str]], k3s_cni_dir: str) -> g.Verdict:
    """The CNI folder gate from each node's ``(conf_dir, bin_dir)`` (pure).

    Example:
        >>> d = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
        >>> cni_verdict({"a": (d, "/var/lib/rancher/k3s/data/cni")}, d).ok
        True
        >>> cni_verdict({"a": ("/etc/cni/net.d", "/opt/cni/bin")}, d).ok
        False
    """
    common, differ = nbp.cni_folders(dirs)
    details, actions = list(differ), []
    if differ:
        actions.append("make every node's k3s use the same data dir (and k3s release) before the migration")
    elif common is not None and common[0] != k3s_cni_dir.rstrip("/"):
        details.append(f"containerd reads {common[0]}, not k3s's {k3s_cni_dir}: flannel is not k3s's "
                       "embedded one here, or a config.toml.tmpl overrides it")
        actions.append("this strategy is derived for k3s's embedded flannel only (docs/node-by-node.md); "
                       "use big-bang, or check paths.k3s_cni_dir")
    ok = not details
    if ok and common is not None:
        details = [f"every node's containerd reads {common[0]} and {common[1]}: cni.confPath and cni.binPath "
                   "of the migration-mode install"]
    return g.Verdict("nbn-cni-folders", ok, "every node's containerd reads the same CNI folders, k3s's own "
                     "(where the CiliumNodeConfig's conflist must land while flannel is on)",
                     details, actions, {"folders": {k: list(v) for k, v in dirs.items()}})


def verdicts(s: Session) -> list[g.Verdict] | str:
    """The gates' verdicts (read-only); :data:`NOT_THIS_STRATEGY` under big-bang."""
    if not active(s):
        return NOT_THIS_STRATEGY
    nodes, pods, pdbs = s.cluster.list("nodes"), s.cluster.list("pods"), s.cluster.list("poddisruptionbudgets")
    topo = topology.gather(s)
    ips = [a["address"] for n in nodes for a in (n.get("status") or {}).get("addresses") or ()
           if a.get("type") == "InternalIP"]
    others = {f"LoadBalancer IP {lb.namespace}/{lb.name}": lb.ip for lb in s.params.checks.loadbalancer_ips}
    out = [g.capacity(nodes, pods, pdbs),
           g.cidr(s.params.cilium.migration_cidr or "", cluster_cidrs=topo.cluster_cidrs,
                  service_cidrs=topo.service_cidrs, node_networks=ips, others=others, nodes=len(nodes),
                  node_mask=s.params.cilium.migration_mask_size)]
    pdb = g.pdb_blockers(pdbs, pods, _workloads(s))
    accepted = set(s.params.node_by_node.delete_instead_of_evict)
    blocked = {b["pdb"] for b in pdb.facts.get("blocked", [])}
    if not pdb.ok and blocked and blocked <= accepted and not any("selected by" in d for d in pdb.details):
        pdb.ok = True
        pdb.details = [d + " — outage accepted (node_by_node.delete_instead_of_evict): its pod is deleted, "
                       "journaled" for d in pdb.details]
    out.append(pdb)
    lh = longhorn_drain.verdict(s)
    if lh is not None:
        out.append(lh)
    res = s.read_nodes(lambda n: containerd.config_cni_dirs(containerd.read_config(n)),
                       description="containerd CNI folders")
    dirs = {k: tuple(v) for k, v in res.values().items()}
    cni = cni_verdict(dirs, s.params.paths.k3s_cni_dir)
    for o in res.failed:
        cni.ok = False
        cni.details.append(f"{o.node}: config.toml not read ({o.error})")
    out.append(cni)
    accepted = acceptance_verdict(s.params.target.kind, s.params.node_by_node.accepted_on_real_target_by)
    if accepted is not None:
        out.append(accepted)
    return out


def acceptance_verdict(kind: str, who: str) -> g.Verdict | None:
    """On a real target, the evidence of who accepted the strategy there (the params refuse
    it without a name); nothing on a twin.

    Example:
        >>> acceptance_verdict("real", "Jo").details
        ['accepted by Jo (node_by_node.accepted_on_real_target_by)']
        >>> acceptance_verdict("twin", "") is None
        True
    """
    if kind != "real":
        return None
    who = who.strip()
    return g.Verdict("nbn-accepted", bool(who), "node-by-node on a real cluster was accepted by a named "
                     "person (it is rehearsed on twins only: docs/node-by-node.md, status)",
                     [f"accepted by {who} (node_by_node.accepted_on_real_target_by)" if who
                      else "nobody accepted it (node_by_node.accepted_on_real_target_by is empty)"],
                     [] if who else ["use big-bang, or see docs/node-by-node.md, status"],
                     facts={"accepted_by": who})


def frame(vs: list[g.Verdict] | str) -> pd.DataFrame | str:
    """One row per gate: passed or not, and the first lines of its details."""
    if isinstance(vs, str):
        return vs
    return pd.DataFrame([{"gate": v.name, "ok": v.ok, "requirement": v.message,
                          "details": "; ".join(v.details[:6]), "what to do": v.hint or ""} for v in vs])


def gate_all(s: Session, vs: list[g.Verdict] | str) -> None:
    """Record each verdict as a gate of this phase (the first failing one stops it)."""
    if isinstance(vs, str):
        print(vs)
        return
    failed = [v for v in vs if not v.ok]
    for v in vs:
        if v.ok:
            s.gate(True, v.message, name=v.name, details=v.details)
    for v in failed:
        s.gate(False, v.message, name=v.name, details=v.details, hint=v.hint)
