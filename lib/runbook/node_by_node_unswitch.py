"""The switch undone without an outage (docs/node-by-node.md step 4, "after the switch").

When a node-by-node run reached its switch (step 3), the servers say ``flannel-backend:
none`` and Cilium runs with its final values. :func:`unswitch` takes the cluster back to
the state the per-node loop left, every node on Cilium beside a working flannel, so
that :func:`runbook.node_by_node_rollback.revert_nodes` can then take the nodes back one
at a time. Each step is journaled (phase ``rollback``) before it runs and skipped on a
rerun when done, so a killed rollback continues where it stopped:

1. ``nbn-us-cnc``, ``nbn-us-label``: the CiliumNodeConfig again, every node labelled (an
   agent started afterwards writes Cilium's CNI config into k3s's folder, F3);
2. ``nbn-us-values``: ``helm upgrade`` to the migration values, kube-proxy replacement
   kept as it is now (k3s's kube-proxy is not back yet: turning it off here would leave
   no one translating ClusterIPs); every agent re-created once (``nbn-us-rollout`` when
   the upgrade did not), and each node checked over SSH to hold ``05-cilium.conflist``
   in k3s's folder and ``cilium-cni`` in k3s's binary folder (I1);
3. ``restore-config`` and ``restore-flannel-files`` (05-rollback's own steps): each
   ``config.yaml`` back byte for byte (sha256 = pre-run), flannel's files moved back;
4. ``nbn-us-restart-k3s``, one node at a time, servers first (agents read
   ``flannel-backend`` from a server at start, F9; every server's key is restored before
   the first restart, I4): pods keep running (F11); the node comes back Ready with
   flannel's device, its containerd reading k3s's folders again (F7), where Cilium's
   config sorts first (F12): new pods stay on Cilium until their node is reverted;
   k3s's kube-proxy is back on the node;
5. ``nbn-us-kpr-off`` and ``nbn-us-kpr-rollout`` (only when the switch turned kube-proxy
   replacement on): the migration values as they are, every agent restarted; kube-proxy
   serves Services again. Connections Cilium's replacement translated may reset, as when
   it was turned on (F15), measured as the outage window ``nbn_unkpr_window``.

Example:
    >>> node_by_node_unswitch.plan(s)      # doctest: +SKIP
    >>> node_by_node_unswitch.unswitch(s)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from . import containerd, outage
from . import node_by_node as nbn_mod
from . import node_by_node_plan as nbp
from .cluster import node_ready
from .errors import GateFailed, NodeError
from .k3sconfig import unit_for

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["plan", "unswitch", "STEPS", "UNKPR_WINDOW", "needed", "finished", "kpr_was_on"]

#: the unswitch's own journal steps, in order (the restores are 05-rollback's steps)
STEPS: tuple[str, ...] = ("nbn-us-cnc", "nbn-us-label", "nbn-us-values", "nbn-us-rollout",
                          "nbn-us-restart-k3s", "nbn-us-kpr-off", "nbn-us-kpr-rollout")
UNKPR_WINDOW = "nbn_unkpr_window"
VALUES_FILE = "nbn-unswitch-values.yaml"


def _mig(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("phase") != "rollback"]


def needed(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether the switch began (any of its steps recorded, in any status): then the switch
    is undone before the per-node rollback (pure)."""
    return nbp.switch_started(entries)


def kpr_was_on(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether the switch recorded turning kube-proxy replacement on (any status: an
    intent may have happened), pure.

    Example:
        >>> kpr_was_on([{"step": "nbn-kpr", "status": "intent", "phase": "install"}])
        True
    """
    return any(e.get("step") == "nbn-kpr" for e in _mig(entries))


def restarted_nodes(entries: Sequence[dict[str, Any]], nodes: Sequence[tuple[str, str]]) -> list[str]:
    """The nodes whose k3s the switch restarted (any status), servers first, in params
    order: each restarts again once the keys are restored (pure).

    Example:
        >>> restarted_nodes([{"step": "restart-k3s", "node": "a1", "phase": "install"},
        ...                  {"step": "restart-k3s", "node": "s1", "phase": "install"}],
        ...                 [("a1", "agent"), ("s1", "server"), ("a2", "agent")])
        ['s1', 'a1']
    """
    hit = {e.get("node") for e in _mig(entries) if e.get("step") == "restart-k3s"}
    return [n for n, r in nodes if r == "server" and n in hit] + [n for n, r in nodes if r != "server" and n in hit]


def finished(entries: Sequence[dict[str, Any]], nodes: Sequence[tuple[str, str]]) -> bool:
    """Whether every step the unswitch needs is done in the rollback (pure): the per-node
    rollback may start."""
    done = {(e.get("step"), e.get("node")) for e in entries
            if e.get("phase") == "rollback" and e.get("status") == "done"}
    if not {("nbn-us-cnc", None), ("nbn-us-label", None), ("nbn-us-values", None)} <= done:
        return False
    if any(("nbn-us-restart-k3s", n) not in done for n in restarted_nodes(entries, nodes)):
        return False
    return not kpr_was_on(entries) or ("nbn-us-kpr-rollout", None) in done


def _entries(s: Session) -> list[dict[str, Any]]:
    return [e.__dict__ for e in s.journal.entries()]


def _nodes(s: Session) -> list[tuple[str, str]]:
    return [(n.name, n.role) for n in s.params.nodes]


def plan(s: Session) -> pd.DataFrame | str:
    """The steps :func:`unswitch` takes, with what the journal says about each."""
    if not nbn_mod.active(s):
        return nbn_mod.NOT_THIS_STRATEGY
    entries = _entries(s)
    if not needed(entries):
        return "the switch never began: nothing to undo before the per-node rollback"
    kpr = kpr_was_on(entries)
    order = restarted_nodes(entries, _nodes(s))
    rows = [("CiliumNodeConfig again, every node labelled", ("nbn-us-cnc", "nbn-us-label")),
            ("helm upgrade to the migration values" + (", kube-proxy replacement still on" if kpr else "")
             + "; every agent re-created", ("nbn-us-values",)),
            ("config.yaml back byte for byte, flannel's files back", ("restore-config",)),
            ("restart k3s one node at a time, servers first: " + (" → ".join(order) or "no node"),
             ("nbn-us-restart-k3s",))]
    if kpr:
        rows.append(("kube-proxy replacement off (kube-proxy serves Services again)",
                     ("nbn-us-kpr-off", "nbn-us-kpr-rollout")))
    done = {e["step"] for e in entries if e.get("phase") == "rollback" and e.get("status") == "done"}
    return pd.DataFrame([{"step": a, "journal steps": ", ".join(b), "done": all(x in done for x in b)}
                         for a, b in rows], columns=["step", "journal steps", "done"])


def _step(s: Session, step: str, action: str, fn: Callable[[], Any], *, node: str | None = None,
          data: Any = None) -> Any:
    if any(e.phase == "rollback" and e.status == "done" for e in s.journal.entries(step=step, node=node)):
        return {"skipped": "done earlier in this rollback"}
    s.progress(f"{node + ': ' if node else ''}{action}")
    return s.journal.perform(step, action, fn, node=node, data=data)


def _values_file(s: Session, nb: nbn_mod.NodeByNodePlan, kpr: bool) -> str:
    mig = nbp.migration_values(s.values, cidr=nb.cidr, mask=nb.mask, conf_dir=nb.conf_dir, bin_dir=nb.bin_dir)
    if kpr:
        mig["kubeProxyReplacement"] = True
    return nbn_mod.write_values(s, VALUES_FILE, mig)


def _label_all(s: Session, order: list[str]) -> list[str]:
    out = []
    for node in order:
        obj = s.cluster.get("nodes", node) or {}
        if ((obj.get("metadata") or {}).get("labels") or {}).get(nbp.LABEL) != "true":
            s.cluster.patch("nodes", node, {"metadata": {"labels": {nbp.LABEL: "true"}}})
            out.append(node)
    return out


def _missing_files(s: Session, nb: nbn_mod.NodeByNodePlan) -> list[str]:
    """What a node lacks of Cilium's conflist in k3s's folder and its plugin in k3s's
    binary folder (what containerd reads once flannel is back), ``node: path`` each."""
    return [f"{n.name}: {path}" for n in s.nodes
            for path in (f"{nb.conf_dir}/{nbp.CONFLIST}", f"{nb.bin_dir}/cilium-cni")
            if not n.run("test -e %s", path, sudo=True).ok]


def _cilium_files(s: Session, nb: nbn_mod.NodeByNodePlan) -> dict[str, Any]:
    missing = _missing_files(s, nb)
    if missing:
        raise NodeError("the agents with the migration values did not write Cilium's files into k3s's folders: "
                        + ", ".join(missing), hint="check the CiliumNodeConfig and the label "
                        f"{nbp.LABEL} on those nodes, then re-run 05-rollback (this step is repeated)")
    return {"nodes": len(s.nodes), "files": "Cilium's conflist and plugin in k3s's folders on every node"}


def _first_conflist(n: Node, conf_dir: str) -> str:
    names = sorted(x for x in n.run("ls -1 %s", conf_dir, sudo=True).stdout.split()
                   if x.endswith((".conflist", ".conf", ".json")))
    return names[0] if names else ""


def restart_back(s: Session, n: Node, nb: nbn_mod.NodeByNodePlan) -> dict[str, Any]:
    """Restart k3s on ``n`` with the restored config (``nbn-us-restart-k3s``), wait Ready,
    and check that containerd reads k3s's folders, Cilium's conflist first, and that
    flannel's device is back."""
    from .rollback import bring_up
    from .rollback_checks import flannel_device_back

    unit = unit_for(n.role)
    res = _step(s, "nbn-us-restart-k3s", f"systemctl restart {unit} (flannel back; pods keep running)",
                lambda: bring_up(n, "restart", unit), node=n.name, data={"unit": unit})
    s.cluster.wait_for(lambda: (node_ready(s.cluster.get("nodes", n.name) or {}), [f"{n.name} Ready"]),
                       timeout=s.params.limits.timeouts.node_ready, what=f"{n.name} Ready after its restart",
                       interval=1.0, progress=s.progress, watch=["nodes"])
    have = containerd.config_cni_dirs(containerd.read_config(n))
    diffs = containerd.mismatch(have, (nb.conf_dir, nb.bin_dir))
    first = _first_conflist(n, nb.conf_dir)
    problems = [f"containerd does not read k3s's folders: {'; '.join(diffs)}"] if diffs else []
    if first != nbp.CONFLIST:
        problems.append(f"the first CNI config in {nb.conf_dir} is {first or 'none'}, not {nbp.CONFLIST}: "
                        "new pods there would not get Cilium's network")
    if not flannel_device_back(s, n):
        problems.append("flannel's device is not back")
    if problems:
        raise NodeError(f"{n.name} after its k3s restart: " + "; ".join(problems), node=n.name,
                        hint="read the node's k3s journal and its CNI folder; re-run 05-rollback "
                             "(the restart is not repeated, the checks are)")
    return {**(res or {}), "cni_dirs": list(have), "first_conflist": first}


def unswitch(s: Session) -> pd.DataFrame | str:
    """Undo the switch, every step journaled (see the module). Does nothing when the switch
    never began or the strategy is big-bang."""
    from . import rollback
    from .node_by_node_switch import agent_uids, rollout_agents

    if not nbn_mod.active(s):
        return nbn_mod.NOT_THIS_STRATEGY
    entries = _entries(s)
    if not needed(entries):
        return plan(s)
    if not s.require_execute("undoing the switch"):
        return plan(s)
    nb = nbn_mod.plan(s)
    assert isinstance(nb, nbn_mod.NodeByNodePlan)
    kpr = kpr_was_on(entries)
    ns = s.params.cilium.namespace
    rows: list[dict[str, Any]] = []
    try:
        def cnc() -> str:
            if s.cluster.get("ciliumnodeconfigs", nbp.CNC_NAME, ns) is not None:
                return "already there"
            s.cluster.create("ciliumnodeconfigs", nbp.cnc_manifest(ns), ns)
            return "created"
        rows.append({"step": "CiliumNodeConfig", "result": _step(
            s, "nbn-us-cnc", f"create CiliumNodeConfig {ns}/{nbp.CNC_NAME} again", cnc,
            data={"manifest": nbp.cnc_manifest(ns)})})
        rows.append({"step": "labels", "result": _step(s, "nbn-us-label", f"label every node {nbp.LABEL}=true",
                                                      lambda: {"labelled": _label_all(s, nb.order)})})
        before = agent_uids(s)
        rows.append({"step": "migration values", "result": nbn_mod.helm_upgrade(
            s, _values_file(s, nb, kpr), step="nbn-us-values",
            what="migration values" + (", kube-proxy replacement still on" if kpr else ""))})
        if before and not (before & agent_uids(s)):
            rows.append({"step": "agents re-created", "result": "by the upgrade itself (the DaemonSet changed)"})
        elif not _missing_files(s, nb):   # a rerun: the agents already run with these values
            rows.append({"step": "agents re-created", "result": "earlier in this rollback (their files are there)"})
        else:
            rows.append({"step": "agents re-created", "result": _step(
                s, "nbn-us-rollout", "rollout restart ds/cilium (the agents read the CiliumNodeConfig at start)",
                lambda: rollout_agents(s))})
        rows.append({"step": "Cilium's files in k3s's folders", "result": _cilium_files(s, nb)})
        rp = rollback.plan(s)
        for nr in [x for x in rp.nodes if x.restore_config or x.restore_files]:
            rows.append({"step": f"restore {nr.node}'s files", "result": rollback.restore_node(s, s.node(nr.node), nr)})
        for name in restarted_nodes(entries, _nodes(s)):
            rows.append({"step": f"restart k3s on {name}", "result": restart_back(s, s.node(name), nb)})
        if kpr:
            outage.open_window(s.journal, UNKPR_WINDOW)
            rows.append({"step": "kube-proxy replacement off", "result": nbn_mod.helm_upgrade(
                s, nb.migration_values_file, step="nbn-us-kpr-off", what="migration values, kube-proxy "
                "replacement off: k3s's kube-proxy serves Services")})
            rows.append({"step": "agents re-created (replacement off)", "result": _step(
                s, "nbn-us-kpr-rollout", "rollout restart ds/cilium", lambda: rollout_agents(s))})
            win = outage.close_window(s.journal, UNKPR_WINDOW)
            s.figure("unkpr_window_seconds", (win or {}).get("seconds"))
    except GateFailed:
        raise
    except Exception as e:
        s.gate(False, "the switch undone (flannel back beside Cilium on every node)", name="nbn-unswitch",
               details=[f"{type(e).__name__}: {getattr(e, 'message', e)}"],
               hint=getattr(e, "hint", None) or "fix the cause and re-run 05-rollback: it continues here")
    return pd.DataFrame(rows, columns=["step", "result"])
