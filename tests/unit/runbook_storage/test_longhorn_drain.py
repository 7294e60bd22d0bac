"""The nbn-longhorn-drain gate: Longhorn's node-drain-policy against where replicas sit."""
from __future__ import annotations

import pytest

from runbook import node_by_node_gates as g
from runbook.longhorn_drain import DEFAULT_POLICY, POLICIES, drain_verdict
from runbook.storage import VolumeRow, is_instance_manager_pdb

pytestmark = pytest.mark.unit

SPREAD = VolumeRow("pvc-spread", "attached", "healthy", "a", "rwo", ["a", "b"])
LONELY = VolumeRow("pvc-lonely", "detached", "unknown", "", "rwo", ["c"])


def test_default_policy_passes_when_every_volume_spans_two_nodes() -> None:
    v = drain_verdict(DEFAULT_POLICY, [SPREAD])
    assert v.ok and v.name == "nbn-longhorn-drain"
    assert v.facts == {"policy": DEFAULT_POLICY, "volumes": 1, "single_node_volumes": {}, "nodes": None,
                       "unmovable_volumes": []}


def test_default_policy_fails_on_a_volume_with_every_replica_on_one_node() -> None:
    v = drain_verdict(DEFAULT_POLICY, [SPREAD, LONELY])
    assert not v.ok
    assert v.details == ["pvc-lonely: every replica on c: node-drain-policy block-if-contains-last-replica "
                         "keeps that node's instance-manager PDB, so its drain waits until "
                         "node_by_node.drain_timeout"]
    assert v.facts["single_node_volumes"] == {"pvc-lonely": "c"}
    assert len(v.actions) == 3 and "numberOfReplicas" in v.actions[0]


@pytest.mark.parametrize("policy, says", [
    ("block-for-eviction-if-contains-last-replica", "pvc-lonely: every replica on c: Longhorn moves it"),
    ("block-for-eviction", "Longhorn moves every replica off each drained node"),
    ("allow-if-replica-is-stopped", "pvc-lonely: every replica on c: down while that node is drained"),
    ("always-allow", "Longhorn lets a drain stop a volume's last running replica"),
])
def test_the_other_policies_pass_and_say_what_they_cost(policy: str, says: str) -> None:
    v = drain_verdict(policy, [SPREAD, LONELY])
    assert v.ok
    assert v.details[0] == f"node-drain-policy {policy}"
    assert v.details[1].startswith(says), v.details


def test_an_unknown_policy_is_refused_with_the_known_ones() -> None:
    v = drain_verdict("yolo", [SPREAD])
    assert not v.ok and all(p in v.hint for p in POLICIES)


def _pdb(ns: str, name: str, labels: dict) -> dict:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}


def test_pdb_gate_leaves_longhorns_instance_manager_pdbs_to_longhorn() -> None:
    im_labels = {"longhorn.io/component": "instance-manager", "longhorn.io/node": "a"}
    im_pdb = _pdb("longhorn-system", "instance-manager-1", im_labels)
    lookalike = _pdb("default", "instance-manager-1", im_labels)
    assert is_instance_manager_pdb(im_pdb) and not is_instance_manager_pdb(lookalike)
    pod = {"metadata": {"namespace": "longhorn-system", "name": "instance-manager-1", "labels": im_labels},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    v = g.pdb_blockers([im_pdb], [pod])
    assert v.ok
    assert v.details == ["0 PDBs allow a disruption; 1 on Longhorn's instance managers, which "
                         "longhorn-manager removes during a drain (nbn-longhorn-drain)"]
    # a second PDB over the same pod still makes it unevictable, Longhorn's or not
    other = _pdb("longhorn-system", "extra", {"longhorn.io/node": "a"})
    v2 = g.pdb_blockers([im_pdb, other], [pod])
    assert not v2.ok and "selected by 2 PDBs" in v2.details[-1]


# -- the block-for-eviction policies: Longhorn moves replicas itself, where a node may take them --

THREE = ["a", "b", "c"]
EVERYWHERE = VolumeRow("pvc-everywhere", "attached", "healthy", "a", "rwo", ["a", "b", "c"])


def test_block_for_eviction_fails_on_a_volume_with_a_replica_on_every_node() -> None:
    v = drain_verdict("block-for-eviction", [SPREAD, EVERYWHERE, LONELY], nodes=THREE)
    assert not v.ok
    assert v.details == ["pvc-everywhere: replicas on a, b, c: node-drain-policy block-for-eviction moves the "
                         "replica off a drained node first and no other node may take it (it holds a replica "
                         "of the volume already), so Longhorn keeps the instance-manager PDB (Scheduled: "
                         "ReplicaSchedulingFailure) and the drain waits until node_by_node.drain_timeout"]
    assert v.facts["unmovable_volumes"] == ["pvc-everywhere"] and v.facts["nodes"] == 3
    assert "replica-soft-anti-affinity" in v.actions[0] and "--type merge" in v.actions[0]
    assert "block-for-eviction-if-contains-last-replica" in v.actions[1]


def test_soft_anti_affinity_lets_block_for_eviction_move_every_replica() -> None:
    v = drain_verdict("block-for-eviction", [SPREAD, EVERYWHERE, LONELY], nodes=THREE,
                      shareable={"pvc-everywhere"})
    assert v.ok and v.facts["unmovable_volumes"] == []
    assert "each drain takes as long as copying that node's replicas" in v.details[1]
    assert "its moved pod waiting" in v.details[1]


def test_block_for_eviction_if_contains_last_replica_moves_only_lonely_replicas() -> None:
    # pvc-everywhere has a healthy copy elsewhere whichever node is drained: not moved, no block
    v = drain_verdict("block-for-eviction-if-contains-last-replica", [EVERYWHERE, LONELY], nodes=THREE)
    assert v.ok
    assert v.details[1].startswith("pvc-lonely: every replica on c: Longhorn moves it to another node")
    # on a single node there is nowhere to move the lonely replica to
    one = VolumeRow("pvc-one", "attached", "healthy", "c", "rwo", ["c"])
    v1 = drain_verdict("block-for-eviction-if-contains-last-replica", [one], nodes=["c"])
    assert not v1.ok and v1.details[0].startswith("pvc-one: replicas on c:")


def test_without_the_node_list_no_volume_is_called_unmovable() -> None:
    assert drain_verdict("block-for-eviction", [EVERYWHERE]).ok
    assert drain_verdict("block-for-eviction", [EVERYWHERE], nodes=THREE + ["d"]).ok


@pytest.mark.parametrize("policy", [p for p in POLICIES if "eviction" not in p])
def test_the_policies_that_move_nothing_ignore_unmovable_volumes(policy: str) -> None:
    assert drain_verdict(policy, [SPREAD, EVERYWHERE], nodes=THREE).ok
