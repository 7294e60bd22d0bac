"""Rollback: undo a migration, from ANY point where it stopped, driven by the journal.

What was done is what gets undone; steps the journal does not record are not touched.
The plan (:func:`plan_from_journal`, in :mod:`runbook.rollback_plan`) is a pure function
of the journal document and the node list, golden-tested under
``tests/fixtures/rollback/<case>/``; this module holds the steps that carry it out, and
:mod:`runbook.rollback_checks` the read-only checks after them (every name the notebook
uses is importable from here). The original Phase 22
rollback missed half of this (defect 10): ``helm uninstall cilium``, deleting Cilium's
interfaces and CILIUM chains BEFORE k3s stops (docs/cilium-on-k3s.md §4: otherwise the host can lose
connectivity, and flannel fails with "address already in use" while ``cilium_vxlan``
holds UDP 8472), removing ``disable-kube-proxy`` (restoring the config byte-for-byte does
it), and restarting the pods again.

Order, and why:

0. a probe DaemonSet 04-verify created and did not remove (it died in between) is
   deleted first, from the journal (:func:`runbook.probe_daemonset.remove_leftovers`);
1. record the agent image, then ``helm uninstall`` while the API still answers (the
   agents stop re-creating their interfaces and CNI file); the cilium.io CRDs go too
   only with ``rollback.remove_crds`` (objects saved first);
2. on each node Cilium may have run on: its files (CNI config, CNI binary, sysctl
   override) to the backup folder, then Cilium's own ``post-uninstall-cleanup`` in a
   pod on that node, where anything is left (:mod:`runbook.rollback_datapath`;
   after the uninstall, since the command refuses while an agent runs);
3. delete ``cilium_host``, ``cilium_net``, ``cilium_vxlan`` (if still there) and the
   CILIUM chains, while k3s still runs;
4. stop the agents, then the servers (nothing reconciles half-restored nodes), and
   remove the ``CNI-*`` chains (as ``k3s-killall.sh`` does) and kube-router's ipsets
   (which that script leaves);
5. restore each ``config.yaml`` from its journaled backup, checked against the pre-run
   sha256, and put back the flannel files reconfigure moved away. With flannel on, k3s
   writes containerd's ``config.toml`` naming its own CNI folder again, so containerd
   reads ``10-flannel.conflist`` there; Cilium's conflist in ``/etc/cni/net.d`` would
   not be read (it goes anyway: nothing of Cilium's stays);
6. start the servers first and wait for the API, then the agents; wait for the nodes to
   be Ready with ``flannel.1`` back;
7. restart the pods whose sandbox is not flannel's (created under Cilium or in the
   no-CNI window, or hanging off a ``cni0`` bridge that reconfigure deleted);
8. optionally a Velero restore (a restore is not a revert, defect 11);
9. restore Argo CD's policies exactly from the journal.

With ``rollback.reboot_nodes`` steps 2-6 become: files removed and restored, then each
node rebooted, servers first, one at a time (:mod:`runbook.rollback_reboot`); a reboot
clears the kernel state, iptables and ipsets, and re-creates every pod sandbox.
After either path, gates prove that no Cilium program, map, device or file is left on
any node and that a ClusterIP DNS lookup answers from every node and a pod on each.

Under node-by-node, 05-rollback plans again after its per-node steps: a node the journal
proves on flannel (:func:`runbook.rollback_plan.on_flannel`) gets steps 1-3 but keeps k3s
running through 4-6 (no stop/start, no killall cleanup, no reboot), and in 7 only its pods
from before flannel's config was back are restarted (docs/node-by-node.md, I9).

Example:
    >>> p = rollback.plan(s)                  # doctest: +SKIP
    >>> p.frame()                             # doctest: +SKIP
"""
from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import argocd, etcd_quorum, lock, outage, pods, server_clock, storage, velero
from .checks import flag
from .cluster import node_ready, pod_ready
from . import datapath
from .rollback_datapath import cleanup_nodes, killall_cleanup, record_image, remove_crds
from .rollback_reboot import reboot_nodes
from .probe_daemonset import remove_leftovers as remove_probe
from .errors import GateFailed, NodeError, ParamsError
from .k3sconfig import unit_for
from .rollback_checks import (DATAPATH_HINT, DNS_HINT, datapath_after, datapath_frame,
                              datapath_problems, dns_checks, dns_problems)
from .rollback_checks import (flannel_problems, node_problems, node_table, nodes_named,
                              pods_health, wait_flannel)
from .rollback_plan import (BRIDGE, CILIUM_CNI_FILE, CILIUM_INTERFACES, CILIUM_PREFIXES,
                            MIGRATION_STEPS, ROLLBACK_STEPS, STEP_FLANNEL, STEP_HELM,
                            STEP_IFACES, STEP_PODS, STEP_RESTORE, STEP_START, STEP_STOP,
                            STEP_VELERO, NodeRollback, PlanView, RollbackPlan, plan_from_journal,
                            pods_to_restart, restart_candidates, restart_plan)

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = [
    "CILIUM_INTERFACES", "CILIUM_CNI_FILE", "MIGRATION_STEPS", "NodeRollback", "RollbackPlan",
    "plan_from_journal", "plan", "helm_uninstall", "delete_cilium", "stop_k3s", "restore_files",
    "start_k3s", "wait_flannel", "pods_to_restart", "restart_pods", "velero_restore",
    "VELERO_POLICY_WHY", "velero_policy", "optional_velero_restore", "argocd_resume", "node_table",
    "finish", "VERDICT", "flannel_problems", "node_problems", "pods_health", "PlanView",
    "restart_candidates", "restart_plan", "unit_for", "BRIDGE", "CILIUM_PREFIXES", "ROLLBACK_STEPS",
    "STEP_PODS", "WINDOW", "close_window", "restore_node", "cni_candidates",
]

__all__ += ["record_image", "remove_crds", "cleanup_nodes", "killall_cleanup", "reboot_nodes",
            "datapath_after", "datapath_frame", "datapath_problems", "DATAPATH_HINT", "dns_checks",
            "dns_problems", "DNS_HINT", "remove_probe"]

VERDICT = "ROLLED BACK: flannel restored, configs identical"
#: the journal fact of the rollback's own outage (see :mod:`runbook.outage`)
WINDOW = "rollback_window"
#: the journal's words for one batch of the rollback's pod restart
RESTART_ACTION = "restart {n} pod(s) so they get a flannel sandbox"


def plan(s: Session) -> RollbackPlan:
    """The rollback plan of this run (from ``s.journal``); when it compares pods with
    journal times, with the API server's clock against this machine's
    (:func:`runbook.server_clock.measure`, best effort)."""
    p = s.params
    rp = plan_from_journal(s.journal.to_dict(), [(n.name, n.role) for n in p.nodes],
                           k3s_config=p.paths.k3s_config, release=p.cilium.release,
                           namespace=p.cilium.namespace, reboot_nodes=p.rollback.reboot_nodes,
                           remove_crds=p.rollback.remove_crds,
                           cilium_files=datapath.cilium_files(s.values))
    if rp.pods_since or rp.on_flannel_nodes:
        rp.clock = server_clock.measure(s.cluster)
    return rp


# =========================================================================== execution
def helm_uninstall(s: Session, rp: RollbackPlan) -> str:
    """``helm uninstall`` the Cilium release if a helm install was attempted (journaled)."""
    if not rp.helm_uninstall:
        return "not needed: the journal records no helm install"
    if rp.helm_done:
        return "already done in this rollback"
    rel, ns = rp.helm_uninstall["release"], rp.helm_uninstall["namespace"]
    if not s.require_execute(f"helm uninstall {rel} --namespace {ns}"):
        return f"would run: helm uninstall {rel} --namespace {ns} --wait --ignore-not-found"
    from .helm import Helm

    h = Helm.from_params(s.params, run_dir=s.run_dir)
    timeout = f"{int(s.params.limits.timeouts.helm)}s"
    outage.open_window(s.journal, WINDOW)  # the agents go: the pods lose the CNI in force

    def do() -> dict[str, Any]:
        present = h.is_installed(rel, namespace=ns)
        if present:
            h.uninstall(rel, namespace=ns, wait=True, timeout=timeout)
        return {"was_installed": present}

    res = s.journal.perform(STEP_HELM, f"helm uninstall {rel} --namespace {ns}", do,
                            data=rp.helm_uninstall)
    return "uninstalled" if res["was_installed"] else "release already absent"


def _delete_cilium_one(s: Session, n: Node) -> dict[str, Any]:
    def do() -> dict[str, Any]:
        deleted = [i for i in CILIUM_INTERFACES if n.delete_interface(i)]
        rm = n.remove_chains(list(CILIUM_PREFIXES))
        return {"interfaces": deleted, "chains_removed": rm.before.chains.get("CILIUM", 0),
                "rules_removed": rm.removed_lines}

    return s.journal.perform(STEP_IFACES, "delete cilium interfaces and CILIUM chains", do, node=n.name,
                             data={"interfaces": list(CILIUM_INTERFACES), "prefixes": list(CILIUM_PREFIXES)})


def delete_cilium(s: Session, rp: RollbackPlan) -> Any:
    """Delete ``cilium_host``/``cilium_net``/``cilium_vxlan`` and the CILIUM chains on every
    node Cilium may have run on, BEFORE k3s stops (docs/cilium-on-k3s.md §4), or where k3s
    keeps running (a node-by-node node on flannel already). Idempotent."""
    names = [n.node for n in rp.nodes if n.delete_cilium and not rp.rebooted(n)]
    if rp.reboot_nodes and not names:
        return "not needed: the reboot clears Cilium's devices and chains"
    if not names or not s.require_execute("deleting the Cilium interfaces and chains"):
        return None
    return s.fleet(nodes_named(s, names)).apply(lambda n: _delete_cilium_one(s, n),
                                             description="delete cilium interfaces and CILIUM chains"
                                             ).raise_for_failures()


def stop_k3s(s: Session, rp: RollbackPlan) -> pd.DataFrame | None:
    """Stop k3s on the nodes to restart: agents first (in batches), then the servers
    (not on the reboot path: the reboot restarts k3s)."""
    if rp.reboot_nodes:
        return None
    order = rp._restart_order()
    if not order or not s.require_execute("stopping k3s"):
        return None
    rows = []
    for group in ([n for n in order if n.role != "server"], [n for n in order if n.role == "server"]):
        if not group:
            continue
        by = {n.node: n for n in group}

        def op(node: Node) -> str:
            done = by[node.name].done
            if STEP_START in done:
                return "already restored and started in this rollback"
            if STEP_STOP in done:
                return "already stopped in this rollback"
            unit = unit_for(node.role)
            outage.open_window(s.journal, WINDOW)  # already open when Cilium was uninstalled

            def do() -> dict[str, Any]:
                node.systemctl("stop", unit)
                return {"active": node.is_active(unit)}

            s.journal.perform(STEP_STOP, f"systemctl stop {unit}", do, node=node.name, data={"unit": unit})
            return "stopped"

        res = s.fleet(nodes_named(s, by)).apply(op, description="stop k3s").raise_for_failures()
        rows += res.frame().to_dict("records")
    return pd.DataFrame(rows)


def bring_up(node: Node, verb: str, unit: str) -> dict[str, Any]:
    """``systemctl <verb> <unit>`` on ``node`` (start or restart), then the unit must be
    active, or a NodeError says where to look."""
    node.systemctl(verb, unit)
    if not node.is_active(unit):
        raise NodeError(f"{unit} is not active after {verb}", node=node.name,
                        hint=f"read `journalctl -u {unit}` on the node: 'address already in use' means "
                             "a VXLAN device (cilium_vxlan) still holds UDP 8472; fix it, then re-run "
                             "05-rollback (done steps are skipped)")
    return {"active": True}


def restore_node(s: Session, n: Node, nr: NodeRollback) -> dict[str, Any]:
    """On ``n``: its ``config.yaml`` back from the journaled backup, checked against the
    pre-run sha256 (``restore-config``), and the flannel files reconfigure moved away put
    back (``restore-flannel-files``); each part skipped when already so. Used by
    :func:`restore_files` and by the node-by-node unswitch (k3s still running there)."""
    out: dict[str, Any] = {}
    if nr.restore_config and n.sha256(nr.restore_config["path"]) == nr.restore_config["sha256"]:
        out["config"] = "already identical to the pre-run file"
    elif nr.restore_config:
        rc = nr.restore_config

        def restore() -> dict[str, Any]:
            res = n.restore_file(rc["path"], rc["backup"])
            now = n.sha256(rc["path"])
            if now != rc["sha256"]:
                raise NodeError(f"{rc['path']} has sha256 {now} after the restore, but the pre-run "
                                f"content had {rc['sha256']}", node=n.name,
                                hint=f"the backup {rc['backup']} is not the pre-run file: compare it "
                                     "by hand before restarting k3s")
            return {"changed": res.changed, "sha256": now}

        out["config"] = s.journal.perform(STEP_RESTORE, f"restore {rc['path']} from {rc['backup']}",
                                          restore, node=n.name, data=dict(rc))
    pending = [f for f in nr.restore_files if not n.exists(f["path"]) and n.exists(f["backup"])]
    if nr.restore_files and not pending:
        out["flannel_files"] = "nothing to move back"
    elif nr.restore_files:
        def put_back() -> dict[str, Any]:
            done, kept = [], []
            for f in nr.restore_files:
                if n.exists(f["path"]):
                    kept.append(f"{f['path']} (exists again; backup kept in {f['backup']})")
                    continue
                if not n.exists(f["backup"]):
                    kept.append(f"{f['path']} (no backup at {f['backup']}: never moved)")
                    continue
                n.run("mkdir -p %s", posixpath.dirname(f["path"]), sudo=True).check_output()
                n.run("mv %s %s", f["backup"], f["path"], sudo=True).check_output()
                done.append(f["path"])
            return {"restored": done, "skipped": kept}

        out["flannel_files"] = s.journal.perform(STEP_FLANNEL, "move flannel files back", put_back,
                                                 node=n.name, data={"files": nr.restore_files})
    return out


def restore_files(s: Session, rp: RollbackPlan) -> Any:
    """Restore each ``config.yaml`` byte-for-byte (sha256 = pre-run) and put the flannel
    files back (k3s stopped; on the reboot path k3s runs and reads them at boot).
    Cilium's own files went earlier (:func:`runbook.rollback_datapath.cleanup_nodes`)."""
    todo = [n for n in rp.nodes if n.restore_config or n.restore_files]
    if not todo or not s.require_execute("restoring the node files"):
        return None
    by = {n.node: n for n in todo}
    return s.fleet(nodes_named(s, by)).apply(lambda n: restore_node(s, n, by[n.name]),
                                          description="restore node files").raise_for_failures()


def start_k3s(s: Session, rp: RollbackPlan) -> pd.DataFrame | None:
    """Start the servers first and wait for the API, then the agents in batches (on the
    reboot path :func:`runbook.rollback_reboot.reboot_nodes` does it instead)."""
    if rp.reboot_nodes:
        return None
    order = rp._restart_order(start=True)
    if not order or not s.require_execute("starting k3s"):
        return None
    rows = []
    for group in ([n for n in order if n.role == "server"], [n for n in order if n.role != "server"]):
        if not group:
            continue
        by = {n.node: n for n in group}

        def op(node: Node) -> str:
            unit = unit_for(node.role)
            if etcd_quorum.several_servers(group):   # each waits for etcd's quorum: queue them all
                return etcd_quorum.queue_start(s, node, unit, step=STEP_START,
                                               already=STEP_START in by[node.name].done)
            if node.is_active(unit) and STEP_START in by[node.name].done:
                return "already running"

            s.journal.perform(STEP_START, f"systemctl start {unit}", lambda: bring_up(node, "start", unit),
                              node=node.name, data={"unit": unit})
            if node.role == "server":
                # the choke point retries until the API serves the node object again
                s.cluster.get("nodes", node.name)
            return "started"

        res = s.fleet(nodes_named(s, by)).apply(op, description="start k3s").raise_for_failures()
        if etcd_quorum.several_servers(group):
            etcd_quorum.wait_active(s, [n.node for n in group])
        rows += res.frame().to_dict("records")
    return pd.DataFrame(rows)


def restart_pods(s: Session, rp: RollbackPlan) -> pd.DataFrame:
    """Delete, in batches, the pods whose sandbox is not flannel's, so their controllers
    recreate them on flannel; wait for each batch to be Ready (journaled per batch).

    Which pods may be deleted is the rollback's owner policy (:mod:`runbook.pods`); the
    others are listed with their owner, for a person."""
    p = restart_plan(cni_candidates(s), rp)
    s.progress(f"pods against journal times: {rp.clock.describe()}")
    if rp.clock.worth_a_note:
        flag(s, "clock-skew", f"{rp.clock.describe()}. Timestamps in the journal, events and logs "
             "disagree by as much: sync this machine's clock (NTP) before reading them side by side")
    rows = [{"pod": pods.pod_key(x), "node": (x.get("spec") or {}).get("nodeName"),
             "action": "restart"} for x in p.restart]
    rows += [{"pod": sk.pod, "node": sk.node,
              "action": (f"skipped: owned by {sk.owner}, restart it through its operator"
                         if sk.owner_kind else "skipped: no controller would recreate it")
              + " (it is not on flannel yet)"} for sk in p.skipped]
    if rp.pods_done:
        return pd.DataFrame([{"pod": "-", "node": "-", "action": "already done in this rollback"}])
    if not p.restart or not s.require_execute(f"restarting {len(p.restart)} pod(s)"):
        return pd.DataFrame(rows, columns=["pod", "node", "action"])
    pods.restart(s.cluster, p, action=RESTART_ACTION, batch_size=s.params.limits.pod_restart_batch,
                 execute=True, journal=s.journal, timeout=s.params.limits.timeouts.pods_ready,
                 timeout_scope="batch", progress=s.progress)
    # Longhorn's manager pods are the storage plan's (runbook.storage), not a person's
    text = pods.follow_up_text([sk for sk in p.skipped if not storage.is_manager_pod(sk.raw)],
                               after="the rollback (they are not on flannel yet)")
    if text:
        flag(s, "pods-skipped", text)
    return pd.DataFrame(rows, columns=["pod", "node", "action"])


def cni_candidates(s: Session) -> list[dict]:
    """The cluster's pods whose sandbox may not be flannel's (see :func:`_not_flannel`):
    what :func:`restart_candidates` chooses from.

    Example:
        >>> rollback.restart_candidates(rollback.cni_candidates(s), plan)   # doctest: +SKIP
    """
    return _not_flannel(s, s.cluster.list("pods"))


def _not_flannel(s: Session, listed: list[dict]) -> list[dict]:
    """Under node-by-node, a pod's address tells its sandbox's CNI: Cilium's pool is a CIDR
    of its own (``cilium.migration_cidr``), so only pods with an address in it (or none
    yet) are candidates; pods the per-node rollback already re-created on flannel stay.
    Under big-bang both CNIs use the cluster CIDR: every pod is a candidate."""
    from . import node_by_node_plan as nbp

    cidr = s.params.cilium.migration_cidr
    if s.params.strategy != "node-by-node" or not cidr:
        return listed
    return [p for p in listed if not (p.get("status") or {}).get("podIP")
            or nbp.in_cidr((p.get("status") or {}).get("podIP"), cidr)]


def close_window(s: Session, checks: list[Any]) -> outage.Window:
    """Close the rollback's outage window (fact ``rollback_window``) once the data path is
    back: ``checks`` passed (pods Running, ingress answering), every node Ready and every
    non-hostNetwork pod Ready. Otherwise the window stays open and says so.

    Example:
        >>> rollback.close_window(s, back)      # doctest: +SKIP
        rollback outage: opened 2026-11-26T05:20:01Z, closed 2026-11-26T05:20:31Z (30.0s)
    """
    win = s.journal.get(WINDOW)
    if s.execute and win and not win.get("closed_at") and all(getattr(c, "ok", False) for c in checks):
        nodes_ok = all(node_ready(n) for n in s.cluster.list("nodes"))
        pods_ok = all(pod_ready(p) for p in s.cluster.list("pods")
                      if not (p.get("spec") or {}).get("hostNetwork")
                      and (p.get("status") or {}).get("phase") != "Succeeded")
        if nodes_ok and pods_ok:
            win = outage.close_window(s.journal, WINDOW)
    if win and win.get("seconds") is not None:
        s.figure("rollback_outage_seconds", win["seconds"])
    return outage.Window.from_fact(WINDOW, win)


VELERO_POLICY_WHY = {
    "none": "Velero's default: objects that still exist are left as they are; only objects "
            "deleted since the backup come back. Safe after a rollback: it cannot undo a live fix.",
    "update": "objects that exist are overwritten with the backup's state (and objects created "
              "after the backup are still NOT deleted): use it only when live objects were damaged.",
}


def velero_policy(policy: str) -> str:
    """Why ``policy`` (``none`` or ``update``); any other value is a parameter error.

    >>> velero_policy("none").startswith("Velero's default")
    True
    """
    if policy not in VELERO_POLICY_WHY:
        raise ParamsError(f"must be 'none' or 'update', got {policy!r}", field="existing_resource_policy",
                          hint="none keeps live objects (the safe choice); update overwrites them")
    return VELERO_POLICY_WHY[policy]


def optional_velero_restore(s: Session, rp: RollbackPlan, *, enabled: bool, policy: str = "none") -> Any:
    """The notebook's optional Velero restore: explain the policy and skip it unless
    ``enabled`` (the ``velero_restore`` parameter)."""
    if not enabled:
        print("no Velero restore (velero_restore=False); policy if asked:", velero_policy(policy))
        return None
    return velero_restore(s, rp, policy=policy)


def velero_restore(s: Session, rp: RollbackPlan, *, policy: str = "none") -> Any:
    """Optional: restore the pre-migration Velero backup with ``existingResourcePolicy``.

    A restore is not a revert (defect 11): see :data:`VELERO_POLICY_WHY`.
    """
    velero_policy(policy)
    if not rp.velero_backup:
        raise GateFailed("a Velero backup recorded by preflight", details=["journal fact velero_backup is absent"],
                         hint="preflight never completed a backup in this run: restore by hand "
                              "from another backup, or re-run with velero_restore=False")
    name = f"{rp.velero_backup}-rollback"
    if not s.require_execute(f"Velero restore {name} (existingResourcePolicy={policy})"):
        return None
    ns = s.params.velero.namespace
    res = s.journal.perform(STEP_VELERO, f"Velero restore of {rp.velero_backup} ({policy})",
                            lambda: velero.as_row(velero.restore(s.cluster, rp.velero_backup, name=name,
                            namespace=ns, existing_resource_policy=policy,
                            timeout=s.params.limits.timeouts.velero,
                            progress=s.progress)),
                            data={"backup": rp.velero_backup, "restore": name, "policy": policy})
    return pd.DataFrame([res])


argocd_resume = argocd.resume_for_session  # Restore each Argo CD app's policy exactly from the journal


def finish(s: Session) -> bool:
    """Record ``rolled_back`` and release the migration lock (execute only)."""
    if not s.execute:
        return False
    s.journal.set("rolled_back", True)
    return lock.release(s.cluster, s.run_id)
