"""What a running twin's nodes hold, read from the twin's side (never through the runbook)."""
from __future__ import annotations

import hashlib
from typing import Any

K3S_CONFIG = "etc/rancher/k3s/config.yaml"


def node_files(twin: Any, node: str | None = None) -> dict[str, str]:
    """sha256 of every regular file under the node roots (the nodes' disks), keyed by the
    path below ``nodes/`` (``<node>/etc/...``); only one node's with ``node``."""
    root = twin.state_dir / "nodes"
    below = root / node if node else root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(below.rglob("*")) if p.is_file() and not p.is_symlink()}


def read_node_file(twin: Any, node: str, rel: str) -> bytes:
    """The bytes of ``rel`` (no leading slash) on ``node``'s disk."""
    return (twin.state_dir / "nodes" / node / rel).read_bytes()


def node_names(twin: Any) -> list[str]:
    """The nodes that have a k3s ``config.yaml``, sorted."""
    return sorted(p.name for p in (twin.state_dir / "nodes").iterdir() if (p / K3S_CONFIG).exists())


def k3s_configs(twin: Any) -> dict[str, bytes]:
    """Every node's k3s ``config.yaml``, byte for byte."""
    return {n: read_node_file(twin, n, K3S_CONFIG) for n in node_names(twin)}


def interfaces(twin: Any, node: str) -> set[str]:
    """The node's network interfaces (read on the twin's loop)."""
    return set(twin.call(lambda: list(twin.rt.nodes[node].interfaces)))


def iptables(twin: Any, node: str) -> str:
    """``iptables-save`` and ``ip6tables-save`` of the node, concatenated."""
    return twin.call(lambda: twin.rt.nodes[node].iptables_save() + twin.rt.nodes[node].iptables_save(v6=True))
