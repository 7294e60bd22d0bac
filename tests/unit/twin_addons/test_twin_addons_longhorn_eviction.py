"""The twin's Longhorn eviction rules against golden cases written from longhorn-manager's Go
source: which replicas a cordoned node's node controller marks for eviction under each
node-drain-policy, and where the replica scheduler lets a new replica go."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from twin.controllers.addons import longhorn_eviction, longhorn_scheduler
from twin.controllers.addons.longhorn_pdb import DRAIN_POLICIES

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GOLDEN = json.loads((Path(__file__).parent / "golden" / "longhorn_eviction.json").read_text())
CASES = [(fn, case) for fn, cases in GOLDEN.items() if not fn.startswith("_") for case in cases]
MODULES = {"should_evict_replica": longhorn_eviction, "replica_candidates": longhorn_scheduler}


@pytest.mark.parametrize("fn,case", CASES, ids=[f"{fn}: {c['why']}" for fn, c in CASES])
def test_golden(fn: str, case: dict) -> None:
    got = getattr(MODULES[fn], fn)(**case["args"])
    assert json.loads(json.dumps(got)) == case["want"]


def test_every_drain_policy_has_a_golden_case_on_a_cordoned_ready_node() -> None:
    covered = {c["args"]["policy"] for c in GOLDEN["should_evict_replica"]
               if c["args"]["node"] == "ready" and c["args"]["cordoned"]}
    assert covered == set(DRAIN_POLICIES)
    assert set(longhorn_eviction.EVICTING_POLICIES) < set(DRAIN_POLICIES)


@pytest.mark.parametrize("volume, setting, want", [
    ("ignored", "true", True), ("", "false", False), ("enabled", "false", True), ("disabled", "true", False)])
def test_a_volumes_anti_affinity_overrides_the_setting(volume: str, setting: str, want: bool) -> None:
    assert longhorn_scheduler.soft_anti_affinity(volume, setting) is want


# -- the node controller's sync over a faked store -------------------------------------------------

class FakeStore:
    def __init__(self, nodes: dict[str, bool], replicas: dict[str, tuple[str, str]]) -> None:
        self.objs = {("nodes", n): {"metadata": {"name": n}, "spec": {"unschedulable": cordoned},
                                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                     for n, cordoned in nodes.items()}
        for name, (vol, node) in replicas.items():
            self.objs[("replicas", name)] = {"apiVersion": "longhorn.io/v1beta2", "kind": "Replica",
                                             "metadata": {"name": name},
                                             "spec": {"volumeName": vol, "nodeID": node, "healthyAt": "t0"}}

    def peek(self, t: str, ns: str | None, name: str) -> dict | None:
        return self.objs.get((t, name))

    def iter_objects(self, t: str, ns: str | None) -> list[dict]:
        return [o for (kind, _), o in sorted(self.objs.items()) if kind == t]

    def mutate(self, t: str, ns: str | None, name: str, fn: Any) -> None:
        fn(self.objs[(t, name)])


class FakeVolumes:
    def __init__(self, policy: str) -> None:
        self.t = {"replicas": "replicas"}
        self.policy = policy
        self.events: list[tuple[str, str]] = []

    def settings(self) -> dict[str, str]:
        return {"node-drain-policy": self.policy}

    def manager_ready(self, node: str) -> bool:
        return True

    def record_event(self, obj: dict, etype: str, reason: str, message: str, component: str) -> None:
        self.events.append((obj["metadata"]["name"], reason))


class FakePDBs:
    """Healthy replicas on schedulable nodes are PDB-protected (all instance managers run)."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def protected_nodes(self, replicas: list[dict]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in replicas:
            node = r["spec"]["nodeID"]
            if not self.store.objs[("nodes", node)]["spec"]["unschedulable"]:
                out.setdefault(r["spec"]["volumeName"], set()).add(node)
        return out


def sync(monkeypatch: pytest.MonkeyPatch, policy: str,
         cordoned: bool = True) -> tuple[Any, FakeVolumes, FakeStore]:
    """Node a (cordoned or not) holds a replica of "spread" (another on b) and the only
    replica of "lonely"; one sync of the node controllers."""
    store = FakeStore({"a": cordoned, "b": False, "c": False},
                      {"spread-ra": ("spread", "a"), "spread-rb": ("spread", "b"), "lonely-ra": ("lonely", "a")})
    monkeypatch.setattr(longhorn_eviction, "find_type", lambda store, group, plural: plural)
    vols = FakeVolumes(policy)
    ev = longhorn_eviction.ReplicaEvictions(type("RT", (), {"store": store})(), vols, FakePDBs(store))
    ev.sync()
    return ev, vols, store


@pytest.mark.parametrize("policy, evicted", [
    ("block-for-eviction", {"spread-ra", "lonely-ra"}),
    ("block-for-eviction-if-contains-last-replica", {"lonely-ra"}),
    ("block-if-contains-last-replica", set()),
    ("allow-if-replica-is-stopped", set()),
    ("always-allow", set()),
])
def test_each_policy_marks_the_replicas_longhorn_moves_off_a_cordoned_node(monkeypatch, policy: str,
                                                                         evicted: set) -> None:
    ev, vols, store = sync(monkeypatch, policy)
    got = {name for (kind, name), o in store.objs.items()
           if kind == "replicas" and o["spec"].get("evictionRequested")}
    assert got == evicted
    assert ev.requested == dict.fromkeys(evicted, "a")
    assert sorted(vols.events) == sorted((n, "EvictionAutomatic") for n in evicted)


def test_uncordoning_cancels_the_eviction_with_an_event(monkeypatch) -> None:
    ev, vols, store = sync(monkeypatch, "block-for-eviction")
    store.objs[("nodes", "a")]["spec"]["unschedulable"] = False
    ev.sync()
    assert not any(o["spec"].get("evictionRequested") for (kind, _), o in store.objs.items() if kind == "replicas")
    assert sorted(vols.events[2:]) == [("lonely-ra", "EvictionCanceled"), ("spread-ra", "EvictionCanceled")]
    assert ev.requested == {}


def test_a_schedulable_node_evicts_nothing_whatever_the_policy(monkeypatch) -> None:
    ev, vols, store = sync(monkeypatch, "block-for-eviction", cordoned=False)
    assert ev.requested == {} and vols.events == []
