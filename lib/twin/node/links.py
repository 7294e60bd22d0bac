"""A node's network links (``ip link``): the interfaces, their indexes and MAC addresses.

A booted node has ``lo`` and ``eth0``; k3s's flannel adds ``flannel.1`` and ``cni0``,
pods add ``veth*`` on ``cni0``, and Cilium adds its own devices through the node model.
The ``ip`` command is in :mod:`twin.node.cmd_net`. Routes will live beside the links
here when the node models them.

Example:
    >>> links = Links("server-1", lambda event, **info: None)
    >>> links.reset(boot=1)
    >>> [i.link_line().split(":")[1].strip() for i in links.interfaces.values()]
    ['lo', 'eth0']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(slots=True)
class Interface:
    """One network interface as ``ip link`` shows it (slotted: a node at scale has a
    veth per pod)."""

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

    def kind_details(self, local_ip: str) -> str:
        """The kind line ``ip -d link show`` adds (VXLAN id and UDP port), or ""."""
        if self.kind != "vxlan":
            return {"bridge": "bridge forward_delay 1500 hello_time 200 max_age 2000",
                    "veth": "veth", "dummy": "dummy"}.get(self.kind, "")
        port = int(self.info.get("vxlan_port", 8472))
        tail = ("srcport 0 0 dstport {port} nolearning ttl auto ageing 300 udpcsum "
                "noudp6zerocsumtx noudp6zerocsumrx").format(port=port)
        if self.info.get("external"):
            proto = "geneve" if self.info.get("geneve") else "vxlan"
            return f"{proto} external id 0 {tail}"
        return f"vxlan id {int(self.info.get('vni', 1))} local {local_ip} dev eth0 {tail}"

    def detail_suffix(self, local_ip: str) -> str:
        """What ``ip -d`` appends to the ``ip -o link`` line: the link details and, after
        the one-line separator, the kind line (for VXLAN its id and ``dstport``)."""
        kind = self.kind_details(local_ip)
        return (" promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 "
                + (f"\\    {kind} " if kind else "")
                + "addrgenmode eui64 numtxqueues 1 numrxqueues 1 gso_max_size 65536 gso_max_segs 65535 ")

    def link_info(self, local_ip: str) -> dict[str, Any] | None:
        """``linkinfo`` of ``ip -d -j link show``."""
        if self.kind == "vxlan":
            data: dict[str, Any] = {"port": int(self.info.get("vxlan_port", 8472)), "learning": False,
                                    "ttl": 0, "ageing": 300}
            if self.info.get("external"):
                data.update(external=True, id=0)
            else:
                data.update(id=int(self.info.get("vni", 1)), local=local_ip, link="eth0")
            return {"info_kind": "geneve" if self.info.get("geneve") else "vxlan", "info_data": data}
        if self.kind in ("bridge", "veth", "dummy"):
            return {"info_kind": self.kind}
        return None

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


def _mac(seed: str) -> str:
    """A locally administered unicast MAC derived from ``seed``.

    >>> _mac("n1/eth0/1")
    '12:09:c3:6a:9d:00'
    """
    h = hashlib.sha256(seed.encode()).digest()
    return (bytes(((h[0] & 0xFC) | 0x02,)) + h[1:6]).hex(":")


class Links:
    """The interfaces of one node, by name, with indexes in creation order.

    Args:
        node_name: seeds the MAC addresses (stable for a node and a boot).
        emit: the node's event function; :meth:`add` and :meth:`remove` emit
            ``interfaces-changed``.
    """

    def __init__(self, node_name: str, emit: Callable[..., None]) -> None:
        self.node_name = node_name
        self._emit = emit
        self.interfaces: dict[str, Interface] = {}
        self._index = 0
        self._boot = 1

    def reset(self, boot: int) -> None:
        """A booted kernel: only ``lo`` and ``eth0`` (the dict object stays the same)."""
        self.interfaces.clear()
        self._index = 0
        self._boot = boot
        self.create("lo", "loopback", 65536)
        self.create("eth0", "ether", 1500)

    def create(self, name: str, kind: str, mtu: int, **kw: Any) -> Interface:
        """Create (or replace) an interface without an event: the caller reports it."""
        self._index += 1
        iface = Interface(name, self._index, kind, mtu, _mac(f"{self.node_name}/{name}/{self._boot}"), **kw)
        self.interfaces[name] = iface
        return iface

    def add(self, name: str, kind: str = "veth", mtu: int = 1500, **kw: Any) -> Interface:
        """Create an interface unless it exists; emits ``interfaces-changed``."""
        if name in self.interfaces:
            return self.interfaces[name]
        iface = self.create(name, kind, mtu, **kw)
        self._emit("interfaces-changed", added=[name], removed=[])
        return iface

    def remove(self, name: str) -> bool:
        """Delete an interface; a bridge's ports are released. False if absent."""
        if name not in self.interfaces:
            return False
        del self.interfaces[name]
        for i in self.interfaces.values():
            if i.master == name:
                i.master = None
        self._emit("interfaces-changed", added=[], removed=[name])
        return True

    def vxlan_port_holder(self, port: int, besides: str) -> str | None:
        """The VXLAN device other than ``besides`` that holds UDP ``port``, if any."""
        return next((i.name for i in self.interfaces.values()
                     if i.kind == "vxlan" and i.name != besides and
                     int(i.info.get("vxlan_port", port)) == port), None)
