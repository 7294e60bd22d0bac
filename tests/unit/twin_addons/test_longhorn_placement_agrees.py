"""The twin's replica scheduler (``twin...longhorn_scheduler``, the reference) and the runbook's
placement model (``runbook.longhorn_placement``, what the ``nbn-longhorn-drain`` gate uses) on one
table of ``nodes.longhorn.io`` cases: node a is drained (cordoned), the twin is asked where the
moved replica goes, the runbook whether it can move, and both must agree.

The rules are written twice on purpose (lib/twin must not import runbook); each row also says
where the twin puts the replica, so a row checks the twin's rule by itself too.
"""
from __future__ import annotations

from typing import Any

import pytest

from runbook import longhorn_placement as placement
from twin.controllers.addons.longhorn_scheduler import lh_node_facts, place_replica, soft_anti_affinity

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GiB = 1 << 30
node, replica = placement.node, placement.replica


def volume(size: int = 10 * GiB, actual: int = 2 * GiB, **spec: Any) -> dict:
    return {"metadata": {"name": "pvc-1"}, "spec": {"size": str(size), **spec}, "status": {"actualSize": actual}}


def twin_place(vol: dict, reps: list[dict], objs: list[dict], settings: dict[str, str]) -> tuple[list[str], dict]:
    """Node a cordoned (its replica evicting), every other node ready: where the twin moves it."""
    facts = [{"name": o["metadata"]["name"], "ready": True, "cordoned": o["metadata"]["name"] == "a",
              "instance_manager": True, "engine_image": True, **lh_node_facts(o)} for o in objs]
    occupying = [{"node": r["spec"]["nodeID"], "evicting": r["spec"]["nodeID"] == "a", "name": r["metadata"]["name"],
                  "disk": r["spec"]["diskID"]} for r in reps if not r["spec"]["failedAt"]]
    vs = vol["spec"]
    placed, excluded = place_replica(
        facts, occupying, volume=vol, settings=settings,
        node_soft=soft_anti_affinity(vs.get("replicaSoftAntiAffinity"), settings.get("replica-soft-anti-affinity", "false")),
        zone_soft=soft_anti_affinity(vs.get("replicaZoneSoftAntiAffinity"),
                                     settings.get("replica-zone-soft-anti-affinity", "true")))
    return [f"{n}/{d['uuid']}" for n, d in placed], excluded


def tagged(name: str, tags: list[str], **kw: Any) -> dict:
    return node(name, tags=tags, **kw)


def off(name: str, **kw: Any) -> dict:
    o = node(name, **kw)
    o["spec"]["allowScheduling"] = False
    return o


def disk_off(name: str, **kw: Any) -> dict:
    o = node(name, **kw)
    o["spec"]["disks"]["default-disk"]["allowScheduling"] = False
    return o


def evicting_disk(name: str, **kw: Any) -> dict:
    o = node(name, **kw)
    o["spec"]["disks"]["default-disk"]["evictionRequested"] = True
    return o


def scheduled(name: str, used: int, **kw: Any) -> dict:
    o = node(name, **kw)
    o["status"]["diskStatus"]["default-disk"]["storageScheduled"] = used
    return o


R2 = [replica("pvc-1", "a"), replica("pvc-1", "b")]
R3 = R2 + [replica("pvc-1", "c")]
ABC = [node("a"), node("b"), node("c")]
ZONES = [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")]

#: why, volume, replicas, nodes.longhorn.io, settings, where the twin puts it ([]: nowhere)
CASES = [
    ("hard anti-affinity: the free node", volume(), R2, ABC, {}, ["c/c-disk"]),
    ("hard anti-affinity: a replica everywhere", volume(), R3, ABC, {}, []),
    ("node soft: a node holding one, its disk too (disk soft)", volume(), R3, ABC,
     {"replica-soft-anti-affinity": "true"}, ["b/b-disk", "c/c-disk"]),
    ("node soft, disk anti-affinity hard: no disk without one", volume(), R3, ABC,
     {"replica-soft-anti-affinity": "true", "replica-disk-soft-anti-affinity": "false"}, []),
    ("the volume's own disk soft anti-affinity overrides the setting", volume(replicaDiskSoftAntiAffinity="enabled"),
     R3, ABC, {"replica-soft-anti-affinity": "true", "replica-disk-soft-anti-affinity": "false"},
     ["b/b-disk", "c/c-disk"]),
    ("scheduling disabled on the free node", volume(), R2, [node("a"), node("b"), off("c")], {}, []),
    ("free node not Schedulable", volume(), R2, [node("a"), node("b"), node("c", listed=False)], {}, []),
    ("nodeSelector: the free node lacks the tag", volume(nodeSelector=["ssd"]), R2,
     [tagged("a", ["ssd"]), tagged("b", ["ssd"]), node("c")], {}, []),
    ("nodeSelector: the free node has it (and more)", volume(nodeSelector=["ssd"]), R2,
     [tagged("a", ["ssd"]), tagged("b", ["ssd"]), tagged("c", ["fast", "ssd"])], {}, ["c/c-disk"]),
    ("no nodeSelector, tagged free node, allow-empty-node-selector-volume on", volume(), R2,
     [node("a"), node("b"), tagged("c", ["ssd"])], {}, ["c/c-disk"]),
    ("no nodeSelector, tagged free node, allow-empty-node-selector-volume off", volume(), R2,
     [node("a"), node("b"), tagged("c", ["ssd"])], {"allow-empty-node-selector-volume": "false"}, []),
    ("diskSelector: the free node's disk lacks the tag", volume(diskSelector=["nvme"]), R2, ABC, {}, []),
    ("diskSelector: the free node's disk has it", volume(diskSelector=["nvme"]), R2,
     [node("a"), node("b"), node("c", disk_tags=["nvme"])], {}, ["c/c-disk"]),
    ("no diskSelector, tagged disk, allow-empty-disk-selector-volume off", volume(), R2,
     [node("a"), node("b"), node("c", disk_tags=["nvme"])], {"allow-empty-disk-selector-volume": "false"}, []),
    ("disk scheduling off on the free node", volume(), R2, [node("a"), node("b"), disk_off("c")], {}, []),
    ("the free node's disk is being evicted", volume(), R2, [node("a"), node("b"), evicting_disk("c")], {}, []),
    ("room: the copy would leave less than 25 % free", volume(actual=60 * GiB), R2,
     [node("a"), node("b"), node("c", available=100 * GiB, maximum=200 * GiB)], {}, []),
    ("room: just enough free after the copy", volume(actual=49 * GiB), R2,
     [node("a"), node("b"), node("c", available=100 * GiB, maximum=200 * GiB)], {}, ["c/c-disk"]),
    ("room: over-provisioning 100 % of the disk is scheduled", volume(), R2,
     [node("a"), node("b"), scheduled("c", 195 * GiB)], {}, []),
    ("room: over-provisioning 200 % lets it in", volume(), R2,
     [node("a"), node("b"), scheduled("c", 195 * GiB)], {"storage-over-provisioning-percentage": "200"}, ["c/c-disk"]),
    ("room: minimal available 60 %", volume(), R2, ABC, {"storage-minimal-available-percentage": "60"}, []),
    ("zones: the free node is in the zone of the other replica, zone soft (default)", volume(), R2, ZONES, {},
     ["c/c-disk"]),
    ("zones: the same, replica-zone-soft-anti-affinity off", volume(), R2, ZONES,
     {"replica-zone-soft-anti-affinity": "false"}, []),
    ("zones: the volume's own zone anti-affinity enabled overrides the setting",
     volume(replicaZoneSoftAntiAffinity="enabled"), R2, ZONES, {"replica-zone-soft-anti-affinity": "false"},
     ["c/c-disk"]),
    ("zones: zone hard, a node of a zone with no replica", volume(), R2,
     [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z3")],
     {"replica-zone-soft-anti-affinity": "false"}, ["c/c-disk"]),
    ("a failed replica on the free node does not count", volume(), R2 + [replica("pvc-1", "c", failed=True)], ABC,
     {}, ["c/c-disk"]),
]


@pytest.mark.parametrize("why, vol, reps, objs, settings, want", CASES, ids=[c[0] for c in CASES])
def test_the_twin_and_the_runbook_agree_on_where_a_drained_replica_goes(why, vol, reps, objs, settings, want) -> None:
    got, excluded = twin_place(vol, reps, objs, settings)
    assert got == want, excluded
    assert excluded.get("a") == "cordoned (disable-scheduling-on-cordoned-node)"
    reason = placement.why_unmovable(vol, reps, "a", placement.nodes_from(objs),
                                     placement.Scheduling.from_values(settings))
    assert (reason == "") == bool(want), (reason, excluded)


def test_every_excluded_node_gets_a_reason_a_person_can_act_on() -> None:
    ssd = ["ssd"]
    objs = [tagged("a", ssd), node("b"), off("c", tags=ssd), disk_off("d", tags=ssd),
            node("e", tags=ssd, available=GiB)]
    got, excluded = twin_place(volume(nodeSelector=ssd), [replica("pvc-1", "a")], objs, {})
    assert got == []
    assert excluded == {
        "a": "cordoned (disable-scheduling-on-cordoned-node)",
        "b": "its tags do not hold the volume's nodeSelector ['ssd']",
        "c": "replica scheduling disabled on its Longhorn node (spec.allowScheduling)",
        "d": "no disk can take it (disk default-disk: scheduling off, evicting or not Schedulable)",
        "e": "no disk can take it (disk default-disk: insufficient storage)",
    }


def test_the_disk_with_the_most_usable_storage_is_chosen() -> None:
    o = node("c")
    o["spec"]["disks"]["big"] = dict(o["spec"]["disks"]["default-disk"])
    o["status"]["diskStatus"]["big"] = dict(o["status"]["diskStatus"]["default-disk"], diskUUID="c-big",
                                            storageAvailable=150 * GiB)
    got, _ = twin_place(volume(), R2, [node("a"), node("b"), o], {})
    assert got == ["c/c-big"]
