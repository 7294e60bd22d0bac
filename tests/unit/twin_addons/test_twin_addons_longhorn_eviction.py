"""The twin's Longhorn eviction rules against golden cases written from longhorn-manager's Go
source: which replicas a cordoned node's node controller marks for eviction under each
node-drain-policy, and where the replica scheduler lets a new replica go."""
from __future__ import annotations

import json
from pathlib import Path

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
