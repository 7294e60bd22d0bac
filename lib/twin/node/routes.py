"""The node's IPv4 routing table, as ``ip route`` shows it.

Routes belong to devices: a route lives as long as its device, which is why flannel's
and Cilium's routes outlive the programs that added them and go with ``ip link delete``
or a reboot. So the table is derived from the devices that exist now:

- the LAN: ``default via <.1> dev eth0`` and the node's /24 on ``eth0``;
- flannel (host-gw): one route per other node's pod CIDR via that node's address on
  ``eth0`` (kept in ``eth0.info["host_gw_routes"]``: they stay until ``ip route del``
  or a reboot);
- flannel (VXLAN): its bridge ``cni0`` carries the node's own pod CIDR; ``flannel.1``
  one ``onlink`` route per other node's pod CIDR (what flannel learned from the nodes);
- Cilium (tunnel mode): ``cilium_host`` carries its router address, the node's pod
  CIDR(s) and one route per other node's CIDR via the router address (the tunnel
  endpoint is looked up in BPF, not in the routing table). The Cilium model records
  these on the device (``info["routes"]``: ``[[cidr, kind], ...]``, ``info["router_ip"]``).

Example:
    >>> [r.text() for r in table(node)][:1]  # doctest: +SKIP
    ['default via 10.0.0.1 dev eth0 proto static']
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import NodeModel


@dataclass(frozen=True)
class Route:
    dst: str
    dev: str
    via: str | None = None
    proto: str | None = None
    scope: str | None = None
    src: str | None = None
    onlink: bool = False
    mtu: int | None = None

    def text(self) -> str:
        """The line ``ip route`` prints."""
        parts = [self.dst]
        if self.via:
            parts += ["via", self.via]
        parts += ["dev", self.dev]
        if self.proto:
            parts += ["proto", self.proto]
        if self.scope:
            parts += ["scope", self.scope]
        if self.src:
            parts += ["src", self.src]
        if self.mtu:
            parts += ["mtu", str(self.mtu)]
        if self.onlink:
            parts.append("onlink")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The object ``ip -j route`` prints."""
        d: dict[str, Any] = {"dst": self.dst}
        if self.via:
            d["gateway"] = self.via
        d["dev"] = self.dev
        if self.proto:
            d["protocol"] = self.proto
        if self.scope:
            d["scope"] = self.scope
        if self.src:
            d["prefsrc"] = self.src
        d["flags"] = ["onlink"] if self.onlink else []
        if self.mtu:
            d["metrics"] = [{"mtu": self.mtu}]
        return d


def table(node: NodeModel) -> list[Route]:
    """The routes of the devices that exist now (see the module doc)."""
    ifaces = node.links.interfaces
    ip = str(node.spec.ip)
    lan = ipaddress.ip_network(f"{ip}/24", strict=False)
    out = [Route("default", "eth0", via=str(next(lan.hosts())), proto="static"),
           Route(str(lan), "eth0", proto="kernel", scope="link", src=ip)]
    own = ipaddress.ip_network(node.spec.pod_cidr, strict=False)
    if "cni0" in ifaces:
        out.append(Route(str(own), "cni0", proto="kernel", scope="link", src=str(next(own.hosts()))))
    run = node.k3s.running or {}
    if node.k3s.unit_state == "active" and run.get("flannel") and run.get("flannel_backend") == "host-gw":
        # flannel learns the other nodes' subnets from the API as they come: brought up to
        # date whenever someone looks (as kube-router's ipsets are)
        from .k3s_network import add_host_gw_routes
        add_host_gw_routes(node)
    eth0 = ifaces.get("eth0")
    for cidr, via in (eth0.info.get("host_gw_routes") or ()) if eth0 is not None else ():
        out.append(Route(str(cidr), "eth0", via=str(via)))    # flannel host-gw (outlive flannel)
    if "flannel.1" in ifaces:
        for peer in sorted(node.peers.values(), key=lambda n: n.spec.pod_cidr):
            if peer.name == node.name:
                continue
            net = ipaddress.ip_network(peer.spec.pod_cidr, strict=False)
            out.append(Route(str(net), "flannel.1", via=str(net.network_address), onlink=True))
    host = ifaces.get("cilium_host")
    if host is not None and host.info.get("router_ip"):
        router = str(host.info["router_ip"])
        for cidr, kind in host.info.get("routes") or ():
            if kind == "local":
                out.append(Route(str(cidr), "cilium_host", via=router, proto="kernel", src=router))
            else:
                out.append(Route(str(cidr), "cilium_host", via=router, proto="kernel", src=router,
                                 mtu=int(host.info.get("tunnel_mtu", 1450))))
        out.append(Route(router, "cilium_host", proto="kernel", scope="link"))
    return out
