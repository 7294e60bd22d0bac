"""The switch, once every node runs its pods on Cilium (docs/node-by-node.md step 3).

:func:`switch` does, each step journaled before it runs and skipped on a rerun when done:

1. ``nbn-final-values``: ``helm upgrade`` to the final values with kube-proxy replacement
   still off (F5: Cilium writes its CNI config on every node, into containerd's default
   folder, I3); the agents are re-created once (they read cilium-config only at start):
   by the upgrade itself when it changed the DaemonSet (``cni.confPath`` moves), else by
   the kube-proxy replacement step's restart, else by ``nbn-rollout``;
2. ``nbn-delete-cnc`` and ``nbn-unlabel``: the CiliumNodeConfig and the migration labels go;
3. the server keys (``flannel-backend: none`` ...), written as 02-reconfigure writes them
   (``write-file``, backed up; 05-rollback restores them);
4. ``nbn-kpr`` and ``nbn-kpr-rollout``: kube-proxy replacement switched on when the values
   want it and every agent restarted so it takes effect, the one step that resets
   connections (F15), measured as the outage window ``nbn_kpr_window`` (until the last
   k3s restart has removed kube-proxy);
5. ``restart-k3s``, one node at a time, servers first: pods keep running (F11); each node
   must come back Ready reading containerd's default CNI folders (F7);
6. the leftovers cleanup of 02-reconfigure (``cleanup-leftovers``), and Cilium's conflist
   in k3s's folder (``nbn-remove-k3s-conflist``).

Example:
    >>> node_by_node_switch.switch(s, nb)   # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import cilium, containerd, datapath, outage, reconfigure
from . import node_by_node_plan as nbp
from .cluster import node_ready
from .errors import GateFailed, NodeError
from .k3sconfig import unit_for
from .node_by_node import NodeByNodePlan, helm_upgrade
from .cluster import pod_ready
from .node_by_node_steps import AGENT_SELECTOR, run_step
from .reconfigure_plan import config_plans

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["switch", "KPR_WINDOW", "restart_one", "agent_uids", "rollout_agents"]

KPR_WINDOW = "nbn_kpr_window"


def agent_uids(s: Session) -> set[str]:
    return {p["metadata"]["uid"] for p in s.cluster.list("pods", s.params.cilium.namespace,
                                                          label_selector=AGENT_SELECTOR)}


def _wait_replaced(s: Session, old: set[str]) -> None:
    """Wait until no agent pod of ``old`` is left and one new agent per node is Ready."""
    ns, nodes = s.params.cilium.namespace, len(s.params.nodes)

    def check() -> tuple[bool, list[str]]:
        pods = [p for p in s.cluster.list("pods", ns, label_selector=AGENT_SELECTOR)
                if not p["metadata"].get("deletionTimestamp")]
        left = [p["metadata"]["name"] for p in pods if p["metadata"]["uid"] in old]
        ready = [p for p in pods if p["metadata"]["uid"] not in old and pod_ready(p)]
        return (not left and len(ready) >= nodes), left + [f"{len(ready)}/{nodes} new agents Ready"]
    s.cluster.wait_for(check, timeout=s.params.limits.timeouts.agents_ready, what="every Cilium agent re-created",
                       interval=1.0, progress=s.progress, watch=[("pods", ns)])
    cilium.wait_ready(s.cluster, namespace=ns, timeout=s.params.limits.timeouts.agents_ready, progress=s.progress)


def rollout_agents(s: Session, old: set[str] | None = None) -> dict[str, Any]:
    """``rollout restart ds/cilium`` (the agents read cilium-config only at start); waits
    until every agent is a new pod, Ready."""
    ns = s.params.cilium.namespace
    old = agent_uids(s) if old is None else old
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    s.cluster.patch("daemonsets", "cilium", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}}, ns)
    _wait_replaced(s, old)
    return {"restartedAt": stamp}


def _unlabel(s: Session, order: list[str]) -> list[str]:
    out = []
    for node in order:
        obj = s.cluster.get("nodes", node) or {}
        if nbp.LABEL in ((obj.get("metadata") or {}).get("labels") or {}):
            s.cluster.patch("nodes", node, {"metadata": {"labels": {nbp.LABEL: None}}})
            out.append(node)
    return out


def restart_one(s: Session, n: Node, *, want_dirs: tuple[str, str] | None) -> dict[str, Any]:
    """Restart k3s on ``n`` (journaled ``restart-k3s``, 02-reconfigure's step), wait until
    the node is Ready, and with ``want_dirs`` check the CNI folders its containerd reads."""
    unit = unit_for(n.role)
    if s.journal.is_done(reconfigure.STEP_RESTART, node=n.name):
        return {"skipped": "restarted earlier in this run"}

    def do() -> dict[str, Any]:
        n.systemctl("restart", unit)
        if not n.is_active(unit):
            raise NodeError(f"{unit} is not active after the restart", node=n.name,
                            hint=f"read `journalctl -u {unit}` on the node; 05-rollback restores the config")
        return {"active": True}

    s.progress(f"{n.name}: systemctl restart {unit} (pods keep running)")
    res = s.journal.perform(reconfigure.STEP_RESTART, f"systemctl restart {unit}", do, node=n.name,
                            data={"unit": unit, "strategy": "node-by-node"})
    s.cluster.wait_for(lambda: (node_ready(s.cluster.get("nodes", n.name) or {}), [f"{n.name} Ready"]),
                       timeout=s.params.limits.timeouts.node_ready, what=f"{n.name} Ready after its restart",
                       interval=1.0, progress=s.progress, watch=["nodes"])
    if want_dirs is not None:
        have = containerd.config_cni_dirs(containerd.read_config(n))
        diffs = containerd.mismatch(have, want_dirs)
        if diffs:
            raise NodeError(f"containerd on {n.name} does not read Cilium's folders after the restart: "
                            + "; ".join(diffs), node=n.name, hint=containerd.FIX_HINT)
        res["cni_dirs"] = list(have)
    return res


def _remove_conflist(s: Session, n: Node, conf_dir: str) -> dict[str, Any]:
    path = f"{conf_dir}/{nbp.CONFLIST}"

    def do() -> dict[str, Any]:
        had = n.run("test -e %s", path, sudo=True).ok
        if had:
            n.run("rm -f %s", path, sudo=True).check_output()
        return {"removed": had}
    return run_step(s, "nbn-remove-k3s-conflist", n.name, f"remove {path} (k3s's folder, unread now)", do,
                    data={"path": path}) or {"skipped": "done earlier"}


def switch(s: Session, nb: NodeByNodePlan | str) -> pd.DataFrame | str:
    """Step 3 (see the module). Refuses while a node is not on Cilium yet."""
    if not isinstance(nb, NodeByNodePlan):
        return nb
    rp = nbp.resume_point([e.__dict__ for e in s.journal.entries()], nb.order)
    if not s.require_execute("the switch"):
        return pd.DataFrame([{"step": st} for st in ("final values", "delete CiliumNodeConfig and labels",
                                                      "server keys", "kube-proxy replacement",
                                                      "k3s restarts", "leftovers")])
    if not rp.finished:
        s.gate(False, "every node is on Cilium before the switch", name="nbn-switch",
               details=[str(rp)], hint="re-run the per-node step first (it continues where it stopped)")
    ns = s.params.cilium.namespace
    rows: list[dict[str, Any]] = []
    before = agent_uids(s)
    rows.append({"step": "final values", **helm_upgrade(s, nb.final_values_file, step="nbn-final-values",
                                                        what="final values, kube-proxy replacement off")})
    if nb.kpr_values_file:
        rows.append({"step": "agents re-created", "result": "by the kube-proxy replacement step below (one "
                     "restart of every agent, not two)"})
    elif before and not (before & agent_uids(s)):
        rows.append({"step": "agents re-created", "result": "by the upgrade itself (the DaemonSet changed)"})
    else:
        rows.append({"step": "agents re-created", **(run_step(s, "nbn-rollout", None, "rollout restart ds/cilium",
                                                             lambda: rollout_agents(s)) or {})})
    rows.append({"step": "CiliumNodeConfig deleted", **(run_step(
        s, "nbn-delete-cnc", None, f"delete CiliumNodeConfig {ns}/{nbp.CNC_NAME}",
        lambda: {"was": s.cluster.delete("ciliumnodeconfigs", nbp.CNC_NAME, ns) is not None}) or {})})
    rows.append({"step": "labels removed", "nodes": run_step(
        s, "nbn-unlabel", None, f"remove {nbp.LABEL} from every node", lambda: _unlabel(s, nb.order))})
    written = reconfigure.write_configs(s, config_plans(s))
    rows.append({"step": "server keys", "result": written.values() if written is not None else None})
    if nb.kpr_values_file:
        outage.open_window(s.journal, KPR_WINDOW)
        rows.append({"step": "kube-proxy replacement", **helm_upgrade(
            s, nb.kpr_values_file, step="nbn-kpr", what="kube-proxy replacement on: resets connections (F15)")})
        # the agents read cilium-config only when they start: without this restart the
        # replacement (and the final values) would wait for the next agent restart
        rows.append({"step": "agents re-created (kube-proxy replacement in force)", **(run_step(
            s, "nbn-kpr-rollout", None, "rollout restart ds/cilium", lambda: rollout_agents(s)) or {})})
    final_dirs = datapath.cni_dirs(s.values)
    try:
        for n in [x for x in s.nodes if x.role == "server"] + [x for x in s.nodes if x.role != "server"]:
            rows.append({"step": f"restart k3s on {n.name}", **restart_one(s, n, want_dirs=final_dirs)})
    except GateFailed:
        raise
    except Exception as e:
        s.gate(False, "every node restarted without flannel", name="nbn-restart",
               details=[f"{type(e).__name__}: {getattr(e, 'message', e)}"], hint=getattr(e, "hint", None))
    if nb.kpr_values_file:
        win = outage.close_window(s.journal, KPR_WINDOW)
        s.figure("kpr_window_seconds", (win or {}).get("seconds"))
    reconfigure.cleanup(s)
    rows.append({"step": "leftovers", "result": "cleaned (cleanup-leftovers)"})
    for n in s.nodes:
        rows.append({"step": f"k3s folder conflist on {n.name}", **_remove_conflist(s, n, nb.conf_dir)})
    return pd.DataFrame(rows)
