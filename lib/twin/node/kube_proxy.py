"""The embedded kube-proxy: the Service ports it programs and the iptables chains it writes.

k3s runs kube-proxy inside its own process unless ``disable-kube-proxy`` is set. On each
node it keeps ``KUBE-SERVICES``, ``KUBE-SVC-*``, ``KUBE-SEP-*`` (and the ``KUBE-EXT-*``,
``KUBE-NODEPORTS`` and ``KUBE-FORWARD`` chains) for every Service port of the cluster.
Chain names follow kube-proxy's ``servicePortChainName``: base32 of a SHA-256, 16 chars.

Two kinds of sync, as kube-proxy's iptables proxier (``pkg/proxy/iptables``,
``syncProxyRules``) has them: :meth:`KubeProxy.sync` is the full one k3s's start (and the
re-creation of deleted rules) runs: the base chains and jumps, then every Service chain;
:meth:`KubeProxy.resync` is the one a Service or EndpointSlice change triggers while
kube-proxy runs: only the Service chains, rewritten from the new Service ports (the
twin's network model calls it, at most once per ``minSyncPeriod``, see
:mod:`twin.controllers.kube_proxy_sync`). Nothing syncs while k3s is stopped or runs with
``disable-kube-proxy``: the rules of the last sync stay, and :attr:`KubeProxy.services`
is what they hold.

Example:
    >>> proxy = KubeProxy(Iptables(4), Iptables(6), [])  # doctest: +SKIP
    >>> proxy.sync("10.42.0.0/16", full=True)  # doctest: +SKIP
    >>> proxy.resync([KubeService("default", "web", "", "10.43.0.20", 80, ["10.42.1.7:8080"])],
    ...              "10.42.0.0/16")  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from .iptables import Iptables


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


def target_port(pod: dict, port: dict) -> Any:
    """The port of ``pod`` a Service port (a ``spec.ports`` item) sends to: its
    ``targetPort`` (the port itself without one); a named ``targetPort`` is looked up in
    the pod's containers, as the EndpointSlice controller does (the Service port when the
    pod does not name it).

    Example:
        >>> pod = {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}
        >>> target_port(pod, {"port": 80, "targetPort": "http"}), target_port(pod, {"port": 53})
        (8080, 53)
    """
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, str):
        named = [cp.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or ()
                 for cp in c.get("ports") or () if cp.get("name") == target]
        target = named[0] if named else port.get("port")
    return target


def service_ports(svc: dict, endpoints: Callable[[dict], list[str]]) -> list[KubeService]:
    """The Service ports kube-proxy programs for one Service object: none for a headless
    Service (or one without a cluster IP yet), else one per port.

    Args:
        svc: a core/v1 Service.
        endpoints: the ``ip:port`` endpoints of one of its ports (the ``spec.ports`` item);
            kube-proxy takes the ready ones of the Service's EndpointSlices.

    Example:
        >>> svc = {"metadata": {"namespace": "default", "name": "web"},
        ...        "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80}]}}
        >>> [p.port_id for p in service_ports(svc, lambda port: ["10.42.1.7:80"])]
        ['default/web:http']
    """
    spec, md = svc.get("spec") or {}, svc.get("metadata") or {}
    cip = spec.get("clusterIP")
    if not cip or cip == "None":
        return []
    lb = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
          if i.get("ip")]
    return [KubeService(md.get("namespace", "default"), md.get("name", ""), port.get("name", ""), cip,
                        int(port.get("port", 0)), sorted(endpoints(port)),
                        str(port.get("protocol", "TCP")), port.get("nodePort"), list(lb))
            for port in spec.get("ports") or []]


def _second_host(cidr: str) -> str:
    # hosts()[1] without listing a /16's 65k hosts: coredns's address on the server.
    net = ipaddress.ip_network(cidr, strict=False)
    return str(next(itertools.islice(net.hosts(), 1, None)))


def default_services(cluster: dict, pod_cidr: str, peers: dict[str, Any]) -> list[KubeService]:
    """``default/kubernetes`` and ``kube-system/kube-dns`` (coredns on the server), the
    Services every k3s cluster has, for a node whose pod CIDR is ``pod_cidr``."""
    svc = ipaddress.ip_network(cluster.get("service_cidr", "10.43.0.0/16"), strict=False)
    server_ip = str(cluster.get("server_url", "https://10.0.0.2:6443")).split("//")[-1]
    server_ip = server_ip.rsplit(":", 1)[0]
    dns = str(cluster.get("cluster_dns") or svc.network_address + 10)
    coredns = ""
    for n in peers.values() if peers else []:
        if n.role == "server":
            coredns = _second_host(n.spec.pod_cidr)
    if not coredns:
        coredns = _second_host(pod_cidr)
    return [
        KubeService("default", "kubernetes", "https", str(svc.network_address + 1), 443,
                    [f"{server_ip}:6443"]),
        KubeService("kube-system", "kube-dns", "dns", dns, 53, [f"{coredns}:53"], "UDP"),
        KubeService("kube-system", "kube-dns", "dns-tcp", dns, 53, [f"{coredns}:53"]),
        KubeService("kube-system", "kube-dns", "metrics", dns, 9153, [f"{coredns}:9153"]),
    ]


class KubeProxy:
    """What the embedded kube-proxy keeps in one node's iptables.

    Args:
        v4: the node's IPv4 rules.
        v6: the node's IPv6 rules (kube-proxy keeps its base chains there too).
        services: the Service ports it programs (see :func:`default_services`).
    """

    def __init__(self, v4: Iptables, v6: Iptables, services: list[KubeService]) -> None:
        self.v4 = v4
        self.v6 = v6
        self.services = services

    def sync(self, cidr: str, full: bool) -> None:
        """Program kube-proxy's chains for :attr:`services` (``cidr``: the cluster CIDR
        kube-proxy runs with); ``full`` rewrites every Service chain, as kube-proxy's
        full sync does."""
        if full:
            # A full sync rewrites every service chain a pending one would write (and the
            # chains below are already there), so that one need not run at all.
            self.v4.discard_pending()
        for t in (self.v4, self.v6):
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
        services = self.services
        if full:
            self.v4.defer(lambda: self._program_services(cidr, services, True))
        else:
            self._program_services(cidr, services, False)

    def resync(self, services: list[KubeService], cidr: str) -> None:
        """kube-proxy's sync after a Service or EndpointSlice change: the Service chains
        are rewritten for ``services`` (the base chains and jumps, which only a full sync
        re-creates, are left alone). The rewrite costs O(cluster endpoints), so it is
        deferred like a full sync's (until this node's rules are next read or changed,
        which then see exactly what an immediate rewrite gives); a later resync before
        that replaces it.

        Args:
            services: every Service port of the cluster with its ready endpoints now.
            cidr: the cluster CIDR kube-proxy runs with.
        """
        self.services = list(services)
        programmed = self.services
        self.v4.defer(lambda: self._program_services(cidr, programmed, True))

    def _program_services(self, cidr: str, services: list[KubeService], full: bool) -> None:
        """kube-proxy's per-Service chains (the second half of :meth:`sync`)."""
        ipt = self.v4
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
                ipt.ensure_parsed(table, chain, targets, rule)
        ipt.ensure_rule("nat", '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                               'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                               "-j KUBE-NODEPORTS")
