"""What flannel, kube-router and kube-proxy leave on a node, and their removal.

A fact and a pure plan (pyinfra's facts/operations): :func:`gather_node` reads a node's
interfaces, flannel's CNI files and IPAM leases and its iptables over SSH;
:func:`plan_leftovers` (pure, golden-tested) decides what to delete: ``flannel.1`` and
``cni0`` (flannel's VXLAN device holds UDP 8472, defect 4), flannel's CNI files and
leases (moved to the backup folder, not deleted), the KUBE-ROUTER chains (defect 9), the
kube-proxy chains when Cilium replaces kube-proxy (defect 2) and the FLANNEL chains and
"flanneld forward" rules. :func:`clean_node` carries out one node's plan, journaled
(step ``cleanup-leftovers``, with the original path of every moved file, so the rollback
can put them back).

Example:
    >>> cleanup_prefixes(False)
    ['KUBE-ROUTER', 'KUBE-NWPLCY', 'KUBE-POD-FW', 'FLANNEL']
    >>> left = NodeLeftovers("set-hog", "server", ["eth0", "flannel.1"], [], None, 0, "")
    >>> plan_leftovers(left, kpr=False, backup_dir="/var/backups/phase22", run_id="r1").interfaces
    ['flannel.1']
"""
from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from . import facts as facts_mod

if TYPE_CHECKING:
    from .journal import Journal
    from .nodes import Node
    from .params import Paths

__all__ = [
    "FLANNEL_INTERFACES", "NETPOL_PREFIXES", "FLANNEL_PREFIXES", "KUBE_PROXY_PREFIXES",
    "FLANNEL_COMMENTS", "STEP_CLEANUP", "cleanup_prefixes", "flannel_files", "NodeLeftovers",
    "LeftoverPlan", "backup_name", "plan_leftovers", "gather_node", "is_ip", "flannel_present",
    "leftovers_frame", "move_aside", "clean_node", "host_gw_routes", "FLANNEL_SUBNET_ENV",
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

STEP_CLEANUP = "cleanup-leftovers"
#: flannel's lease of the node's subnet (its FLANNEL_NETWORK is the cluster CIDR)
FLANNEL_SUBNET_ENV = "/run/flannel/subnet.env"


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


def flannel_files(paths: Paths) -> list[str]:
    """flannel's CNI config and net-conf written by k3s (moved away, not deleted)."""
    return [posixpath.join(paths.k3s_cni_dir, "10-flannel.conflist"),
            posixpath.join(paths.flannel_dir, "net-conf.json")]


# =========================================================================== the plan (pure)
@dataclass
class NodeLeftovers:
    """What flannel, kube-router and kube-proxy left on one node (a fact).

    Attributes:
        node, role; interfaces: every interface name; files: which candidate files
        exist; leases_dir: the IPAM leases folder when it exists, else None;
        routes: flannel host-gw routes (``<podCIDR> via <node>``, see :func:`host_gw_routes`);
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
    routes: list[str] = field(default_factory=list)


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
    routes: list[str] = field(default_factory=list)

    @property
    def chain_count(self) -> int:
        return sum(self.chains.values())

    @property
    def noop(self) -> bool:
        return not (self.interfaces or self.move or self.chain_count or sum(self.rules.values())
                    or self.flannel_rules or self.routes)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "role": self.role, "interfaces": list(self.interfaces),
                "move": [list(m) for m in self.move],
                "chains": {k: v for k, v in self.chains.items() if v},
                "rules": {k: v for k, v in self.rules.items() if v},
                "flannel_rules": self.flannel_rules, "leases": self.leases,
                **({"routes": list(self.routes)} if self.routes else {}), "noop": self.noop}


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
                        dict(summary.rules), flannel_rules, prefixes, left.leases, list(left.routes))


def _comment_rules(dump: str, comments: Sequence[str]) -> int:
    """Rules (in any chain) whose ``--comment`` carries one of ``comments``."""
    n = 0
    for line in dump.splitlines():
        line = line.strip()
        if not line.startswith("-A"):
            continue
        _chain, _target, comment = facts_mod.rule_chain_and_target(line)
        if comment and any(c in comment for c in comments):
            n += 1
    return n


# =========================================================================== the facts (SSH)
def gather_node(n: Node, paths: Paths) -> NodeLeftovers:
    """Read one node's leftovers (the fact :func:`plan_leftovers` plans from)."""
    ifaces = [i.name for i in n.interfaces()]
    files = [f for f in flannel_files(paths) if n.exists(f)]
    leases_dir = paths.cni_leases_dir if n.exists(paths.cni_leases_dir) else None
    leases = 0
    if leases_dir:
        r = n.run("ls -1A %s", leases_dir, sudo=True)
        leases = len([x for x in r.stdout.split() if is_ip(x)]) if r.ok else 0
    dump = n.run("iptables-save", sudo=True).check_output() + "\n"
    r6 = n.run("ip6tables-save", sudo=True)
    if r6.ok:  # a node without IPv6 tables is not an error
        dump += r6.stdout
    return NodeLeftovers(n.name, n.role, ifaces, files, leases_dir, leases, dump,
                         host_gw_routes(n.run("ip -j route show").stdout, n.run("cat %s", FLANNEL_SUBNET_ENV).stdout))


def host_gw_routes(routes_json: str, subnet_env: str) -> list[str]:
    """flannel host-gw's routes on a node: a gateway route into the cluster CIDR
    (``FLANNEL_NETWORK`` of ``/run/flannel/subnet.env``) on a device that is not flannel's,
    Cilium's or the pods' bridge. They belong to the LAN device, so they outlive flannel
    and stay until deleted (or a reboot). Pure.

    >>> env = "FLANNEL_NETWORK=10.42.0.0/16\\nFLANNEL_SUBNET=10.42.0.1/24\\n"
    >>> host_gw_routes('[{"dst": "10.42.1.0/24", "gateway": "10.0.0.4", "dev": "eth0"},'
    ...                ' {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"}]', env)
    ['10.42.1.0/24']
    """
    import json

    net = next((ln.split("=", 1)[1].strip() for ln in subnet_env.splitlines()
                if ln.startswith("FLANNEL_NETWORK=")), None)
    try:
        routes = json.loads(routes_json or "[]")
        cluster = ipaddress.ip_network(net, strict=False) if net else None
    except ValueError:
        return []
    out = []
    for r in routes if cluster is not None and isinstance(routes, list) else ():
        dst, dev = str(r.get("dst", "")), str(r.get("dev", ""))
        if not r.get("gateway") or dst == "default" or dev.startswith(("flannel", "cni", "cilium")):
            continue
        try:
            if ipaddress.ip_network(dst, strict=False).subnet_of(cluster):  # type: ignore[arg-type]
                out.append(dst)
        except (ValueError, TypeError):
            continue
    return sorted(out)


def is_ip(name: str) -> bool:
    """True for a name that is an IP address (a lease file).

    >>> is_ip("10.42.0.2"), is_ip("last_reserved_ip.0")
    (True, False)
    """
    # host-local IPAM keeps one file per leased address, plus lock/last_reserved_ip files
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def flannel_present(n: Node, paths: Paths) -> bool:
    """A flannel device (flannel.1, flannel-wg) or flannel's CNI config still present on
    the node (over SSH): host-gw has no device, only the config and routes."""
    if {"flannel.1", "flannel-wg", "flannel-v6.1"} & {i.name for i in n.interfaces()}:
        return True
    return n.exists(flannel_files(paths)[0])


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
        if p.routes:
            row["host-gw routes"] = ", ".join(p.routes)
        row["nothing to do"] = p.noop
        rows.append(row)
    return pd.DataFrame(rows)


# =========================================================================== the removal
def move_aside(n: Node, src: str, dst: str) -> str:
    """``mv src`` to ``dst`` (or ``dst.1``, ``dst.2`` ... when taken); the path it went to."""
    # The first copy of a file is the pre-run state the rollback restores: never overwrite it.
    target, i = dst, 1
    while n.exists(target):
        target, i = f"{dst}.{i}", i + 1
    n.run("mkdir -p %s", posixpath.dirname(target), sudo=True).check_output()
    n.run("mv %s %s", src, target, sudo=True).check_output()
    return target


def clean_node(n: Node, plan: LeftoverPlan, *, journal: Journal, backup_dir: str) -> str:
    """Carry out one node's :class:`LeftoverPlan`, journaled first; one line saying what
    was done. Interfaces and files already gone are skipped (idempotent)."""
    if plan.noop:
        return "nothing left to clean"
    entry = journal.record(STEP_CLEANUP, "remove flannel/kube-router/kube-proxy leftovers",
                           node=n.name, data=plan.to_dict())
    done: dict[str, Any] = {"interfaces": [], "moved": [], "chains_removed": {}, "lines": 0}
    try:
        for i in plan.interfaces:
            if n.delete_interface(i):
                done["interfaces"].append(i)
        for dst_net in plan.routes:
            if n.run("ip route del %s", dst_net, sudo=True).ok:
                done.setdefault("routes", []).append(dst_net)
        for src, dst in plan.move:
            if n.exists(src):
                done["moved"].append({"path": src, "backup": move_aside(n, src, dst)})
        if plan.chain_count or sum(plan.rules.values()) or plan.flannel_rules:
            rm = n.remove_chains(plan.prefixes, comments=FLANNEL_COMMENTS)
            done["chains_removed"] = {k: v for k, v in rm.before.chains.items() if v}
            done["lines"] = rm.removed_lines
    except Exception as e:
        journal.fail(entry, e)
        raise
    journal.complete(entry, result=done)
    routes = f"; deleted {len(done['routes'])} host-gw route(s)" if done.get("routes") else ""
    return (f"deleted {', '.join(done['interfaces']) or 'no interface'}{routes}; moved {len(done['moved'])} "
            f"path(s) to {backup_dir}; removed {sum(done['chains_removed'].values())} "
            f"chain(s) ({done['lines']} iptables lines)")
