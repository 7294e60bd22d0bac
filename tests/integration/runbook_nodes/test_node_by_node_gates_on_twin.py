"""The node-by-node gates on objects as a cluster's API serves them (a twin of minicloud).

The gates are pure (``tests/unit/runbook_preflight/test_node_by_node_gates.py``); this
checks that they read real API shapes: quantities in node allocatable and pod requests,
ReplicaSets owned by Deployments, a PDB created through the API.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from runbook import longhorn_drain
from runbook import node_by_node_gates as g
from runbook import params, storage
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
    # minicloud's only PDBs are longhorn-manager's, one per instance manager: not blockers
    # (Longhorn removes each during its node's drain), and said so
    managed = cluster.list("poddisruptionbudgets")
    assert len(managed) == len(nodes) and all(storage.is_instance_manager_pdb(b) for b in managed)
    lh = g.pdb_blockers(managed, pods, _workloads(cluster))
    assert lh.ok, lh.details
    assert lh.details == [f"0 PDBs allow a disruption; {len(nodes)} on Longhorn's instance managers, which "
                          "longhorn-manager removes during a drain (nbn-longhorn-drain)"]
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
    assert len(pdbs) == len(managed) + 1
    v = g.pdb_blockers(pdbs, cluster.list("pods"), _workloads(cluster))
    assert not v.ok
    assert v.details == ["PDB homer/homer (minAvailable: 1) allows no disruption: 1 healthy of 1 expected; "
                         "Deployment homer/homer, 1 replica"]
    assert "kubectl -n homer scale deployment/homer --replicas=2" in v.actions[0]
    # the same PDB, seen by the capacity gate: homer's pod is behind it
    assert g.capacity(nodes, cluster.list("pods"), pdbs).ok


def test_longhorn_drain_gate_reads_the_policy_and_the_replicas(cluster) -> None:
    """Every minicloud volume keeps replicas on two nodes or more: the default policy lets
    each drain through; a volume left with one replica is named, with what to do."""
    rows = storage.read_volumes(cluster)
    assert rows and all(len(set(r.replica_nodes)) >= 2 for r in rows)
    got = longhorn_drain.drain_verdict(longhorn_drain.DEFAULT_POLICY, rows)
    assert got.ok, got.details
    assert cluster.request("GET", f"/apis/{storage.LONGHORN_API}/namespaces/{storage.LONGHORN_NS}"
                                  "/settings/node-drain-policy")["value"] == longhorn_drain.DEFAULT_POLICY
    one = rows[0]
    lonely = [storage.VolumeRow(one.name, one.state, one.robustness, one.node, one.access, one.replica_nodes[:1])]
    v = longhorn_drain.drain_verdict(longhorn_drain.DEFAULT_POLICY, lonely + rows[1:])
    assert not v.ok
    assert v.details[0].startswith(f"{one.name}: every replica on {one.replica_nodes[0]}")
    assert "numberOfReplicas" in v.hint and "block-for-eviction-if-contains-last-replica" in v.hint
    assert longhorn_drain.drain_verdict("allow-if-replica-is-stopped", lonely).ok


def test_longhorn_drain_gate_names_the_volumes_block_for_eviction_cannot_move(cluster) -> None:
    """minicloud's three-replica volumes sit on all three nodes: with hard anti-affinity
    Longhorn has nowhere to move their replica off a drained node, so under
    block-for-eviction every drain would wait; soft anti-affinity lets them move."""
    s = SimpleNamespace(cluster=cluster)
    cluster.request("PATCH", f"/apis/{storage.LONGHORN_API}/namespaces/{storage.LONGHORN_NS}"
                             "/settings/node-drain-policy", body={"value": "block-for-eviction"},
                    content_type="application/merge-patch+json")
    rows = storage.read_volumes(cluster)
    everywhere = {r.name for r in rows if len(set(r.replica_nodes)) == 3}
    assert everywhere
    assert longhorn_drain.read_nodes(s) == sorted(n["metadata"]["name"] for n in cluster.list("nodes"))
    v = longhorn_drain.verdict(s)
    assert v is not None and not v.ok
    assert v.facts["policy"] == "block-for-eviction" and set(v.facts["unmovable_volumes"]) == everywhere
    assert len(v.details) == len(everywhere) and "replica-soft-anti-affinity" in v.hint
    cluster.request("PATCH", f"/apis/{storage.LONGHORN_API}/namespaces/{storage.LONGHORN_NS}"
                             "/settings/replica-soft-anti-affinity", body={"value": "true"},
                    content_type="application/merge-patch+json")
    assert longhorn_drain.read_shareable(s) == {r.name for r in rows}
    v2 = longhorn_drain.verdict(s)
    assert v2 is not None and v2.ok and v2.facts["unmovable_volumes"] == []
