"""The node-by-node gates on objects as a cluster's API serves them (a twin of minicloud).

The gates are pure (``tests/unit/runbook_preflight/test_node_by_node_gates.py``); this
checks that they read real API shapes: quantities in node allocatable and pod requests,
ReplicaSets owned by Deployments, a PDB created through the API.
"""
from __future__ import annotations

import pytest

from runbook import node_by_node_gates as g
from runbook import params
from runbook.cluster import Cluster
from twin.api import Twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(tmp_path):
    t = Twin(tmp_path / "twin").start()
    yield Cluster.from_params(params.load(t.params_path))
    t.stop()


def _workloads(c: Cluster) -> list[dict]:
    return [dict(o, kind=kind) for kind, res in (("ReplicaSet", "replicasets"), ("Deployment", "deployments"),
                                                  ("StatefulSet", "statefulsets")) for o in c.list(res)]


def test_minicloud_passes_and_a_single_replica_pdb_is_listed_with_its_deployment(cluster) -> None:
    nodes, pods = cluster.list("nodes"), cluster.list("pods")
    assert cluster.list("poddisruptionbudgets") == []
    cap = g.capacity(nodes, pods, [])
    assert cap.ok, cap.details
    # every node's movable pods were weighed, with their requests read from the API
    assert set(cap.facts["per_node"]) == {n["metadata"]["name"] for n in nodes}
    assert all(v["pods_to_move"] > 0 and v["cpu_m"] > 0 for v in cap.facts["per_node"].values())
    ips = [a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert g.cidr("10.44.0.0/16", cluster_cidrs=["10.42.0.0/16"], service_cidrs=["10.43.0.0/16"],
                  node_networks=ips, nodes=len(nodes)).ok
    assert not g.cidr("10.42.0.0/16", cluster_cidrs=["10.42.0.0/16"], service_cidrs=[], nodes=3).ok

    cluster.create("poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "homer", "namespace": "homer"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "homer"}}}},
        namespace="homer")
    pdbs = cluster.list("poddisruptionbudgets")
    v = g.pdb_blockers(pdbs, cluster.list("pods"), _workloads(cluster))
    assert not v.ok
    assert v.details == ["PDB homer/homer (minAvailable: 1) allows no disruption: 1 healthy of 1 expected; "
                         "Deployment homer/homer, 1 replica"]
    assert "kubectl -n homer scale deployment/homer --replicas=2" in v.actions[0]
    # the same PDB, seen by the capacity gate: homer's pod is behind it
    assert g.capacity(nodes, cluster.list("pods"), pdbs).ok
