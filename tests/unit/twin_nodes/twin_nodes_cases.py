"""Shared data and helpers of the twin_nodes tests, unit and integration (a uniquely named
module, importable from tests; the integration harness imports it too).

The small cluster: one server and two agents (agent-2 on another kernel), as
``twin.fixtures.NodeSpec``. Copy the specs before changing one (``copy.deepcopy``).
"""
from __future__ import annotations

import asyncio

from twin.fixtures import NodeSpec
from twin.node import KubeService

CLUSTER = {"name": "minicloud", "k3s_version": "v1.30.6+k3s1", "cluster_cidr": "10.42.0.0/16",
           "service_cidr": "10.43.0.0/16", "server_url": "https://10.0.0.2:6443"}
KERNEL = "5.15.0-105-generic"
OS_IMAGE = "Ubuntu 22.04.4 LTS"

SPECS = [NodeSpec("server-1", "server", "10.0.0.2", "10.42.0.0/24", KERNEL, OS_IMAGE),
         NodeSpec("agent-1", "agent", "10.0.0.3", "10.42.1.0/24", KERNEL, OS_IMAGE),
         NodeSpec("agent-2", "agent", "10.0.0.4", "10.42.2.0/24", "6.8.0-45-generic", OS_IMAGE)]


def run(coro):
    """Run a node coroutine to completion (the unit tests have no running loop)."""
    return asyncio.run(coro)


def sh(node, line: str, stdin: bytes = b""):
    """``node.exec(line, stdin)`` -> ExecResult."""
    return run(node.exec(line, stdin))


#: Service ports a node's kube-proxy programs (10.0.0.x are modelled node and LB addresses;
#: nothing connects to them)
SERVICES = [
    KubeService("default", "kubernetes", "https", "10.43.0.1", 443, ["10.0.0.2:6443"]),
    KubeService("kube-system", "kube-dns", "dns", "10.43.0.10", 53, ["10.42.0.2:53", "10.42.1.5:53"], "UDP"),
    KubeService("web", "shop", "http", "10.43.7.7", 80, ["10.42.1.9:8080", "10.42.2.3:8080"],
                node_port=30080, lb_ips=["10.0.0.200"]),
    KubeService("web", "empty", "", "10.43.7.8", 80, []),
]
