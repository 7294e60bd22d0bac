"""What a running k3s puts on its node's network: flannel's devices, files and rules,
kube-router's network-policy chains and the kubelet's chains.

Each function (re)creates what is missing and leaves the rest alone, so the k3s service
calls them when it starts and again to put deleted rules back while it runs. Disabling
something removes nothing: what exists stays until ``ip link delete``,
``iptables-restore``, ``rm`` or a reboot. kube-proxy's chains are in
:mod:`twin.node.kube_proxy`.

Example:
    >>> start_flannel(node, node.effective_settings())  # doctest: +SKIP
    >>> "flannel.1" in node.interfaces  # doctest: +SKIP
    True
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from .iptables import Iptables

if TYPE_CHECKING:
    from .model import NodeModel

FLANNEL_CONFLIST = "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist"
FLANNEL_NETCONF = "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"
FLANNEL_SUBNET_ENV = "/run/flannel/subnet.env"
FLANNEL_VXLAN_PORT = 8472
#: ``eth0.info`` key of the routes flannel's host-gw backend added: ``[[cidr, via], ...]``
HOST_GW_ROUTES = "host_gw_routes"


def start_flannel(node: NodeModel, s: dict[str, Any]) -> None:
    """flannel with settings ``s``: its devices, its files (rewritten on every start) and
    its rules."""
    net = ipaddress.ip_network(node.spec.pod_cidr, strict=False)
    gw = next(net.hosts())
    backend = s["flannel_backend"]
    mtu = 1450 if backend == "vxlan" else (1420 if backend.startswith("wireguard") else 1500)
    links = node.links
    if backend == "vxlan" and "flannel.1" not in links.interfaces:
        links.create("flannel.1", "vxlan", 1450, info={"vxlan_port": FLANNEL_VXLAN_PORT, "vni": 1})
    if backend.startswith("wireguard") and "flannel-wg" not in links.interfaces:
        links.create("flannel-wg", "wireguard", 1420)
    if backend == "host-gw":
        add_host_gw_routes(node)
    if "cni0" not in links.interfaces:
        links.create("cni0", "bridge", mtu, info={"address": f"{gw}/{net.prefixlen}"})
    # k3s writes flannel's files on every start when flannel runs.
    node.files.write(FLANNEL_NETCONF, json.dumps({
        "Network": s["cluster_cidr"], "EnableIPv6": False, "EnableIPv4": True,
        "IPv6Network": "::/0", "Backend": {"Type": backend}}, indent="\t") + "\n")
    node.files.write(FLANNEL_CONFLIST, json.dumps({
        "name": "cbr0", "cniVersion": "1.0.0",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "forceAddress": True,
                                             "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}, indent=2) + "\n")
    node.files.write(FLANNEL_SUBNET_ENV,
                     f"FLANNEL_NETWORK={s['cluster_cidr']}\nFLANNEL_SUBNET={gw}/{net.prefixlen}\n"
                     f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
    sync_flannel_rules(node.iptables, s["cluster_cidr"], node.spec.pod_cidr)
    node.k3s.log("info", f"Running flannel backend={backend} subnet={net}")


def add_host_gw_routes(node: NodeModel) -> None:
    """host-gw: one route per other node's podCIDR via that node's address on the LAN
    device. They belong to ``eth0``, so they outlive flannel: only ``ip route del`` or a
    reboot removes them (``routes.table`` shows them)."""
    eth0 = node.links.interfaces.get("eth0")
    if eth0 is None:
        return
    have = {tuple(r) for r in eth0.info.get(HOST_GW_ROUTES) or ()}
    for peer in sorted(node.peers.values(), key=lambda n: n.spec.pod_cidr):
        if peer.name != node.name:
            have.add((str(ipaddress.ip_network(peer.spec.pod_cidr, strict=False)), str(peer.spec.ip)))
    eth0.info[HOST_GW_ROUTES] = sorted([list(r) for r in have])


def sync_flannel_rules(ipt: Iptables, cluster_cidr: str, pod_cidr: str) -> None:
    """flannel's forward and masquerade rules for this node's pod CIDR."""
    cidr, pod = cluster_cidr, pod_cidr
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


def sync_kubelet(v4: Iptables, v6: Iptables) -> None:
    """The chains the kubelet inside k3s always keeps (canaries and its firewall)."""
    for t in (v4, v6):
        t.ensure_chain("mangle", "KUBE-IPTABLES-HINT")
        for table in ("mangle", "nat", "filter"):
            t.ensure_chain(table, "KUBE-KUBELET-CANARY")
    lo = "127.0.0.0/8"
    v4.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    v4.ensure_rule("filter", "-A OUTPUT -j KUBE-FIREWALL")
    v4.ensure_rule("filter", f'-A KUBE-FIREWALL ! -s {lo} -d {lo} -m comment --comment '
                   '"block incoming localnet connections" -m conntrack ! --ctstate '
                   "RELATED,ESTABLISHED,DNAT -j DROP")


def sync_kube_router(v4: Iptables, v6: Iptables, service_cidr: str) -> None:
    """kube-router's network-policy chains (k3s runs it unless disable-network-policy)."""
    for t in (v4, v6):
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
    v4.ensure_rule("filter", f"-A KUBE-ROUTER-INPUT -d {service_cidr} -m comment "
                             '--comment "allow traffic to primary cluster IP range - '
                             'EXCSNPMCSVRAZJZM" -j RETURN', first=True)
    for proto, h in (("tcp", "LR7XO7NXDBGQJD2M"), ("udp", "76UCBPIZNGJNWNUZ")):
        v4.ensure_rule("filter", f"-A KUBE-ROUTER-INPUT -p {proto} -m comment --comment "
                                 f'"allow LOCAL {proto.upper()} traffic to node ports - {h}" '
                                 "-m addrtype --dst-type LOCAL -m multiport "
                                 "--dports 30000:32767 -j RETURN")


def add_hostport_chains(node: NodeModel, pod: dict, ip: str) -> None:
    """What the ``portmap`` CNI plugin (chained in flannel's conflist) adds when a pod with
    a ``hostPort`` gets its sandbox: the ``CNI-HOSTPORT-*`` chains and one ``CNI-DN-*`` per
    sandbox. Nobody removes the shared chains: they stay through k3s restarts (k3s
    cleans nothing up) until ``k3s-killall.sh`` (``grep -v CNI-``) or a reboot."""
    ports = [(str(p.get("protocol", "TCP")).lower(), int(p["hostPort"]), int(p.get("containerPort", p["hostPort"])))
             for c in (pod.get("spec") or {}).get("containers") or () for p in c.get("ports") or ()
             if p.get("hostPort")]
    if not ports:
        return
    md = pod.get("metadata") or {}
    cid = hashlib.sha256(f"{md.get('namespace')}/{md.get('name')}/{md.get('uid')}".encode()).hexdigest()
    dn = "CNI-DN-" + hashlib.sha256(f"cbr0{cid}".encode()).hexdigest()[:24]
    node.add_chain("nat", "CNI-HOSTPORT-SETMARK", [
        '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000'])
    node.add_chain("nat", "CNI-HOSTPORT-MASQ", [
        '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
        "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"])
    rules = ["-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
             "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"]
    for proto, host, cport in ports:
        rules += [f'-A CNI-HOSTPORT-DNAT -p {proto} -m comment --comment "dnat name: \\"cbr0\\" id: '
                  f'\\"{cid}\\"" -m multiport --dports {host} -j {dn}',
                  f"-A {dn} -s {ip}/32 -p {proto} -m {proto} --dport {host} -j CNI-HOSTPORT-SETMARK",
                  f"-A {dn} -p {proto} -m {proto} --dport {host} -j DNAT --to-destination {ip}:{cport}"]
    node.add_chain("nat", "CNI-HOSTPORT-DNAT", rules)
