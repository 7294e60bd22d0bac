"""Building a cluster's node models from a fixture: the pods holding flannel leases, the
Services kube-proxy programs, and one :class:`NodeModel` per node spec.

Example:
    >>> nodes = build_nodes(fx.nodes, fx.cluster, state_dir / "nodes", Clock(),  # doctest: +SKIP
    ...                     pods=fixture_pods(fx.objects), services=fixture_services(fx.objects))
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

from .kube_proxy import KubeService, default_services, service_ports, target_port
from .model import NodeModel
from .seed import new_join_token


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def fixture_pods(objects: Iterable[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per node, the (pod IP, sandbox id) of each non-hostNetwork pod of the fixture."""
    out: dict[str, list[tuple[str, str]]] = {}
    for o in objects:
        if o.get("kind") != "Pod" or (o.get("spec") or {}).get("hostNetwork"):
            continue
        node, ip = (o.get("spec") or {}).get("nodeName"), (o.get("status") or {}).get("podIP")
        if node and ip:
            md = o.get("metadata") or {}
            sandbox = hashlib.sha256(f"{md.get('namespace')}/{md.get('name')}".encode()).hexdigest()
            out.setdefault(node, []).append((ip, sandbox))
    return out


def fixture_services(objects: Iterable[dict]) -> list[KubeService]:
    """The Service ports of the fixture with their Running pods as endpoints."""
    objects = list(objects)
    # Running pods indexed by (namespace, label, value), in fixture order, so matching a
    # Service costs its candidates, not every pod of the cluster.
    by_label: dict[tuple[Any, str, Any], list[dict]] = {}
    for o in objects:
        st = o.get("status") or {}
        if o.get("kind") != "Pod" or st.get("phase") != "Running" or not st.get("podIP"):
            continue
        pmd = o.get("metadata") or {}
        for k, v in (pmd.get("labels") or {}).items():
            by_label.setdefault((pmd.get("namespace"), k, v), []).append(o)
    out: list[KubeService] = []
    for svc in (o for o in objects if o.get("kind") == "Service"):
        spec, md = svc.get("spec") or {}, svc.get("metadata") or {}
        selector = spec.get("selector") or {}
        backends: list[dict] = []
        if selector and spec.get("clusterIP") not in (None, "", "None"):
            ns = md.get("namespace")
            # The rarest selector pair gives the fewest candidates; all pairs must match.
            cands = min((by_label.get((ns, k, v), []) for k, v in selector.items()), key=len)
            backends = [p for p in cands
                        if _matches(selector, (p.get("metadata") or {}).get("labels") or {})]
        out += service_ports(svc, lambda port, backends=backends: [
            f"{p['status']['podIP']}:{target_port(p, port)}" for p in backends])
    return out


def build_nodes(specs: Iterable[Any], cluster: dict, nodes_dir: Path, clock: Any,
                join_token: str | None = None, *,
                pods: dict[str, list[tuple[str, str]]] | None = None,
                services: list[KubeService] | None = None,
                defer_leases: bool = False, lazy_files: bool = False) -> dict[str, NodeModel]:
    """One NodeModel per spec under ``nodes_dir/<name>``, servers first (agents read
    the server's settings when they start). All agents share one join token.

    The cost per node is its own files: kube-proxy's service chains (O(cluster
    endpoints) per node) are programmed when the node's iptables are first read.

    Args:
        pods: per node, the (IP, sandbox id) of pods holding flannel leases; default a few.
        services: what kube-proxy programs; default ``kubernetes`` and ``kube-dns``.
        defer_leases, lazy_files: see :class:`NodeModel` (the nodes component sets
            both from ``DEFER_LEASES_FROM_PODS`` pods on).
    """
    specs = sorted(specs, key=lambda s: 0 if s.role == "server" else 1)
    token = join_token or new_join_token()
    peers: dict[str, NodeModel] = {}
    for spec in specs:
        peers[spec.name] = NodeModel(spec, cluster, Path(nodes_dir) / spec.name, peers, clock,
                                     join_token=token,
                                     pod_ips=None if pods is None else pods.get(spec.name, []),
                                     defer_leases=defer_leases, lazy_files=lazy_files)
    api = str(cluster.get("server_url", "https://10.0.0.2:6443")).split("//")[-1]
    for svc in services or []:
        # default/kubernetes has no selector: its endpoint is the API server itself.
        if (svc.namespace, svc.name) == ("default", "kubernetes") and not svc.endpoints:
            svc.endpoints = [api.rsplit(":", 1)[0] + ":6443"]
    for n in peers.values():   # kube-dns endpoints point at the server's coredns pod
        n.set_kube_services(services if services else default_services(n.cluster, n.spec.pod_cidr, n.peers))
    return peers
