"""Reconfigure: switch k3s off flannel, kube-router (and kube-proxy), node by node.

The phase has a pure planning half and an executing half (pyinfra's facts/operations):

* :func:`config_plans` turns each node's ``config.yaml`` into a :class:`runbook.k3sconfig.NodePlan`
  (server-only keys on servers, defect 1; ``disable-kube-proxy`` with kube-proxy
  replacement, defect 2; masked secrets);
* :func:`gather_leftovers` reads what flannel, kube-router and kube-proxy leave behind
  on each node, and :func:`plan_leftovers` (pure) decides what to delete: ``flannel.1``
  and ``cni0`` (flannel's VXLAN device holds UDP 8472, defect 4), flannel's CNI files
  and leases, the KUBE-ROUTER chains (defect 9), the kube-proxy chains when Cilium
  replaces kube-proxy (defect 2) and the FLANNEL chains and "flanneld forward" rules.

The plan lives in :mod:`runbook.reconfigure_plan`, the leftovers (facts, pure plan and
the per-node removal) in :mod:`runbook.leftovers`; this module holds the steps and the
end-of-phase check, and every name the notebook uses is importable from here.

With ``execute``: :func:`write_configs` (backup + atomic write, journaled),
:func:`restart_servers` (then wait for the API; the no-CNI window opens),
:func:`restart_agents` (in batches, stop at the first failure), :func:`cleanup`
(interfaces, files moved to the backup folder, chains), then :func:`verify` for the gate.

Every step checks "already done" first, so a rerun of the same run finishes the job
without redoing work: a config that already has the wanted content is not rewritten, a
restart recorded done in the journal is skipped, and a leftover that is gone is not
looked for again.

Example:
    >>> plans = reconfigure.config_plans(s)                        # doctest: +SKIP
    >>> left = reconfigure.gather_leftovers(s)                     # doctest: +SKIP
    >>> reconfigure.leftovers_frame(left)                          # doctest: +SKIP
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import containerd, datapath, deadline, k3sconfig, outage
from .errors import NodeError
from .fleet import FleetResult
from .k3sconfig import unit_for
from .leftovers import (FLANNEL_COMMENTS, FLANNEL_INTERFACES, FLANNEL_PREFIXES, KUBE_PROXY_PREFIXES,
                        NETPOL_PREFIXES, STEP_CLEANUP, LeftoverPlan, NodeLeftovers, backup_name,
                        clean_node, cleanup_prefixes, flannel_files, flannel_present, gather_node,
                        leftovers_frame, plan_leftovers)
from .presentation import frame_html
from .reconfigure_plan import (STEP_RESTART, STEP_WRITE, PlanView, changes_table, config_plans,
                               config_written, gather_leftovers, read_configs, restart_needed,
                               restart_order)

if TYPE_CHECKING:
    from .cluster import Cluster
    from .nodes import Node
    from .session import Session

__all__ = [
    "FLANNEL_INTERFACES", "NETPOL_PREFIXES", "FLANNEL_PREFIXES", "KUBE_PROXY_PREFIXES",
    "FLANNEL_COMMENTS", "cleanup_prefixes", "flannel_files", "NodeLeftovers", "LeftoverPlan",
    "plan_leftovers", "backup_name", "read_configs", "config_plans", "PlanView", "gather_leftovers",
    "leftovers_frame", "restart_order", "restart_needed", "write_configs", "restart_servers",
    "restart_agents", "cleanup", "Verification", "verify", "node_readiness", "changes_table",
    "unit_for", "window", "RestartOutcome", "STEP_RESTART", "STEP_CLEANUP", "STEP_WRITE",
    "containerd_cni", "CniFolderMismatch",
]


# =========================================================================== execute: write
def _record_backups(s: Session, node: str) -> None:
    """Record the FIRST backup of ``node``'s config (also after a crash between the
    write and this record: the write-file entry holds the backup path)."""
    path = s.params.paths.k3s_config
    for e in s.journal.entries(step=STEP_WRITE, node=node, status="done"):
        d = e.data or {}
        if d.get("path") == path and d.get("backup") and d.get("sha256_before"):
            s.journal.add_backup(node, path, d["backup"], d["sha256_before"], step="k3s-config")
            return


def write_configs(s: Session, plans: list[k3sconfig.NodePlan]) -> FleetResult | None:
    """Back up and write each changed ``config.yaml`` (servers first; stops at a failure).

    Returns the :class:`runbook.nodes.FleetResult` (value: "written", "already done" or
    "no change"). A dry run returns None after printing the plan.
    """
    if not s.require_execute("writing the k3s configs"):
        return None
    by_node = {p.node: p for p in plans}

    def op(n: Node) -> str:
        p = by_node.get(n.name)
        if p is None or p.noop:
            _record_backups(s, n.name)
            return "no change" + (" (written earlier in this run)" if config_written(s, n.name) else "")
        res = n.write_file(p.path, p.new_text)
        _record_backups(s, n.name)
        return "written" if res.changed else "already done"

    res = s.fleet().apply(op, description="write k3s config.yaml")
    return res.raise_for_failures()


# =========================================================================== execute: restart
@dataclass
class RestartOutcome:
    """Result of :func:`restart_servers` / :func:`restart_agents`.

    Attributes:
        fleet: the per-node outcomes; api_back_s: seconds from the server restart
        until the API answered (None for agents or when nothing restarted);
        outages: API outages the choke point saw ({"seconds", "attempts"}).
    """

    fleet: FleetResult
    api_back_s: float | None = None
    outages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_away_s(self) -> float:
        return round(sum(o["seconds"] for o in self.outages), 2)

    def frame(self) -> pd.DataFrame:
        return self.fleet.frame()

    def __repr__(self) -> str:
        text = self.frame().to_string(index=False)
        if self.api_back_s is not None:
            text += (f"\nAPI answered {self.api_back_s:.1f}s after the restart began; away for "
                     f"{self.api_away_s:.1f}s as the client saw it")
        return text

    def _repr_html_(self) -> str:
        extra = ""
        if self.api_back_s is not None:
            extra = (f"<p>API answered {self.api_back_s:.1f}s after the restart began; "
                     f"the client saw it away for {self.api_away_s:.1f}s "
                     f"({sum(o['attempts'] for o in self.outages)} retried calls).</p>")
        return self.fleet._repr_html_() + extra


def _restart_one(s: Session, n: Node) -> str:
    if s.journal.is_done(STEP_RESTART, node=n.name):
        return "already restarted in this run"
    if not restart_needed(s, n, flannel_leftovers=flannel_present(n, s.params.paths)):
        return "not needed: no config change in this run and flannel is gone"
    n.client()  # an unreachable node fails here, before an intent is journaled
    unit = unit_for(n.role)
    deadline.check(s, f"02-reconfigure, before restarting {unit} on {n.name}")
    entry = s.journal.record(STEP_RESTART, f"systemctl restart {unit}", node=n.name,
                             data={"unit": unit})
    try:
        n.systemctl("restart", unit)
        if not n.is_active(unit):
            raise NodeError(f"{unit} is not active after the restart", node=n.name,
                            hint=f"read `journalctl -u {unit}` on the node; the config backup "
                                 "is in the journal (05-rollback restores it)")
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result={"active": True})
    return "restarted"


class CniFolderMismatch(NodeError):
    """containerd on a restarted node does not read the folder Cilium writes its CNI config to
    (``detail``: what its config.toml names instead)."""

    def __init__(self, detail: str, *, node: str) -> None:
        super().__init__(detail, node=node)
        self.detail = detail


def _check_cni(s: Session, n: Node) -> str:
    """After ``n``'s k3s restart without flannel: the ``config.toml`` k3s generated must
    make containerd read Cilium's CNI folders (else raise :class:`CniFolderMismatch`)."""
    if s.params.k3s.flannel_backend != "none":
        return ""
    want = datapath.cni_dirs(s.values)
    try:
        have = containerd.config_cni_dirs(containerd.read_config(n))
    except ValueError as e:
        raise CniFolderMismatch(f"{containerd.CONFIG_TOML} is not TOML ({e})", node=n.name) from e
    diffs = containerd.mismatch(have, want)
    if diffs:
        tmpl = " (rendered from config.toml.tmpl)" if containerd.read_template(n) is not None else ""
        raise CniFolderMismatch(f"{containerd.CONFIG_TOML}{tmpl} has {'; '.join(diffs)}", node=n.name)
    return f"containerd reads {have[0]}"


def containerd_cni(s: Session) -> pd.DataFrame:
    """Per node: the CNI folders in the ``config.toml`` k3s generated at its last start,
    whether a ``config.toml.tmpl`` is there, and whether they are Cilium's (over SSH)."""
    want = datapath.cni_dirs(s.values)
    rows = []
    for n in s.nodes:
        try:
            have = containerd.config_cni_dirs(containerd.read_config(n))
        except (ValueError, NodeError) as e:
            rows.append({"node": n.name, "conf_dir": f"not read: {e}", "bin_dir": "-",
                         "config.toml.tmpl": "-", "Cilium's folders": False})
            continue
        rows.append({"node": n.name, "conf_dir": have[0], "bin_dir": have[1],
                     "config.toml.tmpl": "yes" if containerd.read_template(n) is not None else "no",
                     "Cilium's folders": not containerd.mismatch(have, want)})
    return pd.DataFrame(rows, columns=["node", "conf_dir", "bin_dir", "config.toml.tmpl",
                                       "Cilium's folders"])


def _gate_cni(s: Session, res: FleetResult) -> None:
    """The gate ``containerd-cni-folder``: stop when a restarted node's containerd does not
    read Cilium's CNI folder (the nodes after it were not restarted)."""
    bad = [o for o in res.failed if isinstance(o.exception, CniFolderMismatch)]
    if not bad:
        return
    untouched = [o.node for o in res.skipped]
    details = [f"{o.node}: {o.exception.detail}" for o in bad]
    if untouched:
        details.append("not restarted (left untouched): " + ", ".join(untouched))
    s.gate(False, "containerd reads the CNI folder Cilium writes to on every restarted node",
           name="containerd-cni-folder", details=details,
           hint="the node stays NotReady with no CNI until containerd reads Cilium's folder. Fix its "
                "config.toml.tmpl (conf_dir/bin_dir of the CRI cni section: Cilium's folders, or "
                "{{ .NodeConfig.AgentConfig.CNIConfDir }}/{{ .NodeConfig.AgentConfig.CNIBinDir }}, "
                "which k3s leaves empty without flannel), run `sudo systemctl restart k3s-agent` "
                "(`k3s` on a server) there, and run this notebook again with the same run. Or roll "
                "back now: "
                + deadline.session_rollback_command(s))


def _record_outages(s: Session, new: list[Any]) -> list[dict[str, Any]]:
    rows = [{"seconds": round(o.seconds, 2), "attempts": o.attempts} for o in new]
    s.journal.set("api_outages", list(s.journal.get("api_outages", []) or []) + rows)
    return rows


def restart_servers(s: Session) -> RestartOutcome | None:
    """Restart k3s on the servers, one at a time, and wait for the API to answer.

    The Cluster choke point retries while the API server is away and records the
    outage; its length is kept as the fact ``api_outages``. Opens the no-CNI window
    (fact ``no_cni_window``) when flannel is switched off.
    """
    if not s.require_execute("restarting the k3s servers"):
        return None
    servers = [n for n in s.nodes if n.role == "server"]
    seen = len(s.cluster.outages)
    t0 = time.monotonic()
    restarted: list[str] = []

    def op(n: Node) -> str:
        out = _restart_one(s, n)
        if out == "restarted":
            restarted.append(n.name)
            # the choke point retries through the outage; the node object proves the
            # API serves again (not just its TCP port)
            s.cluster.get("nodes", n.name)
        if not out.startswith("not needed"):
            _check_cni(s, n)
        return out

    res = s.fleet(servers).apply(op, description="restart k3s on the servers")
    deadline.reraise(res)
    api_back = round(time.monotonic() - t0, 2) if restarted else None
    outages = _record_outages(s, s.cluster.outages[seen:])
    if restarted and s.params.k3s.flannel_backend == "none":
        outage.open_window(s.journal, "no_cni_window")
    _gate_cni(s, res)
    if res.failed:
        _raise_with_progress(s, res)
    out = RestartOutcome(res, api_back, outages)
    if api_back is not None:
        _figure(s, "api_back_after_seconds", api_back)
        _figure(s, "api_away_seconds", out.api_away_s)
    return out


def _figure(s: Session, name: str, value: Any) -> None:
    if hasattr(s, "figure"):
        s.figure(name, value)


def window(s: Session) -> outage.Window:
    """The no-CNI window as recorded in the journal (fact ``no_cni_window``), in words."""
    win = s.journal.get("no_cni_window")
    if win:
        _figure(s, "no_cni_window_opened_at", win.get("opened_at"))
    return outage.Window.from_fact("no_cni_window", win)


def restart_agents(s: Session) -> RestartOutcome | None:
    """Restart ``k3s-agent`` in batches of ``limits.agent_batch_size``.

    Stops after the first batch with a failure; later agents are not touched (the
    error names them). A rerun skips the agents the journal records as restarted.
    """
    if not s.require_execute("restarting the k3s agents"):
        return None
    agents = [n for n in s.nodes if n.role != "server"]
    def op(n: Node) -> str:
        out = _restart_one(s, n)
        return out if out.startswith("not needed") else (out + "; " + _check_cni(s, n)).strip("; ")

    res = s.fleet(agents).apply(op, description="restart k3s-agent in batches")
    deadline.reraise(res)
    _gate_cni(s, res)
    if res.failed:
        _raise_with_progress(s, res)
    return RestartOutcome(res)


def _raise_with_progress(s: Session, res: FleetResult) -> None:
    try:
        res.raise_for_failures()
    except NodeError as e:
        table = changes_table(s)
        lines = [f"{r.node}: config {r.config}, restart {r.restart}, cleanup {r.cleanup}"
                 for r in table.itertuples()]
        e.hint = ("fix the failed node (is it up, is sshd reachable?), then re-run this "
                  "notebook with the same run: finished nodes are skipped. Or roll back with "
                  "05-rollback, which restores only the nodes the journal shows as changed. "
                  "Journal per node: " + "; ".join(lines))
        raise


# =========================================================================== execute: cleanup
def _cleanup_one(s: Session, n: Node, kpr: bool) -> str:
    if restart_needed(s, n, flannel_leftovers=flannel_present(n, s.params.paths)):
        raise NodeError(f"k3s on {n.name} has not restarted with the new settings yet: "
                        "what it still runs would re-create the leftovers", node=n.name,
                        hint="run the restart steps first")
    deadline.check(s, f"02-reconfigure, before cleaning the leftovers on {n.name}")
    paths = s.params.paths
    plan = plan_leftovers(gather_node(n, paths), kpr=kpr, backup_dir=paths.backup_dir,
                          run_id=s.run_id)
    return clean_node(n, plan, journal=s.journal, backup_dir=paths.backup_dir)


def cleanup(s: Session) -> FleetResult | None:
    """Delete flannel's interfaces, move its CNI files and leases to the backup folder,
    and remove the KUBE-ROUTER / FLANNEL (and kube-proxy, with KPR) chains.

    Chains are removed by filtering ``iptables-save`` in Python and feeding the result to
    ``iptables-restore`` on stdin (:meth:`runbook.nodes.Node.remove_chains`), never with a
    shell pipe. Each node's work is journaled (step ``cleanup-leftovers``, with the
    original path of every moved file, so the rollback can put them back).
    """
    if not s.require_execute("cleaning the leftovers"):
        return None
    kpr = s.params.disable_kube_proxy(s.values)
    res = s.fleet().apply(lambda n: _cleanup_one(s, n, kpr), description="clean up leftovers")
    deadline.reraise(res)
    if res.failed:
        _raise_with_progress(s, res)
    return res


# =========================================================================== verify
@dataclass
class Verification:
    """The end-of-phase check: configs wanted, leftovers gone (one row per node)."""

    table: pd.DataFrame
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        head = "every node reconfigured" if self.ok else "not reconfigured yet:\n" + "\n".join(
            f"  - {p}" for p in self.problems)
        return head + "\n" + self.table.to_string(index=False)

    def _repr_html_(self) -> str:
        head = ("<p style='color:#116611'><b>every node reconfigured</b></p>" if self.ok else
                "<p style='color:#b00020'><b>not reconfigured yet:</b></p><ul>" +
                "".join(f"<li>{html.escape(p)}</li>" for p in self.problems) + "</ul>")
        return head + frame_html(self.table)


def verify(s: Session) -> Verification:
    """Re-plan (must be a no-op everywhere) and re-read the leftovers (must be none)."""
    kpr = s.params.disable_kube_proxy(s.values)
    plans = {p.node: p for p in config_plans(s)}
    left = gather_leftovers(s)
    rows, problems = [], []
    for lp in left:
        cp = plans[lp.node]
        kube_svc = lp.chains.get("KUBE-SVC", 0) if kpr else None
        row = {"node": lp.node, "role": lp.role, "config as wanted": cp.noop,
               "flannel.1/cni0": ", ".join(lp.interfaces) or "gone",
               "KUBE-ROUTER chains": lp.chains.get("KUBE-ROUTER", 0),
               "KUBE-SVC chains": kube_svc if kpr else "kept (no KPR)",
               "FLANNEL chains": lp.chains.get("FLANNEL", 0),
               "flannel files": ", ".join(m[0] for m in lp.move) or "moved"}
        rows.append(row)
        if not cp.noop:
            problems.append(f"{lp.node}: config.yaml still needs: {'; '.join(cp.changes)}")
        if lp.interfaces:
            problems.append(f"{lp.node}: interfaces still present: {', '.join(lp.interfaces)}")
        if lp.chains.get("KUBE-ROUTER", 0):
            problems.append(f"{lp.node}: {lp.chains['KUBE-ROUTER']} KUBE-ROUTER chain(s) left")
        if kpr and lp.chains.get("KUBE-SVC", 0):
            problems.append(f"{lp.node}: {lp.chains['KUBE-SVC']} KUBE-SVC chain(s) left although "
                            "Cilium replaces kube-proxy")
        if lp.chains.get("FLANNEL", 0) or lp.flannel_rules:
            problems.append(f"{lp.node}: flannel iptables rules left")
        if lp.move:
            problems.append(f"{lp.node}: flannel files still present: "
                            f"{', '.join(m[0] for m in lp.move)}")
    return Verification(pd.DataFrame(rows), problems)


def node_readiness(cluster: Cluster) -> pd.DataFrame:
    """Each node's Ready condition with its reason and message (the kubelet's words)."""
    rows = []
    for n in cluster.list("nodes"):
        cond = next((c for c in (n.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Ready"), {})
        rows.append({"node": n["metadata"]["name"], "ready": cond.get("status", "Unknown"),
                     "reason": cond.get("reason", ""), "message": cond.get("message", ""),
                     "since": cond.get("lastTransitionTime", "")})
    return pd.DataFrame(rows, columns=["node", "ready", "reason", "message", "since"])
