"""What a running Cilium agent puts on its node, and what stays when the agent goes.

While an agent runs on a node (Ready, for the node's current boot) it keeps there:

- its pid file ``/var/run/cilium/cilium.pid`` (``/run`` on the node; removed when the
  agent stops cleanly, gone with ``/run`` at a reboot);
- its devices ``cilium_host``/``cilium_net``/``cilium_vxlan`` with the routes of the pod
  CIDRs on ``cilium_host`` (:mod:`twin.node.routes`) and its ``CILIUM_*`` chains;
- BPF (:mod:`twin.node.bpf`): tc programs on the NIC and its own devices (``tcx`` links
  pinned under ``/sys/fs/bpf/cilium/devices`` on kernels >= 6.6), the socket load
  balancer on the cgroup root (with kube-proxy replacement or ``bpf-lb-sock``), and its
  maps pinned in ``/sys/fs/bpf/tc/globals``;
- files: ``/etc/cni/net.d/05-cilium.conflist``, ``/opt/cni/bin/cilium-cni`` (the
  install-cni init container), ``/etc/sysctl.d/99-zzz-override_cilium.conf`` (the sysctl
  fix), ``/var/lib/cilium``, ``/run/cilium/state`` and the cgroup2 mount point
  ``/run/cilium/cgroupv2``.

Removing the agent pod (``helm uninstall``, ``cni.uninstall: false`` as in the chart's
default) removes none of it but the pid file: the socket LB keeps translating with the
service table it had at that moment (:func:`agent_gone`). ``cilium-dbg
post-uninstall-cleanup`` (:mod:`.cleanup`) or a reboot clears the kernel part.

Example:
    >>> install(nm, cfg, router_ip="10.42.1.1", local=["10.42.1.0/24"], remote=["10.42.0.0/24"])  # doctest: +SKIP
"""
from __future__ import annotations

import json
from typing import Any

CILIUM_CONFLIST = "/etc/cni/net.d/05-cilium.conflist"
CNI_BINARY = "/opt/cni/bin/cilium-cni"
SYSCTL_FILE = "/etc/sysctl.d/99-zzz-override_cilium.conf"
PIDFILE = "/run/cilium/cilium.pid"
RUN_DIR = "/run/cilium"
LIB_DIR = "/var/lib/cilium"
CGROUP_MOUNT = "/run/cilium/cgroupv2"

SYSCTL_TEXT = (
    "# Disable rp_filter on Cilium interfaces since it may cause mangled packets to be dropped\n"
    "-net.ipv4.conf.lxc*.rp_filter = 0\n"
    "-net.ipv4.conf.cilium_*.rp_filter = 0\n"
    "# The kernel uses max(conf.all, conf.{dev}) as its value, so we need to set .all. to 0 as well.\n"
    "# Otherwise it will overrule the device specific settings.\n"
    "net.ipv4.conf.all.rp_filter = 0\n")

# The maps the agent pins in /sys/fs/bpf/tc/globals: (name, type, key, value, entries).
MAPS = (
    ("cilium_call_policy", "prog_array", 4, 4, 65535), ("cilium_calls_hostns_00065", "prog_array", 4, 4, 50),
    ("cilium_ct4_global", "lru_hash", 14, 56, 524288), ("cilium_ct_any4_global", "lru_hash", 14, 56, 262144),
    ("cilium_events", "perf_event_array", 4, 4, 4), ("cilium_ipcache_v2", "lpm_trie", 40, 32, 512000),
    ("cilium_lb4_affinity", "lru_hash", 16, 16, 65536), ("cilium_lb4_backends_v3", "hash", 4, 16, 65536),
    ("cilium_lb4_reverse_nat", "hash", 2, 8, 65536), ("cilium_lb4_services_v2", "hash", 12, 12, 65536),
    ("cilium_lb4_source_range", "lpm_trie", 12, 1, 65536), ("cilium_lxc", "hash", 20, 48, 65535),
    ("cilium_metrics", "percpu_hash", 8, 16, 1024), ("cilium_node_map_v2", "hash", 20, 8, 16384),
    ("cilium_nodeport_neigh4", "lru_hash", 4, 8, 524288), ("cilium_policy_v2_00065", "hash", 12, 12, 16384),
    ("cilium_runtime_config", "array", 4, 8, 256), ("cilium_signals", "perf_event_array", 4, 4, 4),
    ("cilium_snat_v4_external", "lru_hash", 14, 40, 524288), ("cilium_tunnel_map", "hash", 20, 20, 65536),
)
# tc programs by device and hook (bpf_host on the NIC with kube-proxy replacement).
TC_PROGRAMS = (
    ("cilium_net", "ingress", "cil_to_host"),
    ("cilium_host", "ingress", "cil_to_host"), ("cilium_host", "egress", "cil_from_host"),
    ("cilium_vxlan", "ingress", "cil_from_overlay"), ("cilium_vxlan", "egress", "cil_to_overlay"),
    ("cilium_geneve", "ingress", "cil_from_overlay"), ("cilium_geneve", "egress", "cil_to_overlay"),
)
NIC_PROGRAMS = (("eth0", "ingress", "cil_from_netdev"), ("eth0", "egress", "cil_to_netdev"))
SOCKET_LB_PROGRAMS = ("cil_sock4_connect", "cil_sock4_sendmsg", "cil_sock4_recvmsg",
                      "cil_sock6_connect", "cil_sock6_sendmsg", "cil_sock6_recvmsg",
                      "cil_sock4_post_bind", "cil_sock6_post_bind", "cil_sock_release")


def conflist_text() -> str:
    return json.dumps({"cniVersion": "0.3.1", "name": "cilium", "plugins": [
        {"type": "cilium-cni", "enable-debug": False,
         "log-file": "/var/run/cilium/cilium-cni.log"}]}, indent=2) + "\n"


def _write_if_changed(nm: Any, path: str, text: str, mode: int) -> None:
    try:
        current = nm.read_text(path) if nm.exists(path) else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        nm.write(path, text, mode)


def write_cni_conf(nm: Any, path: str, *, exclusive: bool) -> list[str]:
    """The agent's CNI config manager once Ready (daemon/cmd/cni/config.go,
    ``setupCNIConfFile``): write ``path`` unless it already holds the same text, rename
    a legacy ``05-cilium.conf`` away, and with ``cni-exclusive`` rename every other
    ``*.conf``/``*.conflist``/``*.json`` file of the folder to ``<name>.cilium_bak``
    (it does so again whenever the folder changes). Returns the renamed files."""
    folder, name = path.rsplit("/", 1)
    _write_if_changed(nm, path, conflist_text(), 0o644)
    renamed = []
    others = [n for n in (nm.listdir(folder) if nm.is_dir(folder) else ()) if n != name]
    for other in others:
        src = f"{folder}/{other}"
        legacy = other == "05-cilium.conf"
        if not (legacy or (exclusive and other.endswith((".conf", ".conflist", ".json")))):
            continue
        if nm.is_dir(src):
            continue
        mode = nm.host_path(src).stat().st_mode & 0o7777
        nm.write(f"{src}.cilium_bak", nm.files.read(src), mode)
        nm.remove(src)
        renamed.append(src)
    return renamed


def cni_uninstall(nm: Any, folder: str) -> list[str]:
    """The agent pod's preStop ``/cni-uninstall.sh`` with ``cni-uninstall: "true"``:
    remove Cilium's active CNI configurations (``*cilium*.conf``/``.conflist``) from
    ``folder``; the ``*.cilium_bak`` files of other plugins stay. Returns what went."""
    gone = []
    for n in (nm.listdir(folder) if nm.is_dir(folder) else ()):
        if "cilium" in n and n.endswith((".conf", ".conflist")):
            nm.remove(f"{folder}/{n}")
            gone.append(f"{folder}/{n}")
    return gone


def install(nm: Any, cfg: Any, *, router_ip: str | None, local: list[str], remote: list[str],
            cni_conf: str | None = CILIUM_CONFLIST, bin_dir: str = "/opt/cni/bin") -> None:
    """What a Ready agent keeps on node ``nm`` (idempotent: nothing changes when present).

    Args:
        cfg: the agent's :class:`~.config.CiliumConfig`.
        router_ip: the ``cilium_host`` address (CiliumInternalIP).
        local, remote: the pod CIDRs of this node and of the other nodes.
        cni_conf: the host file ``write-cni-conf-when-ready`` names through the pod's
            mount (None: the agent writes no CNI config, e.g. ``cni.customConf=true``).
        bin_dir: the host folder ``install-cni-binaries`` copies ``cilium-cni`` into.
    """
    if cni_conf:
        write_cni_conf(nm, cni_conf, exclusive=bool(getattr(cfg, "cni_exclusive", False)))
    binary = f"{bin_dir.rstrip('/')}/cilium-cni"
    if not nm.exists(binary):
        nm.write(binary, "#!cilium-cni (installed by the cilium agent's install-cni-binaries)\n", 0o755)
    _write_if_changed(nm, SYSCTL_FILE, SYSCTL_TEXT, 0o644)
    for d in (LIB_DIR, f"{RUN_DIR}/state", CGROUP_MOUNT):
        if not nm.is_dir(d):
            nm.mkdir(d)
    if not nm.exists(PIDFILE):
        nm.write(PIDFILE, f"{nm.k3s.pid + 7}\n", 0o644)
    nm.add_interface("cilium_net", "veth", 1500, peer="cilium_host")
    host = nm.add_interface("cilium_host", "veth", 1500, peer="cilium_net")
    if router_ip:
        routes = [[c, "local"] for c in local] + [[c, "tunnel"] for c in remote]
        if host.info.get("router_ip") != router_ip or host.info.get("routes") != routes:
            host.info.update(router_ip=router_ip, routes=routes)
    if cfg.tunnel and cfg.tunnel_protocol == "vxlan":
        nm.add_interface("cilium_vxlan", "vxlan", 1500, info={"vxlan_port": cfg.tunnel_port, "external": True})
    elif cfg.tunnel and cfg.tunnel_protocol == "geneve":
        nm.add_interface("cilium_geneve", "vxlan", 1500,
                         info={"vxlan_port": cfg.tunnel_port, "external": True, "geneve": True})
    bpf = nm.bpf
    for name, kind, key, value, entries in MAPS:
        bpf.pin_map(name, kind, key, value, entries)
    for dev, hook, prog in TC_PROGRAMS + (NIC_PROGRAMS if cfg.kpr else ()):
        bpf.attach_tc(dev, hook, prog)
    if cfg.socket_lb:
        bpf.attach_socket_lb(list(SOCKET_LB_PROGRAMS))
    else:
        # an agent started without the socket LB detaches the one an earlier agent left
        # (C pkg/datapath/loader: socketlb.Disable() when it is off): from then on only
        # kube-proxy translates ClusterIPs from this node's sockets
        bpf.detach_socket_lb()
    bpf.lb_live = True


def agent_gone(nm: Any, table: dict[str, list[str]]) -> None:
    """The agent stopped (its pod deleted): it removes its pid file; the kernel keeps the
    rest, the socket LB with ``table`` (the services as they were at that moment)."""
    bpf = nm.bpf
    if bpf.lb_live:
        bpf.lb_table = dict(table)
        bpf.lb_live = False
    if nm.exists(PIDFILE):
        nm.remove(PIDFILE)
