"""Unit tests of the runbook fixes the fault scenarios (issue 6) led to, with fakes (no sockets).

* velero: a PartiallyFailed backup's error names each failed PodVolumeBackup and its message;
* preflight.backup: a rerun after a failed backup takes a new backup instead of waiting on
  the failed one forever;
* params: ``limits.lock_seconds`` (default 1800, at least 1);
* lock + session: the lease lasts ``lease_seconds``; an expired lease is taken over, the
  lease says from whom, and the journal records it once;
* session: evidence tables show whole cells.
"""
from __future__ import annotations

import copy
import datetime as dt
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from runbook import lock, preflight, session, velero
from runbook import params as params_mod
from runbook.errors import ClusterError, LockHeld, VeleroError
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class FakeVelero:
    """Backups keyed by name; ``outcomes`` gives the phase each new backup ends in."""

    def __init__(self, outcomes: list[str], pvbs: list[dict] | None = None, crd: bool = True) -> None:
        self.outcomes = list(outcomes)
        self.backups: dict[str, dict] = {}
        self.pvbs = pvbs or []
        self.crd = crd

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        return copy.deepcopy(self.backups.get(name))

    def has_resource(self, resource: str) -> bool:
        return resource == "backups"     # Velero is installed (preflight skips the backup otherwise)

    def create(self, resource: str, obj: dict, namespace: str | None = None) -> dict:
        phase = self.outcomes.pop(0)
        obj = copy.deepcopy(obj)
        obj["status"] = {"phase": phase, "errors": 2 if phase != "Completed" else 0, "warnings": 1,
                         "progress": {"totalItems": 10, "itemsBackedUp": 10}}
        self.backups[obj["metadata"]["name"]] = obj
        return obj

    def request(self, method: str, path: str, *, query: dict | None = None, **_: Any) -> Any:
        assert method == "GET" and path.endswith("/podvolumebackups")
        if not self.crd:
            raise ClusterError("the server could not find the requested resource", status=404)
        want = (query or {})["labelSelector"].split("=", 1)[1]
        return {"items": [p for p in self.pvbs
                          if p["metadata"]["labels"]["velero.io/backup-name"] == want]}


def pvb(name: str, backup: str, phase: str, message: str) -> dict:
    return {"metadata": {"name": name, "labels": {"velero.io/backup-name": backup}},
            "spec": {"pod": {"namespace": "apps", "name": "db-0"}},
            "status": {"phase": phase, "message": message}}


def test_partially_failed_backup_error_names_failed_volume_backups():
    c = FakeVelero(["PartiallyFailed"], pvbs=[
        pvb("b1-x", "b1", "Failed", "error backing up volume data: node agent not ready"),
        pvb("b1-y", "b1", "Completed", "ok"), pvb("b2-z", "b2", "Failed", "other backup")])
    with pytest.raises(VeleroError) as ei:
        velero.backup(c, "b1", timeout=5, )
    msg = str(ei.value)
    assert "Backup b1 ended PartiallyFailed: 2 errors, 1 warnings" in msg
    assert "failed: b1-x (pod apps/db-0): error backing up volume data: node agent not ready" in msg
    assert "b1-y" not in msg and "b2-z" not in msg
    assert "velero backup describe b1 --details" in msg


def test_failed_volume_backups_never_hides_the_error():
    c = FakeVelero(["PartiallyFailed"], crd=False)
    assert velero.failed_volume_backups(c, "b1") == []
    with pytest.raises(VeleroError, match="ended PartiallyFailed: 2 errors"):
        velero.backup(c, "b1", timeout=5)


def _session(tmp_path, cluster: Any) -> Any:
    j = Journal.open(tmp_path / "run-1", params_hash="p", cluster_uid="u", run_id="run-1")
    j.begin_phase("preflight")
    p = SimpleNamespace(velero=SimpleNamespace(backup_name=lambda rid: f"phase22-{rid}", namespace="velero",
                                               storage_location="default", include_cluster_resources=True))
    return SimpleNamespace(params=p, run_id="run-1", journal=j, cluster=cluster, execute=True,
                           require_execute=lambda what: True, figure=lambda k, v: v,
                           timeouts=SimpleNamespace(velero=5), progress=lambda m: None)


def test_preflight_rerun_after_failed_backup_takes_a_new_one(tmp_path):
    c = FakeVelero(["PartiallyFailed", "PartiallyFailed", "Completed"])
    s = _session(tmp_path, c)
    for _ in range(2):
        with pytest.raises(VeleroError):
            preflight.backup(s)
    res = preflight.backup(s)
    assert res.phase == "Completed" and res.name == "phase22-run-1-r3"
    assert s.journal.get("velero_backup") == "phase22-run-1-r3"
    assert [e.data["name"] for e in s.journal.entries(step="velero-backup")] == \
        ["phase22-run-1", "phase22-run-1-r2", "phase22-run-1-r3"]
    # a later rerun reuses the Completed backup (no new one)
    assert preflight.backup(s).name == "phase22-run-1-r3" and not c.outcomes


def test_lock_seconds_param():
    assert params_mod.Limits().lock_seconds == 1800 == lock.DEFAULT_SECONDS
    assert params_mod.Limits(lock_seconds=30).lock_seconds == 30
    with pytest.raises(Exception):
        params_mod.Limits(lock_seconds=0)
    assert "crashed" in params_mod.Limits.model_fields["lock_seconds"].description


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict | None = None

    def request(self, method: str, path: str, ok_missing: bool = False, **_: Any) -> Any:
        assert method in ("GET", "DELETE")
        if method == "DELETE":
            self.lease = None
            return {}
        return copy.deepcopy(self.lease)

    def create(self, resource: str, body: dict, namespace: str | None = None) -> dict:
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)

    def replace(self, resource: str, body: dict) -> dict:
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)


def test_expired_lease_is_taken_over_and_recorded_once(tmp_path):
    c = FakeLeases()
    lock.acquire(c, "crashed", lease_seconds=60)
    assert c.lease["spec"]["leaseDurationSeconds"] == 60
    with pytest.raises(LockHeld, match="run crashed"):
        lock.acquire(c, "new", lease_seconds=30)
    # the crashed run stopped renewing: backdate its renewTime past the duration
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=61)
    c.lease["spec"]["renewTime"] = lock._fmt(old)
    lease = lock.acquire(c, "new", lease_seconds=30)
    assert lease["metadata"]["annotations"][lock.RUN_ANNOTATION] == "new"
    assert lease["metadata"]["annotations"][lock.TAKEOVER_ANNOTATION].startswith("crashed (expired ")
    assert lease["spec"]["leaseDurationSeconds"] == 30
    j = Journal.open(tmp_path / "new", params_hash="p", cluster_uid="u", run_id="new")
    session._record_takeover(j, lease)
    first = j.get("lock_takeover")
    assert first["from"].startswith("crashed") and first["lease"] == "kube-system/phase22-migration"
    session._record_takeover(j, lock.acquire(c, "new", lease_seconds=30))   # the next phase
    assert j.get("lock_takeover") == first
    session._record_takeover(j, {"metadata": {"annotations": {}}})
    assert j.get("lock_takeover") == first


def test_no_takeover_recorded_for_a_fresh_lock(tmp_path):
    c = FakeLeases()
    lease = lock.acquire(c, "solo")
    j = Journal.open(tmp_path / "solo", params_hash="p", cluster_uid="u", run_id="solo")
    session._record_takeover(j, lease)
    assert j.get("lock_takeover") is None


def test_evidence_tables_show_whole_cells():
    old = pd.get_option("display.max_colwidth")
    try:
        pd.set_option("display.max_colwidth", 50)
        session._show_whole_cells()
        text = "manages 14 Application(s) with selfHeal: it reverts edits to their syncPolicy"
        assert text in repr(pd.DataFrame([{"detail": text}]))
    finally:
        pd.set_option("display.max_colwidth", old)
