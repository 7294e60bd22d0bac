"""Pure rules of the twin's Longhorn model, against golden cases, and the stage table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from twin.controllers.addons import longhorn_rules as rules

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GOLDEN = json.loads((Path(__file__).parent / "golden" / "longhorn_rules.json").read_text())
CASES = [(fn, case) for fn, cases in GOLDEN.items() if not fn.startswith("_") for case in cases]


@pytest.mark.parametrize("fn,case", CASES, ids=[f"{fn}: {c['why']}" for fn, c in CASES])
def test_golden(fn: str, case: dict) -> None:
    got = getattr(rules, fn)(**case["args"])
    want = case["want"]
    assert (list(got) if isinstance(got, tuple) else got) == want


def test_rebuild_time_grows_with_the_data() -> None:
    sizes = [0, 512 * rules.MiB, 5 * 1024 * rules.MiB, 50 * 1024 * rules.MiB]
    times = [rules.rebuild_seconds(s) for s in sizes]
    assert times == sorted(times) and len(set(times)) == len(times)
    # the copy part is proportional: ten times the data, ten times the copy time
    one, ten = (rules.rebuild_seconds(n * 1024 * rules.MiB) - rules.REBUILD_SETUP_SECONDS for n in (1, 10))
    assert ten == pytest.approx(10 * one, rel=0.01)


def test_settings_are_longhorns_defaults() -> None:
    # longhorn-manager v1.7.2 types/setting.go
    assert rules.SETTINGS["engine-replica-timeout"] == "8"
    assert rules.SETTINGS["replica-replenishment-wait-interval"] == "600"
    assert rules.SETTINGS["auto-delete-pod-when-volume-detached-unexpectedly"] == "true"
    assert rules.SETTINGS["auto-salvage"] == "true"
    assert rules.setting_seconds({"engine-replica-timeout": "oops"}, "engine-replica-timeout") == 8.0
    assert rules.setting_on({"auto-salvage": "False"}, "auto-salvage") is False


def test_every_stage_names_its_delay_and_source() -> None:
    names = [s.name for s in rules.STAGES]
    assert len(names) == len(set(names))
    for s in rules.STAGES:
        assert s.kind in {"Volume", "Engine", "Replica", "InstanceManager", "Pod"}, s
        assert s.when and s.then and s.source, s
        if isinstance(s.after, str):
            # a setting, or the rebuild formula (longhorn_rebuild.rebuild_plan)
            assert s.after in rules.SETTINGS or s.after.startswith("rebuild_plan("), s
        else:
            assert s.after >= 0, s
    assert rules.STAGE["replica-lost"].after == "engine-replica-timeout"
    assert rules.STAGE["remount-delete"].after == rules.REMOUNT_DELETE_DELAY == 5.0
