"""The node-by-node strategy's operations: the migration-mode install, then each node.

``docs/node-by-node.md`` derives the procedure (steps 1-4, facts F1-F15); the pure
decisions are in :mod:`runbook.node_by_node_plan`, one node's steps in
:mod:`runbook.node_by_node_steps`, the switch in :mod:`runbook.node_by_node_switch` and
the way back in :mod:`runbook.node_by_node_rollback`. 03-install calls, in order:

1. :func:`plan`: the folders k3s's containerd reads on every node (they must agree), the
   migration and final values files (written into the run folder), the node order;
2. :func:`install_migration`: ``helm upgrade --install`` with the migration values
   (journaled as ``helm-install``, the step 05-rollback's plan knows), the agents Ready,
   the CiliumNodeConfig (``nbn-cnc``);
3. :func:`migrate_nodes`: each node, agents first: the steps of
   :data:`runbook.node_by_node_plan.NODE_STEPS`, each journaled with the node's name
   before it runs. A killed run, re-run with the same run folder, continues from the
   node in progress (:func:`runbook.node_by_node_plan.resume_point`).

Every function does nothing with the big-bang strategy (it says so), so the notebooks
run the same cells for both.

Example:
    >>> nb = node_by_node.plan(s)                 # doctest: +SKIP
    >>> node_by_node.install_migration(s, nb)     # doctest: +SKIP
    >>> node_by_node.migrate_nodes(s, nb)         # doctest: +SKIP
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from . import cilium, containerd
from . import node_by_node_plan as nbp
from .errors import GateFailed, HelmError, NodeError
from .helm import Helm
from .presentation import frame_html

if TYPE_CHECKING:
    from .session import Session

__all__ = ["NodeByNodePlan", "active", "plan", "install_migration", "migrate_nodes", "progress_table",
           "helm_for", "helm_upgrade", "write_values", "FACT_FOLDERS", "NOT_THIS_STRATEGY"]

#: the journal fact of the CNI folders read before the first change (kept on a rerun:
#: after the switch the nodes read other folders)
FACT_FOLDERS = "nbn_cni_folders"
NOT_THIS_STRATEGY = "strategy big-bang: this node-by-node step does nothing"


def active(s: Session) -> bool:
    """Whether this run's strategy is node-by-node."""
    return s.params.strategy == "node-by-node"


@dataclass
class NodeByNodePlan:
    """What the node-by-node migration will do (read-only until executed).

    Attributes:
        order: the nodes, agents first, servers last.
        cidr, mask: the migration's pod CIDR and per-node block.
        conf_dir, bin_dir: the CNI folders every node's containerd reads now (k3s's).
        migration_values_file, final_values_file, kpr_values_file: the values written
            into the run folder (the last is None when the values keep kube-proxy).
        problems: why the plan cannot run (folders that differ between nodes).
    """

    order: list[str]
    cidr: str
    mask: int
    conf_dir: str
    bin_dir: str
    migration_values_file: str
    final_values_file: str
    kpr_values_file: str | None
    problems: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        rows = [("node order (agents first, servers last)", " → ".join(self.order)),
                ("new pod CIDR (cluster-pool)", f"{self.cidr}, a /{self.mask} per node"),
                ("CNI config folder (cni.confPath)", self.conf_dir),
                ("CNI binary folder (cni.binPath)", self.bin_dir),
                ("migration values", self.migration_values_file),
                ("final values (the switch)", self.final_values_file),
                ("kube-proxy replacement values", self.kpr_values_file or "not used: the values keep kube-proxy")]
        return pd.DataFrame(rows, columns=["item", "value"])

    def _repr_html_(self) -> str:
        bad = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems)
        return frame_html(self.frame()) + (f"<p style='color:#b00020'>Cannot run:</p><ul>{bad}</ul>" if bad else "")


def _read_folders(s: Session) -> dict[str, tuple[str, str]]:
    res = s.read_nodes(lambda n: containerd.config_cni_dirs(containerd.read_config(n)),
                       description="containerd CNI folders").raise_for_failures()
    return {k: tuple(v) for k, v in res.values().items()}


def write_values(s: Session, name: str, values: dict[str, Any]) -> str:
    """Write ``values`` into the run folder as ``name`` (mode 0600: values may hold secrets)."""
    path = Path(s.run_dir) / name
    text = ("# written by runbook.node_by_node from the params' values; do not edit (the journal "
            "records what was installed)\n" + yaml.safe_dump(values, sort_keys=False))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def plan(s: Session) -> NodeByNodePlan | str:
    """The node order, the CNI folders (read over SSH once, then from the journal) and the
    values files. Returns :data:`NOT_THIS_STRATEGY` under big-bang."""
    if not active(s):
        return NOT_THIS_STRATEGY
    p = s.params
    folders = s.journal.get(FACT_FOLDERS)
    if not folders:
        folders = {k: list(v) for k, v in _read_folders(s).items()}
        if s.execute:
            folders = s.journal.setdefault(FACT_FOLDERS, folders)
    common, problems = nbp.cni_folders({k: tuple(v) for k, v in folders.items()})
    conf_dir, bin_dir = common or tuple(next(iter(folders.values())))
    cidr, mask = p.cilium.migration_cidr or "", p.cilium.migration_mask_size
    mig = nbp.migration_values(s.values, cidr=cidr, mask=mask, conf_dir=conf_dir, bin_dir=bin_dir)
    final = nbp.final_values(s.values, cidr=cidr, mask=mask)
    kpr = bool(final.get("kubeProxyReplacement") in (True, "true"))
    final_no_kpr = {**final, "kubeProxyReplacement": False}
    order = nbp.node_order((n.name, n.role) for n in p.nodes)
    return NodeByNodePlan(order, cidr, mask, conf_dir, bin_dir,
                          write_values(s, "nbn-migration-values.yaml", mig),
                          write_values(s, "nbn-final-values.yaml", final_no_kpr),
                          write_values(s, "nbn-kpr-values.yaml", final) if kpr else None,
                          [f"the nodes' containerd read different CNI folders ({'; '.join(problems)}): "
                           "cni.confPath/binPath are cluster-wide, so every node must read the same"]
                          if problems else [])


def helm_for(s: Session) -> Helm:
    return Helm.from_params(s.params, run_dir=s.run_dir)


def helm_upgrade(s: Session, values_file: str, *, step: str, what: str) -> dict[str, Any]:
    """``helm upgrade --install`` of the Cilium release with ``values_file`` (journaled as
    ``step``); skipped when the journal records it done."""
    c = s.params.cilium
    if s.journal.is_done(step):
        return {"skipped": "done earlier in this run"}
    h = helm_for(s)
    h.repo_add(c.chart_repo_name, s.params.chart_repo_url)
    h.repo_update(c.chart_repo_name)
    chart = f"{c.chart_repo_name}/{c.chart}"
    data = {"release": c.release, "namespace": c.namespace, "chart": chart, "version": c.version,
            "values_file": values_file}

    def do() -> dict[str, Any]:
        h.upgrade_install(c.release, chart, version=c.version, values_file=values_file,
                          namespace=c.namespace, wait=True, timeout=f"{int(s.params.limits.timeouts.helm)}s")
        hist = h.history(c.release, namespace=c.namespace)
        return {"revision": hist[-1].get("revision") if hist else None}

    s.progress(f"helm upgrade --install {c.release} {chart} --version {c.version} ({what})")
    try:
        return s.journal.perform(step, f"helm upgrade --install {c.release} ({what})", do, data=data)
    except HelmError as e:
        st = cilium.status(s.cluster, c.namespace)
        s.gate(False, f"helm upgrade --install {c.release} ({what}) succeeded", name=step,
               details=[(e.stderr or str(e)).strip()[-300:]] + st.agent_problems,
               hint="read each pod's reason above; fix and re-run this notebook (the run continues "
                    "here), or run 05-rollback")
        raise  # pragma: no cover - s.gate raised


def install_migration(s: Session, nb: NodeByNodePlan | str) -> dict[str, Any] | str:
    """Step 1: Cilium in migration mode (no node uses it yet), its agents Ready, and the
    CiliumNodeConfig that will select each node once it is labelled."""
    if not isinstance(nb, NodeByNodePlan):
        return nb
    if nb.problems:
        s.gate(False, "every node's containerd reads the same CNI folders", name="nbn-cni-folders",
               details=nb.problems, hint="make the nodes' k3s data dirs agree, then start a new run")
    if not s.require_execute("the migration-mode install"):
        return "dry run: nothing installed"
    out = {"helm": helm_upgrade(s, nb.migration_values_file, step=nbp.STEP_HELM,
                                what="migration mode: no node uses Cilium yet")}
    s.journal.set("cilium_installed", True)
    ns = s.params.cilium.namespace
    cilium.wait_ready(s.cluster, namespace=ns, timeout=s.params.limits.timeouts.agents_ready,
                      progress=s.progress)
    s.cluster.wait_for(lambda: (s.cluster.has_resource("ciliumnodeconfigs"), ["the CiliumNodeConfig CRD"]),
                       timeout=s.params.limits.timeouts.agents_ready, what="the CiliumNodeConfig CRD",
                       interval=2.0, progress=s.progress)
    if not s.journal.is_done(nbp.STEP_CNC):
        def create() -> str:
            if s.cluster.get("ciliumnodeconfigs", nbp.CNC_NAME, ns) is not None:
                return "already there"
            s.cluster.create("ciliumnodeconfigs", nbp.cnc_manifest(ns), ns)
            return "created"
        out["ciliumnodeconfig"] = s.journal.perform(
            nbp.STEP_CNC, f"create CiliumNodeConfig {ns}/{nbp.CNC_NAME} (selects {nbp.LABEL}=true)",
            create, data={"manifest": nbp.cnc_manifest(ns)})
    return out


def migrate_nodes(s: Session, nb: NodeByNodePlan | str) -> pd.DataFrame | str:
    """Step 2: every node not done yet, from the node in progress on (see the journal)."""
    from .node_by_node_steps import migrate_node

    if not isinstance(nb, NodeByNodePlan):
        return nb
    if not s.require_execute("the per-node migration"):
        return progress_table(s, nb)
    rp = nbp.resume_point([e.__dict__ for e in s.journal.entries()], nb.order)
    s.progress(f"node-by-node: {rp}")
    if not s.journal.is_done(nbp.STEP_CNC):
        raise NodeError("the migration-mode install is not done in this run", hint="run install_migration first")
    for node in nb.order:
        if node in rp.done:
            continue
        if not s.journal.entries(node=node):
            storage_redundant_before(s, node)
        try:
            migrate_node(s, nb, node)
        except GateFailed:
            raise
        except Exception as e:
            s.gate(False, f"node {node} moved to Cilium", name="nbn-node", details=[f"{type(e).__name__}: {getattr(e, 'message', e)}"],
                   hint=getattr(e, "hint", None) or "fix the cause and re-run this notebook with the same "
                   "run: it continues with this node; or run 05-rollback")
    return progress_table(s, nb)


def storage_redundant_before(s: Session, node: str) -> None:
    """Before a node is cordoned: every Longhorn volume ``healthy`` again, within
    ``limits.timeouts.storage_healthy``; else the gate ``nbn-storage`` stops the run naming
    the volumes (nothing of the node has changed yet: a re-run waits again).

    Draining a node evicts its Longhorn instance manager, and every replica it runs stops;
    Longhorn rebuilds them once the node is back (or elsewhere after
    ``replica-replenishment-wait-interval``). Draining the next node before that rebuild
    can stop a volume's last healthy replica: the volume faults and its workload cannot
    start. Longhorn's node-maintenance guidance is one node at a time, waiting for the
    rebuilds in between; a real Longhorn also guards its instance managers with
    PodDisruptionBudgets while a volume depends on them, which this wait does not rely on.
    """
    from . import storage_ops

    check = storage_ops.healthy_check(s)
    s.gate(check.ok, f"every Longhorn volume healthy before {node} is drained", name="nbn-storage",
           details=check.details, hint=check.hint)


def progress_table(s: Session, nb: NodeByNodePlan) -> pd.DataFrame:
    """Per node and step: done, interrupted, failed or not yet (from the journal)."""
    rows = []
    for node in nb.order:
        row: dict[str, Any] = {"node": node}
        for step in nbp.NODE_STEPS:
            es = s.journal.entries(step=nbp.journal_step(step), node=node)
            row[step] = ("done" if any(e.status == "done" for e in es) else
                         es[-1].status if es else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=["node", *nbp.NODE_STEPS])
