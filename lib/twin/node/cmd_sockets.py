"""``ss`` and ``ipset`` on a twin node: who listens on which port, and kube-router's sets.

``ss -lun`` shows the UDP sockets, among them the kernel's VXLAN sockets: one per VXLAN
device, on its ``dstport`` (``flannel.1`` on 8472, ``cilium_vxlan`` on Cilium's tunnel
port), owned by no process (``-p`` shows none) and gone only with the device. ``ss -ltn``
shows sshd, systemd-resolved, k3s (6443 and the apiserver on 6444 on servers, the
client load balancer on 6444 on agents, the kubelet's 10250), kube-proxy's 10256 while
it runs, and the Cilium agent's 4240 (health) and 4244 (Hubble) while one runs.

Example:
    >>> await ss(node, ["-lun"], Ctx(root=False, stdin=b""))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel

AGENT_PIDFILE = "/run/cilium/cilium.pid"


def _sockets(node: NodeModel) -> list[tuple[str, str, str | None, int]]:
    """(proto, local address:port, process, pid) of the listening sockets now."""
    k3s = "k3s-server" if node.role == "server" else "k3s-agent"
    pid = node.k3s.pid
    out: list[tuple[str, str, str | None, int]] = [
        ("tcp", "0.0.0.0:22", "sshd", 812), ("tcp", "[::]:22", "sshd", 812),
        ("tcp", "127.0.0.53%lo:53", "systemd-resolve", 598), ("udp", "127.0.0.53%lo:53", "systemd-resolve", 598),
        ("udp", "127.0.0.1:323", "chronyd", 640)]
    for iface in node.links.interfaces.values():
        if iface.kind == "vxlan":
            out.append(("udp", f"0.0.0.0:{int(iface.info.get('vxlan_port', 8472))}", None, 0))
    if node.k3s.unit_state == "active":
        run = node.running
        if node.role == "server":
            out += [("tcp", "*:6443", k3s, pid), ("tcp", "127.0.0.1:6444", k3s, pid),
                    ("tcp", "127.0.0.1:10257", k3s, pid), ("tcp", "127.0.0.1:10259", k3s, pid)]
        else:
            out.append(("tcp", "127.0.0.1:6444", k3s, pid))
        out += [("tcp", "*:10250", k3s, pid), ("tcp", "127.0.0.1:10248", k3s, pid),
                ("tcp", "127.0.0.1:10010", "containerd", pid + 40)]
        if run.get("kube_proxy"):
            out += [("tcp", "*:10256", k3s, pid), ("tcp", "127.0.0.1:10249", k3s, pid)]
    if node.exists(AGENT_PIDFILE):
        agent = int(node.read_text(AGENT_PIDFILE).strip() or 0)
        out += [("tcp", "*:4240", "cilium-agent", agent), ("tcp", "*:4244", "cilium-agent", agent),
                ("tcp", "127.0.0.1:9879", "cilium-agent", agent), ("tcp", "127.0.0.1:9890", "cilium-agent", agent)]
    return out


async def ss(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """``ss -l [-t] [-u] [-n] [-p]`` (listening sockets; ``-a`` shows the same here)."""
    letters = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    if "l" not in letters and "a" not in letters:
        return result(0, "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n")
    protos = {p for p, ch in (("tcp", "t"), ("udp", "u")) if ch in letters} or {"tcp", "udp"}
    rows = [s for s in _sockets(node) if s[0] in protos]
    netid = len(protos) > 1
    head = (("Netid " if netid else "") + "State  Recv-Q Send-Q      Local Address:Port        Peer Address:Port"
            + ("Process" if "p" in letters else "") + "\n")
    lines = []
    for proto, local, proc, pid in sorted(rows, key=lambda r: (r[0], r[1])):
        state = "LISTEN" if proto == "tcp" else "UNCONN"
        peer = "0.0.0.0:*" if not local.startswith(("[", "*")) else "*:*"
        users = f'users:(("{proc}",pid={pid},fd=3))' if "p" in letters and proc and ctx.root else ""
        lines.append((f"{proto:<6}" if netid else "") + f"{state:<6} 0      {4096 if proto == 'tcp' else 0:<6} "
                     f"{local:>24} {peer:>24}{users}\n")
    return result(0, head + "".join(lines))


async def ipset(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """``ipset list [-n|-name] [SET]`` and ``ipset destroy [SET]`` (root only)."""
    if not ctx.root:
        return result(1, err="ipset v7.19: Kernel error received: Operation not permitted\n")
    words = [a for a in args if not a.startswith("-")]
    verb = words[0] if words else "list"
    sets = node.ipsets
    if verb in ("list", "save", "-L"):
        names = sets.names()
        if len(words) > 1:
            if words[1] not in sets.sets:
                return result(1, err="ipset v7.19: The set with the given name does not exist\n")
            names = [words[1]]
        if "-n" in args or "-name" in args:
            return result(0, "".join(n + "\n" for n in names))
        return result(0, "\n".join(sets.sets[n].listing() for n in names))
    if verb in ("destroy", "x"):
        err = sets.destroy(words[1] if len(words) > 1 else None)
        return result(1, err=err) if err else result(0)
    return result(1, err=f"ipset v7.19: The twin supports `ipset list [-n] [SET]` and `ipset destroy [SET]`\n")
