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
import ipaddress
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import pandas as pd

from . import facts as facts_mod
from . import k3sconfig
from .errors import NodeError

__all__ = [
    "FLANNEL_INTERFACES", "NETPOL_PREFIXES", "FLANNEL_PREFIXES", "KUBE_PROXY_PREFIXES",
    "cleanup_prefixes", "flannel_files", "NodeLeftovers", "LeftoverPlan", "plan_leftovers",
    "read_configs", "config_plans", "PlanView", "gather_leftovers", "leftovers_frame",
    "restart_order", "write_configs", "restart_servers", "restart_agents", "cleanup",
    "Verification", "verify", "node_readiness", "changes_table", "unit_for", "window",
]

#: flannel's devices: the VXLAN device (UDP 8472, which Cilium's default tunnel port
#: would collide with) and the bridge its pods hang off.
FLANNEL_INTERFACES = ("flannel.1", "flannel-wg", "flannel-v6.1", "cni0")
#: k3s' embedded kube-router network-policy controller (defect 9).
NETPOL_PREFIXES = ("KUBE-ROUTER", "KUBE-NWPLCY", "KUBE-POD-FW")
#: flannel's own chains (its FORWARD rules carry the "flanneld forward" comment).
FLANNEL_PREFIXES = ("FLANNEL",)
#: k3s' embedded kube-proxy: only removed when Cilium replaces it (defect 2); the
#: kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY) are kept.
KUBE_PROXY_PREFIXES = ("KUBE-SVC", "KUBE-SEP", "KUBE-EXT", "KUBE-SERVICES", "KUBE-NODEPORTS",
                       "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-PROXY", "KUBE-FORWARD",
                       "KUBE-FW-", "KUBE-XLB")
FLANNEL_COMMENTS = (facts_mod.FLANNEL_FORWARD_COMMENT, "flanneld masq")

STEP_RESTART = "restart-k3s"
STEP_CLEANUP = "cleanup-leftovers"
STEP_WRITE = "write-file"


def cleanup_prefixes(kpr: bool) -> list[str]:
    """The iptables chain prefixes to remove: kube-proxy's only when ``kpr`` is on.

    >>> cleanup_prefixes(False)
    ['KUBE-ROUTER', 'KUBE-NWPLCY', 'KUBE-POD-FW', 'FLANNEL']
    >>> "KUBE-SVC" in cleanup_prefixes(True)
    True
    """
    out = list(NETPOL_PREFIXES) + list(FLANNEL_PREFIXES)
    if kpr:
        out += list(KUBE_PROXY_PREFIXES)
    return out


def flannel_files(paths: Any) -> list[str]:
    """flannel's CNI config and net-conf written by k3s (moved away, not deleted)."""
    return [posixpath.join(paths.k3s_cni_dir, "10-flannel.conflist"),
            posixpath.join(paths.flannel_dir, "net-conf.json")]


def unit_for(role: str) -> str:
    """The systemd unit of k3s on a node of ``role``."""
    return "k3s" if role == "server" else "k3s-agent"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# =========================================================================== leftovers (pure)
@dataclass
class NodeLeftovers:
    """What flannel, kube-router and kube-proxy left on one node (a fact).

    Attributes:
        node, role; interfaces: every interface name; files: which candidate files
        exist; leases_dir: the IPAM leases folder when it exists, else None;
        leases: number of lease entries in it; iptables: the ``iptables-save`` text
        (IPv4 and IPv6 dumps concatenated; never shown, only summarised).
    """

    node: str
    role: str
    interfaces: list[str]
    files: list[str]
    leases_dir: str | None
    leases: int
    iptables: str = field(repr=False, default="")


@dataclass
class LeftoverPlan:
    """What :func:`cleanup` will remove on one node.

    Attributes:
        node, role; interfaces: to ``ip link delete``; move: (path, backup path) pairs;
        chains: prefix -> chain declarations present; rules: prefix -> rules present;
        flannel_rules: rules carrying a flannel comment ("flanneld forward", "flanneld
        masq"), wherever they are; prefixes: the prefixes cleaned; leases: entries in
        flannel's IPAM leases folder (moved with it).
    """

    node: str
    role: str
    interfaces: list[str]
    move: list[tuple[str, str]]
    chains: dict[str, int]
    rules: dict[str, int]
    flannel_rules: int
    prefixes: list[str]
    leases: int = 0

    @property
    def chain_count(self) -> int:
        return sum(self.chains.values())

    @property
    def noop(self) -> bool:
        return not (self.interfaces or self.move or self.chain_count or sum(self.rules.values())
                    or self.flannel_rules)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "role": self.role, "interfaces": list(self.interfaces),
                "move": [list(m) for m in self.move],
                "chains": {k: v for k, v in self.chains.items() if v},
                "rules": {k: v for k, v in self.rules.items() if v},
                "flannel_rules": self.flannel_rules, "leases": self.leases, "noop": self.noop}


def backup_name(path: str, backup_dir: str, run_id: str) -> str:
    """Where a moved file goes: ``<backup_dir>/<flattened path>.<run_id>``.

    The whole path is kept in the name so two files called ``net-conf.json`` never meet.

    >>> backup_name("/var/lib/cni/networks/cbr0", "/var/backups/phase22", "r1")
    '/var/backups/phase22/var_lib_cni_networks_cbr0.r1'
    """
    flat = path.strip("/").replace("/", "_")
    return f"{backup_dir.rstrip('/')}/{flat}.{run_id}"


def plan_leftovers(left: NodeLeftovers, *, kpr: bool, backup_dir: str, run_id: str
                   ) -> LeftoverPlan:
    """Decide, from the facts alone, what to clean on one node (pure, golden-tested).

    Args:
        left: the node's facts (:func:`gather_leftovers`).
        kpr: Cilium replaces kube-proxy (and k3s gets ``disable-kube-proxy``): then the
            kube-proxy chains go too; otherwise they stay, kube-proxy still needs them.
        backup_dir, run_id: where moved files go (:func:`backup_name`).
    """
    prefixes = cleanup_prefixes(kpr)
    summary = facts_mod.parse_iptables_save(left.iptables, prefixes)
    ifaces = [i for i in FLANNEL_INTERFACES if i in left.interfaces]
    move = [(f, backup_name(f, backup_dir, run_id)) for f in left.files]
    if left.leases_dir:
        move.append((left.leases_dir, backup_name(left.leases_dir, backup_dir, run_id)))
    flannel_rules = _comment_rules(left.iptables, FLANNEL_COMMENTS)
    return LeftoverPlan(left.node, left.role, ifaces, move, dict(summary.chains),
                        dict(summary.rules), flannel_rules, prefixes, left.leases)


def _comment_rules(dump: str, comments: Sequence[str]) -> int:
    """Rules (in any chain) whose ``--comment`` carries one of ``comments``."""
    n = 0
    for line in dump.splitlines():
        line = line.strip()
        if not line.startswith("-A"):
            continue
        _chain, _target, comment = facts_mod._rule_chain_and_target(line)
        if comment and any(c in comment for c in comments):
            n += 1
    return n


# =========================================================================== configs
def read_configs(s: Any) -> dict[str, str]:
    """Each node's current ``config.yaml`` (holds the join token: never print it)."""
    path = s.params.paths.k3s_config
    res = s.fleet().apply(lambda n: n.read_file(path) if n.exists(path) else "",
                          description=f"read {path}").raise_for_failures()
    return {o.node: o.value or "" for o in res.outcomes}


def config_plans(s: Any, configs: dict[str, str] | None = None) -> list[k3sconfig.NodePlan]:
    """The ``config.yaml`` plan of every node (servers first), secrets masked in diffs."""
    configs = read_configs(s) if configs is None else configs
    return k3sconfig.plan(configs, s.params, s.values)


class PlanView:
    """The config plans as a notebook shows them: one diff per node, masked."""

    def __init__(self, plans: list[k3sconfig.NodePlan]) -> None:
        self.plans = plans

    def __repr__(self) -> str:
        return "\n\n".join(str(p) for p in self.plans)

    def _repr_html_(self) -> str:
        return "".join(p._repr_html_() for p in self.plans)


# =========================================================================== gathering
def _gather_one(n: Any, paths: Any) -> NodeLeftovers:
    ifaces = [i.name for i in n.interfaces()]
    files = [f for f in flannel_files(paths) if n.exists(f)]
    leases_dir = paths.cni_leases_dir if n.exists(paths.cni_leases_dir) else None
    leases = 0
    if leases_dir:
        r = n.run("ls -1A %s", leases_dir, sudo=True)
        leases = len([x for x in r.stdout.split() if _is_ip(x)]) if r.ok else 0
    dump = n.run("iptables-save", sudo=True).check_output() + "\n"
    r6 = n.run("ip6tables-save", sudo=True)
    if r6.ok:  # a node without IPv6 tables is not an error
        dump += r6.stdout
    return NodeLeftovers(n.name, n.role, ifaces, files, leases_dir, leases, dump)


def _is_ip(name: str) -> bool:
    # host-local IPAM keeps one file per leased address, plus lock/last_reserved_ip files
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def gather_leftovers(s: Any, nodes: Iterable[Any] | None = None) -> list[LeftoverPlan]:
    """Read each node's leftovers over SSH and plan their cleanup (read-only)."""
    paths = s.params.paths
    kpr = s.params.disable_kube_proxy(s.values)
    fleet = s.fleet() if nodes is None else _fleet(s, list(nodes))
    res = fleet.apply(lambda n: _gather_one(n, paths), description="gather leftovers")
    res.raise_for_failures()
    return [plan_leftovers(o.value, kpr=kpr, backup_dir=paths.backup_dir, run_id=s.run_id)
            for o in res.outcomes]


def leftovers_frame(plans: list[LeftoverPlan]) -> pd.DataFrame:
    """One row per node: interfaces, files to move, chains and rules by prefix."""
    rows = []
    for p in plans:
        row: dict[str, Any] = {"node": p.node, "role": p.role,
                               "interfaces": ", ".join(p.interfaces) or "-",
                               "files to move": ", ".join(m[0] for m in p.move) or "-"}
        for prefix in ("KUBE-ROUTER", "KUBE-SVC", "KUBE-SEP", "KUBE-SERVICES", "FLANNEL"):
            row[prefix] = p.chains.get(prefix, "kept") if prefix in p.prefixes else "kept"
        row["other chains"] = sum(v for k, v in p.chains.items()
                                  if k not in ("KUBE-ROUTER", "KUBE-SVC", "KUBE-SEP",
                                               "KUBE-SERVICES", "FLANNEL"))
        row["flannel rules"] = p.flannel_rules
        row["IPAM leases"] = p.leases
        row["nothing to do"] = p.noop
        rows.append(row)
    return pd.DataFrame(rows)


# =========================================================================== restart order
def _fleet(s: Any, nodes: list[Any]) -> Any:
    from .nodes import Fleet

    return Fleet(nodes, batch_size=s.params.limits.agent_batch_size)


def restart_order(s: Any, plans: list[k3sconfig.NodePlan] | None = None) -> pd.DataFrame:
    """The restart plan: servers one at a time, then agents in batches.

    ``state`` is ``done`` (journal), ``planned`` (this run changes the node's config or
    a server's, which agents inherit at start) or ``not needed``.
    """
    changing = {p.node for p in plans or [] if not p.noop}
    server_changes = any(sp.name in changing for sp in s.params.servers)
    rows = []
    for b, batch in enumerate(s.fleet().batches()):
        for n in batch:
            if s.journal.is_done(STEP_RESTART, node=n.name):
                state = "done"
            elif (restart_needed(s, n, flannel_leftovers=_flannel_leftovers(s, n))
                  or n.name in changing or (n.role != "server" and server_changes)):
                state = "planned"
            else:
                state = "not needed"
            rows.append({"batch": b + 1, "node": n.name, "role": n.role,
                         "command": f"systemctl restart {unit_for(n.role)}", "state": state})
    return pd.DataFrame(rows)


# =========================================================================== execute: write
def _config_written(s: Any, node: str) -> bool:
    """True when this run wrote ``node``'s k3s config (journal: write-file done)."""
    path = s.params.paths.k3s_config
    return any((e.data or {}).get("path") == path
               for e in s.journal.entries(step=STEP_WRITE, node=node, status="done"))


def _record_backups(s: Any, node: str) -> None:
    """Record the FIRST backup of ``node``'s config (also after a crash between the
    write and this record: the write-file entry holds the backup path)."""
    path = s.params.paths.k3s_config
    for e in s.journal.entries(step=STEP_WRITE, node=node, status="done"):
        d = e.data or {}
        if d.get("path") == path and d.get("backup") and d.get("sha256_before"):
            s.journal.add_backup(node, path, d["backup"], d["sha256_before"], step="k3s-config")
            return


def write_configs(s: Any, plans: list[k3sconfig.NodePlan]) -> Any:
    """Back up and write each changed ``config.yaml`` (servers first; stops at a failure).

    Returns the :class:`runbook.nodes.FleetResult` (value: "written", "already done" or
    "no change"). A dry run returns None after printing the plan.
    """
    if not s.require_execute("writing the k3s configs"):
        return None
    by_node = {p.node: p for p in plans}

    def op(n: Any) -> str:
        p = by_node.get(n.name)
        if p is None or p.noop:
            _record_backups(s, n.name)
            return "no change" + (" (written earlier in this run)" if _config_written(s, n.name) else "")
        res = n.write_file(p.path, p.new_text)
        _record_backups(s, n.name)
        return "written" if res.changed else "already done"

    res = s.fleet().apply(op, description="write k3s config.yaml")
    return res.raise_for_failures()


# =========================================================================== execute: restart
def restart_needed(s: Any, n: Any, *, flannel_leftovers: bool | None = None) -> bool:
    """Whether ``n``'s k3s must restart to run with the new settings.

    Never when the journal records its restart as done in this run. Otherwise yes when
    this run changed its config or a server's (agents inherit the server's settings at
    start), or, with ``flannel_leftovers`` (flannel's device or CNI config still on the
    node while flannel is to be off), when k3s may still run flannel: e.g. a previous,
    abandoned run edited the config but never restarted the node. An extra restart of a
    node that did restart is harmless; a node left running flannel is not.
    """
    if s.journal.is_done(STEP_RESTART, node=n.name):
        return False
    if _config_written(s, n.name):
        return True
    if n.role != "server" and any(_config_written(s, sp.name) for sp in s.params.servers):
        return True
    return bool(flannel_leftovers) and s.params.k3s.flannel_backend == "none"


def _flannel_leftovers(s: Any, n: Any) -> bool:
    """flannel.1 or flannel's CNI config still present on the node (over SSH)."""
    if "flannel.1" in {i.name for i in n.interfaces()}:
        return True
    return n.exists(flannel_files(s.params.paths)[0])


@dataclass
class RestartOutcome:
    """Result of :func:`restart_servers` / :func:`restart_agents`.

    Attributes:
        fleet: the per-node outcomes; api_back_s: seconds from the server restart
        until the API answered (None for agents or when nothing restarted);
        outages: API outages the choke point saw ({"seconds", "attempts"}).
    """

    fleet: Any
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


def _restart_one(s: Any, n: Any) -> str:
    if s.journal.is_done(STEP_RESTART, node=n.name):
        return "already restarted in this run"
    if not restart_needed(s, n, flannel_leftovers=_flannel_leftovers(s, n)):
        return "not needed: no config change in this run and flannel is gone"
    n.client()  # an unreachable node fails here, before an intent is journaled
    unit = unit_for(n.role)
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


def _record_outages(s: Any, new: list[Any]) -> list[dict[str, Any]]:
    rows = [{"seconds": round(o.seconds, 2), "attempts": o.attempts} for o in new]
    s.journal.set("api_outages", list(s.journal.get("api_outages", []) or []) + rows)
    return rows


def restart_servers(s: Any) -> RestartOutcome | None:
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

    def op(n: Any) -> str:
        out = _restart_one(s, n)
        if out == "restarted":
            restarted.append(n.name)
            # the choke point retries through the outage; the node object proves the
            # API serves again (not just its TCP port)
            s.cluster.get("nodes", n.name)
        return out

    res = _fleet(s, servers).apply(op, description="restart k3s on the servers")
    api_back = round(time.monotonic() - t0, 2) if restarted else None
    outages = _record_outages(s, s.cluster.outages[seen:])
    if restarted and s.params.k3s.flannel_backend == "none":
        s.journal.setdefault("no_cni_window", {"opened_at": _now(), "closed_at": None,
                                               "seconds": None})
    if res.failed:
        _raise_with_progress(s, res)
    out = RestartOutcome(res, api_back, outages)
    if api_back is not None:
        _figure(s, "api_back_after_seconds", api_back)
        _figure(s, "api_away_seconds", out.api_away_s)
    return out


def _figure(s: Any, name: str, value: Any) -> None:
    if hasattr(s, "figure"):
        s.figure(name, value)


def window(s: Any) -> dict[str, Any] | None:
    """The no-CNI window as recorded in the journal (fact ``no_cni_window``)."""
    win = s.journal.get("no_cni_window")
    if win:
        _figure(s, "no_cni_window_opened_at", win.get("opened_at"))
    return win


def restart_agents(s: Any) -> RestartOutcome | None:
    """Restart ``k3s-agent`` in batches of ``limits.agent_batch_size``.

    Stops after the first batch with a failure; later agents are not touched (the
    error names them). A rerun skips the agents the journal records as restarted.
    """
    if not s.require_execute("restarting the k3s agents"):
        return None
    agents = [n for n in s.nodes if n.role != "server"]
    res = _fleet(s, agents).apply(lambda n: _restart_one(s, n),
                                  description="restart k3s-agent in batches")
    if res.failed:
        _raise_with_progress(s, res)
    return RestartOutcome(res)


def _raise_with_progress(s: Any, res: Any) -> None:
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
def _move(n: Any, src: str, dst: str) -> str:
    # The first copy of a file is the pre-run state the rollback restores: never overwrite it.
    target, i = dst, 1
    while n.exists(target):
        target, i = f"{dst}.{i}", i + 1
    n.run("mkdir -p %s", posixpath.dirname(target), sudo=True).check_output()
    n.run("mv %s %s", src, target, sudo=True).check_output()
    return target


def _cleanup_one(s: Any, n: Any, kpr: bool) -> str:
    if restart_needed(s, n, flannel_leftovers=_flannel_leftovers(s, n)):
        raise NodeError(f"k3s on {n.name} has not restarted with the new settings yet: "
                        "what it still runs would re-create the leftovers", node=n.name,
                        hint="run the restart steps first")
    paths = s.params.paths
    plan = plan_leftovers(_gather_one(n, paths), kpr=kpr, backup_dir=paths.backup_dir,
                          run_id=s.run_id)
    if plan.noop:
        return "nothing left to clean"
    entry = s.journal.record(STEP_CLEANUP, "remove flannel/kube-router/kube-proxy leftovers",
                             node=n.name, data=plan.to_dict())
    done: dict[str, Any] = {"interfaces": [], "moved": [], "chains_removed": {}, "lines": 0}
    try:
        for i in plan.interfaces:
            if n.delete_interface(i):
                done["interfaces"].append(i)
        for src, dst in plan.move:
            if n.exists(src):
                done["moved"].append({"path": src, "backup": _move(n, src, dst)})
        if plan.chain_count or sum(plan.rules.values()) or plan.flannel_rules:
            rm = n.remove_chains(plan.prefixes, comments=FLANNEL_COMMENTS)
            done["chains_removed"] = {k: v for k, v in rm.before.chains.items() if v}
            done["lines"] = rm.removed_lines
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result=done)
    return (f"deleted {', '.join(done['interfaces']) or 'no interface'}; moved {len(done['moved'])} "
            f"path(s) to {s.params.paths.backup_dir}; removed {sum(done['chains_removed'].values())} "
            f"chain(s) ({done['lines']} iptables lines)")


def cleanup(s: Any) -> Any:
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
        return head + self.table.to_html(index=False)


def verify(s: Any) -> Verification:
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


def node_readiness(cluster: Any) -> pd.DataFrame:
    """Each node's Ready condition with its reason and message (the kubelet's words)."""
    rows = []
    for n in cluster.list("nodes"):
        cond = next((c for c in (n.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Ready"), {})
        rows.append({"node": n["metadata"]["name"], "ready": cond.get("status", "Unknown"),
                     "reason": cond.get("reason", ""), "message": cond.get("message", ""),
                     "since": cond.get("lastTransitionTime", "")})
    return pd.DataFrame(rows, columns=["node", "ready", "reason", "message", "since"])


def changes_table(s: Any) -> pd.DataFrame:
    """Per node, from the journal: config written, k3s restarted, leftovers cleaned."""

    def state(step: str, node: str) -> str:
        es = s.journal.entries(step=step, node=node)
        if step == STEP_WRITE:
            es = [e for e in es if (e.data or {}).get("path") == s.params.paths.k3s_config]
        if not es:
            return "untouched"
        return {"done": "done", "failed": "FAILED", "intent": "started (unknown)"}.get(
            es[-1].status, es[-1].status)

    rows = [{"node": n.name, "role": n.role, "config": state(STEP_WRITE, n.name),
             "restart": state(STEP_RESTART, n.name), "cleanup": state(STEP_CLEANUP, n.name)}
            for n in s.params.servers + s.params.agents]
    return pd.DataFrame(rows, columns=["node", "role", "config", "restart", "cleanup"])
