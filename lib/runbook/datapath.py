"""What Cilium leaves on a node after ``helm uninstall``: facts read over SSH, parsed purely.

Removing Cilium's pods removes none of its datapath (docs/cilium-on-k3s.md §4): BPF programs stay
attached to the NICs (tc) and to the cgroup root (the socket load balancer, which keeps
translating ClusterIPs, kube-dns's too, to Cilium-era backends), its maps stay pinned
under ``/sys/fs/bpf``, its devices stay, and so do its files: the CNI config
(``05-cilium.conflist`` in ``cni.confPath``), the CNI binary (``cilium-cni`` in
``cni.binPath``), the sysctl override ``/etc/sysctl.d/99-zzz-override_cilium.conf`` and
its state folders ``/var/lib/cilium`` and ``/run/cilium``.

:func:`gather` reads all of it from one node (``bpftool`` in JSON, ``ip -o link``,
``stat``, ``ls``; every privileged read through ``sudo``) into a :class:`NodeDatapath`;
the parsers are pure and golden-tested (``tests/fixtures/datapath``). The same facts
decide whether the rollback needs Cilium's cleanup on a node (nothing to clean: no pod)
and prove, after it, that nothing is left (:meth:`NodeDatapath.problems`).

A program or map is Cilium's by the rule ``cilium-dbg post-uninstall-cleanup`` itself
applies to tc filters: its name holds ``cil_``, ``cilium`` or one of the object names of
older releases (``bpf_host``, ``bpf_lxc``, ``bpf_netdev``, ``bpf_network``,
``bpf_overlay``); a map also by its pin under ``/sys/fs/bpf/tc/globals/cilium_*`` or
``/sys/fs/bpf/cilium``.

Example:
    >>> dp = gather(node, files=cilium_files({}))            # doctest: +SKIP
    >>> dp.problems()                                          # doctest: +SKIP
    ['cgroup programs: /sys/fs/cgroup cgroup_inet4_connect cil_sock4_connect', ...]
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .nodes import Node

__all__ = [
    "SYSCTL_FILE", "LIB_DIR", "RUN_DIR", "PIDFILE", "CONFLIST", "CNI_BINARY", "DEFAULT_CNI_CONF_DIR",
    "DEFAULT_CNI_BIN_DIR", "is_cilium_program", "parse_net_show", "parse_cgroup_tree", "parse_maps",
    "cilium_interfaces", "cni_dirs", "cilium_files", "NodeDatapath", "gather",
]

#: Cilium's sysctl fix (the agent's init container ``sysctlfix`` writes it; nothing removes it)
SYSCTL_FILE = "/etc/sysctl.d/99-zzz-override_cilium.conf"
LIB_DIR = "/var/lib/cilium"
RUN_DIR = "/run/cilium"
#: the running agent's pid file: Cilium's cleanup refuses while it exists
PIDFILE = "/run/cilium/cilium.pid"
CONFLIST = "05-cilium.conflist"
CNI_BINARY = "cilium-cni"
#: the chart's ``cni.confPath`` / ``cni.binPath`` defaults (containerd's own defaults too)
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
_CILIUM_NAMES = ("cil_", "cilium", "bpf_host", "bpf_lxc", "bpf_netdev", "bpf_network", "bpf_overlay")
_MAP_PINS = ("/sys/fs/bpf/tc/globals/cilium_", "/sys/fs/bpf/cilium/")


def is_cilium_program(name: str) -> bool:
    """Whether a BPF program (or tc filter) name is Cilium's.

    >>> is_cilium_program("cil_sock4_connect"), is_cilium_program("cilium-eth0")
    (True, True)
    >>> is_cilium_program("sd_fw_ingress")
    False
    """
    return any(k in (name or "") for k in _CILIUM_NAMES)


def _json_list(text: str) -> list[Any]:
    text = (text or "").strip()
    if not text:
        return []
    doc = json.loads(text)
    return doc if isinstance(doc, list) else [doc]


def parse_net_show(text: str) -> list[str]:
    """Cilium's programs in ``bpftool -j net show``: ``"DEV KIND NAME"`` per program (pure).

    Both attachment forms count: ``tcx/ingress`` links (kernels >= 6.6) and legacy
    ``clsact/ingress`` filters.

    >>> parse_net_show('[{"xdp": [], "tc": [{"devname": "eth0", "ifindex": 2, '
    ...                '"kind": "tcx/ingress", "name": "cil_from_netdev", "prog_id": 9}]}]')
    ['eth0 tcx/ingress cil_from_netdev']
    """
    out = []
    for section in _json_list(text):
        for entry in (section or {}).get("tc") or ():
            name = str(entry.get("name") or "")
            if is_cilium_program(name):
                out.append(f"{entry.get('devname')} {entry.get('kind')} {name}")
    return out


def parse_cgroup_tree(text: str) -> list[str]:
    """Cilium's programs in ``bpftool -j cgroup tree``: ``"CGROUP ATTACH_TYPE NAME"`` (pure).

    >>> parse_cgroup_tree('[{"cgroup": "/sys/fs/cgroup", "programs": [{"id": 7, '
    ...                   '"attach_type": "cgroup_inet4_connect", "name": "cil_sock4_connect"}]}, '
    ...                   '{"cgroup": "/sys/fs/cgroup/system.slice", "programs": [{"id": 3, '
    ...                   '"attach_type": "cgroup_device", "name": "sd_devices"}]}]')
    ['/sys/fs/cgroup cgroup_inet4_connect cil_sock4_connect']
    """
    out = []
    for row in _json_list(text):
        for prog in (row or {}).get("programs") or ():
            name = str(prog.get("name") or "")
            if is_cilium_program(name):
                out.append(f"{row.get('cgroup')} {prog.get('attach_type')} {name}")
    return out


def parse_maps(text: str) -> list[str]:
    """Cilium's maps in ``bpftool -j map show -f``: their pins, or ``id N name NAME`` for an
    unpinned one a program still holds (pure).

    >>> parse_maps('[{"id": 4, "type": "hash", "name": "cilium_lxc", '
    ...            '"pinned": ["/sys/fs/bpf/tc/globals/cilium_lxc"]}, {"id": 5, "name": "sd_x"}]')
    ['/sys/fs/bpf/tc/globals/cilium_lxc']
    """
    out = []
    for m in _json_list(text):
        pins = [str(p) for p in (m or {}).get("pinned") or ()]
        name = str(m.get("name") or "")
        if any(p.startswith(_MAP_PINS) for p in pins):
            out += [p for p in pins if p.startswith(_MAP_PINS)]
        elif name.startswith("cilium_"):
            out.append(pins[0] if pins else f"id {m.get('id')} name {name}")
    return out


def cilium_interfaces(names: Sequence[str]) -> list[str]:
    """Cilium's devices: ``cilium_*`` and the per-endpoint ``lxc`` + 12 hex veths (the rule
    of Cilium's cleanup: ``lxc`` names of that length).

    >>> cilium_interfaces(["eth0", "cilium_host", "lxc1a2b3c4d5e6f", "lxc_health", "flannel.1"])
    ['cilium_host', 'lxc1a2b3c4d5e6f']
    """
    return [n for n in names if n.startswith("cilium_") or (n.startswith("lxc") and len(n) == 15)]


def cni_dirs(values: dict[str, Any]) -> tuple[str, str]:
    """The host folders Cilium writes its CNI config and binary to: the values'
    ``cni.confPath`` and ``cni.binPath`` (chart defaults ``/etc/cni/net.d``, ``/opt/cni/bin``).

    >>> cni_dirs({}), cni_dirs({"cni": {"confPath": "/etc/cni/custom"}})[0]
    (('/etc/cni/net.d', '/opt/cni/bin'), '/etc/cni/custom')
    """
    cni = values.get("cni") if isinstance(values.get("cni"), dict) else {}
    return (str(cni.get("confPath") or DEFAULT_CNI_CONF_DIR).rstrip("/") or "/",
            str(cni.get("binPath") or DEFAULT_CNI_BIN_DIR).rstrip("/") or "/")


def cilium_files(values: dict[str, Any]) -> list[str]:
    """The files Cilium's agent writes on a node (the rollback moves them to the backup
    folder): its CNI config, its CNI binary and its sysctl override.

    >>> cilium_files({})
    ['/etc/cni/net.d/05-cilium.conflist', '/opt/cni/bin/cilium-cni', '/etc/sysctl.d/99-zzz-override_cilium.conf']
    """
    conf, bin_dir = cni_dirs(values)
    return [posixpath.join(conf, CONFLIST), posixpath.join(bin_dir, CNI_BINARY), SYSCTL_FILE]


@dataclass
class NodeDatapath:
    """What Cilium left on one node.

    Attributes:
        node, role.
        tc: Cilium's programs on devices (``DEV KIND NAME``).
        cgroup: Cilium's programs on cgroups (the socket load balancer).
        maps: Cilium's BPF maps (pins).
        interfaces: Cilium's devices.
        files: Cilium's files present (of those asked for).
        state_dirs: Cilium's state folders that are not empty.
        pidfile: the agent's pid file exists (an agent runs, or was killed).
        bpftool: whether ``bpftool`` could be run (None: not asked); without it the BPF
            lists are empty and prove nothing.
    """

    node: str
    role: str
    tc: list[str] = field(default_factory=list)
    cgroup: list[str] = field(default_factory=list)
    maps: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    state_dirs: list[str] = field(default_factory=list)
    pidfile: bool = False
    bpftool: bool | None = True

    @property
    def kernel_state(self) -> bool:
        """BPF programs or maps, or Cilium's devices, are left in the kernel."""
        return bool(self.tc or self.cgroup or self.maps or self.interfaces)

    @property
    def needs_cleanup(self) -> bool:
        """Cilium's cleanup has something to remove here (kernel state or state folders)."""
        return self.kernel_state or bool(self.state_dirs) or self.pidfile

    def problems(self) -> list[str]:
        """One line per kind of leftover (empty: nothing of Cilium's left on the node)."""
        out = []
        if self.bpftool is False:
            out.append("bpftool could not run: the BPF state is unknown (install bpftool, e.g. "
                       "`apt install linux-tools-common linux-tools-$(uname -r)`)")
        for label, items in (("tc programs", self.tc), ("cgroup programs (socket LB)", self.cgroup),
                             ("pinned maps", self.maps), ("devices", self.interfaces),
                             ("files", self.files), ("state folders", self.state_dirs)):
            if items:
                shown = ", ".join(items[:6]) + (f" ... ({len(items)} in all)" if len(items) > 6 else "")
                out.append(f"{label}: {shown}")
        if self.pidfile:
            out.append(f"agent pid file {PIDFILE}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> dict[str, Any]:
        """One table row: counts per kind, and ``clean``."""
        return {"node": self.node, "role": self.role, "tc programs": len(self.tc),
                "cgroup programs": len(self.cgroup), "pinned maps": len(self.maps),
                "devices": ", ".join(self.interfaces) or "-", "files": ", ".join(self.files) or "-",
                "state folders": ", ".join(self.state_dirs) or "-",
                "bpftool": {True: "yes", False: "MISSING", None: "not asked"}[self.bpftool],
                "clean": not self.problems()}


#: the three read-only bpftool commands, JSON output (fixed command lines)
BPFTOOL = {"net": "bpftool -j net show", "cgroup": "bpftool -j cgroup tree", "maps": "bpftool -j map show -f"}


def _bpftool(n: Node, what: str) -> tuple[bool, str]:
    r = n.run(BPFTOOL[what], sudo=True)
    if r.rc == 127 or "command not found" in r.stderr:
        return False, ""
    return True, r.check_output()


def gather(n: Node, *, files: Sequence[str], bpf: bool = True) -> NodeDatapath:
    """Read what Cilium left on node ``n`` (over SSH, read-only).

    Args:
        files: the paths of Cilium's files to look for (:func:`cilium_files`).
        bpf: also read the BPF state with ``bpftool`` (False: devices, files and folders only).
    """
    dp = NodeDatapath(n.name, n.role, bpftool=None)
    if bpf:
        ok, net = _bpftool(n, "net")
        dp.bpftool = ok
        if ok:
            dp.tc = parse_net_show(net)
            dp.cgroup = parse_cgroup_tree(_bpftool(n, "cgroup")[1])
            dp.maps = parse_maps(_bpftool(n, "maps")[1])
    dp.interfaces = cilium_interfaces([i.name for i in n.interfaces()])
    dp.files = [f for f in files if n.run("test -e %s", f, sudo=True).ok]
    for d in (LIB_DIR, RUN_DIR):
        r = n.run("ls -A %s", d, sudo=True)
        if r.ok and r.stdout.split():
            dp.state_dirs.append(d)
    dp.pidfile = n.run("test -e %s", PIDFILE, sudo=True).ok
    return dp
