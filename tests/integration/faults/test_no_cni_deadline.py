"""The no-CNI window outlives ``limits.no_cni_window_max`` (issue #12).

The Cilium agents never become Ready (their images never pull), so the window that
02-reconfigure opened stays open; with a short deadline, 03-install stops during helm's
``--wait`` at the gate ``no-cni-deadline`` instead of waiting out helm's own timeout. The
error, the notebook and the report name the deadline and print this run's exact rollback
command; that command rolls the run back with nothing lost, and a rerun of the install
stops at the same gate.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from faults_helpers import FAST_TIMEOUTS, assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, journal, report_text
from runbook import cli, evidence

pytestmark = [pytest.mark.integration]
WINDOW_MAX = 20


@pytest.mark.timeout(360)
def test_install_stops_at_the_deadline_and_prints_the_rollback_command(make_twin, tmp_path):
    twin, params, c, before = start_scenario(
        make_twin, faults={"cilium_image_pull_fails": True},
        limits={"no_cni_window_max": WINDOW_MAX, "timeouts": {**FAST_TIMEOUTS, "helm": 240}})
    run_id = "deadline"
    res = run(params, "preflight,reconfigure,install", tmp_path, run_id=run_id)
    assert statuses(res) == {"preflight": "passed", "reconfigure": "passed", "install": "failed"}
    err = res.phases[-1].error
    assert err.startswith("DeadlineExceeded") and f"limits.no_cni_window_max ({WINDOW_MAX}s)" in err, err
    cmd = journal(res)["facts"]["no_cni_deadline"]["rollback_command"]
    # the same command the report's index prints: the runbook binary this run used, then its arguments
    words = shlex.split(cmd)
    assert Path(words[0]).name == "runbook", cmd
    assert words[1:] == ["run", "--params", str(params), "--phases", "rollback", "--run-id", run_id,
                         "--reports-dir", str(tmp_path), "--execute"]
    gate = evidence.read_records(res.run_dir / "03-install.ipynb")["gate/no-cni-deadline"]
    assert gate["passed"] is False and cmd in gate["hint"]
    details = "\n".join(gate["details"])
    assert "the run stopped during: 03-install, helm upgrade --install --wait" in details
    assert f"roll back with: {cmd}" in details and "300 s" in details
    assert cmd in report_text(res, "03-install.ipynb")
    [h] = entries(journal(res), "helm-install")
    assert h["status"] == "failed"          # helm's wait was cut to the window, not 240 s
    # a rerun stops at the same gate: the only way on is the rollback
    again = run(params, "install", tmp_path, run_id=run_id)
    assert statuses(again) == {"install": "failed"} and again.phases[0].error.startswith("DeadlineExceeded")
    # the printed command, as an operator would paste it (the CLI parses it)
    argv = shlex.split(cmd)[1:]
    assert argv[:2] == ["run", "--params"]
    parsed = cli.build_parser().parse_args(argv)
    assert parsed.phases == "rollback" and parsed.run_id == run_id and parsed.execute
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
