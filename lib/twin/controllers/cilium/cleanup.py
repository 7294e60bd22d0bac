"""``cilium-dbg post-uninstall-cleanup``: Cilium's own removal of what its agent left on a
node, run in a container of the Cilium image on that node.

Modelled on Cilium's source (``cilium-dbg/cmd/cleanup.go``, ``pkg/socketlb``):

1. it refuses while an agent runs: the agent's pid file ``/var/run/cilium/cilium.pid``
   exists ("Agent should not be running when cleaning up", exit 1). Run inside a
   running agent's pod, it therefore always refuses; after ``helm uninstall`` the pid
   file is gone;
2. it prints what it is about to remove (``Warning: Destructive operation ...``) and,
   without ``-f``, asks ``[y/N]`` on standard input;
3. it removes, printing a line for each: the tc programs on every device, the socket-LB
   programs on the cgroup root (their pinned links under ``/sys/fs/bpf``), the
   ``cilium_*`` devices with their routes, the endpoint state ``/var/run/cilium`` and
   ``/var/lib/cilium``, the CNI configs in ``/etc/cni/net.d`` (``*.cilium_bak`` renamed
   back), and with ``--all-state`` or ``--bpf-state`` the ``cilium_*`` maps in
   ``/sys/fs/bpf/tc/globals``. It does not remove ``/opt/cni/bin/cilium-cni``, the
   sysctl override, nor the ``CILIUM_*`` iptables chains.

Errors are printed (``Error: ...``) and the remaining steps still run; the exit code is
then still 0, as in Cilium: check the node afterwards (``bpftool net show``,
``bpftool cgroup tree``).

What the process can reach is the container's (:class:`ContainerView`): the host's
network devices only with ``hostNetwork``; netlink and bpf changes only with privilege
(``privileged`` or ``NET_ADMIN`` + ``SYS_ADMIN``: the bpf() syscall is closed to others);
host files only through ``hostPath`` mounts (``/sys/fs/bpf``, ``/var/run/cilium`` or ``/run/cilium``, ``/etc/cni/net.d``,
``/var/lib/cilium``).

Example:
    >>> run(view, ["--all-state", "-f"], b"")  # doctest: +SKIP
    (0, b'Warning: Destructive operation. You are about to remove: ...', b'')
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

CNI_DIR = "/etc/cni/net.d"
CNI_FILES = ("10-cilium-cni.conf", "00-cilium-cni.conf", "05-cilium-cni.conf", "05-cilium.conf",
             "05-cilium.conflist")
CGROUP_ROOT = "/run/cilium/cgroupv2"
USAGE = ("Usage:\n  cilium-dbg post-uninstall-cleanup [flags]\n\nFlags:\n"
         "      --all-state   Remove all cilium state\n      --bpf-state   Remove BPF state\n"
         "  -f, --force       Skip confirmation\n  -h, --help        help for post-uninstall-cleanup\n")


def _norm(path: str) -> str:
    p = posixpath.normpath("/" + path.lstrip("/"))
    return "/run" + p[len("/var/run"):] if p == "/var/run" or p.startswith("/var/run/") else p


@dataclass
class ContainerView:
    """What one container on a node can reach (from its pod spec).

    Attributes:
        node: the NodeModel it runs on.
        host_network: the pod shares the node's network namespace.
        privileged: may change netlink and BPF state (privileged, or NET_ADMIN+SYS_ADMIN).
        mounts: container path -> host path of its hostPath volumes.
    """

    node: Any
    host_network: bool
    privileged: bool
    mounts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Any, pod: dict, container: str) -> "ContainerView":
        spec = pod.get("spec") or {}
        volumes = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in spec.get("volumes") or ()}
        c = next((c for c in list(spec.get("containers") or ()) if c.get("name") == container), None) or {}
        sc = c.get("securityContext") or {}
        caps = set((sc.get("capabilities") or {}).get("add") or ())
        mounts = {}
        for m in c.get("volumeMounts") or ():
            host = volumes.get(m.get("name"))
            if host:
                mounts[_norm(m.get("mountPath", ""))] = _norm(host)
        return cls(node, bool(spec.get("hostNetwork")),
                   bool(sc.get("privileged")) or {"NET_ADMIN", "SYS_ADMIN"} <= caps, mounts)

    def host(self, path: str) -> str | None:
        """The node path a container path reaches, or None (the container's own file)."""
        p = _norm(path)
        best = max((m for m in self.mounts if p == m or p.startswith(m.rstrip("/") + "/")),
                   key=len, default=None)
        if best is None:
            return None
        return posixpath.normpath(self.mounts[best] + p[len(best):])


def run(view: ContainerView, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``cilium-dbg post-uninstall-cleanup ARGS`` in the container ``view`` describes."""
    flags = set()
    for a in args:
        if a in ("-h", "--help"):
            return 0, USAGE.encode(), b""
        if a in ("--all-state", "--bpf-state", "-f", "--force"):
            flags.add({"--force": "-f"}.get(a, a))
        else:
            return 1, b"", f"Error: unknown flag: {a}\n{USAGE}".encode()
    nm = view.node
    out: list[str] = []
    err: list[str] = []
    pid = view.host("/var/run/cilium/cilium.pid")
    if pid is not None and nm.exists(pid):
        return 1, b"", b"Agent should not be running when cleaning up\nFound pidfile /var/run/cilium/cilium.pid\n"
    bpf_only = "--bpf-state" in flags and "--all-state" not in flags
    tc = nm.bpf.tc_programs() if view.host_network else []
    links = sorted((i for i in nm.interfaces.values() if i.name.startswith("cilium_")),
                   key=lambda i: i.index) if view.host_network and not bpf_only else []
    warn = ["Warning: Destructive operation. You are about to remove:"]
    by_dev: dict[str, list[str]] = {}
    for p in tc:
        by_dev.setdefault(p.dev, []).append(f"{p.name}({p.direction})")
    if by_dev:
        warn.append("- tc filters\n" + "".join(f"{d} [{' '.join(v)}]\n" for d, v in by_dev.items()).rstrip("\n"))
    if not bpf_only:
        if links:
            warn.append("- links\n" + "\n".join(f"{i.name}" for i in links))
        warn += [f"- socketlb bpf programs at {CGROUP_ROOT}", f"- mounted cgroupv2 at {CGROUP_ROOT}",
                 "- library code in /var/lib/cilium", "- endpoint state in /var/run/cilium",
                 "- CNI configuration at " + ", ".join(f"{CNI_DIR}/{f}" for f in CNI_FILES)]
    warn += ["- all BPF maps in /sys/fs/bpf/tc/globals containing 'cilium_' and 'cilium_tunnel_map'",
             "- mounted bpffs at /sys/fs/bpf"]
    out.append("\n".join(warn) + "\n")
    if "-f" not in flags:
        out.append("The command is non-revertible, do you want to continue [y/N]?\n")
        if stdin.strip().lower() != b"y":
            return 0, "".join(out).encode(), b""
    denied = "operation not permitted"
    # tc programs first: removing maps under attached programs makes them drop packets.
    for dev in by_dev:
        if not view.privileged:
            err.append(f"Error: {denied}\n")
            break
        for p in nm.bpf.detach_tc(dev):
            out.append(f"removed tc filter {p.name} ({p.direction}) of {dev}\n")
    links_dir = view.host("/sys/fs/bpf")
    if links_dir is None:
        err.append(f"Error: Failed to detach all socketlb bpf programs from {CGROUP_ROOT}: detach cgroup: "
                   f"query cgroup {CGROUP_ROOT} for type CGroupInet4Connect: "
                   f"{'no such file or directory' if view.host(CGROUP_ROOT) is None else denied}\n")
    elif not view.privileged:
        err.append(f"Error: Failed to detach all socketlb bpf programs from {CGROUP_ROOT}: detach cgroup: "
                   f"unpin link: {denied}\n")
    else:
        nm.bpf.detach_socket_lb()
        out.append("removed all socketlb bpf programs\n")
    if not bpf_only:
        for i in links:
            if not view.privileged:
                err.append(f"Error: {denied}\n")
                break
            for r in _routes_of(nm, i.name):
                out.append(f"removed route {{Ifindex: {i.index} Dst: {r} Src: <nil> Gw: <nil> Flags: [] "
                           "Table: 254 Realm: 0}\n")
            nm.remove_interface(i.name)
            out.append(f"removed link {i.name}\n")
        for d in ("/var/run/cilium", "/var/lib/cilium"):
            h = view.host(d)
            if h is not None and nm.exists(h):
                for child in nm.listdir(h):
                    nm.remove(f"{h}/{child}")
        h = view.host(CNI_DIR)
        if h is not None and nm.is_dir(h):
            for name in nm.listdir(h):
                if name.endswith(".cilium_bak"):
                    nm.write(f"{h}/{name[:-len('.cilium_bak')]}", nm.read(f"{h}/{name}"))
                    nm.remove(f"{h}/{name}")
            for name in CNI_FILES:
                if nm.exists(f"{h}/{name}"):
                    nm.remove(f"{h}/{name}")
    maps_dir = view.host("/sys/fs/bpf/tc/globals")
    if maps_dir is not None and nm.is_dir(maps_dir):
        # Unpinning is an unlink in bpffs: root in the container may, privileged or not.
        for m in nm.listdir(maps_dir):
            if m.startswith("cilium_"):
                nm.remove(f"{maps_dir}/{m}")
                out.append(f"removed map {m}\n")
    return 0, "".join(out).encode(), "".join(err).encode()


def _routes_of(nm: Any, dev: str) -> list[str]:
    host = nm.interfaces.get(dev)
    if host is None:
        return []
    return [c for c, _ in (host.info.get("routes") or ())]

