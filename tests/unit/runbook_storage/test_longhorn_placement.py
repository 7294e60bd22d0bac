"""runbook.longhorn_placement: where longhorn-manager v1.7's replica scheduler can put a
replica moved off a drained node; and the nbn-longhorn-drain gate built on it."""
from __future__ import annotations

import pytest

from runbook import longhorn_placement as lp
from runbook.longhorn_drain import drain_verdict, unmovable_volumes
from runbook.longhorn_placement import Scheduling, node, nodes_from, replica, why_unmovable
from runbook.storage import volume_rows

pytestmark = pytest.mark.unit

GiB = 1 << 30


def vol(name: str = "pvc-1", size: int = 10 * GiB, actual: int = 5 * GiB, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"size": str(size), **spec}, "status": {"actualSize": actual}}


def why(nodes: list[dict], on: list[str], drained: str = "a", s: Scheduling = Scheduling(), v: dict | None = None,
        extra: list[dict] = ()) -> str:
    return why_unmovable(v or vol(), [replica("pvc-1", n) for n in on] + list(extra), drained, nodes_from(nodes), s)


ABC = [node("a"), node("b"), node("c")]
HELD = "no other node may take it (each holds a replica of the volume already)"
ZONED = "no node in a zone without a replica of the volume may take it"


@pytest.mark.parametrize("nodes, on, s, v, want", [
    # a free node: always
    (ABC + [node("d")], ["a", "b", "c"], Scheduling(), None, ""),
    # every node holds one: node anti-affinity (hard by default) stops it ...
    (ABC, ["a", "b", "c"], Scheduling(), None, HELD),
    # ... soft lets it share a node (on another disk, or the same with disk soft anti-affinity on)
    (ABC, ["a", "b", "c"], Scheduling(node_soft=True), None, ""),
    (ABC, ["a", "b", "c"], Scheduling(node_soft=True, disk_soft=False), None,
     "no disk left without a replica of the volume (replica-disk-soft-anti-affinity is off)"),
    # the volume's own setting beats the global one, both ways
    (ABC, ["a", "b", "c"], Scheduling(), vol(replicaSoftAntiAffinity="enabled"), ""),
    (ABC, ["a", "b", "c"], Scheduling(node_soft=True), vol(replicaSoftAntiAffinity="disabled"), HELD),
    # zones: c is free but in the zone of b's replica; soft zone anti-affinity (default) lets it go there
    ([node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")], ["a", "b"], Scheduling(), None, ""),
    ([node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")], ["a", "b"], Scheduling(zone_soft=False),
     None, ZONED + " (replica-zone-soft-anti-affinity is off; zones holding one: z2)"),
    ([node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")], ["a", "b"], Scheduling(),
     vol(replicaZoneSoftAntiAffinity="disabled"), ZONED + " (replica-zone-soft-anti-affinity is off; zones holding one: z2)"),
    # the drained node's own replica does not hold its zone: b, in a's zone, may take it
    ([node("a", zone="z1"), node("b", zone="z1"), node("c", zone="z2")], ["a", "c"], Scheduling(zone_soft=False),
     None, ""),
    # nodes without a zone label are one zone
    (ABC, ["a", "b"], Scheduling(zone_soft=False), None,
     ZONED + " (replica-zone-soft-anti-affinity is off; zones holding one: (no zone))"),
    # a node the scheduler does not list (cordoned, not ready) takes nothing
    ([node("a"), node("b"), node("c", listed=False)], ["a", "b"], Scheduling(), None, HELD),
    ([node("a"), node("b", listed=False)], ["a"], Scheduling(), None,
     "no other Longhorn node is schedulable (Ready, not cordoned, scheduling allowed)"),
])
def test_where_a_moved_replica_may_go(nodes, on, s, v, want) -> None:
    assert why(nodes, on, s=s, v=v) == want


def test_a_failed_or_deleted_replica_holds_no_node() -> None:
    failed = replica("pvc-1", "b", failed=True)
    assert why([node("a"), node("b")], ["a"], extra=[failed]) == ""
    held = why([node("a"), node("b")], ["a", "b"])
    assert held == HELD


def test_node_and_disk_selectors() -> None:
    tagged = [node("a", tags=["ssd"]), node("b"), node("c", tags=["ssd"])]
    assert why(tagged, ["a"], v=vol(nodeSelector=["ssd"])) == ""                 # c has the tag
    assert why(tagged[:2], ["a"], v=vol(nodeSelector=["ssd"])) == (
        "no other schedulable node has the tags of its nodeSelector ['ssd']")
    # no selector: tagged nodes are fine unless allow-empty-node-selector-volume is off
    only_tagged = [node("a"), node("c", tags=["ssd"])]
    assert why(only_tagged, ["a"]) == ""
    assert why(only_tagged, ["a"], s=Scheduling(empty_node_selector=False)).startswith(
        "no other schedulable node is untagged")
    disks = [node("a"), node("b", disk_tags=["fast"])]
    assert why(disks, ["a"], v=vol(diskSelector=["fast"])) == ""
    assert why(disks, ["a"], v=vol(diskSelector=["nvme"])).startswith("no disk on the other schedulable nodes")


@pytest.mark.parametrize("available, maximum, ok", [
    (100 * GiB, 200 * GiB, True),
    (55 * GiB, 200 * GiB, False),      # 55 - 5 = 50 GiB left: not more than 25% of 200
    (56 * GiB, 200 * GiB, True),       # 51 GiB left > 50
    (100 * GiB, 0, False),             # a disk with no size known takes nothing
])
def test_a_disk_takes_a_replica_only_with_room_left(available, maximum, ok) -> None:
    got = why([node("a"), node("b", available=available, maximum=maximum)], ["a"])
    assert (got == "") is ok, got


def test_over_provisioning_counts_what_is_scheduled_already() -> None:
    n = node("b", maximum=100 * GiB, available=90 * GiB)
    n["status"]["diskStatus"]["default-disk"]["storageScheduled"] = 95 * GiB
    assert why([node("a"), n], ["a"]).startswith("no disk")                    # 10 + 95 > 100
    assert why([node("a"), n], ["a"], s=Scheduling(over_provisioning=200)) == ""


def test_settings_from_longhorn_values_with_v1_7_defaults() -> None:
    assert Scheduling.from_values({}) == Scheduling()
    s = Scheduling.from_values({"replica-soft-anti-affinity": "true", "replica-zone-soft-anti-affinity": "false",
                                "storage-minimal-available-percentage": "10", "storage-over-provisioning-percentage": "x",
                                "replica-disk-soft-anti-affinity": ""})
    assert (s.node_soft, s.zone_soft, s.minimal_available, s.over_provisioning, s.disk_soft) == (True, False, 10, 100, True)


def test_nodes_as_the_scheduler_lists_them() -> None:
    plain = node("a", zone="z1", tags=["ssd"])
    cordoned = node("b", listed=False)
    off = node("c")
    off["spec"]["allowScheduling"] = False
    block = node("d")
    block["spec"]["disks"]["default-disk"]["diskType"] = "block"
    orphan = node("e")
    orphan["status"]["diskStatus"]["other"] = {"diskUUID": "x"}     # a status without its spec: ignored
    got = {n.name: n for n in nodes_from([plain, cordoned, off, block, orphan])}
    assert [got[k].listed for k in "abcde"] == [True, False, False, True, True]
    assert got["a"].zone == "z1" and got["a"].tags == {"ssd"} and got["a"].disks[0].usable
    assert not got["d"].disks[0].usable and len(got["e"].disks) == 1


# -- the gate, with nodes.longhorn.io at hand --

def test_the_gate_names_the_zone_rule_and_its_fix() -> None:
    nodes = [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")]
    vols = [vol("pvc-1")]
    reps = [replica("pvc-1", "a"), replica("pvc-1", "b")]
    stuck = unmovable_volumes(vols, reps, nodes, {"replica-zone-soft-anti-affinity": "false"})
    assert stuck == {"pvc-1": "when a is drained, " + ZONED +
                     " (replica-zone-soft-anti-affinity is off; zones holding one: z2)"}
    v = drain_verdict("block-for-eviction", volume_rows(vols, reps), nodes=["a", "b", "c"], stuck=stuck)
    assert not v.ok and v.facts["unmovable_volumes"] == ["pvc-1"]
    assert v.details == ["pvc-1: replicas on a, b: node-drain-policy block-for-eviction moves the replica off a "
                         "drained node first and when a is drained, " + ZONED + " (replica-zone-soft-anti-affinity"
                         " is off; zones holding one: z2), so Longhorn keeps the instance-manager PDB (Scheduled: "
                         "ReplicaSchedulingFailure) and the drain waits until node_by_node.drain_timeout"]
    assert "replica-zone-soft-anti-affinity" in v.actions[0] and "--type merge" in v.actions[0]
    assert not any("replica-soft-anti-affinity " in a for a in v.actions)      # not the node rule's fix
    # the default (soft zones) moves it to c: the gate passes
    assert unmovable_volumes(vols, reps, nodes, {}) == {}


def test_the_gate_knows_a_replica_with_no_room_anywhere() -> None:
    nodes = [node("a"), node("b", available=10 * GiB), node("c", available=10 * GiB)]
    vols = [vol("pvc-big", actual=40 * GiB)]
    reps = [replica("pvc-big", "a")]
    stuck = unmovable_volumes(vols, reps, nodes, {})
    v = drain_verdict("block-for-eviction-if-contains-last-replica", volume_rows(vols, reps),
                      nodes=["a", "b", "c"], stuck=stuck)
    assert not v.ok and "no disk on the other schedulable nodes can take it" in v.details[0]
    assert v.actions[0].startswith("make room on another node's Longhorn disk")


class _Cluster:
    """What the gate reads: Longhorn's collections by plural."""

    def __init__(self, collections: dict[str, list[dict]]) -> None:
        self.collections = collections

    def iter_collection(self, api_version: str, plural: str, namespace: str | None = None, **kw):
        assert api_version == "longhorn.io/v1beta2" and namespace == "longhorn-system"
        return iter(self.collections.get(plural, []))


@pytest.mark.parametrize("with_nodes", [True, False])
def test_the_gate_reads_longhorn_nodes_when_the_cluster_has_them(with_nodes: bool) -> None:
    from types import SimpleNamespace

    from runbook.longhorn_drain import verdict

    setting = {"metadata": {"name": "node-drain-policy"}, "value": "block-for-eviction"}
    zones = [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")]
    data = {"volumes": [vol("pvc-1", replicaZoneSoftAntiAffinity="disabled")],
            "replicas": [replica("pvc-1", "a"), replica("pvc-1", "b")],
            "settings": [setting], "nodes": zones if with_nodes else [],
            "instancemanagers": [{"spec": {"nodeID": n}} for n in "abc"]}
    cluster = _Cluster(data)
    cluster.request = lambda method, path, **kw: (   # the API group, then the policy setting (fallback)
        setting if path.endswith("/node-drain-policy") else {"resources": [{"name": "volumes"}]})
    v = verdict(SimpleNamespace(cluster=cluster))
    # with the nodes, the zone rule is seen; from node names only, c looks free
    assert v.ok is not with_nodes
    assert v.facts["unmovable_volumes"] == (["pvc-1"] if with_nodes else [])


def test_disk_anti_affinity_counts_a_failed_replica_on_the_disk() -> None:
    # filterDisksWithMatchingReplicas counts every replica of the volume on a disk, failed ones too
    failed = replica("pvc-1", "b", failed=True)
    assert why([node("a"), node("b")], ["a"], extra=[failed]) == ""          # disk soft (default): shared
    assert why([node("a"), node("b")], ["a"], extra=[failed], s=Scheduling(disk_soft=False)) == (
        "no disk left without a replica of the volume (replica-disk-soft-anti-affinity is off)")


def test_a_tagged_node_holding_a_replica_names_the_selector_and_both_fixes() -> None:
    tagged = [node("a", tags=["ssd"]), node("b", tags=["ssd"]), node("c")]
    vols = [vol("pvc-1", nodeSelector=["ssd"])]
    reps = [replica("pvc-1", "a"), replica("pvc-1", "b")]
    stuck = unmovable_volumes(vols, reps, tagged, {})
    assert stuck == {"pvc-1": "when a is drained, no other node with its nodeSelector tags ['ssd'] may take it "
                              "(each holds a replica of the volume already)"}
    v = drain_verdict("block-for-eviction", volume_rows(vols, reps), nodes=["a", "b", "c"], stuck=stuck)
    assert [a.split(" ")[0] for a in v.actions[:2]] == ["set", "tag"]   # soft anti-affinity, or tag c
    assert "replica-soft-anti-affinity" in v.actions[0] and "nodeSelector" in v.actions[1]
