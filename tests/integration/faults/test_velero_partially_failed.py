"""Scenario 1 (issue 6): the Velero backup ends PartiallyFailed.

Preflight's gate stops the run at the backup, BEFORE anything changes: no node file
touched, Argo CD not paused (01-preflight takes the backup before the pause). The report
names the backup, its phase, its error count and what failed. The rollback of the same
run then finds nothing to undo and releases the lock: nothing lost. After the cause is
fixed, a rerun of preflight with the same run id takes a NEW backup (the failed one
cannot be reused) and passes.
"""
from __future__ import annotations

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, failed_cell_source, journal, report_text
from runbook import lock

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(180)
def test_partially_failed_backup_stops_preflight_before_any_change(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, faults={"velero_partially_failed": True})
    node_files = sorted((twin.state_dir / "nodes").rglob("*"))

    res = run(params, "preflight,reconfigure", tmp_path, run_id="s1-velero")
    # (1) where it stopped: preflight, at the backup; reconfigure never ran
    assert statuses(res) == {"preflight": "failed", "reconfigure": "not-run"}
    backup = "phase22-s1-velero"
    assert res.failed.error.startswith("VeleroError"), res.failed.error
    assert f"Backup {backup} ended PartiallyFailed" in res.failed.error
    assert "preflight.backup(s)" in failed_cell_source(res.run_dir / "01-preflight.ipynb")
    doc = journal(res)
    [b] = entries(doc, "velero-backup")
    assert b["status"] == "failed" and b["data"]["name"] == backup
    assert "velero_backup" not in doc["facts"]
    # nothing changed before the gate: no Argo CD pause, no node file, same policies
    assert not entries(doc, "argocd-pause") and "argocd_previous_policies" not in doc["facts"]
    assert sorted((twin.state_dir / "nodes").rglob("*")) == node_files
    assert c.get("backups", backup, "velero")["status"]["phase"] == "PartiallyFailed"

    # (2) the report names the backup, its phase, its errors and what failed
    text = report_text(res, "01-preflight.ipynb")
    assert backup in text and "PartiallyFailed" in text
    errors = c.get("backups", backup, "velero")["status"]["errors"]
    assert f"{errors} errors" in text
    pvbs = c.request("GET", "/apis/velero.io/v1/namespaces/velero/podvolumebackups")["items"]
    failed_pvbs = [p for p in pvbs
                   if (p["metadata"].get("labels") or {}).get("velero.io/backup-name") == backup
                   and (p.get("status") or {}).get("phase") == "Failed"]
    assert failed_pvbs
    for p in failed_pvbs:   # each failed volume backup is named with its message
        assert p["status"]["message"] in text, p["metadata"]["name"]
    assert f"velero backup describe {backup} --details" in text

    # (3) the rollback of the same run has nothing to undo and releases the lock
    assert lock.status(c)["run_id"] == "s1-velero"
    rb = run(params, "rollback", tmp_path, run_id="s1-velero")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert lock.status(c) is None
    assert_nothing_lost(twin, c, before)

    # recovery: once the cause is fixed, rerunning preflight takes a new backup and passes
    again = run(params, "preflight", tmp_path, run_id="s1-velero")
    assert statuses(again) == {"preflight": "passed"}, again.phases[0].error
    doc = journal(again)
    name = doc["facts"]["velero_backup"]
    assert name != backup and name.startswith(backup)
    assert c.get("backups", name, "velero")["status"]["phase"] == "Completed"
    rb = run(params, "rollback", tmp_path, run_id="s1-velero")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
