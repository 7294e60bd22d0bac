"""Scenario 2 (issue 6), the rollback half: an agent's SSH is down in the middle of
reconfigure, and the operator rolls back instead of waiting for the node.

``tests/integration/phases/test_reconfigure_install.py`` proves the stop, the journal's
per-node record and the rerun that finishes the job. Here: the rollback of the stopped
run restores the nodes the run changed and leaves the unreached agent alone (no step is
journaled for it, its disk is untouched), even while its SSH is still down; once it is
back, nothing is lost.
"""
from __future__ import annotations

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.journal_watch import ssh_down_after_restart
from helpers.run_evidence import entries, journal
from helpers.twin_disks import node_files

pytestmark = [pytest.mark.integration]
SERVER, AGENTS = "set-hog", ("fast-skunk", "fast-heron")


@pytest.mark.timeout(240)
def test_rollback_after_ssh_down_restores_changed_nodes_and_leaves_the_other_alone(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin)
    victim = AGENTS[-1]
    victim_disk = node_files(twin, victim)
    run_id = "s2-rollback"
    # the last agent's SSH goes down once the server has restarted with flannel off
    with ssh_down_after_restart(twin, tmp_path / run_id / "journal.json", SERVER, victim):
        res = run(params, "reconfigure", tmp_path, run_id=run_id)
    assert statuses(res) == {"reconfigure": "failed"} and "NodeError" in res.failed.error
    doc = journal(res)
    assert not entries(doc, "restart-k3s", victim, "done")
    # the rollback while the victim is still unreachable: changed nodes restored, victim left alone
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    rdoc = journal(rb)
    rolled = [e for e in rdoc["entries"] if e.get("phase") == "rollback"]
    assert any(e["step"] == "restore-config" and e.get("node") == SERVER for e in rolled)
    assert any(e["step"] == "start-k3s" and e.get("node") == AGENTS[0] for e in rolled)
    assert not [e for e in rolled if e.get("node") == victim], [e["step"] for e in rolled if e.get("node") == victim]
    assert node_files(twin, victim) == victim_disk
    # the node comes back: nothing lost
    twin.set_fault("ssh_down", [])
    assert_nothing_lost(twin, c, before)
