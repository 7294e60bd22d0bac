"""The node's kernel BPF state: programs on the NICs (tc), on the cgroup root, and pinned
maps, as ``bpftool`` and ``ls /sys/fs/bpf`` show them.

What a BPF datapath (Cilium's) leaves in the kernel outlives the process that loaded it:

- **pins** under the bpffs ``/sys/fs/bpf`` keep maps and links alive. They are files of the
  node (``ls /sys/fs/bpf/tc/globals``), each holding a small JSON record (its ids);
  removing a pin releases what it held once nothing else does;
- **tc programs** on a device: on kernels >= 6.6 they are ``tcx`` links pinned under
  ``/sys/fs/bpf/cilium/devices/<dev>/links/`` (attached while the pin and the device
  exist); on older kernels legacy ``clsact`` filters held by the device itself;
- **cgroup programs** (Cilium's socket load balancer) are ``bpf_link``\\ s pinned under
  ``/sys/fs/bpf/cilium/socketlb/links/cgroup/``: attached to the cgroup root while pinned;
- the **socket-LB table**: the service -> backends entries the socket load balancer
  translates with. While the agent that owns it runs, it follows the cluster
  (``lb_live``); once the agent is gone it keeps the last entries (``lb_table``).

A reboot clears all of it: bpffs is in memory, and so are attachments. The Cilium model
(:mod:`twin.controllers.cilium.datapath`) installs this state; ``bpftool``
(:mod:`twin.node.cmd_bpf`) shows it; Cilium's cleanup removes it.

Example:
    >>> node.bpf.attach_socket_lb(["cil_sock4_connect"])  # doctest: +SKIP
    >>> node.bpf.socket_lb_active()  # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import NodeModel

BPFFS = "/sys/fs/bpf"
TC_GLOBALS = f"{BPFFS}/tc/globals"
CILIUM_BPFFS = f"{BPFFS}/cilium"
SOCKETLB_LINKS = f"{CILIUM_BPFFS}/socketlb/links/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
TCX_MIN_KERNEL = (6, 6)
# Cgroup attach types by program, as bpftool names them.
SOCKET_LB_ATTACH = {
    "cil_sock4_connect": "cgroup_inet4_connect", "cil_sock4_sendmsg": "cgroup_udp4_sendmsg",
    "cil_sock4_recvmsg": "cgroup_udp4_recvmsg", "cil_sock4_getpeername": "cgroup_inet4_getpeername",
    "cil_sock4_post_bind": "cgroup_inet4_post_bind", "cil_sock6_connect": "cgroup_inet6_connect",
    "cil_sock6_sendmsg": "cgroup_udp6_sendmsg", "cil_sock6_recvmsg": "cgroup_udp6_recvmsg",
    "cil_sock6_getpeername": "cgroup_inet6_getpeername", "cil_sock6_post_bind": "cgroup_inet6_post_bind",
    "cil_sock_release": "cgroup_inet_sock_release",
}


@dataclass(frozen=True)
class TcProgram:
    """One program on a device's ingress or egress hook."""

    dev: str
    ifindex: int
    direction: str      # ingress | egress
    name: str
    prog_id: int
    link_id: int | None  # tcx links; None for a legacy clsact filter

    def net_line(self) -> str:
        """The line ``bpftool net show`` prints under ``tc:``."""
        if self.link_id is not None:
            return f"{self.dev}({self.ifindex}) tcx/{self.direction} {self.name} prog_id {self.prog_id} link_id {self.link_id} "
        return f"{self.dev}({self.ifindex}) clsact/{self.direction} {self.name}-{self.dev} id {self.prog_id}"


@dataclass(frozen=True)
class CgroupProgram:
    name: str
    attach_type: str
    prog_id: int
    link_id: int


@dataclass(frozen=True)
class PinnedMap:
    path: str
    name: str
    map_id: int
    kind: str
    key: int
    value: int
    max_entries: int


def _kernel_tuple(release: str) -> tuple[int, int]:
    parts = (release.split("-")[0].split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


class BpfState:
    """The BPF objects of one node (see the module doc). Part of :class:`NodeModel`."""

    def __init__(self, node: NodeModel) -> None:
        self.node = node
        self._next_id = 100
        self._legacy_tc: list[TcProgram] = []
        self.lb_table: dict[str, list[str]] = {}
        self.lb_live = False   # the agent that owns the socket-LB table runs and keeps it current

    # ------------------------------------------------------------- boot
    def reset(self) -> None:
        """A booted kernel: no bpffs content, no attachments, no table."""
        files = self.node.files
        files.mkdir(BPFFS, 0o700)
        files.clear(BPFFS)
        self._legacy_tc.clear()
        self.lb_table = {}
        self.lb_live = False

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    @property
    def tcx(self) -> bool:
        """Whether the kernel attaches tc programs with tcx links (>= 6.6)."""
        return _kernel_tuple(self.node.kernel) >= TCX_MIN_KERNEL

    def _pin(self, path: str, record: dict[str, Any]) -> None:
        self.node.files.write(path, json.dumps(record) + "\n", 0o600)

    def _pins(self, directory: str) -> list[tuple[str, dict[str, Any]]]:
        files = self.node.files
        out: list[tuple[str, dict[str, Any]]] = []
        if not files.is_dir(directory):
            return out
        for name in files.listdir(directory):
            path = f"{directory}/{name}"
            if files.is_dir(path):
                continue
            try:
                out.append((path, json.loads(files.read_text(path) or "{}")))
            except (ValueError, OSError, UnicodeDecodeError):
                out.append((path, {}))
        return out

    # ------------------------------------------------------------- tc
    def attach_tc(self, dev: str, direction: str, name: str) -> None:
        """Attach ``name`` to ``dev``'s hook unless it is there (no event)."""
        iface = self.node.links.interfaces.get(dev)
        if iface is None:
            return
        if any(p.dev == dev and p.direction == direction and p.name == name for p in self.tc_programs()):
            return
        if self.tcx:
            self._pin(f"{CILIUM_BPFFS}/devices/{dev}/links/{name}",
                      {"ifindex": iface.index, "direction": direction, "prog_id": self._id(),
                       "link_id": self._id()})
        else:
            self._legacy_tc.append(TcProgram(dev, iface.index, direction, name, self._id(), None))

    def tc_programs(self) -> list[TcProgram]:
        """The tc programs attached now: a device that was deleted took its own with it."""
        ifaces = self.node.links.interfaces
        out = [p for p in self._legacy_tc if ifaces.get(p.dev) is not None and ifaces[p.dev].index == p.ifindex]
        devices = f"{CILIUM_BPFFS}/devices"
        files = self.node.files
        if files.is_dir(devices):
            for dev in files.listdir(devices):
                iface = ifaces.get(dev)
                for path, rec in self._pins(f"{devices}/{dev}/links"):
                    if iface is None or iface.index != rec.get("ifindex"):
                        continue   # a defunct link: its device is gone
                    out.append(TcProgram(dev, iface.index, str(rec.get("direction", "ingress")),
                                         posixpath.basename(path), int(rec.get("prog_id", 0)),
                                         int(rec.get("link_id", 0))))
        return sorted(out, key=lambda p: (p.ifindex, p.direction != "ingress", p.name))

    def detach_tc(self, dev: str) -> list[TcProgram]:
        """Remove every tc program of ``dev`` (what ``tc filter del`` / unpinning does)."""
        gone = [p for p in self.tc_programs() if p.dev == dev]
        self._legacy_tc = [p for p in self._legacy_tc if p.dev != dev]
        links = f"{CILIUM_BPFFS}/devices/{dev}"
        if self.node.files.exists(links):
            self.node.files.remove(links)
        return gone

    # ------------------------------------------------------------- cgroup (socket LB)
    def attach_socket_lb(self, programs: list[str]) -> None:
        """Attach the socket load balancer's programs to the cgroup root (pinned links)."""
        have = {p.name for p in self.cgroup_programs()}
        for name in programs:
            if name not in have:
                self._pin(f"{SOCKETLB_LINKS}/{name}", {"prog_id": self._id(), "link_id": self._id(),
                                                        "attach_type": SOCKET_LB_ATTACH.get(name, "cgroup_sock")})

    def cgroup_programs(self) -> list[CgroupProgram]:
        """The programs attached to the cgroup root now."""
        return [CgroupProgram(posixpath.basename(path), str(rec.get("attach_type", "")),
                              int(rec.get("prog_id", 0)), int(rec.get("link_id", 0)))
                for path, rec in self._pins(SOCKETLB_LINKS)]

    def socket_lb_active(self) -> bool:
        """Whether connect() to a service address is translated in the kernel here."""
        return any(p.attach_type in ("cgroup_inet4_connect", "cgroup_udp4_sendmsg")
                   for p in self.cgroup_programs())

    def detach_socket_lb(self) -> list[CgroupProgram]:
        """Unpin the socket-LB links: with no process holding them, they detach."""
        gone = self.cgroup_programs()
        if self.node.files.exists(SOCKETLB_LINKS):
            self.node.files.remove(SOCKETLB_LINKS)
        return gone

    # ------------------------------------------------------------- maps
    def pin_map(self, name: str, kind: str = "hash", key: int = 16, value: int = 16,
                max_entries: int = 65536) -> None:
        path = f"{TC_GLOBALS}/{name}"
        if not self.node.files.exists(path):
            self._pin(path, {"map_id": self._id(), "type": kind, "key": key, "value": value,
                             "max_entries": max_entries})

    def maps(self) -> list[PinnedMap]:
        """The maps pinned in ``/sys/fs/bpf/tc/globals``."""
        return [PinnedMap(path, posixpath.basename(path), int(rec.get("map_id", 0)),
                          str(rec.get("type", "hash")), int(rec.get("key", 0)), int(rec.get("value", 0)),
                          int(rec.get("max_entries", 0)))
                for path, rec in self._pins(TC_GLOBALS)]

    # ------------------------------------------------------------- socket-LB table
    def translate(self, ip: str, port: int, proto: str) -> list[str] | None:
        """The backends (``ip:port``) the stale socket-LB table holds for a service
        address, or None when it does not know it (or no socket LB is attached)."""
        if not self.socket_lb_active():
            return None
        return self.lb_table.get(f"{ip}:{port}/{proto.lower()}")
