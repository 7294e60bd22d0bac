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
    assert v.facts == {"policy": DEFAULT_POLICY, "volumes": 1, "single_node_volumes": {}}


def test_default_policy_fails_on_a_volume_with_every_replica_on_one_node() -> None:
    v = drain_verdict(DEFAULT_POLICY, [SPREAD, LONELY])
    assert not v.ok
    assert v.details == ["pvc-lonely: every replica on c: node-drain-policy block-if-contains-last-replica "
                         "keeps that node's instance-manager PDB, so its drain waits until "
                         "node_by_node.drain_timeout"]
    assert v.facts["single_node_volumes"] == {"pvc-lonely": "c"}
    assert len(v.actions) == 3 and "numberOfReplicas" in v.actions[0]


@pytest.mark.parametrize("policy, says", [
    ("block-for-eviction-if-contains-last-replica", "pvc-lonely: every replica on c: Longhorn copies it"),
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
