"""A fresh node's files, as a k3s install on Ubuntu leaves them.

The directories with their modes, ``/etc/hostname``, ``/etc/hosts``, ``/etc/os-release``,
the k3s config (0600: an agent's holds the join token), the systemd unit and its env
file, the server's token file, and flannel's host-local IPAM leases. A node built on an
existing state directory keeps its files (see :meth:`twin.node.model.NodeModel`).

Example:
    >>> new_join_token().startswith("K10")
    True
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from .containerd import CONFIG_TMPL
from .files import HOME
from . import k3s_config
from .k3s_config import CONFIG
from .leases import CNI_LEASES

if TYPE_CHECKING:
    from .model import NodeModel

TOKEN_FILE = "/var/lib/rancher/k3s/server/token"

# (directory, mode) of a fresh node; the modes decide what ubuntu may read.
DIRECTORIES = (("/etc", 0o755), ("/root", 0o700), (HOME, 0o750), ("/tmp", 0o1777),
               ("/run", 0o755), ("/var/log", 0o755), ("/etc/cni/net.d", 0o755),
               ("/var/lib/rancher/k3s/agent/etc/cni/net.d", 0o755),
               ("/var/lib/rancher/k3s/agent/etc/flannel", 0o755),
               (CNI_LEASES, 0o755), ("/opt/cni/bin", 0o755), ("/etc/sysctl.d", 0o755),
               ("/sys/fs/bpf", 0o700), ("/sys/fs/cgroup", 0o755))


def new_join_token() -> str:
    """A k3s join token: ``K10<ca hash>::server:<password>`` (a secret, never log it)."""
    return f"K10{secrets.token_hex(32)}::server:{secrets.token_hex(16)}"


def token_from_files(node: NodeModel) -> str | None:
    """The cluster's join token from this node's or a peer's token file, if any."""
    for n in [node, *node.peers.values()]:
        try:
            return n.files.read_text(TOKEN_FILE).strip()
        except (OSError, PermissionError):
            continue
    return None


def os_release(image: str) -> str:
    """``/etc/os-release`` for a node image such as ``Ubuntu 22.04.4 LTS``."""
    version = (image.split() + ["", "22.04"])[1] if image.lower().startswith("ubuntu") else "22.04"
    vid = ".".join(version.split(".")[:2]) or "22.04"
    codename = {"20.04": "focal", "22.04": "jammy", "24.04": "noble"}.get(vid, "jammy")
    return (f'PRETTY_NAME="{image}"\nNAME="Ubuntu"\nVERSION_ID="{vid}"\n'
            f'VERSION="{version} LTS ({codename.title()})"\nVERSION_CODENAME={codename}\n'
            f"ID=ubuntu\nID_LIKE=debian\nHOME_URL=\"https://www.ubuntu.com/\"\n"
            f"UBUNTU_CODENAME={codename}\n")


def k3s_config_text(node: NodeModel) -> str:
    """The ``config.yaml`` the install wrote: a server's options, or an agent's join."""
    spec, c = node.spec, node.cluster
    if node.role == "server":
        return (
            "# k3s server configuration: each key is a `k3s server` flag without the\n"
            "# leading dashes (https://docs.k3s.io/installation/configuration).\n"
            "write-kubeconfig-mode: \"0644\"\n"
            + "# Traefik and ServiceLB are replaced by ingress-nginx and MetalLB.\n"
            + "".join(f"{k}: {v}\n" for k, v in (("flannel-backend", c.get("flannel_backend")),)
                      if v and v != "vxlan")
            + "disable:\n" + "".join(f"  - {d}\n" for d in c.get("disable", ["traefik", "servicelb"]))
            + f"tls-san:\n  - {spec.ip}\n  - {node.name}\n"
            f"node-ip: {spec.ip}\n")
    return (
        "# k3s agent configuration: joins the server below with the cluster token.\n"
        f"server: {c.get('server_url', 'https://10.0.0.2:6443')}\n"
        f"token: {node.join_token}\n"
        f"node-ip: {spec.ip}\n")


def unit_file_text(unit: str, role: str) -> str:
    """The systemd unit the k3s install script writes."""
    exec_start = "server" if role == "server" else "agent"
    return (f"[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\n"
            f"Wants=network-online.target\nAfter=network-online.target\n\n[Install]\n"
            f"WantedBy=multi-user.target\n\n[Service]\nType=notify\n"
            f"EnvironmentFile=-/etc/systemd/system/{unit}.service.env\nKillMode=process\n"
            f"Delegate=yes\nRestart=always\nRestartSec=5s\n"
            f"ExecStart=/usr/local/bin/k3s \\\n    {exec_start} \\\n")


def seed_files(node: NodeModel, pods: list[tuple[str, str]] | None, defer_leases: bool) -> None:
    """Write a fresh node's files (sets ``node.join_token`` when it has none).

    Args:
        node: the node, its parts built.
        pods: the (pod IP, sandbox id) holding flannel leases; None for a few.
        defer_leases: write the lease files when first reached (see :mod:`.leases`).
    """
    files = node.files
    if node.join_token is None:
        node.join_token = token_from_files(node) or new_join_token()
    for d, mode in DIRECTORIES:
        files.mkdir(d, mode)
        files.chmod(d, mode)
    files.symlink("/var/run", "../run")   # Ubuntu: /var/run is a link to /run
    files.write("/etc/hostname", f"{node.name}\n")
    files.write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {node.name}\n{node.spec.ip} {node.name}\n")
    files.write("/etc/os-release", os_release(getattr(node.spec, "os_image", "Ubuntu 22.04.4 LTS")))
    files.write(f"{HOME}/.bashrc", "# ~/.bashrc: executed by bash(1) for non-login shells.\n")
    if node.role == "server":
        files.mkdir("/var/lib/rancher/k3s/server", 0o700)
        files.write(TOKEN_FILE, node.join_token + "\n", 0o600)
    files.write(CONFIG, k3s_config_text(node), 0o600)
    own = getattr(node.spec, "k3s_files_for", lambda _token: {})(node.join_token)
    if own:   # a node rebuilt from a snapshot has its own config files
        if CONFIG not in own:
            files.remove(CONFIG)
        for path, text in own.items():
            files.write(path, text, 0o600)
    if node.role == "server" and k3s_config.embedded_etcd(k3s_config.read_config(files)[0]):
        files.mkdir(k3s_config.ETCD_DIR, 0o700)   # an initialised etcd member (it has joined)
    unit = node.k3s.unit
    files.write(f"/etc/systemd/system/{unit}.service", unit_file_text(unit, node.role))
    files.write(f"/etc/systemd/system/{unit}.service.env", "", 0o600)
    tmpl = getattr(node.spec, "containerd_template", None)
    if tmpl:   # the fixture's node has its own containerd template (e.g. a GPU runtime)
        files.write(CONFIG_TMPL, tmpl)
    # The pods of the fixture (or a few) hold addresses from flannel's host-local IPAM.
    node.lease_files.seed(node.spec.pod_cidr, pods, defer_leases)
