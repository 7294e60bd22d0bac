"""generate(nodes, pods): clusters of minicloud's shape at any size."""
from __future__ import annotations

import ipaddress
import time
from collections import Counter

import pytest

from twin.fixtures import FixtureError, generate, node_objects

pytestmark = pytest.mark.unit


def _count(fx, kind):
    return sum(1 for o in fx.objects if o["kind"] == kind)


@pytest.mark.timeout(60)
def test_small_cluster_shape(invariants):
    fx = generate(3, 200)
    counts = invariants(fx)
    assert counts["Pod"] == 200
    assert [n.role for n in fx.nodes] == ["server", "agent", "agent"]
    assert [n.name for n in fx.nodes] == ["node-0001", "node-0002", "node-0003"]
    assert fx.cluster["cluster_cidr"] == "10.42.0.0/16"
    assert all(ipaddress.ip_address(n.ip) in ipaddress.ip_network("10.0.0.0/16") for n in fx.nodes)
    # Same platform as minicloud: LB at .200 (and a second one), CRDs, Velero, Argo CD.
    lbs = sorted(s["status"]["loadBalancer"]["ingress"][0]["ip"] for s in fx.objects
                 if s["kind"] == "Service" and s["spec"]["type"] == "LoadBalancer")
    assert lbs == ["10.0.0.200", "10.0.0.201"]
    groups = {c["spec"]["group"] for c in fx.objects if c["kind"] == "CustomResourceDefinition"}
    assert {"velero.io", "argoproj.io", "metallb.io"} <= groups
    assert not any(g.endswith("cilium.io") for g in groups)
    assert _count(fx, "NetworkPolicy") == 0
    assert {"Deployment", "StatefulSet", "DaemonSet"} <= set(counts)
    assert counts["Ingress"] >= 1 and counts["Application"] >= 2
    nodes = node_objects(fx)
    assert nodes[0]["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"


@pytest.mark.timeout(30)
def test_single_node_and_determinism(invariants):
    fx = generate(1, 30, seed=7)
    invariants(fx)
    assert _count(fx, "Pod") == 30 and len(fx.nodes) == 1 and fx.nodes[0].role == "server"
    assert generate(1, 30, seed=7).objects == fx.objects
    assert generate(1, 30, seed=8).objects != fx.objects


@pytest.mark.timeout(30)
def test_dense_nodes_get_larger_pod_cidrs(invariants):
    # 500 pods per node do not fit a /24 (253 addresses): k3s would need a larger
    # node-cidr-mask-size, and the generator picks one.
    fx = generate(2, 1000)
    invariants(fx)
    assert fx.cluster["node_cidr_mask_size"] == 23
    assert all(n.pod_cidr.endswith("/23") for n in fx.nodes)


def test_too_few_pods_is_a_clear_error():
    with pytest.raises(FixtureError, match=r"at least 27 pods"):
        generate(5, 20)
    with pytest.raises(FixtureError, match="nodes must be >= 1"):
        generate(0, 100)


@pytest.mark.timeout(30)
def test_policy_variants_cycle():
    fx = generate(3, 600)
    apps = [a for a in fx.objects if a["kind"] == "Application" and a["metadata"]["name"] != "platform-root"]
    policies = {str(a["spec"]["syncPolicy"].get("automated")) for a in apps}
    assert "None" in policies and "{'selfHeal': True}" in policies
    assert any("allowEmpty" in p for p in policies)
    for a in apps:
        assert a["metadata"]["labels"]["app.kubernetes.io/instance"] == "platform-root"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_big_cluster_500_nodes_50000_pods(invariants):
    t0 = time.perf_counter()
    fx = generate(500, 50000)
    elapsed = time.perf_counter() - t0
    print(f"\ngenerate(500, 50000): {elapsed:.2f}s, {len(fx.objects)} objects")
    counts = invariants(fx)
    assert counts["Pod"] == 50000 and counts["Node"] == 500
    assert sum(n.role == "server" for n in fx.nodes) == 1
    # 500 /24s do not fit k3s's default /16: a larger block, still clear of the services.
    cluster = ipaddress.ip_network(fx.cluster["cluster_cidr"])
    assert not cluster.overlaps(ipaddress.ip_network(fx.cluster["service_cidr"]))
    assert cluster.num_addresses >= 500 * 256
    assert len({n.pod_cidr for n in fx.nodes}) == 500 and len({n.ip for n in fx.nodes}) == 500
    pool = range(int(ipaddress.ip_address("10.0.0.200")), int(ipaddress.ip_address("10.0.0.220")) + 1)
    assert not any(int(ipaddress.ip_address(n.ip)) in pool for n in fx.nodes)
    per_node = Counter(o["spec"]["nodeName"] for o in fx.objects if o["kind"] == "Pod")
    assert max(per_node.values()) - min(per_node.values()) <= 2
    assert max(per_node.values()) <= int(fx.cluster["max_pods"])
    assert counts["Namespace"] > 100 and counts["PersistentVolumeClaim"] > 0
