"""Shared data of the twin_nodes unit tests (a uniquely named module, importable from tests)."""
from __future__ import annotations

from dataclasses import dataclass, field

CLUSTER = {"name": "minicloud", "k3s_version": "v1.30.6+k3s1", "cluster_cidr": "10.42.0.0/16",
           "service_cidr": "10.43.0.0/16", "server_url": "https://10.0.0.2:6443"}


@dataclass
class Spec:
    """Duck-typed twin.fixtures.NodeSpec."""

    name: str
    role: str
    ip: str
    pod_cidr: str
    kernel: str = "5.15.0-105-generic"
    os_image: str = "Ubuntu 22.04.4 LTS"
    cpu: str = "4"
    memory: str = "16Gi"
    labels: dict = field(default_factory=dict)


SPECS = [Spec("server-1", "server", "10.0.0.2", "10.42.0.0/24"),
         Spec("agent-1", "agent", "10.0.0.3", "10.42.1.0/24"),
         Spec("agent-2", "agent", "10.0.0.4", "10.42.2.0/24", kernel="6.8.0-45-generic")]
