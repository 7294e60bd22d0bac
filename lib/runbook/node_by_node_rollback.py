"""The node-by-node rollback, before 05-rollback's big-bang steps (docs/node-by-node.md step 4).

Mid-way through the nodes, every node that got anything of step 2 is taken back, the
newest first (:func:`runbook.node_by_node_plan.rollback_order`); each step is journaled
as ``nbn-rb-<step>`` with the node's name before it runs, and skipped on a rerun when
done:

* a node only cordoned (or drained) gets ``uncordon`` (when it was schedulable before);
* a node that may be on Cilium (labelled, or its agent re-created) goes through step 2
  in reverse, once every Longhorn volume is healthy again (gate ``nbn-storage``, as before
  each node of the migration): ``cordon``, ``drain``, ``unlabel``, ``agent`` (re-created without the
  CiliumNodeConfig: it no longer writes a CNI config nor, with ``cni-exclusive``, renames
  the others; the running one would take the folder back), ``restore-cni`` (Cilium's
  ``05-cilium.conflist`` removed from k3s's folder and flannel's conflist put back from
  its ``.cilium_bak``: with ``cni.uninstall=false`` the agent never does it, F2),
  ``pods`` (the node's pods on
  the new CIDR re-created: containerd loads flannel's config again, F12), ``validate``
  (a probe pod on the node gets a flannel address, outside the new CIDR), ``uncordon``.

Every pod is then back on flannel, with Cilium still installed; 05-rollback's big-bang
steps follow and end in the state its checks prove: the release uninstalled (the
journal's ``helm-install``), Cilium's files and BPF state removed on every node, flannel
back, DNS through the ClusterIP. Once the switch has begun, the switch is undone first
(:mod:`runbook.node_by_node_unswitch`: flannel back beside Cilium on every node, one k3s
restart at a time); then every node goes back here, newest first.

Example:
    >>> node_by_node_rollback.plan(s)          # doctest: +SKIP
    >>> node_by_node_rollback.revert_nodes(s)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from . import drain, pods
from . import node_by_node_plan as nbp
from .cluster import pod_ready
from .errors import GateFailed, NodeError
from .node_by_node import FACT_FOLDERS, NOT_THIS_STRATEGY, active, storage_redundant_before
from .node_by_node_steps import FACT_SCHEDULABLE, recreate_agent

if TYPE_CHECKING:
    from .session import Session

__all__ = ["plan", "revert_nodes", "RB_STEPS", "storage_kept_up", "unswitch_finished"]

RB_STEPS = ("cordon", "drain", "unlabel", "agent", "restore-cni", "pods", "validate", "uncordon")


def unswitch_finished(s: Session, entries: list[dict[str, Any]]) -> bool:
    """Whether the reverse of the switch is complete in this rollback."""
    from .node_by_node_unswitch import finished

    return finished(entries, [(n.name, n.role) for n in s.params.nodes])


def _entries(s: Session) -> list[dict[str, Any]]:
    return [e.__dict__ for e in s.journal.entries()]


def plan(s: Session) -> pd.DataFrame | str:
    """The nodes the per-node rollback takes back, newest first, and what each gets."""
    if not active(s):
        return NOT_THIS_STRATEGY
    entries = _entries(s)
    if nbp.switch_started(entries) and not unswitch_finished(s, entries):
        return ("the switch had begun: it is undone first (node_by_node_unswitch.unswitch, above), then "
                "every node goes back in reverse: " + " → ".join(nbp.rollback_order(entries)))
    rows = [{"node": n, "rollback": "step 2 in reverse: " + ", ".join(RB_STEPS) if nbp.needs_revert(entries, n)
             else "uncordon (never reached Cilium)"} for n in nbp.rollback_order(entries)]
    return pd.DataFrame(rows, columns=["node", "rollback"])


def _last_migration_seq(entries: list[dict[str, Any]], node: str) -> int:
    return max((int(e.get("seq") or 0) for e in entries if e.get("node") == node and e.get("phase") != "rollback"
                and str(e.get("step", "")).startswith("nbn-")), default=0)


def _step(s: Session, node: str, since: int, step: str, action: str, fn: Callable[[], Any]) -> Any:
    name = f"nbn-rb-{step}"
    if any(e.step == name and e.status == "done" and e.seq > since for e in s.journal.entries(step=name, node=node)):
        return None
    s.progress(f"{node}: {action}")
    return s.journal.perform(name, action, fn, node=node)


def _restore_cni(s: Session, node: str, conf_dir: str) -> dict[str, Any]:
    n = s.node(node)
    conf = f"{conf_dir}/{nbp.CONFLIST}"
    flannel = f"{conf_dir}/{nbp.FLANNEL_CONFLIST}"
    bak = flannel + nbp.CILIUM_BAK
    out = {"removed": n.run("test -e %s", conf, sudo=True).ok, "restored": False}
    if out["removed"]:
        n.run("rm -f %s", conf, sudo=True).check_output()
    if n.run("test -e %s", bak, sudo=True).ok and not n.run("test -e %s", flannel, sudo=True).ok:
        n.run("mv %s %s", bak, flannel, sudo=True).check_output()
        out["restored"] = True
    if not n.run("test -e %s", flannel, sudo=True).ok:
        raise NodeError(f"{flannel} is missing on {node} and no {nbp.CILIUM_BAK} copy is there: containerd "
                        "has no CNI config to load", node=node,
                        hint="restart k3s on the node (it writes flannel's conflist at start), then re-run")
    return out


def _restart_cilium_pods(s: Session, node: str, cidr: str) -> dict[str, Any]:
    cands = [p for p in s.cluster.list("pods", field_selector=f"spec.nodeName={node}")
             if not (p.get("spec") or {}).get("hostNetwork") and not (p.get("metadata") or {}).get("deletionTimestamp")
             and nbp.in_cidr((p.get("status") or {}).get("podIP"), cidr)]
    rp = pods.plan_restart(cands, policy=pods.policy_for("rollback"))
    res = pods.restart(s.cluster, rp, action=f"restart {{n}} pod(s) on {node} so they get flannel's network",
                       batch_size=s.params.limits.pod_restart_batch, execute=True, journal=s.journal,
                       timeout=s.params.limits.timeouts.pods_ready, timeout_scope="run", progress=s.progress)
    return {"deleted": len(res.deleted), "skipped": [str(sk) for sk in res.skipped]}


def _validate_flannel(s: Session, node: str, cidr: str) -> dict[str, Any]:
    """A probe pod on ``node`` gets an address outside the new CIDR (flannel's)."""
    ns = s.params.cilium.namespace
    man = nbp.probe_pod_manifest(node, image=s.params.node_by_node.probe_image, namespace=ns, run_id=s.run_id)
    name = man["metadata"]["name"]
    s.cluster.delete("pods", name, ns)
    s.cluster.wait_for(lambda: (s.cluster.get("pods", name, ns) is None, [f"old {name} gone"]),
                       timeout=60, what=f"a leftover {name} gone", interval=0.5)
    s.cluster.create("pods", man, ns)
    try:
        def up() -> tuple[bool, list[str]]:
            p = s.cluster.get("pods", name, ns) or {}
            return pod_ready(p) and bool((p.get("status") or {}).get("podIP")), [f"{name} with an address"]
        s.cluster.wait_for(up, timeout=s.params.node_by_node.probe_timeout, what=f"the probe pod on {node}",
                           interval=1.0, progress=s.progress, watch=[("pods", ns)])
        ip = ((s.cluster.get("pods", name, ns) or {}).get("status") or {}).get("podIP")
    finally:
        s.cluster.delete("pods", name, ns)
    if nbp.in_cidr(ip, cidr):
        raise NodeError(f"a new pod on {node} still gets {ip} from Cilium's CIDR {cidr}", node=node,
                        hint=f"check {nbp.CONFLIST} is gone from k3s's CNI folder on {node}; re-run")
    return {"address": ip}


def _revert_one(s: Session, node: str, *, conf_dir: str, cidr: str, entries: list[dict[str, Any]]) -> None:
    since = _last_migration_seq(entries, node)
    schedulable = bool((s.journal.get(FACT_SCHEDULABLE) or {}).get(node, True))
    if nbp.needs_revert(entries, node):
        nbn = s.params.node_by_node
        mine = [e for e in entries if e.get("node") == node and e.get("phase") != "rollback"]
        still_drained = any(e.get("step") == "nbn-drain" for e in mine) and not any(
            e.get("step") == "nbn-uncordon" and e.get("status") == "done" for e in mine)
        started = any(e.seq > since for e in s.journal.entries(node=node) if e.step.startswith("nbn-rb-"))
        if not started and not still_drained:
            # as before each node of the migration: a drain stops the node's Longhorn replicas,
            # so the previous node's must be rebuilt first (a rehearsal faulted four volumes
            # by draining the next node at once); a node the migration left drained has none
            storage_redundant_before(s, node)
        _step(s, node, since, "cordon", f"cordon {node}", lambda: drain.cordon(s.cluster, node) and None)
        _step(s, node, since, "drain", f"drain {node} (PDBs respected)",
              lambda: drain.drain(s.cluster, node, timeout=nbn.drain_timeout, retry=nbn.eviction_retry,
                                  delete_pdbs=nbn.delete_instead_of_evict, journal=s.journal,
                                  progress=s.progress).to_dict())
        _step(s, node, since, "unlabel", f"remove {nbp.LABEL} from {node}",
              lambda: s.cluster.patch("nodes", node, {"metadata": {"labels": {nbp.LABEL: None}}}) and None)
        # the agent first: a running agent started with the CiliumNodeConfig owns the folder
        # (cni-exclusive) and would take it back; the new one, unlabelled, leaves it alone
        _step(s, node, since, "agent", f"re-create the Cilium agent on {node} (it no longer owns the CNI folder)",
              lambda: recreate_agent(s, node))
        _step(s, node, since, "restore-cni", f"remove {nbp.CONFLIST} from {conf_dir} on {node}, put "
              f"{nbp.FLANNEL_CONFLIST} back", lambda: _restore_cni(s, node, conf_dir))
        _step(s, node, since, "pods", f"re-create {node}'s pods on flannel", lambda: _restart_cilium_pods(s, node, cidr))
        _step(s, node, since, "validate", f"a new pod on {node} gets flannel's network",
              lambda: _validate_flannel(s, node, cidr))
    _step(s, node, since, "uncordon", f"uncordon {node}" if schedulable else f"leave {node} cordoned (as before)",
          lambda: (drain.uncordon(s.cluster, node) if schedulable else None) or {"uncordoned": schedulable})


def revert_nodes(s: Session) -> pd.DataFrame | str:
    """Take every node of :func:`plan` back to flannel, newest first (see the module)."""
    if not active(s):
        return NOT_THIS_STRATEGY
    entries = _entries(s)
    if nbp.switch_started(entries) and not unswitch_finished(s, entries):
        if s.execute:
            s.gate(False, "the switch is undone before the nodes go back", name="nbn-unswitch-first",
                   details=["the journal records the switch, and its reverse is not complete"],
                   hint="run node_by_node_unswitch.unswitch(s) (the cell above) first; it continues "
                        "where it stopped")
        return plan(s)
    order = nbp.rollback_order(entries)
    if not s.require_execute(f"the per-node rollback of {len(order)} node(s)"):
        return plan(s)
    folders = s.journal.get(FACT_FOLDERS) or {}
    cidr = s.params.cilium.migration_cidr or ""
    rows = []
    for node in order:
        conf_dir = (folders.get(node) or [s.params.paths.k3s_cni_dir])[0]
        try:
            _revert_one(s, node, conf_dir=conf_dir, cidr=cidr, entries=entries)
        except GateFailed:
            raise
        except Exception as e:
            s.gate(False, f"{node} back on flannel", name="nbn-rollback-node", details=[f"{type(e).__name__}: {getattr(e, 'message', e)}"],
                   hint=getattr(e, "hint", None) or "fix the cause and re-run 05-rollback: it continues here")
        rows.append({"node": node, "result": "back on flannel" if nbp.needs_revert(entries, node) else "uncordoned"})
    return pd.DataFrame(rows, columns=["node", "result"])


def storage_kept_up(s: Session) -> str | None:
    """Why 05-rollback's storage scale-down is not needed, or None when it is.

    Big-bang's rollback scales Longhorn's volume users to 0 because it takes the pod
    network away once more. Under node-by-node, once the per-node rollback has taken every
    node back and no pod has an address in Cilium's pool, every pod already runs on
    flannel: the steps after it (helm uninstall, Cilium's cleanup, the k3s restarts, which
    leave containers running, F11) change no pod's network, so the volumes stay attached
    and their users keep serving. Decided from the journal and the pods; a dry run always
    shows the scale-down plan.
    """
    if not active(s) or not s.execute or not s.params.cilium.migration_cidr:
        return None
    entries = _entries(s)
    if nbp.switch_started(entries) and not unswitch_finished(s, entries):
        return None
    if nbp.rollback_order(entries):
        return None
    cidr = s.params.cilium.migration_cidr
    left = [p for p in s.cluster.list("pods") if not (p.get("spec") or {}).get("hostNetwork")
            and nbp.in_cidr((p.get("status") or {}).get("podIP"), cidr)]
    if left:
        return None
    return (f"node-by-node: every node is back on flannel and no pod has an address in {cidr}; the steps "
            "below change no pod's network, so Longhorn's volume users keep running")

