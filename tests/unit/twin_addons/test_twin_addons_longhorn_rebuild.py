"""Which rebuild a Longhorn replica gets (full, delta, fast) and how long it takes, against
golden cases (sources in the golden file and in ``longhorn_rebuild``'s docstring)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from twin.controllers.addons import longhorn_rebuild as rb
from twin.controllers.addons.longhorn_rules import MiB, SETTINGS, rebuild_seconds

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GOLDEN = json.loads((Path(__file__).parent / "golden" / "longhorn_rebuild.json").read_text())


def _snapshots(rows: list[dict]) -> list[dict]:
    return [{"name": r["name"], "size": str(r["mib"] * MiB), "creationTime": r["creationTime"],
             "checksum": r["checksum"]} for r in rows]


@pytest.mark.parametrize("case", GOLDEN["rebuild_plan"], ids=[c["why"] for c in GOLDEN["rebuild_plan"]])
def test_rebuild_plan_golden(case: dict) -> None:
    a = case["args"]
    plan = rb.rebuild_plan(a["actual_mib"] * MiB, held_data=a["held_data"], failed_at=a["failed_at"],
                           snapshots=_snapshots(a["snapshots"]), fast=a.get("fast", True))
    want = case["want"]
    assert (plan.kind, plan.copied, plan.compared, plan.skipped, plan.seconds) == (
        want["kind"], want["copied_mib"] * MiB, want["compared_mib"] * MiB, want["skipped_mib"] * MiB,
        want["seconds"])
    assert plan.why


@pytest.mark.parametrize("case", GOLDEN["fast_rebuild_on"], ids=[c["why"] for c in GOLDEN["fast_rebuild_on"]])
def test_fast_rebuild_on_golden(case: dict) -> None:
    assert rb.fast_rebuild_on(case["args"]["settings"]) is case["want"]


def test_the_rebuild_settings_are_longhorns_defaults() -> None:
    # longhorn-manager v1.7.2 types/setting.go; fast rebuild on by default since
    # longhorn/longhorn#5023, snapshots hashed by the cron job only
    assert rb.REBUILD_SETTINGS == {
        "fast-replica-rebuild-enabled": "true",
        "snapshot-data-integrity": "fast-check",
        "snapshot-data-integrity-immediate-check-after-snapshot-creation": "false",
        "snapshot-data-integrity-cronjob": "0 0 */7 * *",
    }
    assert not set(rb.REBUILD_SETTINGS) & set(SETTINGS)
    assert rb.fast_rebuild_on(dict(SETTINGS, **rb.REBUILD_SETTINGS)) is True


@pytest.mark.parametrize("hashed_mib", [0, 100, 900, 4096])
def test_a_reused_replica_is_never_slower_than_a_new_one_nor_faster_than_its_unhashed_bytes(hashed_mib: int) -> None:
    total = 4096 * MiB
    snaps = [{"name": "s", "size": hashed_mib * MiB, "creationTime": "2026-01-01T00:00:00Z", "checksum": "c"}]
    reused = rb.rebuild_plan(total, held_data=True, failed_at="2026-02-01T00:00:00Z", snapshots=snaps)
    new = rb.rebuild_plan(total, held_data=False, snapshots=snaps)
    assert new.seconds == rebuild_seconds(total)
    assert reused.seconds <= new.seconds
    # the unhashed bytes are read and hashed at no more than the network copy's rate
    assert reused.seconds == rebuild_seconds(total - hashed_mib * MiB)
    assert reused.copied + reused.compared + reused.skipped == total


def test_settings_off_give_the_full_copys_time_back() -> None:
    snaps = [{"name": "s", "size": 900 * MiB, "creationTime": "2026-01-01T00:00:00Z", "checksum": "c"}]
    args = dict(held_data=True, failed_at="2026-02-01T00:00:00Z", snapshots=snaps)
    on = rb.rebuild_plan(GiB := 1024 * MiB, fast=rb.fast_rebuild_on(SETTINGS), **args)
    for off in ({"fast-replica-rebuild-enabled": "false"}, {"snapshot-data-integrity": "disabled"}):
        plan = rb.rebuild_plan(GiB, fast=rb.fast_rebuild_on(dict(SETTINGS, **off)), **args)
        assert plan.kind == "delta" and plan.skipped == 0
        assert plan.seconds == rebuild_seconds(GiB) > on.seconds


def _crd(kind: str) -> dict:
    plural = kind.lower() + "s"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.longhorn.io"},
            "spec": {"group": "longhorn.io", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                               "listKind": f"{kind}List"},
                     "versions": [{"name": "v1beta2", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object"}},
                                   "subresources": {"status": {}}}]}}


def test_the_volume_controller_reads_a_volumes_snapshots_once_the_crd_is_served() -> None:
    from types import SimpleNamespace

    from twin.controllers.addons.longhorn_volumes import LonghornVolumes
    from twin.store import Store

    store = Store(history_per_resource=10, seed=7)
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "longhorn-system"}})
    ctl = SimpleNamespace(store=store, t={"snapshots": None})
    assert LonghornVolumes.snapshots(ctl, "pvc-1") == []          # no CRD: nothing hashed
    store.create(_crd("Snapshot"))
    for name, vol, checksum in (("snap-a", "pvc-1", "9f2c"), ("snap-b", "pvc-2", "")):
        store.create({"apiVersion": "longhorn.io/v1beta2", "kind": "Snapshot",
                      "metadata": {"name": name, "namespace": "longhorn-system",
                                   "labels": {"longhornvolume": vol}},
                      "spec": {"volume": vol, "createSnapshot": True},
                      "status": {"size": str(512 * MiB), "checksum": checksum,
                                 "creationTime": "2026-01-01T00:00:00Z"}})
    got = LonghornVolumes.snapshots(ctl, "pvc-1")
    assert [(s["name"], s["checksum"], s["size"]) for s in got] == [("snap-a", "9f2c", str(512 * MiB))]


def test_an_operator_turning_fast_rebuild_off_is_read_from_its_setting_object() -> None:
    from types import SimpleNamespace

    from twin.controllers.addons.longhorn_volumes import LonghornVolumes
    from twin.store import Store

    store = Store(history_per_resource=10, seed=7)
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "longhorn-system"}})
    store.create(_crd("Setting"))
    ctl = SimpleNamespace(store=store, t={"settings": store.lookup("longhorn.io", "v1beta2", "settings")})
    assert rb.fast_rebuild_on(LonghornVolumes.settings(ctl)) is True      # no object: the default
    store.create({"apiVersion": "longhorn.io/v1beta2", "kind": "Setting",
                  "metadata": {"name": "fast-replica-rebuild-enabled", "namespace": "longhorn-system"},
                  "value": "false"})
    live = LonghornVolumes.settings(ctl)
    assert live["fast-replica-rebuild-enabled"] == "false" and rb.fast_rebuild_on(live) is False
