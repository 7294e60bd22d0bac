"""One Longhorn volume through its stages, pass after pass, with the world faked: which
instance managers run and which node-to-node paths work (no store, no clock, no network).

Each test drives :class:`VolumePass` the way :class:`LonghornVolumes` does (copies in,
the copies kept as the next state) at chosen cluster times, and checks what Longhorn
v1.7.2 would show at each step.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest

from twin.controllers.addons import longhorn_pass, longhorn_replicas
from twin.controllers.addons.longhorn_pass import VolumeClock, VolumePass
from twin.controllers.addons.longhorn_rules import SETTINGS, rebuild_seconds

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]
GiB = 1024 ** 3


class FakeIMs:
    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.by_node = {n: f"im-{n}" for n in nodes}
        self.up = set(nodes)
        self.epoch = dict.fromkeys(nodes, 0)

    def running(self, node: str) -> bool:
        return node in self.up

    def epoch_of(self, node: str) -> int:
        return self.epoch.get(node, 0)

    def name(self, node: str) -> str:
        return self.by_node.get(node, "")

    def ip(self, node: str) -> str:
        return f"10.42.{sorted(self.by_node).index(node)}.9"

    def stop(self, node: str) -> None:
        self.up.discard(node)
        self.epoch[node] += 1


class FakeUsers:
    def __init__(self, node: str) -> None:
        self.node = node

    def pod_nodes(self, vol: str) -> list[str]:
        return [self.node] if self.node else []

    def uids(self, vol: str) -> set[str]:
        return {"pod-uid"}

    def workloads_status(self, vol: str) -> list[dict]:
        return []


class NoShareManagers:
    def node(self, vol: str) -> None:
        return None


class World:
    """The faked controller: instance managers, users, broken links; runs passes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, replicas: dict[str, str], engine_node: str,
                 *, wanted: int | None = None, actual: int = GiB, settings: dict | None = None,
                 snapshots: list[dict] | None = None) -> None:
        self.ims = FakeIMs(("a", "b", "c"))
        self.users = FakeUsers(engine_node)
        self.sms = NoShareManagers()
        self.rt = None
        self.rebuilding: dict[str, set[str]] = {}
        self.broken: set[frozenset] = set()
        self.cordoned: set[str] = set()
        self.settings = dict(SETTINGS, **(settings or {}))
        self.snaps = snapshots or []
        self.c = VolumeClock(engine_epoch=0, replica_epoch=dict.fromkeys(replicas, 0))
        self.v = {"metadata": {"name": "vol"}, "spec": {"numberOfReplicas": wanted or len(replicas),
                                                        "accessMode": "rwo", "staleReplicaTimeout": 30},
                  "status": {"state": "attached", "robustness": "healthy", "currentNodeID": engine_node,
                             "actualSize": actual, "conditions": [{"type": "Scheduled", "status": "True"}]}}
        self.e = {"metadata": {"name": "vol-e-0", "labels": {}},
                  "spec": {"nodeID": engine_node, "replicaAddressMap": {}},
                  "status": {"currentState": "running", "replicaModeMap": dict.fromkeys(replicas, "RW")}}
        self.reps = {rn: {"metadata": {"name": rn, "labels": {}, "ownerReferences": []},
                          "spec": {"volumeName": "vol", "nodeID": node, "failedAt": "",
                                   "healthyAt": "t0", "lastHealthyAt": "t0", "desireState": "running"},
                          "status": {"currentState": "running", "ip": self.ims.ip(node), "port": 10000}}
                     for rn, node in replicas.items()}
        self.events: list[str] = []
        self.created: list[dict] = []

        def path(rt: Any, ims: Any, src: str, dst: str) -> tuple[bool, str]:
            if not ims.running(dst) or not ims.running(src):
                return False, "instance manager not running"
            return (src == dst or frozenset((src, dst)) not in self.broken), "fake"
        monkeypatch.setattr(longhorn_pass, "instance_path", path)
        monkeypatch.setattr(longhorn_replicas, "instance_path", path)

    def engine_image_ready(self, node: str) -> bool:
        return True

    def snapshots(self, vol: str) -> list[dict]:
        return self.snaps

    def manager_ready(self, node: str) -> bool:
        return node in self.ims.by_node

    def scheduling_nodes(self) -> tuple[list[dict], dict[str, int]]:
        return [{"name": n, "ready": True, "cordoned": n in self.cordoned, "zone": "",
                 "instance_manager": self.ims.running(n), "engine_image": True}
                for n in sorted(self.ims.by_node)], {}

    def cut(self, a: str, b: str) -> None:
        self.broken.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.broken.discard(frozenset((a, b)))

    def run(self, now: float) -> VolumePass:
        p = VolumePass(self, "vol", self.c, copy.deepcopy(self.v), copy.deepcopy(self.e),
                       copy.deepcopy(self.reps), now, self.settings)
        p.run()
        self.v, self.e = p.v, p.e
        self.reps = {n: r for n, r in p.reps.items() if n not in p.deleted}
        for r in p.created:
            self.reps[r["metadata"]["name"]] = r
        self.created += p.created
        self.events += [reason for _, reason, _ in p.events]
        return p

    @property
    def state(self) -> tuple[str, str]:
        return self.v["status"]["state"], self.v["status"]["robustness"]

    def mode(self, rn: str) -> str | None:
        return self.e["status"].get("replicaModeMap", {}).get(rn)


def test_a_lost_link_degrades_then_the_replica_is_rebuilt(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a", actual=2 * GiB)
    w.cut("a", "b")
    w.run(0.0)
    assert w.state == ("attached", "healthy")            # not before engine-replica-timeout
    w.run(7.9)
    assert w.mode("rb") == "RW"
    w.run(8.0)
    assert w.state == ("attached", "degraded") and w.mode("rb") == "ERR"
    assert w.reps["rb"]["spec"]["failedAt"] and w.v["status"]["lastDegradedAt"]
    assert "Degraded" in w.events
    w.heal("a", "b")
    w.run(20.0)                                          # usable again: the replica restarts
    assert w.reps["rb"]["status"]["currentState"] == "starting"
    w.run(22.0)                                          # then rebuilds (WO)
    assert w.mode("rb") == "WO" and "Rebuilding" in w.events
    done = 22.0 + rebuild_seconds(2 * GiB)
    w.run(done - 1.0)
    assert w.state == ("attached", "degraded")
    w.run(done)
    assert w.state == ("attached", "healthy") and w.mode("rb") == "RW"
    assert not w.reps["rb"]["spec"]["failedAt"] and w.reps["rb"]["spec"]["healthyAt"]
    assert {"Rebuilt", "Healthy"} <= set(w.events)


def test_no_reachable_replica_faults_detaches_and_is_salvaged_when_the_network_returns(monkeypatch):
    w = World(monkeypatch, {"rb": "b", "rc": "c"}, "a")    # no replica beside the engine
    w.cut("a", "b")
    w.cut("a", "c")
    w.run(0.0)
    w.run(8.0)
    assert w.state == ("detaching", "faulted")
    w.run(11.0)
    assert w.state == ("detached", "faulted") and w.v["status"]["currentNodeID"] == ""
    w.run(30.0)
    assert w.state == ("detached", "faulted")             # nothing usable from node a yet
    w.heal("a", "b")
    w.run(40.0)                                            # auto-salvage, remount, attach again
    assert w.state == ("attaching", "unknown")
    assert {"AutoSalvaged", "Remount"} <= set(w.events) and w.c.remount_uids == {"pod-uid"}
    # only what node a reaches is salvaged (Longhorn would try rc too, and fail it again)
    assert not w.reps["rb"]["spec"]["failedAt"] and w.reps["rc"]["spec"]["failedAt"]
    w.run(45.0)
    assert w.state == ("attached", "degraded")             # rb RW; rc still cut off
    assert w.mode("rb") == "RW" and w.reps["rc"]["spec"]["failedAt"]


def test_engine_death_detaches_unexpectedly_then_reattaches_with_a_remount(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    w.ims.stop("a")                                        # its instance-manager pod deleted
    w.run(0.0)
    assert w.state == ("detaching", "faulted") and "DetachedUnexpectedly" in w.events
    assert w.reps["ra"]["status"]["currentState"] == "error" and w.reps["ra"]["spec"]["failedAt"]
    w.run(3.0)
    assert w.state == ("detached", "unknown")              # rb is usable: no salvage needed
    assert "Remount" in w.events and w.c.remount_uids == {"pod-uid"}
    w.run(4.0)
    assert w.state == ("detached", "unknown") and "instance manager on a" in w.c.blocked
    w.ims.up.add("a")                                      # longhorn-manager recreated it
    w.run(6.0)
    assert w.state == ("attaching", "unknown")
    w.run(11.0)
    assert w.state == ("attached", "degraded") and w.mode("rb") == "RW"


def test_a_replica_gone_for_good_is_replaced_on_a_free_node_after_the_wait_interval(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    w.ims.stop("b")
    w.run(0.0)
    assert w.state == ("attached", "degraded") and w.mode("rb") == "ERR"
    w.run(599.0)
    assert not w.created
    w.run(600.0)
    (new,) = w.created
    assert new["spec"]["nodeID"] == "c" and new["metadata"]["name"].startswith("vol-r-")
    w.run(601.0)
    w.run(603.0)
    assert w.mode(new["metadata"]["name"]) == "WO"
    w.run(603.0 + rebuild_seconds(GiB))
    assert w.state == ("attached", "healthy")
    w.run(30 * 60.0 + 1)                                    # staleReplicaTimeout: 30 minutes
    assert "rb" not in w.reps


#: a snapshot of 0.75 GiB of a 1 GiB volume, hashed long before any failure in these tests
HASHED = [{"name": "before-maintenance", "size": str(768 * 1024 ** 2), "creationTime": "2000-01-01T00:00:00Z",
           "checksum": "9f2c", "userCreated": True}]


def _returning_replica_rebuilds_until(w: "World") -> float:
    """Cut b from the engine on a, heal it at 20 s: the cluster time its rebuild ends."""
    w.cut("a", "b")
    w.run(0.0)
    w.run(8.0)
    assert w.mode("rb") == "ERR"
    w.heal("a", "b")
    w.run(20.0)
    w.run(22.0)
    assert w.mode("rb") == "WO"
    return w.c.rebuild_until["rb"]


def test_a_returning_replica_skips_its_hashed_snapshot_and_rebuilds_the_head_only(monkeypatch):
    # sparse-tools SyncContent skips a file whose recorded checksums match (fast rebuild,
    # on by default in v1.7.2); the head (0.25 GiB) is still compared block by block
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a", snapshots=HASHED)
    done = _returning_replica_rebuilds_until(w)
    assert done == pytest.approx(22.0 + rebuild_seconds(GiB - 768 * 1024 ** 2))
    assert done < 22.0 + rebuild_seconds(GiB)
    w.run(done - 0.5)
    assert w.state == ("attached", "degraded")
    w.run(done)
    assert w.state == ("attached", "healthy") and w.mode("rb") == "RW"


@pytest.mark.parametrize("off", [{"fast-replica-rebuild-enabled": "false"}, {"snapshot-data-integrity": "disabled"}])
def test_with_fast_rebuild_off_a_returning_replica_compares_everything(monkeypatch, off):
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a", snapshots=HASHED, settings=off)
    assert _returning_replica_rebuilds_until(w) == pytest.approx(22.0 + rebuild_seconds(GiB))


def test_a_returning_replica_without_snapshots_takes_as_long_as_a_full_copy(monkeypatch):
    # all data in the volume head (the minicloud fixture): it never has a checksum, so it is
    # read and hashed on both sides; the twin prices that like the network copy
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a")
    assert _returning_replica_rebuilds_until(w) == pytest.approx(22.0 + rebuild_seconds(GiB))


def test_a_new_replica_on_another_node_copies_everything_despite_hashed_snapshots(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a", snapshots=HASHED)
    w.ims.stop("b")
    w.run(0.0)
    w.run(600.0)
    (new,) = w.created
    name = new["metadata"]["name"]
    assert new["spec"]["nodeID"] == "c" and not new["spec"]["lastHealthyAt"]
    w.run(601.0)
    w.run(603.0)
    assert w.mode(name) == "WO"
    assert w.c.rebuild_until[name] == pytest.approx(603.0 + rebuild_seconds(GiB))


def test_without_a_free_node_the_volume_stays_degraded_and_says_why(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a")
    w.ims.stop("b")
    w.run(0.0)
    w.run(600.0)
    assert not w.created and w.state == ("attached", "degraded")
    cond = next(c for c in w.v["status"]["conditions"] if c["type"] == "Scheduled")
    assert (cond["status"], cond["reason"]) == ("False", "ReplicaSchedulingFailure")


def test_rebuilds_wait_for_a_slot_on_their_node(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a",
              settings={"concurrent-replica-rebuild-per-node-limit": "1"})
    w.cut("a", "b")
    w.run(0.0)
    w.run(8.0)
    w.rebuilding["b"] = {"other-volume-r-1"}                # b's one slot is taken
    w.heal("a", "b")
    w.run(10.0)
    w.run(12.0)
    assert w.mode("rb") == "ERR" and w.reps["rb"]["status"]["currentState"] == "starting"
    w.rebuilding["b"].clear()
    w.run(13.0)
    assert w.mode("rb") == "WO" and w.rebuilding["b"] == {"rb"}


def test_a_pod_that_moves_takes_the_volume_along_after_the_detach_grace(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    w.users.node = ""                                      # the pod is gone ...
    w.run(0.0)
    w.users.node = "a"                                     # ... and its replacement is on a again
    w.run(1.0)
    assert w.state == ("attached", "healthy")              # within the grace: still attached
    w.users.node = "b"
    w.run(2.0)
    w.run(5.0)
    assert w.state == ("detaching", "healthy")
    w.run(8.0)
    assert w.state == ("attaching", "unknown") and w.v["status"]["currentNodeID"] == "b"
    w.run(13.0)
    assert w.state == ("attached", "healthy") and w.e["spec"]["nodeID"] == "b"


# -- eviction (spec.evictionRequested, set by the node controller: longhorn_eviction) -------------

def evict(w: World, *names: str, node: str = "a") -> None:
    """What the node controller does on a cordoned node under block-for-eviction."""
    w.cordoned.add(node)
    for rn in names:
        w.reps[rn]["spec"]["evictionRequested"] = True


def rebuild_new_replica(w: World, start: float, actual: int = GiB) -> tuple[str, float]:
    """Run the passes that create, restart and rebuild one new replica; its name and the
    cluster time its rebuild ends."""
    w.run(start)
    new = w.created[-1]["metadata"]["name"]
    w.run(start + 1.0)
    assert w.reps[new]["status"]["currentState"] == "starting"
    w.run(start + 3.0)
    assert w.mode(new) == "WO", "rebuilt from a healthy replica"
    return new, start + 3.0 + rebuild_seconds(actual)


def test_an_evicting_replica_is_rebuilt_elsewhere_then_deleted_and_the_volume_is_never_degraded(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a", actual=2 * GiB)
    evict(w, "ra")
    new, done = rebuild_new_replica(w, 0.0, 2 * GiB)
    assert w.reps[new]["spec"]["nodeID"] == "c" and not w.reps[new]["spec"]["evictionRequested"]
    assert w.state == ("attached", "healthy") and w.mode("ra") == "RW"
    w.run(done - 1.0)
    assert "ra" in w.reps and w.mode(new) == "WO"
    w.run(done)
    assert "ra" not in w.reps, "evicted once its replacement is healthy"
    assert w.state == ("attached", "healthy") and sorted(w.e["status"]["replicaModeMap"]) == sorted(["rb", new])
    assert "Degraded" not in w.events and len(w.created) == 1


def test_a_single_replica_volume_gets_a_new_replica_elsewhere(monkeypatch):
    w = World(monkeypatch, {"ra": "a"}, "a", wanted=1)
    evict(w, "ra")
    new, done = rebuild_new_replica(w, 0.0)
    assert w.reps[new]["spec"]["nodeID"] in ("b", "c") and w.state == ("attached", "healthy")
    w.run(done)
    assert list(w.reps) == [new] and w.mode(new) == "RW" and w.state == ("attached", "healthy")


def test_the_eviction_keeps_the_volume_attached_where_it_is_until_it_is_done(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    evict(w, "ra")
    w.users.node = "b"                       # the drain evicted the pod; its replacement runs on b
    new, done = rebuild_new_replica(w, 0.0)
    w.run(done - 0.5)
    assert w.state == ("attached", "healthy") and w.v["status"]["currentNodeID"] == "a"
    w.run(done)                              # evicted; the ticket goes, the workload's wins
    w.run(done + 1.0)
    w.run(done + 4.0)
    assert w.state == ("detaching", "healthy")
    w.run(done + 7.0)
    assert w.state == ("attaching", "unknown") and w.v["status"]["currentNodeID"] == "b"


def test_a_detached_volume_is_attached_on_its_owner_to_evict_then_detached(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    w.users.node = ""
    w.v["status"].update(state="detached", currentNodeID="", ownerID="a", robustness="unknown")
    w.e["status"].update(currentState="stopped", replicaModeMap={})
    evict(w, "ra")
    w.run(0.0)
    assert w.state == ("attaching", "unknown") and w.v["status"]["currentNodeID"] == "a"
    w.run(5.0)
    assert w.state == ("attached", "healthy")
    new, done = rebuild_new_replica(w, 6.0)
    w.run(done)
    assert "ra" not in w.reps and w.reps[new]["spec"]["healthyAt"]
    w.run(done + 1.0)
    w.run(done + 4.0)
    assert w.state == ("detaching", "healthy"), "no workload and no eviction: nothing keeps it attached"


def test_without_an_eligible_node_the_eviction_waits_and_the_volume_says_why(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a")
    evict(w, "ra")
    for t in (0.0, 10.0, 600.0):
        w.run(t)
    assert not w.created and "ra" in w.reps and w.state == ("attached", "healthy")
    cond = next(c for c in w.v["status"]["conditions"] if c["type"] == "Scheduled")
    assert (cond["status"], cond["reason"]) == ("False", "ReplicaSchedulingFailure")
    assert "a: cordoned" in cond["message"] and "b: holds a replica of this volume" in cond["message"]


def test_soft_anti_affinity_lets_the_replica_move_to_a_node_that_holds_one(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b", "rc": "c"}, "a",
              settings={"replica-soft-anti-affinity": "true"})
    evict(w, "ra")
    new, done = rebuild_new_replica(w, 0.0)
    assert w.reps[new]["spec"]["nodeID"] in ("b", "c")
    w.run(done)
    assert "ra" not in w.reps and w.state == ("attached", "healthy")


def test_a_cancelled_eviction_keeps_the_replica_and_its_rebuilt_replacement(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    evict(w, "ra")
    new, done = rebuild_new_replica(w, 0.0)
    w.reps["ra"]["spec"]["evictionRequested"] = False      # uncordoned (EvictionCanceled)
    w.run(done)
    assert set(w.reps) == {"ra", "rb", new} and w.mode(new) == "RW" and len(w.created) == 1


def test_a_failed_evicting_replica_is_replaced_not_reused(monkeypatch):
    w = World(monkeypatch, {"ra": "a", "rb": "b"}, "a")
    w.cut("a", "b")
    w.run(0.0)
    w.run(8.0)
    assert w.mode("rb") == "ERR"
    w.heal("a", "b")
    w.cordoned.add("b")
    w.reps["rb"]["spec"]["evictionRequested"] = True
    w.run(9.0)
    (new,) = w.created
    assert new["spec"]["nodeID"] == "c", "replaced at once, no replenishment wait"
    assert w.reps["rb"]["status"]["currentState"] != "starting"


@pytest.mark.parametrize("stored", [{}, None])
def test_replica_modes_are_written_into_the_engines_own_map(stored):
    # an empty (or null) replicaModeMap is the engine's map, not a throwaway copy
    p = VolumePass(None, "pvc-1", VolumeClock(), {}, {"status": {"replicaModeMap": stored}}, {}, 0.0, {})
    p.modes()["r-1"] = "RW"
    assert p.e["status"]["replicaModeMap"] == {"r-1": "RW"}
