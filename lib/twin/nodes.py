"""The twin's k3s nodes: files, services, interfaces, iptables, reboot, and a command set.

Each :class:`NodeModel` is one Ubuntu k3s node. Its filesystem lives under a directory
of the twin's state dir; every absolute path a command names (``/etc/rancher/k3s/...``)
maps into that directory and can never leave it. Interfaces, iptables and systemd units
are in memory. The model reproduces what matters for a Flannel -> Cilium migration:

- k3s reads ``/etc/rancher/k3s/config.yaml`` (and ``config.yaml.d/*.yaml``) each time its
  unit starts. ``flannel-backend``, ``disable-network-policy``, ``disable-kube-proxy`` and
  the other server options count only on servers: an agent logs
  ``Unknown flag --X found in config.yaml, skipping`` and inherits the server's settings.
- What runs (flannel, kube-router's network policy, the embedded kube-proxy) creates
  interfaces, files and chains. Disabling something does not remove what exists: it
  stays until deleted (``ip link delete``, ``iptables-restore``, ``rm``) or a reboot.
- A reboot clears interfaces (but ``lo`` and ``eth0``), all iptables rules, ``/tmp`` and
  ``/run``; then k3s starts again and re-creates what its configuration says.

Observers (the network/Cilium model) subscribe with :meth:`NodeModel.subscribe`; see
``EVENTS``. The command set ``exec`` understands is documented in ``lib/twin/README.md``
("Node commands").

Example:
    >>> nodes = build_nodes(specs, cluster, state_dir / "nodes", Clock())  # doctest: +SKIP
    >>> rc, out, err = await nodes["server-1"].exec("sudo cat /etc/rancher/k3s/config.yaml")  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import functools
import hashlib
import inspect
import ipaddress
import itertools
import json
import logging
import math
import os
import posixpath
import re
import secrets
import shutil
import stat as statmod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

import yaml

log = logging.getLogger("twin.nodes")

# Cluster seconds (scaled by the clock): how long things take on a real node.
SERVER_RESTART_SECONDS = 5.0    # systemctl restart k3s until the unit reports ready
AGENT_RESTART_SECONDS = 3.0
REBOOT_SECONDS = 20.0           # shutdown + firmware + boot until systemd starts k3s
RESYNC_SECONDS = 5.0            # flannel/kube-router/kube-proxy notice deleted rules
FAILED_START_RETRY_SECONDS = 5.0  # systemd RestartSec=5s of the k3s units
# From this many fixture pods on (generated scale fixtures), the nodes component defers
# writing the per-pod lease files until the lease directory is reached (see NodeModel).
DEFER_LEASES_FROM_PODS = 10_000

EVENTS = ("k3s-started", "k3s-stopped", "rebooting", "rebooted", "interfaces-changed",
          "iptables-changed", "file-changed")

HOME = "/home/ubuntu"
CONFIG = "/etc/rancher/k3s/config.yaml"
CONFIG_DIR = "/etc/rancher/k3s/config.yaml.d"
TOKEN_FILE = "/var/lib/rancher/k3s/server/token"
FLANNEL_CONFLIST = "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist"
FLANNEL_NETCONF = "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"
CNI_LEASES = "/var/lib/cni/networks/cbr0"
K3S_CNI_CONF_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
K3S_CNI_BIN_DIR = "/var/lib/rancher/k3s/data/current/bin"
FLANNEL_VXLAN_PORT = 8472
FLANNEL_BACKENDS = ("vxlan", "host-gw", "wireguard-native", "none")
IPTABLES_VERSION = "v1.8.7"

SHELL_REFUSED = ("the twin does not run a shell: pipes and redirections are not supported; "
                 "filter in Python")

# Flags `k3s agent` accepts in config.yaml (pkg/cli/cmds/agent.go). Anything else in an
# agent's config is skipped with "Unknown flag ... found in config.yaml, skipping".
AGENT_KEYS = frozenset("""
config debug v vmodule log alsologtostderr token token-file server data-dir node-name
with-node-id node-label node-taint image-credential-provider-bin-dir
image-credential-provider-config selinux lb-server-port protect-kernel-defaults snapshotter
private-registry system-default-registry container-runtime-endpoint pause-image
default-runtime disable-default-registry-endpoint nonroot-devices node-ip node-external-ip
node-internal-dns node-external-dns resolv-conf flannel-iface flannel-conf flannel-cni-conf
kubelet-arg kube-proxy-arg rootless prefer-bundled-bin docker vpn-auth vpn-auth-file
airgap-extra-registry disable-apiserver-lb enable-pprof
""".split())
# Server-only options; the network ones are what the Phase 22 procedure writes.
SERVER_ONLY_KEYS = frozenset("""
flannel-backend flannel-ipv6-masq flannel-external-ip egress-selector-mode
servicelb-namespace disable-network-policy disable-kube-proxy disable-cloud-controller
disable-helm-controller disable-scheduler disable cluster-cidr service-cidr
service-node-port-range cluster-dns cluster-domain cluster-init cluster-reset
cluster-reset-restore-path tls-san tls-san-security write-kubeconfig write-kubeconfig-mode
write-kubeconfig-group bind-address advertise-address advertise-port https-listen-port
supervisor-port apiserver-port apiserver-bind-address kube-apiserver-arg
kube-controller-manager-arg kube-scheduler-arg kube-cloud-controller-manager-arg
datastore-endpoint datastore-cafile datastore-certfile datastore-keyfile agent-token
agent-token-file secrets-encryption embedded-registry default-local-storage-path
helm-job-image kine-tls supervisor-metrics
""".split())
SERVER_KEYS = AGENT_KEYS | SERVER_ONLY_KEYS

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
BUILTIN_TARGETS = frozenset("""
ACCEPT DROP REJECT RETURN MASQUERADE SNAT DNAT REDIRECT MARK CONNMARK LOG NFLOG CT NOTRACK
TCPMSS TPROXY QUEUE NFQUEUE CHECKSUM TRACE SET AUDIT CLASSIFY DSCP TOS TTL HL
""".split())


class ExecResult(NamedTuple):
    """What a command returns: unpacks as ``rc, stdout, stderr`` (bytes)."""

    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Interface:
    """One network interface as ``ip link`` shows it."""

    name: str
    index: int
    kind: str = "ether"           # loopback, ether, vxlan, bridge, veth, dummy
    mtu: int = 1500
    mac: str = "00:00:00:00:00:00"
    master: str | None = None     # bridge a veth is enslaved to
    peer: str | None = None       # shown as name@peer (veth pairs)
    netns: str | None = None      # link-netns of a pod veth
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"vxlan_port": 8472}

    def link_line(self) -> str:
        """The line ``ip -o link show`` prints for this interface."""
        label = f"{self.name}@{self.peer}" if self.peer else self.name
        if self.kind == "loopback":
            flags, qdisc, state, qlen = "LOOPBACK,UP,LOWER_UP", "noqueue", "UNKNOWN", " qlen 1000"
            link = "link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00"
        else:
            flags = "BROADCAST,MULTICAST,UP,LOWER_UP"
            qdisc = "fq_codel" if self.kind == "ether" else "noqueue"
            state = "UNKNOWN" if self.kind in ("vxlan", "dummy") else "UP"
            qlen = " qlen 1000" if self.kind in ("ether", "bridge") else " "
            link = f"link/ether {self.mac} brd ff:ff:ff:ff:ff:ff"
            if self.netns:
                link += f" link-netns {self.netns}"
        master = f" master {self.master}" if self.master else ""
        return (f"{self.index}: {label}: <{flags}> mtu {self.mtu} qdisc {qdisc}{master} "
                f"state {state} mode DEFAULT group default{qlen}\\    {link}")

    def as_json(self) -> dict[str, Any]:
        """The object ``ip -j link show`` prints."""
        d: dict[str, Any] = {"ifindex": self.index, "ifname": self.name,
                             "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
                             "mtu": self.mtu, "operstate": "UP", "link_type": "ether",
                             "address": self.mac, "broadcast": "ff:ff:ff:ff:ff:ff"}
        if self.kind == "loopback":
            d.update(flags=["LOOPBACK", "UP", "LOWER_UP"], operstate="UNKNOWN",
                     link_type="loopback", broadcast="00:00:00:00:00:00")
        if self.peer:
            d["link"] = self.peer
        if self.master:
            d["master"] = self.master
        return d


@dataclass
class KubeService:
    """One Service port the embedded kube-proxy programs (``ns/name:port``)."""

    namespace: str
    name: str
    port_name: str
    cluster_ip: str
    port: int
    endpoints: list[str] = field(default_factory=list)   # "ip:port"
    protocol: str = "TCP"
    node_port: int | None = None
    lb_ips: list[str] = field(default_factory=list)

    @property
    def port_id(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name}" if self.port_name else \
            f"{self.namespace}/{self.name}"


@functools.lru_cache(maxsize=1 << 17)
def _proto_hash(*parts: str) -> str:
    # kube-proxy's portProtoHash/servicePortEndpointChainName: base32(sha256)[:16].
    # Cached: every node programs the same Services.
    return base64.b32encode(hashlib.sha256("".join(parts).encode()).digest()).decode()[:16]


_Parsed = tuple[str, str, tuple[str, ...], str]   # (table, chain, jump targets, rule)


def _service_rules(s: KubeService, cidr: str) -> tuple[_Parsed, ...]:
    """The rules kube-proxy writes for one Service port, in order, parsed.

    Every node writes the same text for a Service, so the result is cached by value
    (and the nodes share the strings).
    """
    return _service_rules_cached(s.namespace, s.name, s.port_name, s.cluster_ip, s.port,
                                 tuple(s.endpoints), s.protocol, s.node_port, tuple(s.lb_ips), cidr)


@functools.lru_cache(maxsize=1 << 15)
def _service_rules_cached(namespace: str, name: str, port_name: str, cluster_ip: str, port: int,
                          endpoints: tuple[str, ...], protocol: str, node_port: int | None,
                          lb_ips: tuple[str, ...], cidr: str) -> tuple[_Parsed, ...]:
    s = KubeService(namespace, name, port_name, cluster_ip, port, list(endpoints), protocol,
                    node_port, list(lb_ips))
    out: list[tuple[str, str]] = []
    proto = s.protocol.lower()
    if not s.endpoints:
        # No endpoint: kube-proxy rejects in the filter table, no KUBE-SVC chain.
        out.append(("filter", f"-A KUBE-SERVICES -d {s.cluster_ip}/32 -p {proto} -m comment "
                              f'--comment "{s.port_id} has no endpoints" -m {proto} '
                              f"--dport {s.port} -j REJECT --reject-with icmp-port-unreachable"))
        return tuple((table, *Iptables.parse_rule(rule), rule) for table, rule in out)
    svc = "KUBE-SVC-" + _proto_hash(s.port_id, proto)
    ext = "KUBE-EXT-" + _proto_hash(s.port_id, proto)
    cm = f'-m comment --comment "{s.port_id} cluster IP"'
    out.append(("nat", f"-A KUBE-SERVICES -d {s.cluster_ip}/32 -p {proto} {cm} -m {proto} "
                       f"--dport {s.port} -j {svc}"))
    out.append(("nat", f"-A {svc} ! -s {cidr} -d {s.cluster_ip}/32 -p {proto} {cm} -m {proto} "
                       f"--dport {s.port} -j KUBE-MARK-MASQ"))
    n = len(s.endpoints)
    for i, ep in enumerate(s.endpoints):
        sep = "KUBE-SEP-" + _proto_hash(s.port_id, proto, ep)
        prob = "" if i == n - 1 else f" -m statistic --mode random --probability {1 / (n - i):.10f}"
        out.append(("nat", f'-A {svc} -m comment --comment "{s.port_id} -> {ep}"{prob} -j {sep}'))
        out.append(("nat", f"-A {sep} -s {ep.rsplit(':', 1)[0]}/32 -m comment --comment "
                           f'"{s.port_id}" -j KUBE-MARK-MASQ'))
        out.append(("nat", f'-A {sep} -p {proto} -m comment --comment "{s.port_id}" -m {proto} '
                           f"-j DNAT --to-destination {ep}"))
    if s.node_port or s.lb_ips:
        out.append(("nat", f'-A {ext} -m comment --comment "masquerade traffic for '
                           f'{s.port_id} external destinations" -j KUBE-MARK-MASQ'))
        out.append(("nat", f"-A {ext} -j {svc}"))
    if s.node_port:
        out.append(("nat", f'-A KUBE-NODEPORTS -p {proto} -m comment --comment "{s.port_id}" '
                           f"-m {proto} --dport {s.node_port} -j {ext}"))
    for lb in s.lb_ips:
        out.append(("nat", f"-A KUBE-SERVICES -d {lb}/32 -p {proto} -m comment --comment "
                           f'"{s.port_id} loadbalancer IP" -m {proto} --dport {s.port} -j {ext}'))
    return tuple((table, *Iptables.parse_rule(rule), rule) for table, rule in out)


# --------------------------------------------------------------------------- iptables
class IptablesError(ValueError):
    """An ``iptables-restore`` input the real tool rejects (nothing is applied)."""


class _Table:
    """One table: chains with their policies, and rules indexed by chain and by text.

    Rules are kept three ways, all updated by the methods below (nothing else may edit
    them): in insertion order (what :meth:`Iptables.rules` returns), grouped by chain
    (what ``iptables-save`` renders, so rendering is linear), and as a count per text
    (so "is this rule present" is O(1); a restore may load the same rule twice).
    """

    __slots__ = ("chains", "_order", "_by_chain", "_count")

    def __init__(self, chains: dict[str, str] | None = None, rules: Iterable[str] = ()) -> None:
        self.chains: dict[str, str] = dict(chains or {})   # name -> policy ("-" = user chain)
        self._order: list[tuple[str, str]] = []            # (chain, "-A CHAIN ...") in order
        self._by_chain: dict[str, list[str]] = {}
        self._count: dict[str, int] = {}
        for r in rules:
            self.append(r)

    @staticmethod
    def chain_of(rule: str) -> str:
        return rule.split(None, 2)[1]

    @property
    def rules(self) -> list[str]:
        """Every rule, in insertion order (a copy)."""
        return [r for _, r in self._order]

    def __contains__(self, rule: str) -> bool:
        return rule in self._count

    def __len__(self) -> int:
        return len(self._order)

    def chain_rules(self, chain: str) -> list[str]:
        """The rules of one chain, in order (a copy)."""
        return list(self._by_chain.get(chain, ()))

    def copy(self) -> "_Table":
        t = _Table(self.chains)
        t._order = list(self._order)
        t._by_chain = {c: list(rs) for c, rs in self._by_chain.items()}
        t._count = dict(self._count)
        return t

    def append(self, rule: str, chain: str | None = None) -> None:
        chain = chain or self.chain_of(rule)
        self._order.append((chain, rule))
        self._by_chain.setdefault(chain, []).append(rule)
        self._count[rule] = self._count.get(rule, 0) + 1

    def insert_first(self, rule: str, chain: str | None = None) -> None:
        """Insert at the head of its chain (just before the chain's first rule)."""
        chain = chain or self.chain_of(rule)
        own = self._by_chain.get(chain)
        if not own:
            self.append(rule, chain)
            return
        # The first occurrence of the chain's first rule is that rule (a rule's text
        # names its chain), so list.index finds the position in C, without parsing.
        self._order.insert(self._order.index((chain, own[0])), (chain, rule))
        own.insert(0, rule)
        self._count[rule] = self._count.get(rule, 0) + 1

    def remove_if(self, drop: Callable[[str, str], bool]) -> int:
        """Remove every rule for which ``drop(chain, rule)`` is true; returns how many."""
        keep = [cr for cr in self._order if not drop(*cr)]
        removed = len(self._order) - len(keep)
        if removed:
            self._reindex(keep)
        return removed

    def remove_chains(self, chains: set[str] | frozenset[str]) -> int:
        """Remove the rules of these chains (declared or not); returns how many."""
        if not any(c in self._by_chain for c in chains):
            return 0
        return self.remove_if(lambda c, _r: c in chains)

    def clear_rules(self) -> None:
        self._reindex([])

    def _reindex(self, order: list[tuple[str, str]]) -> None:
        self._order = order
        self._by_chain = {}
        self._count = {}
        for c, r in order:
            self._by_chain.setdefault(c, []).append(r)
            self._count[r] = self._count.get(r, 0) + 1

    def check(self) -> list[str]:
        """Inconsistencies between the three views of the rules (empty when sound)."""
        problems: list[str] = []
        counted: dict[str, int] = {}
        for _, r in self._order:
            counted[r] = counted.get(r, 0) + 1
        if counted != self._count:
            problems.append("count index differs from the rules")
        grouped: dict[str, list[str]] = {}
        for c, r in self._order:
            grouped.setdefault(c, []).append(r)
            if self.chain_of(r) != c:
                problems.append(f"rule filed under {c}: {r}")
        if {c: rs for c, rs in self._by_chain.items() if rs} != grouped:
            problems.append("chain index differs from the rules")
        return problems


class Iptables:
    """The rules of one address family, rendered and parsed as iptables-save text.

    Work can be deferred with :meth:`defer` (the node defers kube-proxy's service chains,
    which cost O(cluster endpoints) per node): it runs before anything else reads or
    changes the rules, so what any caller sees is the same as if it had run at once.
    """

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self._tables: dict[str, _Table] = {}
        self._pending: Callable[[], None] | None = None

    # -------------------------------------------------------------- deferred work
    @property
    def tables(self) -> dict[str, _Table]:
        """The tables by name (pending work done first)."""
        self.settle()
        return self._tables

    @property
    def pending(self) -> bool:
        """Whether deferred work waits to run."""
        return self._pending is not None

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` before the next read or change of the rules.

        A pending function is replaced: callers defer only work that the new function
        makes moot (a full kube-proxy sync rewrites everything the previous one wrote).
        """
        self._pending = fn

    def discard_pending(self) -> None:
        """Forget deferred work (see :meth:`defer`)."""
        self._pending = None

    def settle(self) -> None:
        """Run deferred work now (no-op when there is none)."""
        fn = self._pending
        if fn is not None:
            self._pending = None
            fn()

    def table_names(self) -> list[str]:
        """Names of the loaded tables, without running deferred work.

        Deferred work only fills tables that exist already (kube-proxy's nat and filter
        chains are created eagerly), so the names are the same either way.
        """
        return list(self._tables)

    # -------------------------------------------------------------- changes
    def reset(self) -> None:
        """A booted kernel: no table loaded, no rule."""
        self._pending = None
        self._tables.clear()

    def _table(self, name: str) -> _Table:
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = _Table({c: "ACCEPT" for c in BUILTIN_CHAINS[name]})
        return t

    def ensure_chain(self, table: str, chain: str) -> bool:
        self.settle()
        t = self._table(table)
        if chain in t.chains:
            return False
        t.chains[chain] = "-"
        return True

    @staticmethod
    def parse_rule(rule: str) -> tuple[str, tuple[str, ...]]:
        """The chain of ``-A CHAIN ...`` and the user chains it jumps to (-j/-g)."""
        parts = rule.split()
        targets = tuple(parts[parts.index(opt) + 1] for opt in ("-j", "-g")
                        if opt in parts and parts[parts.index(opt) + 1] not in BUILTIN_TARGETS)
        return parts[1], targets

    def ensure_rule(self, table: str, rule: str, *, first: bool = False) -> bool:
        """Add ``-A CHAIN ...`` unless present; ``first`` inserts at the chain's head."""
        self.settle()
        chain, targets = self.parse_rule(rule)
        return self._ensure_parsed(table, chain, targets, rule, first)

    def _ensure_parsed(self, table: str, chain: str, targets: tuple[str, ...], rule: str,
                       first: bool = False) -> bool:
        # Callers have settled; ``chain``/``targets`` come from parse_rule(rule).
        t = self._table(table)
        chains = t.chains
        if chain not in chains:
            chains[chain] = "-"
        # A jump needs its target chain, as with the real iptables.
        for target in targets:
            if target not in chains:
                chains[target] = "-"
        if rule in t._count:
            return False
        if first:
            t.insert_first(rule, chain)
        else:
            t.append(rule, chain)
        return True

    def delete_chain(self, table: str, chain: str) -> None:
        self.settle()
        t = self._table(table)
        jump = f"-j {chain}"
        t.remove_if(lambda c, r: c == chain or jump in r)
        t.chains.pop(chain, None)

    # -------------------------------------------------------------- reads
    def chains(self, table: str | None = None) -> list[str]:
        self.settle()
        names = (self._tables.get(table, _Table()).chains if table else
                 [c for t in self._tables.values() for c in t.chains])
        return list(names)

    def rules(self, table: str | None = None) -> list[str]:
        self.settle()
        if table:
            return self._tables.get(table, _Table()).rules
        return [r for t in self._tables.values() for r in t.rules]

    def check(self) -> list[str]:
        """Index inconsistencies of every table (empty when sound; for tests)."""
        self.settle()
        return [f"{name}: {p}" for name, t in self._tables.items() for p in t.check()]

    def save(self, table: str | None = None, counters: bool = False) -> str:
        """Text as ``iptables-save`` prints it (counters are always zero; ``-c`` adds them
        to each rule)."""
        self.settle()
        tool = "ip6tables-save" if self.family == 6 else "iptables-save"
        now = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
        out: list[str] = []
        for name in ("raw", "mangle", "nat", "filter", "security"):
            if name not in self._tables or (table and name != table):
                continue
            t = self._tables[name]
            out.append(f"# Generated by {tool} {IPTABLES_VERSION} on {now}")
            out.append(f"*{name}")
            builtin = [c for c in BUILTIN_CHAINS[name] if c in t.chains]
            user = sorted(c for c in t.chains if c not in BUILTIN_CHAINS[name])
            out += [f":{c} {t.chains[c]} [0:0]" for c in builtin + user]
            # iptables-save lists each chain's rules together, chains in listing order.
            for c in builtin + user:
                own = t._by_chain.get(c)
                if own:
                    out += ["[0:0] " + r for r in own] if counters else own
            out.append("COMMIT")
            out.append(f"# Completed on {now}")
        return "\n".join(out) + ("\n" if out else "")

    def restore(self, text: str, *, noflush: bool = False, table: str | None = None) -> list[str]:
        """Apply ``iptables-restore`` input atomically; returns the tables it touched.

        Without ``noflush`` each table named in the input is replaced entirely, as the
        real tool does; tables not named are untouched.

        Raises:
            IptablesError: with the real tool's message and the failing line number.
        """
        self.settle()
        staged: dict[str, _Table] = {}
        current: str | None = None
        tool = "ip6tables-restore" if self.family == 6 else "iptables-restore"
        lines = text.splitlines()
        for no, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and "] " in line:   # iptables-save -c counters
                line = line.split("] ", 1)[1].strip()
            if line.startswith("*"):
                name = line[1:].strip()
                if name not in BUILTIN_CHAINS:
                    raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): table '{name}' "
                                        f"does not exist\nError occurred at line: {no}")
                if current is not None:
                    raise IptablesError(f"{tool}: COMMIT expected at line {no}")
                current = name
                if table and name != table:
                    current = "#skip"
                    continue
                if noflush and name in self._tables:
                    staged[name] = self._tables[name].copy()
                else:
                    staged[name] = _Table({c: "ACCEPT" for c in BUILTIN_CHAINS[name]})
                continue
            if current is None:
                raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): no command "
                                    f"specified\nError occurred at line: {no}")
            if line == "COMMIT":
                if current != "#skip":
                    self._check_targets(staged[current], tool, lines)
                current = None
                continue
            if current == "#skip":
                continue
            t = staged[current]
            if line.startswith(":"):
                parts = line[1:].split()
                chain = parts[0]
                policy = parts[1] if len(parts) > 1 else "-"
                if chain in BUILTIN_CHAINS[current]:
                    t.chains[chain] = policy
                else:
                    t.chains[chain] = "-"
                    if noflush:   # a declared chain is flushed in --noflush mode
                        t.remove_chains({chain})
                continue
            parts = line.split()
            if parts[0] in ("-A", "-I", "--append", "--insert") and len(parts) > 1:
                chain = parts[1]
                if chain not in t.chains:
                    raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): Chain '{chain}' "
                                        f"does not exist\nError occurred at line: {no}\n"
                                        f"Try `{tool} -h' or '{tool} --help' for more information.")
                rule = "-A " + " ".join(parts[1:])
                if parts[0] in ("-I", "--insert"):
                    t.insert_first(rule, chain)
                else:
                    t.append(rule, chain)
                continue
            if parts[0] in ("-N", "--new-chain") and len(parts) > 1:
                t.chains.setdefault(parts[1], "-")
                continue
            if parts[0] in ("-X", "--delete-chain") and len(parts) > 1:
                t.chains.pop(parts[1], None)
                continue
            if parts[0] in ("-F", "--flush"):
                if len(parts) > 1:
                    t.remove_chains({parts[1]})
                else:
                    t.clear_rules()
                continue
            raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): unknown option "
                                f"\"{parts[0]}\"\nError occurred at line: {no}")
        if current is not None:
            raise IptablesError(f"{tool}: COMMIT expected at line {len(lines) + 1}")
        self._tables.update(staged)
        return list(staged)

    @staticmethod
    def _check_targets(t: _Table, tool: str, lines: list[str]) -> None:
        for _chain, rule in t._order:
            parts = rule.split()
            for opt in ("-j", "-g", "--jump", "--goto"):
                if opt in parts:
                    target = parts[parts.index(opt) + 1]
                    if target not in BUILTIN_TARGETS and target not in t.chains:
                        no = next((i for i, l in enumerate(lines, 1) if l.strip() == rule), 0)
                        raise IptablesError(
                            f"{tool} {IPTABLES_VERSION} (nf_tables): Couldn't load target "
                            f"`{target}':No such file or directory\n\nError occurred at line: {no}\n"
                            f"Try `{tool} -h' or '{tool} --help' for more information.")


# ------------------------------------------------------------------ shell-free parsing
class ShellRefused(ValueError):
    """A command line that needs a shell (pipes, redirections, substitution)."""


@dataclass
class _Word:
    text: str
    pattern: str      # glob pattern with quoted metacharacters escaped
    glob: bool        # has an unquoted * ? [


def tokenize(line: str) -> list[_Word]:
    """Split a command line like bash would, refusing anything that needs a shell.

    Quotes and backslashes work as in bash. Unquoted ``| & ; < > ( )``, newlines,
    backticks and ``$`` expansions raise :class:`ShellRefused`. Unquoted ``* ? [`` mark
    the word for glob expansion (done by the node against its own files).
    """
    words: list[_Word] = []
    text: list[str] = []
    pat: list[str] = []
    glob = False
    in_word = False
    quote: str | None = None
    i = 0

    def lit(c: str) -> None:
        text.append(c)
        pat.append(f"[{c}]" if c in "*?[" else c)

    while i < len(line):
        c = line[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                lit(c)
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == "\\" and i + 1 < len(line) and line[i + 1] in '$`"\\\n':
                i += 1
                lit(line[i])
            elif c in "`$":
                raise ShellRefused("the twin does not run a shell: variables and command "
                                   "substitution are not supported; build the value in Python")
            else:
                lit(c)
        else:
            if c in " \t":
                if in_word:
                    words.append(_Word("".join(text), "".join(pat), glob))
                    text, pat, glob, in_word = [], [], False, False
                i += 1
                continue
            if c == "#" and not in_word:
                break
            if c in "|&;<>()\n":
                raise ShellRefused(SHELL_REFUSED)
            if c == "`" or (c == "$" and i + 1 < len(line) and
                            (line[i + 1] in "({_?@*#!$-" or line[i + 1].isalnum())):
                raise ShellRefused("the twin does not run a shell: variables and command "
                                   "substitution are not supported; build the value in Python")
            in_word = True
            if c == "'":
                quote = "'"
            elif c == '"':
                quote = '"'
            elif c == "\\":
                if i + 1 < len(line):
                    i += 1
                    lit(line[i])
            elif c in "*?[":
                text.append(c)
                pat.append(c)
                glob = True
            elif c == "~" and not text and (i + 1 == len(line) or line[i + 1] in "/ \t"):
                for ch in HOME:
                    lit(ch)
            else:
                lit(c)
        in_word = in_word or quote is not None
        i += 1
    if quote:
        raise ShellRefused(f"bash: -c: line 1: unexpected EOF while looking for matching `{quote}'")
    if in_word:
        words.append(_Word("".join(text), "".join(pat), glob))
    return words


# ------------------------------------------------------------------------ the node
@dataclass
class _Ctx:
    root: bool
    stdin: bytes | Callable[[], Awaitable[bytes]]
    cwd: str = HOME

    async def read_stdin(self) -> bytes:
        if callable(self.stdin):
            self.stdin = await self.stdin()
        return self.stdin


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "t", "yes", "y", "on")
    return bool(v)


def _mac(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (bytes([(h[0] & 0xFC) | 0x02]) + h[1:6]))


def _os_release(image: str) -> str:
    version = (image.split() + ["", "22.04"])[1] if image.lower().startswith("ubuntu") else "22.04"
    vid = ".".join(version.split(".")[:2]) or "22.04"
    codename = {"20.04": "focal", "22.04": "jammy", "24.04": "noble"}.get(vid, "jammy")
    return (f'PRETTY_NAME="{image}"\nNAME="Ubuntu"\nVERSION_ID="{vid}"\n'
            f'VERSION="{version} LTS ({codename.title()})"\nVERSION_CODENAME={codename}\n'
            f"ID=ubuntu\nID_LIKE=debian\nHOME_URL=\"https://www.ubuntu.com/\"\n"
            f"UBUNTU_CODENAME={codename}\n")


def _chmod_mode(spec: str, current: int, is_dir: bool) -> int | None:
    """The new permission bits for ``chmod SPEC`` (octal, or ``[ugoa]*[+-=][rwxX]*,...``)."""
    if spec.isdigit():
        try:
            return int(spec, 8) & 0o7777
        except ValueError:
            return None
    mode = statmod.S_IMODE(current)
    for clause in spec.split(","):
        who = ""
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            who += clause[i]
            i += 1
        if i >= len(clause) or clause[i] not in "+-=":
            return None
        op, perms = clause[i], clause[i + 1:]
        if any(c not in "rwxX" for c in perms):
            return None
        who = who or "a"
        bits = 0
        for w in ("u", "g", "o"):
            if w in who or "a" in who:
                shift = {"u": 6, "g": 3, "o": 0}[w]
                for c in perms:
                    if c == "r":
                        bits |= 4 << shift
                    elif c == "w":
                        bits |= 2 << shift
                    elif c == "x" or (c == "X" and (is_dir or current & 0o111)):
                        bits |= 1 << shift
        mask = sum(7 << {"u": 6, "g": 3, "o": 0}[w] for w in "ugo" if w in who or "a" in who)
        mode = mode | bits if op == "+" else mode & ~bits if op == "-" else (mode & ~mask) | bits
    return mode


def _second_host(cidr: str) -> str:
    # hosts()[1] without listing a /16's 65k hosts: coredns's address on the server.
    net = ipaddress.ip_network(cidr, strict=False)
    return str(next(itertools.islice(net.hosts(), 1, None)))


@functools.lru_cache(maxsize=256)
def _parse_yaml_cached(text: str) -> Any:
    return yaml.safe_load(text)


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a config file, cached by text (k3s reads its config several
    times per start, and the agents' configs are nearly the same); a deep copy, so
    callers may change it. A parse error raises each time, as it is not cached."""
    return copy.deepcopy(_parse_yaml_cached(text))


def new_join_token() -> str:
    """A k3s join token: ``K10<ca hash>::server:<password>`` (a secret, never log it)."""
    return f"K10{secrets.token_hex(32)}::server:{secrets.token_hex(16)}"


class NodeModel:
    """One k3s node: filesystem root, systemd units, interfaces, iptables, commands.

    Args:
        spec: the fixture's NodeSpec (name, role, ip, pod_cidr, kernel, os_image, ...).
        cluster: the fixture's cluster dict (k3s_version, cluster_cidr, service_cidr,
            server_url).
        root: directory holding the node's ``/``.
        peers: every node of the cluster by name (this one included); agents read the
            server's settings there, as they fetch them from the server.
        clock: the twin's clock; every delay goes through it.
        join_token: the cluster's join token (agents' config, server's token file).
        pod_ips: the (pod IP, sandbox id) holding flannel leases; None for a few.
        defer_leases: write the lease files when the lease directory (or a directory
            above it) is first reached through the node, not now. Through the node
            nothing differs; on the host disk the files appear late (used at scale).

    Attributes:
        on_server_restart: called when this server's k3s goes down (stop, restart,
            reboot) with the cluster seconds it expects to stay down (``math.inf`` for a
            stop). May return an awaitable, which is scheduled, not awaited.
        on_server_started: called (no argument) when this server's k3s is up again.
            The nodes component uses both to keep the API server down in between.
    """

    def __init__(self, spec: Any, cluster: dict, root: Path, peers: dict[str, "NodeModel"],
                 clock: Any, *, join_token: str | None = None,
                 pod_ips: list[tuple[str, str]] | None = None, defer_leases: bool = False) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.role: str = spec.role
        self.cluster = dict(cluster)
        self.root = Path(root)
        self.peers = peers
        self.clock = clock
        self.join_token = join_token
        self._seed_pods = pod_ips
        self._defer_leases = defer_leases
        self.on_server_restart: Callable[[float], Any] | None = None
        self.on_server_started: Callable[[], Any] | None = None
        self.up = True
        self.boot_count = 1
        self.unit = "k3s" if self.role == "server" else "k3s-agent"
        self.unit_state = "inactive"            # active | inactive | activating | failed
        self.running: dict[str, Any] = {}       # settings of the running k3s ({} if stopped)
        self.journal_lines: list[str] = []
        self.interfaces: dict[str, Interface] = {}
        self.iptables = Iptables(4)
        self.ip6tables = Iptables(6)
        self.kube_services: list[KubeService] = self._default_services()
        self._ifindex = 0
        self._subscribers: list[Callable[["NodeModel", str, dict], None]] = []
        self._tasks: set[asyncio.Task] = set()
        self._pid = 1000 + secrets.randbelow(8000)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_real = os.path.realpath(self.root)
        # Lease files not written yet, (pod IP, sandbox id); see _seed_files. The list is
        # kept outside the node's filesystem, where no node command can see it.
        self._pending_leases: list[tuple[str, str]] | None = None
        self._leases_sidecar = self.root.parent / f".{self.root.name}.pending-leases.json"
        if not (self.root / "etc" / "hostname").exists():
            self._seed_files()
        else:
            if self._leases_sidecar.exists():
                self._pending_leases = [tuple(x) for x in json.loads(self._leases_sidecar.read_text())]
            if self.join_token is None:
                self.join_token = self._token_from_files()
        self._boot_interfaces()
        # A node of the fixture is running when the twin starts: k3s is up.
        err = self._k3s_start_sync(emit=False)
        if err:
            log.warning("%s: k3s did not start: %s", self.name, err)
        elif "cni0" in self.interfaces:
            # The pods holding the seeded leases have their veth on cni0.
            for ip in self._initial_lease_ips():
                h = hashlib.sha256(f"{self.name}/{ip}".encode()).hexdigest()
                self._add_iface(f"veth{h[:8]}", "veth", self.interfaces["cni0"].mtu, master="cni0",
                                peer="if2", netns=f"cni-{h[8:16]}-{h[16:20]}-{h[20:24]}-{h[24:28]}-{h[28:40]}")

    # ----------------------------------------------------------------- observers
    def subscribe(self, fn: Callable[["NodeModel", str, dict], None]) -> Callable[[], None]:
        """Call ``fn(node, event, info)`` synchronously on each event (see ``EVENTS``).

        Returns a function that unsubscribes.
        """
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def _emit(self, event: str, **info: Any) -> None:
        for fn in list(self._subscribers):
            try:
                fn(self, event, info)
            except Exception:  # an observer's bug must not break the node
                log.exception("%s: observer failed on %s", self.name, event)

    # --------------------------------------------------------------- filesystem
    def _norm(self, path: str, cwd: str = "/") -> str:
        p = path if path.startswith("/") else posixpath.join(cwd, path)
        p = posixpath.normpath("/" + p.lstrip("/"))
        return "/" if p in ("/", "//") else p

    def host_path(self, path: str, cwd: str = "/") -> Path:
        """The host path of a node path; ``..`` stops at the node's ``/`` and a symlink
        that leads outside the root is refused (PermissionError)."""
        p = self._norm(path, cwd)
        if self._pending_leases is not None and (
                p == "/" or p == CNI_LEASES or CNI_LEASES.startswith(p + "/")
                or p.startswith(CNI_LEASES + "/")):
            # The lease directory, or a directory above it (a listing, find, rm -r): every
            # file access passes here, so the deferred lease files exist before anyone looks.
            self._write_pending_leases()
        host = os.path.join(self._root_real, p.lstrip("/")) if p != "/" else self._root_real
        real = os.path.realpath(host)
        if real != self._root_real and not real.startswith(self._root_real + os.sep):
            raise PermissionError(f"{path}: outside the node's filesystem")
        return Path(host)

    def exists(self, path: str) -> bool:
        try:
            return self.host_path(path).exists()
        except PermissionError:
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return self.host_path(path).is_dir()
        except PermissionError:
            return False

    def read(self, path: str) -> bytes:
        """File content (as root). Raises FileNotFoundError/IsADirectoryError."""
        return self.host_path(path).read_bytes()

    def read_text(self, path: str) -> str:
        return self.read(path).decode()

    def write(self, path: str, data: bytes | str, mode: int | None = None, *,
              append: bool = False) -> None:
        """Write a file as root, creating parent directories; emits ``file-changed``."""
        host = self.host_path(path)
        host.parent.mkdir(parents=True, exist_ok=True)
        new = not host.exists()
        raw = data.encode() if isinstance(data, str) else data
        with open(host, "ab" if append else "wb") as f:
            f.write(raw)
        if mode is not None or new:
            os.chmod(host, mode if mode is not None else 0o644)
        self._emit("file-changed", path=self._norm(path), op="write")

    def remove(self, path: str) -> None:
        """Remove a file or a directory tree (as root); emits ``file-changed``."""
        host = self.host_path(path)
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        else:
            host.unlink()
        self._emit("file-changed", path=self._norm(path), op="remove")

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.host_path(path)))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        host = self.host_path(path)
        if not host.is_dir():
            host.mkdir(parents=True, exist_ok=True)
            os.chmod(host, mode)

    def owner(self, path: str) -> str:
        """``ubuntu`` for the home directory and /tmp, ``root`` elsewhere (the model)."""
        p = self._norm(path)
        if p == HOME or p.startswith(HOME + "/") or p.startswith("/tmp/"):
            return "ubuntu"
        return "root"

    def _can_traverse(self, path: str, root: bool) -> bool:
        """Whether every ancestor directory of ``path`` is searchable by the user."""
        if root:
            return True
        p = self._norm(path)
        cur = "/"
        for part in p.strip("/").split("/")[:-1] if p != "/" else []:
            cur = posixpath.join(cur, part)
            h = self.host_path(cur)
            if h.is_dir() and self.owner(cur) != "ubuntu" and not h.stat().st_mode & 0o001:
                return False
        return True

    def _can_read(self, path: str, root: bool) -> bool:
        """Read permission (a missing file counts as readable: the caller reports ENOENT)."""
        if root:
            return True
        if not self._can_traverse(path, root):
            return False
        p = self._norm(path)
        h = self.host_path(p)
        if not h.exists() or self.owner(p) == "ubuntu":
            return True
        return bool(h.stat().st_mode & 0o004)

    def can_write(self, path: str, root: bool = False) -> bool:
        """Whether the user may create, change or remove ``path`` (root may anywhere)."""
        if root:
            return True
        p = self._norm(path)
        return self.owner(p) == "ubuntu" and p not in (HOME,)

    def _glob(self, pattern: str, cwd: str) -> list[str]:
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        bases = ["/" if absolute else cwd]
        for part in parts:
            nxt: list[str] = []
            for base in bases:
                if not any(ch in part for ch in "*?["):
                    cand = posixpath.join(base, part.replace("[*]", "*").replace("[?]", "?")
                                          .replace("[[]", "["))
                    if self.exists(cand):
                        nxt.append(cand)
                    continue
                try:
                    names = self.listdir(base)
                except (OSError, PermissionError):
                    continue
                for n in names:
                    if n.startswith(".") and not part.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(n, part):
                        nxt.append(posixpath.join(base, n))
            bases = nxt
        if not absolute:
            bases = [posixpath.relpath(b, cwd) for b in bases]
        return sorted(bases)

    # ------------------------------------------------------------- initial state
    def _token_from_files(self) -> str | None:
        for n in [self, *self.peers.values()]:
            try:
                return n.read_text(TOKEN_FILE).strip()
            except (OSError, PermissionError):
                continue
        return None

    def _server(self) -> "NodeModel | None":
        """The server this agent joins (from its config's ``server:``), else any server."""
        if self.role == "server":
            return self
        url = str(self._read_config()[0].get("server", self.cluster.get("server_url", "")))
        servers = [n for n in self.peers.values() if n.role == "server"]
        for s in servers:
            if f"//{s.spec.ip}:" in url:
                return s
        return servers[0] if servers else None

    def _seed_files(self) -> None:
        spec, c = self.spec, self.cluster
        if self.join_token is None:
            self.join_token = self._token_from_files() or new_join_token()
        for d, mode in (("/etc", 0o755), ("/root", 0o700), (HOME, 0o750), ("/tmp", 0o1777),
                        ("/run", 0o755), ("/var/log", 0o755), ("/etc/cni/net.d", 0o755),
                        ("/var/lib/rancher/k3s/agent/etc/cni/net.d", 0o755),
                        ("/var/lib/rancher/k3s/agent/etc/flannel", 0o755),
                        (CNI_LEASES, 0o755), ("/opt/cni/bin", 0o755)):
            self.mkdir(d, mode)
            os.chmod(self.host_path(d), mode)
        self.write("/etc/hostname", f"{self.name}\n")
        self.write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n{spec.ip} {self.name}\n")
        self.write("/etc/os-release", _os_release(getattr(spec, "os_image", "Ubuntu 22.04.4 LTS")))
        self.write(f"{HOME}/.bashrc", "# ~/.bashrc: executed by bash(1) for non-login shells.\n")
        if self.role == "server":
            self.mkdir("/var/lib/rancher/k3s/server", 0o700)
            self.write(TOKEN_FILE, self.join_token + "\n", 0o600)
            body = (
                "# k3s server configuration: each key is a `k3s server` flag without the\n"
                "# leading dashes (https://docs.k3s.io/installation/configuration).\n"
                "write-kubeconfig-mode: \"0644\"\n"
                + "# Traefik and ServiceLB are replaced by ingress-nginx and MetalLB.\n"
                + "".join(f"{k}: {v}\n" for k, v in (("flannel-backend", c.get("flannel_backend")),)
                          if v and v != "vxlan")
                + "disable:\n" + "".join(f"  - {d}\n" for d in c.get("disable", ["traefik", "servicelb"]))
                + f"tls-san:\n  - {spec.ip}\n  - {self.name}\n"
                f"node-ip: {spec.ip}\n")
            exec_start = "server"
        else:
            body = (
                "# k3s agent configuration: joins the server below with the cluster token.\n"
                f"server: {c.get('server_url', 'https://10.0.0.2:6443')}\n"
                f"token: {self.join_token}\n"
                f"node-ip: {spec.ip}\n")
            exec_start = "agent"
        self.write(CONFIG, body, 0o600)
        self.write(f"/etc/systemd/system/{self.unit}.service", (
            f"[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\n"
            f"Wants=network-online.target\nAfter=network-online.target\n\n[Install]\n"
            f"WantedBy=multi-user.target\n\n[Service]\nType=notify\n"
            f"EnvironmentFile=-/etc/systemd/system/{self.unit}.service.env\nKillMode=process\n"
            f"Delegate=yes\nRestart=always\nRestartSec=5s\n"
            f"ExecStart=/usr/local/bin/k3s \\\n    {exec_start} \\\n"))
        self.write(f"/etc/systemd/system/{self.unit}.service.env", "", 0o600)
        # The pods of the fixture (or a few) hold addresses from flannel's host-local IPAM.
        net = ipaddress.ip_network(spec.pod_cidr, strict=False)
        pods = self._seed_pods
        if pods is None:   # .1 is cni0's gateway
            pods = [(str(ip), secrets.token_hex(32)) for ip in itertools.islice(net.hosts(), 1, 4)]
        if pods:
            last = max(ipaddress.ip_address(ip) for ip, _ in pods)
            self.write(f"{CNI_LEASES}/last_reserved_ip.0", str(last))
        self.write(f"{CNI_LEASES}/lock", "")
        if pods and self._defer_leases:
            # One file per pod is tens of thousands of files at scale, and creating files
            # is slow on some disks: they are written when something first looks at the
            # lease directory (see host_path). The list waits in a file beside the node's
            # root, so a twin restarted on the same state directory still writes them.
            self._pending_leases = list(pods)
            self._leases_sidecar.write_text(json.dumps(self._pending_leases))
        elif pods:
            self._write_leases(pods)

    def _default_services(self) -> list[KubeService]:
        svc = ipaddress.ip_network(self.cluster.get("service_cidr", "10.43.0.0/16"), strict=False)
        server_ip = str(self.cluster.get("server_url", "https://10.0.0.2:6443")).split("//")[-1]
        server_ip = server_ip.rsplit(":", 1)[0]
        dns = str(self.cluster.get("cluster_dns") or svc.network_address + 10)
        coredns = ""
        for n in self.peers.values() if self.peers else []:
            if n.role == "server":
                coredns = _second_host(n.spec.pod_cidr)
        if not coredns:
            coredns = _second_host(self.spec.pod_cidr)
        return [
            KubeService("default", "kubernetes", "https", str(svc.network_address + 1), 443,
                        [f"{server_ip}:6443"]),
            KubeService("kube-system", "kube-dns", "dns", dns, 53, [f"{coredns}:53"], "UDP"),
            KubeService("kube-system", "kube-dns", "dns-tcp", dns, 53, [f"{coredns}:53"]),
            KubeService("kube-system", "kube-dns", "metrics", dns, 9153, [f"{coredns}:9153"]),
        ]

    def _boot_interfaces(self) -> None:
        self.interfaces.clear()
        self._ifindex = 0
        self._add_iface("lo", "loopback", 65536)
        self._add_iface("eth0", "ether", 1500)

    def _add_iface(self, name: str, kind: str, mtu: int, **kw: Any) -> Interface:
        self._ifindex += 1
        iface = Interface(name, self._ifindex, kind, mtu,
                          _mac(f"{self.name}/{name}/{self.boot_count}"), **kw)
        self.interfaces[name] = iface
        return iface

    # ------------------------------------------------------------- public facts
    def add_interface(self, name: str, kind: str = "veth", mtu: int = 1500, **kw: Any) -> Interface:
        """Create an interface (e.g. ``cilium_vxlan`` with ``info={"vxlan_port": 8472}``)."""
        if name in self.interfaces:
            return self.interfaces[name]
        iface = self._add_iface(name, kind, mtu, **kw)
        self._emit("interfaces-changed", added=[name], removed=[])
        return iface

    def remove_interface(self, name: str) -> bool:
        """Delete an interface; a bridge's ports are released. False if absent."""
        if name not in self.interfaces:
            return False
        del self.interfaces[name]
        for i in self.interfaces.values():
            if i.master == name:
                i.master = None
        self._emit("interfaces-changed", added=[], removed=[name])
        return True

    def add_chain(self, table: str, chain: str, rules: Iterable[str] = (), *, v6: bool = False) -> None:
        """Create a chain (and ``-A ...`` rules, which may create their chains too)."""
        t = self.ip6tables if v6 else self.iptables
        changed = t.ensure_chain(table, chain)
        for r in rules:
            changed = t.ensure_rule(table, r) or changed
        if changed:
            self._emit("iptables-changed", family=6 if v6 else 4, tables=[table])

    def iptables_save(self, v6: bool = False) -> str:
        return (self.ip6tables if v6 else self.iptables).save()

    def service_active(self, name: str) -> bool:
        return name.removesuffix(".service") == self.unit and self.unit_state == "active"

    def journal(self, unit: str | None = None) -> list[str]:
        """The k3s unit's log lines (what ``journalctl -u k3s`` shows)."""
        return list(self.journal_lines)

    def leases(self) -> dict[str, str]:
        """host-local IPAM leases of flannel's cbr0 network: pod IP -> container id."""
        out: dict[str, str] = {}
        base = self.host_path(CNI_LEASES) if self.is_dir(CNI_LEASES) else None
        for n in self._lease_ips():
            host = os.path.join(base, n)
            # A plain file in the checked directory stays inside the root; a symlink
            # goes through the full path check.
            raw = self.read(f"{CNI_LEASES}/{n}") if os.path.islink(host) else Path(host).read_bytes()
            out[n] = raw.decode().split("\r\n")[0]
        return out

    def _write_pending_leases(self) -> None:
        """Write the lease files _seed_files deferred (once; see host_path)."""
        pods, self._pending_leases = self._pending_leases, None
        if pods:
            self._write_leases(pods)
        self._leases_sidecar.unlink(missing_ok=True)

    def _write_leases(self, pods: list[tuple[str, str]]) -> None:
        """One host-local IPAM lease file per (pod IP, sandbox id), written directly.

        Only for the lease directory the node was seeded with (tens of thousands of files
        at scale: no per-file path check or event; nobody observes them being written).
        """
        lease_dir = os.path.join(self._root_real, CNI_LEASES.lstrip("/"))
        # The directory was created with the node and nothing changed it since (a
        # command reaching it writes deferred leases first); never follow a symlink out.
        if not os.path.isdir(lease_dir) or os.path.islink(lease_dir):
            return
        for ip, sandbox in pods:
            fd = os.open(os.path.join(lease_dir, ip), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, f"{sandbox}\r\neth0".encode())
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)

    def _initial_lease_ips(self) -> list[str]:
        """The pod IPs holding leases when the node is built, without writing deferred
        lease files (they are the only IP-named files of the directory until written)."""
        if self._pending_leases is None:
            return sorted(self._lease_ips())
        out = set()
        for ip, _ in self._pending_leases:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                continue
            out.add(ip)
        return sorted(out)

    def _lease_ips(self) -> list[str]:
        """Names of the lease files (pod IPs), without reading them."""
        if not self.is_dir(CNI_LEASES):
            return []
        out = []
        for n in self.listdir(CNI_LEASES):
            try:
                ipaddress.ip_address(n)
            except ValueError:
                continue
            out.append(n)
        return out

    def set_kube_services(self, services: list[KubeService]) -> None:
        """The Service ports kube-proxy programs; re-synced now if kube-proxy runs here."""
        self.kube_services = list(services)
        if self.running.get("kube_proxy"):
            self._sync_kube_proxy(full=True)

    @property
    def kernel(self) -> str:
        return str(getattr(self.spec, "kernel", "5.15.0-105-generic"))

    @property
    def k3s_version(self) -> str:
        return str(self.cluster.get("k3s_version", "v1.30.6+k3s1"))

    def cni_running(self) -> str | None:
        """``flannel`` when this node's k3s runs flannel now, else None."""
        return "flannel" if self.running.get("flannel") else None

    def cni_config(self) -> str | None:
        """The CNI config file the container runtime uses now, like containerd: the
        first ``*.conflist``/``*.conf`` (by name) in the running k3s's CNI conf dir.
        None when k3s is stopped or the directory holds none ("cni plugin not
        initialized")."""
        d = self.running.get("cni_conf_dir")
        if not d or not self.is_dir(d):
            return None
        names = [n for n in self.listdir(d) if n.endswith((".conflist", ".conf", ".json"))]
        return f"{d}/{names[0]}" if names else None

    # ------------------------------------------------------------- k3s config
    def _read_config(self) -> tuple[dict[str, Any], str | None]:
        """The merged k3s config (config.yaml then config.yaml.d/*.yaml, ``key+`` appends)."""
        merged: dict[str, Any] = {}
        files = [CONFIG]
        if self.is_dir(CONFIG_DIR):
            files += [f"{CONFIG_DIR}/{n}" for n in self.listdir(CONFIG_DIR)
                      if n.endswith((".yaml", ".yml"))]
        for f in files:
            if not self.exists(f):
                continue
            try:
                data = _parse_yaml(self.read_text(f)) or {}
            except yaml.YAMLError as e:
                return merged, f"failed to parse {f}: {str(e).splitlines()[0]}"
            if not isinstance(data, dict):
                return merged, f"failed to parse {f}: not a map of flags"
            for k, v in data.items():
                k = str(k)
                if k.endswith("+"):
                    k = k[:-1]
                    prev = merged.get(k, [])
                    prev = prev if isinstance(prev, list) else [prev]
                    merged[k] = prev + (v if isinstance(v, list) else [v])
                else:
                    merged[k] = v
        return merged, None

    def _unknown_keys(self, cfg: dict[str, Any]) -> list[str]:
        allowed = SERVER_KEYS if self.role == "server" else AGENT_KEYS
        return [k for k in cfg if k not in allowed and not
                (self.role == "server" and k.startswith("etcd-"))]

    def effective_settings(self) -> dict[str, Any]:
        """What k3s would run with if its unit started now.

        On a server from its own config; on an agent the network options come from the
        server (its running settings, or its config when it is stopped), and the server
        options in the agent's own config are listed under ``ignored_keys``.
        """
        cfg, error = self._read_config()
        ignored = self._unknown_keys(cfg)
        if self.role == "server":
            backend = str(cfg.get("flannel-backend", "vxlan")).strip()
            disable = cfg.get("disable", [])
            disable = [disable] if isinstance(disable, str) else list(disable or [])
            net = {
                "flannel_backend": backend,
                "flannel": backend != "none",
                "network_policy": not _bool(cfg.get("disable-network-policy", False)),
                "kube_proxy": not _bool(cfg.get("disable-kube-proxy", False)),
                "cluster_cidr": str(cfg.get("cluster-cidr", self.cluster.get("cluster_cidr", "10.42.0.0/16"))),
                "service_cidr": str(cfg.get("service-cidr", self.cluster.get("service_cidr", "10.43.0.0/16"))),
                "disable": [str(d) for d in disable],
                "source": self.name,
            }
        else:
            server = self._server()
            if server is None:
                base = NodeModel._defaults(self.cluster)
            elif server.running:
                base = dict(server.running)
            else:
                base = server.effective_settings()
            net = {k: base[k] for k in ("flannel_backend", "flannel", "network_policy",
                                        "kube_proxy", "cluster_cidr", "service_cidr", "disable")}
            net["source"] = server.name if server else "defaults"
        # With flannel disabled, k3s points containerd at the standard CNI directories,
        # where another CNI (Cilium) installs its config and binaries.
        net.update(node_ip=str(cfg.get("node-ip", self.spec.ip)), ignored_keys=ignored,
                   config_error=error,
                   cni_conf_dir=K3S_CNI_CONF_DIR if net["flannel"] else "/etc/cni/net.d",
                   cni_bin_dir=K3S_CNI_BIN_DIR if net["flannel"] else "/opt/cni/bin")
        return net

    @staticmethod
    def _defaults(cluster: dict) -> dict[str, Any]:
        return {"flannel_backend": "vxlan", "flannel": True, "network_policy": True,
                "kube_proxy": True, "disable": [],
                "cluster_cidr": cluster.get("cluster_cidr", "10.42.0.0/16"),
                "service_cidr": cluster.get("service_cidr", "10.43.0.0/16")}

    def _log(self, level: str, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        day = time.strftime("%b %d %H:%M:%S", time.gmtime())
        unit = self.unit
        self.journal_lines.append(f'{day} {self.name} {unit}[{self._pid}]: time="{stamp}" '
                                  f'level={level} msg="{msg}"')

    # ------------------------------------------------------------- k3s lifecycle
    def _k3s_start_sync(self, emit: bool = True) -> str | None:
        """Start k3s now; returns an error message when it fails (unit keeps retrying)."""
        self._pid = 1000 + secrets.randbelow(30000)
        self._log("info", f"Starting k3s {'' if self.role == 'server' else 'agent '}"
                          f"{self.k3s_version} ({hashlib.sha1(self.k3s_version.encode()).hexdigest()[:8]})")
        cfg, error = self._read_config()
        if error:
            self._log("fatal", error)
            self.unit_state = "activating"
            return error
        for k in self._unknown_keys(cfg):
            self._log("warning", f"Unknown flag --{k} found in config.yaml, skipping")
        s = self.effective_settings()
        if s["flannel_backend"] not in FLANNEL_BACKENDS:
            # k3s compares the value exactly: "None" or "vxlan " are not backends.
            msg = (f"invalid flannel backend {s['flannel_backend']!r}: must be one of "
                   f"{', '.join(FLANNEL_BACKENDS)}")
            self._log("fatal", msg)
            self.unit_state = "activating"
            return msg
        if s["flannel"] and s["flannel_backend"] == "vxlan":
            holder = next((i.name for i in self.interfaces.values()
                           if i.kind == "vxlan" and i.name != "flannel.1" and
                           int(i.info.get("vxlan_port", FLANNEL_VXLAN_PORT)) == FLANNEL_VXLAN_PORT), None)
            if holder:
                msg = (f"flannel exited: failed to create VXLAN device flannel.1: address already "
                       f"in use (UDP {FLANNEL_VXLAN_PORT} is held by {holder})")
                self._log("fatal", msg)
                self.unit_state = "activating"
                return msg
        if self.role == "agent":
            self._log("info", f"Retrieved agent configuration from server {s['source']}: "
                              f"flannel-backend={s['flannel_backend']} "
                              f"disable-network-policy={str(not s['network_policy']).lower()} "
                              f"disable-kube-proxy={str(not s['kube_proxy']).lower()}")
        before_if = set(self.interfaces)
        self._sync_kubelet()
        if s["flannel"]:
            self._start_flannel(s)
        else:
            self._log("info", "Flannel is disabled (flannel-backend: none): "
                              "no CNI is configured by k3s")
        if s["network_policy"]:
            self._sync_kube_router(s)
            self._log("info", "Starting network policy controller")
        if s["kube_proxy"]:
            self.running = s   # kube-proxy reads the service CIDR from here
            self._sync_kube_proxy(full=True)
            self._log("info", "Running kube-proxy --cluster-cidr=" + s["cluster_cidr"])
        self.running = s
        self.unit_state = "active"
        self._log("info", f"k3s {'server' if self.role == 'server' else 'agent'} is up and running")
        if emit:
            self._notify_server_up()
            added = sorted(set(self.interfaces) - before_if)
            if added:
                self._emit("interfaces-changed", added=added, removed=[])
            self._emit("iptables-changed", family=4, tables=self.iptables.table_names())
            self._emit("k3s-started", unit=self.unit, settings=dict(s))
        return None

    def _start_flannel(self, s: dict[str, Any]) -> None:
        net = ipaddress.ip_network(self.spec.pod_cidr, strict=False)
        gw = next(net.hosts())
        backend = s["flannel_backend"]
        mtu = 1450 if backend == "vxlan" else (1420 if backend.startswith("wireguard") else 1500)
        if backend == "vxlan" and "flannel.1" not in self.interfaces:
            self._add_iface("flannel.1", "vxlan", 1450, info={"vxlan_port": FLANNEL_VXLAN_PORT,
                                                              "vni": 1})
        if backend.startswith("wireguard") and "flannel-wg" not in self.interfaces:
            self._add_iface("flannel-wg", "wireguard", 1420)
        if "cni0" not in self.interfaces:
            self._add_iface("cni0", "bridge", mtu, info={"address": f"{gw}/{net.prefixlen}"})
        # k3s writes flannel's files on every start when flannel runs.
        self.write(FLANNEL_NETCONF, json.dumps({
            "Network": s["cluster_cidr"], "EnableIPv6": False, "EnableIPv4": True,
            "IPv6Network": "::/0", "Backend": {"Type": backend}}, indent="\t") + "\n")
        self.write(FLANNEL_CONFLIST, json.dumps({
            "name": "cbr0", "cniVersion": "1.0.0",
            "plugins": [
                {"type": "flannel", "delegate": {"hairpinMode": True, "forceAddress": True,
                                                 "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}, indent=2) + "\n")
        self.write("/run/flannel/subnet.env",
                   f"FLANNEL_NETWORK={s['cluster_cidr']}\nFLANNEL_SUBNET={gw}/{net.prefixlen}\n"
                   f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
        self._sync_flannel_rules(s)
        self._log("info", f"Running flannel backend={backend} subnet={net}")

    def _sync_flannel_rules(self, s: dict[str, Any]) -> None:
        cidr, pod = s["cluster_cidr"], self.spec.pod_cidr
        ipt = self.iptables
        ipt.ensure_rule("filter", '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD')
        ipt.ensure_rule("filter", f'-A FLANNEL-FWD -s {cidr} -m comment --comment "flanneld forward" -j ACCEPT')
        ipt.ensure_rule("filter", f'-A FLANNEL-FWD -d {cidr} -m comment --comment "flanneld forward" -j ACCEPT')
        ipt.ensure_rule("nat", '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG')
        m = '-m comment --comment "flanneld masq"'
        for r in (f"-m mark --mark 0x4000/0x4000 {m} -j RETURN",
                  f"-s {pod} -d {cidr} {m} -j RETURN",
                  f"-s {cidr} -d {pod} {m} -j RETURN",
                  f"! -s {cidr} -d {pod} {m} -j RETURN",
                  f"-s {cidr} ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully",
                  f"! -s {cidr} -d {cidr} {m} -j MASQUERADE --random-fully"):
            ipt.ensure_rule("nat", f"-A FLANNEL-POSTRTG {r}")

    def _sync_kubelet(self) -> None:
        # The kubelet inside k3s always keeps its canary and firewall chains.
        for t in (self.iptables, self.ip6tables):
            t.ensure_chain("mangle", "KUBE-IPTABLES-HINT")
            for table in ("mangle", "nat", "filter"):
                t.ensure_chain(table, "KUBE-KUBELET-CANARY")
        lo = "127.0.0.0/8"
        self.iptables.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
        self.iptables.ensure_rule("filter", "-A OUTPUT -j KUBE-FIREWALL")
        self.iptables.ensure_rule("filter", f'-A KUBE-FIREWALL ! -s {lo} -d {lo} -m comment --comment '
                                  '"block incoming localnet connections" -m conntrack ! --ctstate '
                                  "RELATED,ESTABLISHED,DNAT -j DROP")

    def _sync_kube_router(self, s: dict[str, Any]) -> None:
        for t in (self.iptables, self.ip6tables):
            for chain, parent, h in (("KUBE-ROUTER-INPUT", "INPUT", "4IA2OSFRMVNDXBVV"),
                                     ("KUBE-ROUTER-FORWARD", "FORWARD", "TEMCG2JMHZYE7H7T"),
                                     ("KUBE-ROUTER-OUTPUT", "OUTPUT", "VEAAIY32XVBHCSCY")):
                t.ensure_rule("filter", f'-A {parent} -m comment --comment "kube-router netpol - {h}" '
                                        f"-j {chain}", first=True)
                t.ensure_rule("filter", f"-A {chain} -m mark --mark 0x20000/0x20000 -m comment "
                                        '--comment "rule to explicitly ACCEPT traffic that comply to '
                                        'network policies" -j ACCEPT')
            t.ensure_rule("filter", '-A KUBE-NWPLCY-DEFAULT -m comment --comment "rule to mark traffic '
                                    'matching a network policy" -j MARK --set-xmark 0x10000/0x10000')
        self.iptables.ensure_rule("filter", f"-A KUBE-ROUTER-INPUT -d {s['service_cidr']} -m comment "
                                            '--comment "allow traffic to primary cluster IP range - '
                                            'EXCSNPMCSVRAZJZM" -j RETURN', first=True)
        for proto, h in (("tcp", "LR7XO7NXDBGQJD2M"), ("udp", "76UCBPIZNGJNWNUZ")):
            self.iptables.ensure_rule("filter", f"-A KUBE-ROUTER-INPUT -p {proto} -m comment --comment "
                                                f'"allow LOCAL {proto.upper()} traffic to node ports - {h}" '
                                                "-m addrtype --dst-type LOCAL -m multiport "
                                                "--dports 30000:32767 -j RETURN")

    def _sync_kube_proxy(self, full: bool) -> None:
        """Program the embedded kube-proxy's chains for ``kube_services``."""
        if full:
            # A full sync rewrites every service chain a pending one would write (and the
            # chains below are already there), so that one need not run at all.
            self.iptables.discard_pending()
        for t in (self.iptables, self.ip6tables):
            t.ensure_chain("mangle", "KUBE-PROXY-CANARY")
            t.ensure_chain("nat", "KUBE-PROXY-CANARY")
            t.ensure_chain("filter", "KUBE-PROXY-CANARY")
            t.ensure_rule("nat", '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
            t.ensure_rule("nat", '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
            t.ensure_rule("nat", '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
                                 "-j KUBE-POSTROUTING")
            t.ensure_rule("nat", "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000")
            t.ensure_rule("nat", "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN")
            t.ensure_rule("nat", "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0")
            t.ensure_rule("nat", '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic '
                                 'requiring SNAT" -j MASQUERADE --random-fully')
            t.ensure_chain("nat", "KUBE-NODEPORTS")
            f = "filter"
            t.ensure_rule(f, '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load '
                             'balancer firewall" -j KUBE-PROXY-FIREWALL')
            t.ensure_rule(f, '-A INPUT -m comment --comment "kubernetes health check service ports" '
                             "-j KUBE-NODEPORTS")
            t.ensure_rule(f, '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes '
                             'externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
            t.ensure_rule(f, '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')
            t.ensure_rule(f, '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes '
                             'service portals" -j KUBE-SERVICES')
            t.ensure_rule(f, '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes '
                             'service portals" -j KUBE-SERVICES')
            t.ensure_rule(f, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
            t.ensure_rule(f, '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark '
                             "--mark 0x4000/0x4000 -j ACCEPT")
            t.ensure_rule(f, '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
                             "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        # The service chains cost O(cluster endpoints) per node: a full sync is deferred
        # until something reads or changes this node's iptables (iptables-save, a chain
        # query, a restore, ...), which then sees exactly what an immediate sync gives.
        cidr = self.running.get("cluster_cidr") or self.cluster.get("cluster_cidr", "10.42.0.0/16")
        services = self.kube_services
        if full:
            self.iptables.defer(lambda: self._program_services(cidr, services, True))
        else:
            self._program_services(cidr, services, False)

    def _program_services(self, cidr: str, services: list[KubeService], full: bool) -> None:
        """kube-proxy's per-Service chains (the second half of :meth:`_sync_kube_proxy`)."""
        ipt = self.iptables
        if full:
            # kube-proxy rewrites its service chains on a full sync.
            nat = ipt.tables["nat"]
            drop = {c for c in nat.chains if c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"))}
            nat.remove_chains(drop | {"KUBE-SERVICES", "KUBE-NODEPORTS"})
            for c in drop:
                nat.chains.pop(c, None)
            ipt.tables["filter"].remove_chains({"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"})
        for s in services:
            for table, chain, targets, rule in _service_rules(s, cidr):
                ipt._ensure_parsed(table, chain, targets, rule)
        ipt.ensure_rule("nat", '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                               'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                               "-j KUBE-NODEPORTS")

    def _resync(self) -> None:
        """What the running k3s re-creates when its rules were deleted under it."""
        s = self.running
        if not s or self.unit_state != "active":
            return
        before = self.iptables.save() + self.ip6tables.save()
        self._sync_kubelet()
        if s.get("flannel"):
            self._sync_flannel_rules(s)
        if s.get("network_policy"):
            self._sync_kube_router(s)
        if s.get("kube_proxy"):
            self._sync_kube_proxy(full=True)
        if self.iptables.save() + self.ip6tables.save() != before:
            self._emit("iptables-changed", family=4, tables=self.iptables.table_names())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify_server_down(self, seconds: float) -> None:
        if self.role != "server" or self.on_server_restart is None:
            return
        try:
            res = self.on_server_restart(seconds)
            if inspect.isawaitable(res):
                self._spawn(res)
        except Exception:
            log.exception("%s: on_server_restart hook failed", self.name)

    def _notify_server_up(self) -> None:
        if self.role != "server" or self.on_server_started is None:
            return
        try:
            res = self.on_server_started()
            if inspect.isawaitable(res):
                self._spawn(res)
        except Exception:
            log.exception("%s: on_server_started hook failed", self.name)

    def _stop_sync(self) -> None:
        was = self.unit_state
        self.unit_state = "inactive"
        self.running = {}
        if was != "inactive":
            self._log("info", "Received SIGTERM, shutting down")
            self._emit("k3s-stopped", unit=self.unit)

    async def k3s_stop(self, expected_down: float = math.inf) -> None:
        """``systemctl stop``: processes end; interfaces, chains and files stay."""
        if self.unit_state != "inactive":
            self._notify_server_down(expected_down)
        self._stop_sync()
        await self.clock.sleep(0.5)

    async def k3s_start(self) -> bool:
        """``systemctl start``: True once active; False if it keeps failing (retries run)."""
        if self.unit_state == "active":
            return True
        self.unit_state = "activating"
        await self.clock.sleep(SERVER_RESTART_SECONDS if self.role == "server" else AGENT_RESTART_SECONDS)
        if self.unit_state == "active":
            return True
        err = self._k3s_start_sync()
        if err:
            self._spawn(self._retry_start())
            return False
        return True

    async def k3s_restart(self) -> bool:
        """``systemctl restart``: stop, then start with the config as it is now."""
        await self.k3s_stop(SERVER_RESTART_SECONDS)
        return await self.k3s_start()

    async def _retry_start(self) -> None:
        # systemd's Restart=always: keep trying every RestartSec while the unit is activating.
        while self.unit_state == "activating" and self.up:
            await self.clock.sleep(FAILED_START_RETRY_SECONDS)
            if self.unit_state != "activating" or not self.up:
                return
            if not self._k3s_start_sync():
                return

    async def reboot(self) -> None:
        """Reboot: down for ``REBOOT_SECONDS``; interfaces, iptables, /tmp and /run are
        cleared; k3s starts again from its config."""
        self.up = False
        self._emit("rebooting")
        self._notify_server_down(REBOOT_SECONDS + SERVER_RESTART_SECONDS)
        self._stop_sync()
        await self.clock.sleep(REBOOT_SECONDS)
        removed = [n for n in self.interfaces if n not in ("lo", "eth0")]
        self.boot_count += 1
        self._boot_interfaces()
        self.iptables.reset()
        self.ip6tables.reset()
        for d in ("/tmp", "/run"):
            h = self.host_path(d)
            for child in list(h.iterdir()) if h.is_dir() else []:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.journal_lines.append(f"-- Boot {secrets.token_hex(16)} --")
        self.up = True
        if removed:
            self._emit("interfaces-changed", added=[], removed=removed)
        self._emit("iptables-changed", family=4, tables=[])
        self._emit("rebooted", boot=self.boot_count)
        await self.clock.sleep(SERVER_RESTART_SECONDS if self.role == "server" else AGENT_RESTART_SECONDS)
        if self._k3s_start_sync():
            self._spawn(self._retry_start())

    async def close(self) -> None:
        """Cancel background work (unit retries, scheduled reboots, resyncs)."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    # ------------------------------------------------------------------- exec
    async def exec(self, command_line: str,
                   stdin: bytes | Callable[[], Awaitable[bytes]] = b"") -> ExecResult:
        """Run one command line as user ``ubuntu``, without a shell.

        ``stdin`` is bytes, or an async callable read only by commands that consume
        standard input (so a client that never closes stdin does not block ``cat FILE``).
        """
        if not self.up:
            return ExecResult(255, b"", b"ssh: connect to host: Connection refused\n")
        try:
            words = tokenize(command_line)
        except ShellRefused as e:
            return ExecResult(2, b"", f"{e}\n".encode())
        ctx = _Ctx(root=False, stdin=stdin)
        argv: list[str] = []
        for w in words:
            if w.glob:
                matches = self._glob(w.pattern, ctx.cwd)
                argv += matches if matches else [w.text]   # bash keeps an unmatched glob
            else:
                argv.append(w.text)
        if not argv:
            return ExecResult(0, b"", b"")
        try:
            return await self._run(argv, ctx)
        except PermissionError as e:   # e.g. a symlink leading out of the root
            return ExecResult(1, b"", f"{argv[0]}: {e}: Permission denied\n".encode())
        except OSError as e:
            return ExecResult(1, b"", f"{argv[0]}: {e.strerror or e}\n".encode())
        except ValueError as e:   # e.g. a NUL byte in a path
            return ExecResult(1, b"", f"{argv[0]}: {e}\n".encode())

    async def _run(self, argv: list[str], ctx: _Ctx, via_sudo: bool = False) -> ExecResult:
        cmd, args = argv[0], argv[1:]
        # /usr/bin/cat and friends are the same programs as cat.
        for d in ("/usr/local/bin/", "/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"):
            if cmd.startswith(d) and "/" not in cmd[len(d):]:
                cmd = cmd[len(d):]
        if cmd in ("sh", "bash", "dash", "zsh", "env", "xargs", "eval", "exec", "source"):
            return ExecResult(2, b"", f"{SHELL_REFUSED} ({cmd} is refused)\n".encode())
        handler = None
        if re.fullmatch(r"[a-z0-9][a-z0-9-]*", cmd):
            handler = getattr(self, "_cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            if via_sudo:
                return ExecResult(1, b"", f"sudo: {argv[0]}: command not found\n".encode())
            return ExecResult(127, b"", f"bash: line 1: {argv[0]}: command not found\n".encode())
        return await handler(args, ctx)

    @staticmethod
    def _r(rc: int = 0, out: str | bytes = b"", err: str | bytes = b"") -> ExecResult:
        return ExecResult(rc, out.encode() if isinstance(out, str) else out,
                          err.encode() if isinstance(err, str) else err)

    @staticmethod
    def _flags(args: list[str], allowed: str, long: dict[str, str] | None = None
               ) -> tuple[set[str], list[str], str | None]:
        """Split ``-abc`` style flags from operands; returns (flags, operands, bad flag)."""
        flags: set[str] = set()
        ops: list[str] = []
        it = iter(args)
        for a in it:
            if a == "--":
                ops += list(it)
                break
            if a.startswith("--") and long is not None:
                if a not in long:
                    return flags, ops, a
                flags.add(long[a])
            elif a.startswith("-") and len(a) > 1:
                for ch in a[1:]:
                    if ch not in allowed:
                        return flags, ops, "-" + ch
                    flags.add(ch)
            else:
                ops.append(a)
        return flags, ops, None

    # --- commands ---------------------------------------------------------------
    async def _cmd_sudo(self, args: list[str], ctx: _Ctx) -> ExecResult:
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "--":
                i += 1
                break
            if args[i] not in ("-n", "-E", "-H", "-S", "--non-interactive", "--preserve-env"):
                return self._r(1, err=f"sudo: invalid option -- '{args[i].lstrip('-')[:1]}'\n"
                                      "usage: sudo [-n] command\n")
            i += 1
        if i >= len(args):
            return self._r(1, err="usage: sudo -h | -K | -k | -V\nusage: sudo [-n] command\n")
        ctx.root = True
        return await self._run(args[i:], ctx, via_sudo=True)

    async def _cmd_true(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return self._r(0)

    async def _cmd_false(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return self._r(1)

    async def _cmd_echo(self, args: list[str], ctx: _Ctx) -> ExecResult:
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        return self._r(0, " ".join(args) + ("\n" if newline else ""))

    async def _cmd_hostname(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if args and args[0] in ("-I", "-i"):
            return self._r(0, f"{self.spec.ip} \n")
        return self._r(0, self.name + "\n")

    async def _cmd_uname(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if not args or args == ["-s"]:
            return self._r(0, "Linux\n")
        if args == ["-r"]:
            return self._r(0, self.kernel + "\n")
        if args == ["-n"]:
            return self._r(0, self.name + "\n")
        if args == ["-m"]:
            return self._r(0, "x86_64\n")
        if args == ["-a"]:
            return self._r(0, f"Linux {self.name} {self.kernel} #1 SMP x86_64 x86_64 x86_64 GNU/Linux\n")
        return self._r(1, err=f"uname: invalid option -- '{args[0].lstrip('-')}'\n"
                              "Try 'uname --help' for more information.\n")

    async def _cmd_k3s(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if args in (["--version"], ["-v"], ["version"]):
            commit = hashlib.sha1(self.k3s_version.encode()).hexdigest()[:8]
            return self._r(0, f"k3s version {self.k3s_version} ({commit})\ngo version go1.22.8\n")
        return self._r(1, err="the twin's k3s binary supports only `k3s --version`; "
                              "configure k3s through /etc/rancher/k3s/config.yaml\n")

    async def _cmd_cat(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "")
        if bad:
            return self._r(1, err=f"cat: invalid option -- '{bad[1:]}'\n")
        if not ops:
            return self._r(0, await ctx.read_stdin())
        out, err, rc = [], [], 0
        for p in ops:
            if p == "-":
                out.append(await ctx.read_stdin())
                continue
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not self._can_read(n, ctx.root):
                err.append(f"cat: {p}: Permission denied\n")
                rc = 1
            elif not h.exists():
                err.append(f"cat: {p}: No such file or directory\n")
                rc = 1
            elif h.is_dir():
                err.append(f"cat: {p}: Is a directory\n")
                rc = 1
            else:
                out.append(h.read_bytes())
        return self._r(rc, b"".join(out), "".join(err))

    async def _cmd_tee(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "a", {"--append": "a"})
        if bad:
            return self._r(1, err=f"tee: invalid option -- '{bad.lstrip('-')}'\n")
        data = await ctx.read_stdin()
        err, rc = [], 0
        for p in ops:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not self.can_write(n, ctx.root):
                err.append(f"tee: {p}: Permission denied\n")
                rc = 1
                continue
            if not h.parent.is_dir():
                err.append(f"tee: {p}: No such file or directory\n")
                rc = 1
                continue
            if h.is_dir():
                err.append(f"tee: {p}: Is a directory\n")
                rc = 1
                continue
            self.write(n, data, append="a" in flags)
        return self._r(rc, data, "".join(err))

    async def _cmd_mkdir(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "pv", {"--parents": "p"})
        if bad or not ops:
            return self._r(1, err="mkdir: missing operand\n" if not bad else
                           f"mkdir: invalid option -- '{bad.lstrip('-')}'\n")
        err, rc = [], 0
        for p in ops:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if h.is_dir() and "p" in flags:
                continue
            if not self.can_write(n, ctx.root):
                err.append(f"mkdir: cannot create directory '{p}': Permission denied\n")
                rc = 1
            elif h.exists():
                err.append(f"mkdir: cannot create directory '{p}': File exists\n")
                rc = 1
            elif not h.parent.is_dir() and "p" not in flags:
                err.append(f"mkdir: cannot create directory '{p}': No such file or directory\n")
                rc = 1
            else:
                h.mkdir(parents=True)
                self._emit("file-changed", path=n, op="mkdir")
        return self._r(rc, err="".join(err))

    async def _cmd_test(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if len(args) != 2 or args[0] not in ("-e", "-f", "-d", "-s", "-r", "-w"):
            return self._r(2, err="test: the twin supports test -e|-f|-d|-s|-r|-w PATH\n")
        n = self._norm(args[1], ctx.cwd)
        if not self._can_traverse(n, ctx.root):
            return self._r(1)
        h = self.host_path(n)
        ok = {"-e": h.exists(), "-f": h.is_file(), "-d": h.is_dir(),
              "-s": h.is_file() and h.stat().st_size > 0,
              "-r": h.exists() and self._can_read(n, ctx.root),
              "-w": h.exists() and self.can_write(n, ctx.root)}[args[0]]
        return self._r(0 if ok else 1)

    def _ls_long(self, n: str, h: Path, label: str) -> str:
        st = h.lstat()
        owner = self.owner(n)
        when = time.strftime("%b %d %H:%M", time.gmtime(st.st_mtime))
        return (f"{statmod.filemode(st.st_mode)} 1 {owner} {owner} {st.st_size:>5} {when} {label}")

    async def _cmd_ls(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "1laAdh")
        if bad:
            return self._r(2, err=f"ls: invalid option -- '{bad.lstrip('-')}'\n")
        ops = ops or ["."]
        out: list[str] = []
        err: list[str] = []
        rc = 0
        files = []
        dirs = []
        for p in ops:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not h.exists() or not self._can_traverse(n, ctx.root):
                err.append(f"ls: cannot access '{p}': No such file or directory\n" if not h.exists()
                           else f"ls: cannot access '{p}': Permission denied\n")
                rc = 2
            elif h.is_dir() and "d" not in flags:
                dirs.append((p, n, h))
            else:
                files.append((p, n, h))
        for p, n, h in files:
            out.append(self._ls_long(n, h, p) if "l" in flags else p)
        for p, n, h in dirs:
            if len(ops) > 1:
                out.append(("\n" if out else "") + f"{p}:")
            if not self._can_read(n, ctx.root):
                err.append(f"ls: cannot open directory '{p}': Permission denied\n")
                rc = 2
                continue
            names = sorted(os.listdir(h))
            if "a" in flags:
                names = [".", ".."] + names
            elif "A" not in flags:
                names = [x for x in names if not x.startswith(".")]
            if "l" in flags:
                out.append(f"total {len(names) * 4}")
                for x in names:
                    cn = posixpath.normpath(posixpath.join(n, x))
                    out.append(self._ls_long(cn, self.host_path(cn), x))
            else:
                out += names
        return self._r(rc, "".join(f"{line}\n" for line in out), "".join(err))

    async def _cmd_sha256sum(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "b")
        out, err, rc = [], [], 0
        if not ops:
            return self._r(0, hashlib.sha256(await ctx.read_stdin()).hexdigest() + "  -\n")
        for p in ops:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not h.exists():
                err.append(f"sha256sum: {p}: No such file or directory\n")
                rc = 1
            elif not self._can_read(n, ctx.root):
                err.append(f"sha256sum: {p}: Permission denied\n")
                rc = 1
            elif h.is_dir():
                err.append(f"sha256sum: {p}: Is a directory\n")
                rc = 1
            else:
                out.append(f"{hashlib.sha256(h.read_bytes()).hexdigest()}  {p}\n")
        return self._r(rc, "".join(out), "".join(err))

    async def _cmd_stat(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if len(args) < 3 or args[0] not in ("-c", "--format", "--printf"):
            return self._r(1, err="stat: the twin supports stat -c FORMAT FILE...\n")
        fmt, out, err, rc = args[1], [], [], 0
        for p in args[2:]:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not h.exists():
                err.append(f"stat: cannot statx '{p}': No such file or directory\n")
                rc = 1
                continue
            st = h.stat()
            owner = self.owner(n)
            kind = "directory" if h.is_dir() else ("regular empty file" if st.st_size == 0
                                                  else "regular file")
            vals = {"a": f"{st.st_mode & 0o7777:o}", "A": statmod.filemode(st.st_mode),
                    "s": str(st.st_size), "n": p, "U": owner, "G": owner,
                    "u": "1000" if owner == "ubuntu" else "0", "g": "1000" if owner == "ubuntu" else "0",
                    "F": kind, "Y": str(int(st.st_mtime)),
                    "y": time.strftime("%Y-%m-%d %H:%M:%S.000000000 +0000", time.gmtime(st.st_mtime)),
                    "%": "%"}
            res, i = [], 0
            while i < len(fmt):
                if fmt[i] == "%" and i + 1 < len(fmt):
                    res.append(vals.get(fmt[i + 1], "?"))
                    i += 2
                else:
                    res.append(fmt[i])
                    i += 1
            out.append("".join(res) + ("\n" if args[0] != "--printf" else ""))
        return self._r(rc, "".join(out), "".join(err))

    async def _cmd_rm(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "frRv", {"--force": "f", "--recursive": "r"})
        if bad:
            return self._r(1, err=f"rm: invalid option -- '{bad.lstrip('-')}'\n")
        recursive = bool({"r", "R"} & flags)
        if not ops:
            return self._r(0 if "f" in flags else 1, err="" if "f" in flags else "rm: missing operand\n")
        err, rc = [], 0
        for p in ops:
            n = self._norm(p, ctx.cwd)
            if n == "/":
                err.append("rm: it is dangerous to operate recursively on '/'\n"
                           "rm: use --no-preserve-root to override this failsafe\n")
                rc = 1
                continue
            h = self.host_path(n)
            if not h.exists() and not h.is_symlink():
                if "f" not in flags:
                    err.append(f"rm: cannot remove '{p}': No such file or directory\n")
                    rc = 1
                continue
            if h.is_dir() and not recursive:
                err.append(f"rm: cannot remove '{p}': Is a directory\n")
                rc = 1
                continue
            if not self.can_write(n, ctx.root):
                err.append(f"rm: cannot remove '{p}': Permission denied\n")
                rc = 1
                continue
            self.remove(n)
        return self._r(rc, err="".join(err))

    def _copy(self, src: Path, dst: Path, preserve: bool) -> None:
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=shutil.copy2 if preserve else shutil.copy,
                            dirs_exist_ok=True)
        elif preserve:
            shutil.copy2(src, dst)
        else:
            if dst.exists():   # cp keeps an existing destination's mode
                dst.write_bytes(src.read_bytes())
            else:
                shutil.copy(src, dst)

    async def _cmd_cp(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "prRaf", {"--preserve": "p", "--archive": "a",
                                                       "--recursive": "r"})
        if bad:
            return self._r(1, err=f"cp: invalid option -- '{bad.lstrip('-')}'\n")
        return self._copy_or_move("cp", flags, ops, ctx)

    async def _cmd_mv(self, args: list[str], ctx: _Ctx) -> ExecResult:
        flags, ops, bad = self._flags(args, "f", {"--force": "f"})
        if bad:
            return self._r(1, err=f"mv: invalid option -- '{bad.lstrip('-')}'\n")
        return self._copy_or_move("mv", flags, ops, ctx)

    def _copy_or_move(self, tool: str, flags: set[str], ops: list[str], ctx: _Ctx) -> ExecResult:
        if len(ops) < 2:
            return self._r(1, err=f"{tool}: missing destination file operand after '{ops[0] if ops else ''}'\n")
        dest = self._norm(ops[-1], ctx.cwd)
        dh = self.host_path(dest)
        if len(ops) > 2 and not dh.is_dir():
            return self._r(1, err=f"{tool}: target '{ops[-1]}' is not a directory\n")
        err, rc = [], 0
        preserve = bool({"p", "a"} & flags)
        recursive = bool({"r", "R", "a"} & flags)
        for p in ops[:-1]:
            src = self._norm(p, ctx.cwd)
            sh = self.host_path(src)
            target = posixpath.join(dest, posixpath.basename(src)) if dh.is_dir() else dest
            th = self.host_path(target)
            if not sh.exists():
                err.append(f"{tool}: cannot stat '{p}': No such file or directory\n")
                rc = 1
                continue
            if not self._can_read(src, ctx.root):
                err.append(f"{tool}: cannot open '{p}' for reading: Permission denied\n")
                rc = 1
                continue
            if tool == "cp" and sh.is_dir() and not recursive:
                err.append(f"cp: -r not specified; omitting directory '{p}'\n")
                rc = 1
                continue
            if not self.can_write(target, ctx.root) or (tool == "mv" and not self.can_write(src, ctx.root)):
                what = ("cannot create regular file" if tool == "cp" else "cannot move")
                err.append(f"{tool}: {what} '{ops[-1] if tool == 'cp' else p}'"
                           f"{'' if tool == 'cp' else ' to ' + repr(ops[-1])}: Permission denied\n")
                rc = 1
                continue
            if not th.parent.is_dir():
                err.append(f"{tool}: cannot create regular file '{ops[-1]}': No such file or directory\n")
                rc = 1
                continue
            if tool == "cp":
                self._copy(sh, th, preserve)
            else:
                os.replace(sh, th)
                self._emit("file-changed", path=src, op="remove")
            self._emit("file-changed", path=target, op="write")
        return self._r(rc, err="".join(err))

    async def _cmd_chmod(self, args: list[str], ctx: _Ctx) -> ExecResult:
        recursive = "-R" in args
        ops = [a for a in args if a != "-R"]
        if len(ops) < 2:
            return self._r(1, err="chmod: missing operand\n")
        mode_s, err, rc = ops[0], [], 0
        for p in ops[1:]:
            n = self._norm(p, ctx.cwd)
            h = self.host_path(n)
            if not h.exists():
                err.append(f"chmod: cannot access '{p}': No such file or directory\n")
                rc = 1
                continue
            if not self.can_write(n, ctx.root):
                err.append(f"chmod: changing permissions of '{p}': Operation not permitted\n")
                rc = 1
                continue
            targets = [h] + (sorted(h.rglob("*")) if recursive and h.is_dir() else [])
            for t in targets:
                new = _chmod_mode(mode_s, t.stat().st_mode, t.is_dir())
                if new is None:
                    return self._r(1, err=f"chmod: invalid mode: '{mode_s}'\n")
                os.chmod(t, new)
            self._emit("file-changed", path=n, op="chmod")
        return self._r(rc, err="".join(err))

    async def _cmd_systemctl(self, args: list[str], ctx: _Ctx) -> ExecResult:
        ops = [a for a in args if not a.startswith("-")]
        if ops == ["daemon-reload"]:
            return self._r(0) if ctx.root else self._r(1, err="Failed to reload daemon: Access denied\n")
        if ops == ["reboot"]:
            return await self._cmd_reboot([], ctx)
        if len(ops) != 2:
            return self._r(1, err="systemctl: the twin supports systemctl start|stop|restart|"
                                  "is-active|is-enabled|status UNIT\n")
        verb, unit = ops[0], ops[1].removesuffix(".service")
        known = unit == self.unit
        if verb == "is-active":
            state = self.unit_state if known else "inactive"
            quiet = "-q" in args or "--quiet" in args
            return self._r(0 if state == "active" else 3, "" if quiet else state + "\n")
        if verb == "is-enabled":
            return self._r(0, "enabled\n") if known else self._r(
                1, err=f"Failed to get unit file state for {unit}.service: No such file or directory\n")
        if verb == "status":
            if not known:
                return self._r(4, err=f"Unit {unit}.service could not be found.\n")
            return self._r(0 if self.unit_state == "active" else 3, self._status_text())
        if verb not in ("start", "stop", "restart", "reload-or-restart", "try-restart"):
            return self._r(1, err=f'Unknown command verb {verb}.\n')
        if not ctx.root:
            return self._r(1, err=f"Failed to {verb} {unit}.service: Interactive authentication "
                                  f"required.\nSee system logs and 'systemctl status {unit}.service' "
                                  "for details.\n")
        if not known:
            return self._r(5, err=f"Failed to {verb} {unit}.service: Unit {unit}.service not found.\n")
        if verb == "stop":
            await self.k3s_stop()
            return self._r(0)
        ok = await (self.k3s_start() if verb == "start" else self.k3s_restart())
        if not ok:
            return self._r(1, err=f"Job for {unit}.service failed because the control process exited "
                                  f"with error code.\nSee \"systemctl status {unit}.service\" and "
                                  f"\"journalctl -xeu {unit}.service\" for details.\n")
        return self._r(0)

    def _status_text(self) -> str:
        state = {"active": "active (running)", "inactive": "inactive (dead)",
                 "activating": "activating (auto-restart) (Result: exit-code)",
                 "failed": "failed (Result: exit-code)"}[self.unit_state]
        dot = "●" if self.unit_state == "active" else "○"
        kind = "server" if self.role == "server" else "agent"
        tail = "\n".join(self.journal_lines[-5:])
        return (f"{dot} {self.unit}.service - Lightweight Kubernetes\n"
                f"     Loaded: loaded (/etc/systemd/system/{self.unit}.service; enabled; vendor preset: enabled)\n"
                f"     Active: {state}\n       Docs: https://k3s.io\n"
                + (f"   Main PID: {self._pid} (k3s-{kind})\n" if self.unit_state == "active" else "")
                + f"\n{tail}\n")

    async def _cmd_journalctl(self, args: list[str], ctx: _Ctx) -> ExecResult:
        lines = self.journal_lines
        if "-n" in args:
            try:
                lines = lines[-int(args[args.index("-n") + 1]):]
            except (IndexError, ValueError):
                return self._r(1, err="journalctl: -n needs a number\n")
        if "-u" in args:
            i = args.index("-u")
            unit = args[i + 1].removesuffix(".service") if i + 1 < len(args) else ""
            if unit != self.unit:
                return self._r(0, "-- No entries --\n")
        return self._r(0, "".join(f"{line}\n" for line in lines))

    async def _cmd_reboot(self, args: list[str], ctx: _Ctx) -> ExecResult:
        if not ctx.root:
            return self._r(1, err="Failed to set wall message, ignoring: Interactive authentication "
                                  "required.\nCall to Reboot failed: Interactive authentication required.\n")

        async def later() -> None:
            await self.clock.sleep(0.5)   # the reply leaves before the node goes down
            await self.reboot()
        self._spawn(later())
        return self._r(0)

    async def _cmd_ip(self, args: list[str], ctx: _Ctx) -> ExecResult:
        opts = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        if not rest or rest[0] not in ("link", "l"):
            return self._r(255, err="the twin supports `ip [-o|-j] link show [dev] [IFACE]` and "
                                    "`ip link delete [dev] IFACE`\n")
        verb = rest[1] if len(rest) > 1 else "show"
        names = [a for a in rest[2:] if a != "dev"]
        if verb in ("show", "list", "ls"):
            if names:
                iface = self.interfaces.get(names[0])
                if iface is None:
                    return self._r(1, err=f'Device "{names[0]}" does not exist.\n')
                sel = [iface]
            else:
                sel = sorted(self.interfaces.values(), key=lambda i: i.index)
            if "-j" in opts or "-json" in opts:
                return self._r(0, json.dumps([i.as_json() for i in sel]) + "\n")
            if "-o" in opts or "-oneline" in opts:
                return self._r(0, "".join(i.link_line() + "\n" for i in sel))
            return self._r(0, "".join(i.link_line().replace("\\   ", "\n   ") + "\n" for i in sel))
        if verb in ("delete", "del", "d"):
            if not names:
                return self._r(255, err="Not enough information: \"dev\" argument is required.\n")
            if names[0] not in self.interfaces:
                return self._r(1, err=f"Cannot find device \"{names[0]}\"\n")
            if not ctx.root:
                return self._r(2, err="RTNETLINK answers: Operation not permitted\n")
            self.remove_interface(names[0])
            return self._r(0)
        return self._r(255, err=f'Command "{verb}" is unknown, try "ip link help".\n')

    async def _ipt_save(self, args: list[str], ctx: _Ctx, v6: bool) -> ExecResult:
        tool = "ip6tables-save" if v6 else "iptables-save"
        if not ctx.root:
            return self._r(1, err=f"{tool} {IPTABLES_VERSION} (nf_tables): Could not fetch rule set "
                                  "generation id: Permission denied (you must be root)\n")
        table = None
        if "-t" in args:
            try:
                table = args[args.index("-t") + 1]
            except IndexError:
                return self._r(2, err=f"{tool}: option requires an argument -- 't'\n")
        counters = bool({"-c", "--counters"} & set(args))
        return self._r(0, (self.ip6tables if v6 else self.iptables).save(table, counters))

    async def _ipt_restore(self, args: list[str], ctx: _Ctx, v6: bool) -> ExecResult:
        tool = "ip6tables-restore" if v6 else "iptables-restore"
        if not ctx.root:
            return self._r(1, err=f"{tool} {IPTABLES_VERSION} (nf_tables): Could not fetch rule set "
                                  "generation id: Permission denied (you must be root)\n")
        noflush = bool({"-n", "--noflush"} & set(args))
        table = args[args.index("-T") + 1] if "-T" in args and args.index("-T") + 1 < len(args) else None
        files = [a for a in args if not a.startswith("-") and a != table]
        if files:
            n = self._norm(files[0], ctx.cwd)
            if not self.host_path(n).is_file():
                return self._r(1, err=f"{tool}: Can't open {files[0]}: No such file or directory\n")
            text = self.read_text(n)
        else:
            text = (await ctx.read_stdin()).decode(errors="replace")
        ipt = self.ip6tables if v6 else self.iptables
        try:
            touched = ipt.restore(text, noflush=noflush, table=table)
        except IptablesError as e:
            return self._r(1, err=f"{e}\n")
        self._emit("iptables-changed", family=6 if v6 else 4, tables=touched)
        if self.running:
            # flannel, kube-router and kube-proxy notice deleted rules and put theirs back.
            async def resync() -> None:
                await self.clock.sleep(RESYNC_SECONDS)
                self._resync()
            self._spawn(resync())
        return self._r(0)

    async def _cmd_iptables_save(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return await self._ipt_save(args, ctx, False)

    async def _cmd_ip6tables_save(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return await self._ipt_save(args, ctx, True)

    async def _cmd_iptables_restore(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return await self._ipt_restore(args, ctx, False)

    async def _cmd_ip6tables_restore(self, args: list[str], ctx: _Ctx) -> ExecResult:
        return await self._ipt_restore(args, ctx, True)


# ------------------------------------------------------------------- building nodes
def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def fixture_pods(objects: Iterable[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per node, the (pod IP, sandbox id) of each non-hostNetwork pod of the fixture."""
    out: dict[str, list[tuple[str, str]]] = {}
    for o in objects:
        if o.get("kind") != "Pod" or (o.get("spec") or {}).get("hostNetwork"):
            continue
        node, ip = (o.get("spec") or {}).get("nodeName"), (o.get("status") or {}).get("podIP")
        if node and ip:
            md = o.get("metadata") or {}
            sandbox = hashlib.sha256(f"{md.get('namespace')}/{md.get('name')}".encode()).hexdigest()
            out.setdefault(node, []).append((ip, sandbox))
    return out


def fixture_services(objects: Iterable[dict]) -> list[KubeService]:
    """The Service ports of the fixture with their Running pods as endpoints."""
    objects = list(objects)
    # Running pods indexed by (namespace, label, value), in fixture order, so matching a
    # Service costs its candidates, not every pod of the cluster.
    by_label: dict[tuple[Any, str, Any], list[dict]] = {}
    for o in objects:
        st = o.get("status") or {}
        if o.get("kind") != "Pod" or st.get("phase") != "Running" or not st.get("podIP"):
            continue
        pmd = o.get("metadata") or {}
        for k, v in (pmd.get("labels") or {}).items():
            by_label.setdefault((pmd.get("namespace"), k, v), []).append(o)
    out: list[KubeService] = []
    for svc in (o for o in objects if o.get("kind") == "Service"):
        spec, md = svc.get("spec") or {}, svc.get("metadata") or {}
        cip = spec.get("clusterIP")
        if not cip or cip == "None":
            continue
        selector = spec.get("selector") or {}
        backends: list[dict] = []
        if selector:
            ns = md.get("namespace")
            # The rarest selector pair gives the fewest candidates; all pairs must match.
            cands = min((by_label.get((ns, k, v), []) for k, v in selector.items()), key=len)
            backends = [p for p in cands
                        if _matches(selector, (p.get("metadata") or {}).get("labels") or {})]
        lb = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
              if i.get("ip")]
        for port in spec.get("ports") or []:
            eps = []
            for p in backends:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):   # a named port: look it up in the pod
                    named = [cp.get("containerPort") for c in (p.get("spec") or {}).get("containers", [])
                             for cp in c.get("ports") or [] if cp.get("name") == target]
                    target = named[0] if named else port.get("port")
                eps.append(f"{p['status']['podIP']}:{target}")
            out.append(KubeService(md.get("namespace", "default"), md.get("name", ""),
                                   port.get("name", ""), cip, int(port.get("port", 0)), sorted(eps),
                                   str(port.get("protocol", "TCP")), port.get("nodePort"), lb))
    return out


def build_nodes(specs: Iterable[Any], cluster: dict, nodes_dir: Path, clock: Any,
                join_token: str | None = None, *,
                pods: dict[str, list[tuple[str, str]]] | None = None,
                services: list[KubeService] | None = None,
                defer_leases: bool = False) -> dict[str, NodeModel]:
    """One NodeModel per spec under ``nodes_dir/<name>``, servers first (agents read
    the server's settings when they start). All agents share one join token.

    The cost per node is its own files: kube-proxy's service chains (O(cluster
    endpoints) per node) are programmed when the node's iptables are first read.

    Args:
        pods: per node, the (IP, sandbox id) of pods holding flannel leases; default a few.
        services: what kube-proxy programs; default ``kubernetes`` and ``kube-dns``.
        defer_leases: see :class:`NodeModel` (the nodes component sets it from
            ``DEFER_LEASES_FROM_PODS`` pods on).
    """
    specs = sorted(specs, key=lambda s: 0 if s.role == "server" else 1)
    token = join_token or new_join_token()
    peers: dict[str, NodeModel] = {}
    for spec in specs:
        peers[spec.name] = NodeModel(spec, cluster, Path(nodes_dir) / spec.name, peers, clock,
                                     join_token=token,
                                     pod_ips=None if pods is None else pods.get(spec.name, []),
                                     defer_leases=defer_leases)
    api = str(cluster.get("server_url", "https://10.0.0.2:6443")).split("//")[-1]
    for svc in services or []:
        # default/kubernetes has no selector: its endpoint is the API server itself.
        if (svc.namespace, svc.name) == ("default", "kubernetes") and not svc.endpoints:
            svc.endpoints = [api.rsplit(":", 1)[0] + ":6443"]
    for n in peers.values():   # kube-dns endpoints point at the server's coredns pod
        n.kube_services = list(services) if services else n._default_services()
        if n.running.get("kube_proxy"):
            n._sync_kube_proxy(full=True)
    return peers


class NodesComponent:
    """Runtime component ``nodes``: builds ``rt.nodes`` from ``rt.fixture``.

    While a server's k3s is down (stop, restart, reboot, or failing to start) the
    ``apiserver`` component refuses connections: its ``outage()`` runs from the stop and
    is cancelled when k3s is up again, but lasts at least ``faults.api_down_seconds``
    when the ``api_down_on_restart`` fault is set.
    """

    name = "nodes"
    UNTIL_STARTED = 1e6   # cluster seconds: an outage that only the restart ends

    def __init__(self) -> None:
        self.rt: Any = None
        self.nodes: dict[str, NodeModel] = {}
        self._outage: asyncio.Task | None = None
        self._outage_t0 = 0.0
        self._outage_min = 0.0
        self._later: set[asyncio.Task] = set()

    async def start(self, rt: Any) -> None:
        self.rt = rt
        fx = rt.fixture
        objects = list(getattr(fx, "objects", None) or [])
        pods = fixture_pods(objects) if objects else None
        seeded = sum(len(v) for v in (pods or {}).values())
        self.nodes = build_nodes(fx.nodes, dict(fx.cluster), Path(rt.state_dir) / "nodes", rt.clock,
                                 pods=pods, services=fixture_services(objects) or None,
                                 defer_leases=seeded >= DEFER_LEASES_FROM_PODS)
        for n in self.nodes.values():
            n.on_server_restart = self._api_down
            n.on_server_started = self._api_up
        rt.nodes.update(self.nodes)

    def _api_down(self, seconds: float) -> None:
        try:
            api = self.rt.component("apiserver")
        except KeyError:
            return
        if self._outage is not None and not self._outage.done():
            return
        faults = getattr(self.rt, "faults", None)
        self._outage_min = (float(getattr(faults, "api_down_seconds", 0.0) or 0.0)
                            if getattr(faults, "api_down_on_restart", False) else 0.0)
        self._outage_t0 = self.rt.clock.cluster_now()
        self._outage = asyncio.ensure_future(api.outage(self.UNTIL_STARTED))

    def _api_up(self) -> None:
        task = self._outage
        if task is None or task.done():
            return
        remaining = self._outage_min - (self.rt.clock.cluster_now() - self._outage_t0)
        if remaining <= 0:
            task.cancel()   # the API server listens again when its outage is cancelled
            return

        async def later() -> None:
            await self.rt.clock.sleep(remaining)
            task.cancel()
        t = asyncio.ensure_future(later())
        self._later.add(t)
        t.add_done_callback(self._later.discard)

    async def stop(self) -> None:
        for t in [*self._later, *([self._outage] if self._outage else [])]:
            t.cancel()
        for n in self.nodes.values():
            await n.close()

    def describe(self) -> str:
        roles = ", ".join(f"{n.name} ({n.role}, {n.unit} {n.unit_state})" for n in self.nodes.values())
        return roles
