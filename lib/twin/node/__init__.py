"""The twin's k3s nodes: one model per node, composed of a small part per concern.

Each :class:`NodeModel` is one Ubuntu k3s node whose filesystem lives under a directory
of the twin's state dir; interfaces, iptables and the k3s unit are in memory. The model
reproduces what matters for a Flannel -> Cilium migration:

- k3s reads ``/etc/rancher/k3s/config.yaml`` (and ``config.yaml.d/*.yaml``) each time its
  unit starts. Server-only options count only on servers: an agent logs
  ``Unknown flag --X found in config.yaml, skipping`` and inherits the server's settings.
- What runs (flannel, kube-router's network policy, the embedded kube-proxy) creates
  interfaces, files and chains. Disabling something does not remove what exists: it
  stays until deleted (``ip link delete``, ``iptables-restore``, ``rm``) or a reboot.
- A reboot clears interfaces (but ``lo`` and ``eth0``), all iptables rules, ``/tmp`` and
  ``/run``; then k3s starts again and re-creates what its configuration says.

Where things live (one concern per module; a new concern is a new part plus its
``cmd_*`` handlers and rows in ``commands.COMMANDS``):

- ``model``: :class:`NodeModel`, the composition, events and reboot;
- ``files``, ``leases``, ``seed``: the file system, flannel's lease files, a fresh node;
- ``links``, ``routes``, ``iptables``, ``kube_proxy``, ``ipsets``: interfaces, routes,
  rules, kube-proxy's chains, kube-router's sets;
- ``bpf``: BPF programs on the NICs and the cgroup root, pinned maps, the socket-LB table;
- ``k3s_config``, ``k3s_service``, ``k3s_network``, ``containerd``, ``kubeconfig``: what
  k3s reads, its unit, what it runs, the containerd config and admin kubeconfig it writes;
- ``shell``, ``commands``, ``cmd_*``: command-line parsing, the command table, handlers;
- ``build``, ``component``: nodes from a fixture, the runtime component.

The command set is documented in ``lib/twin/README.md`` ("Node commands").

Example:
    >>> nodes = build_nodes(specs, cluster, state_dir / "nodes", Clock())  # doctest: +SKIP
    >>> rc, out, err = await nodes["server-1"].exec("sudo cat /etc/rancher/k3s/config.yaml")  # doctest: +SKIP
"""
from __future__ import annotations

from .build import build_nodes, fixture_pods, fixture_services
from .component import DEFER_LEASES_FROM_PODS, NodesComponent
from .files import HOME
from .iptables import BUILTIN_CHAINS, Iptables, IptablesError
from .k3s_config import CONFIG
from .k3s_network import FLANNEL_CONFLIST, FLANNEL_NETCONF
from .k3s_service import RESYNC_SECONDS
from .kube_proxy import KubeService
from .links import Interface
from .model import EVENTS, NodeModel
from .seed import new_join_token
from .shell import ExecResult, ShellRefused, tokenize

__all__ = [
    "BUILTIN_CHAINS", "CONFIG", "DEFER_LEASES_FROM_PODS", "EVENTS", "FLANNEL_CONFLIST",
    "FLANNEL_NETCONF", "HOME", "RESYNC_SECONDS", "ExecResult", "Interface", "Iptables",
    "IptablesError", "KubeService", "NodeModel", "NodesComponent", "ShellRefused",
    "build_nodes", "fixture_pods", "fixture_services", "new_join_token", "tokenize",
]
