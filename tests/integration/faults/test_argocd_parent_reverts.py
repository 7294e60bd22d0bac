"""Scenario 6 (issue 6): an Argo CD app-of-apps parent reverts its children's paused policy.

The twin's fault ``argocd_parent_reverts`` makes the self-healing parent ``platform-root``
re-apply its children's ``syncPolicy`` (argo-cd#3895). Preflight detects that risk from
the cluster before it pauses anything (prerequisites table). Then either:

* ``argocd.pause_parents: true`` (the default): the parent is paused FIRST, so the
  children stay paused through reconfigure and install (sampled all along), and verify
  restores every policy exactly; or
* ``argocd.pause_parents: false``: preflight's prerequisites gate stops the run, before
  the backup and before any pause, with the explanation and the param to set.
"""
from __future__ import annotations

import threading
import time

import pytest

from faults_helpers import assert_nothing_lost, fast_params, policies, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, failed_cell_source, journal, read_journal, report_text

pytestmark = [pytest.mark.integration]
PARENT = "argocd/platform-root"


@pytest.mark.timeout(240)
def test_parent_is_paused_first_and_children_stay_paused_until_verify(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, faults={"argocd_parent_reverts": True})
    auto = sorted(k for k, v in before.policies.items() if v not in (None, "<absent>"))
    assert PARENT in auto and len(auto) > 3
    run_id = "s6-parents"
    jpath = tmp_path / run_id / "journal.json"
    samples: list[tuple[float, dict]] = []
    stop = threading.Event()

    def sample() -> None:
        # every Application's policy, sampled from the end of preflight to the end of install
        while not stop.is_set():
            doc = read_journal(jpath)
            if (doc.get("phases", {}).get("preflight") or {}).get("status") == "passed":
                samples.append((time.monotonic(), policies(c)))
            time.sleep(0.3)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        res = run(params, "preflight,reconfigure,install", tmp_path, run_id=run_id)
    finally:
        stop.set()
        th.join(10)
    assert statuses(res) == dict.fromkeys(("preflight", "reconfigure", "install"), "passed"), \
        res.failed and res.failed.error
    # (1)+(2) preflight detected the risk before pausing and said how it handles it
    text = report_text(res, "01-preflight.ipynb")
    assert f"Argo CD app-of-apps-parent: {PARENT}" in text
    assert "paused first and restored last" in text
    doc = journal(res)
    pauses = [e for e in entries(doc, "argocd-pause") if "auto-sync of" in e["action"]]
    assert pauses[0]["action"].endswith(PARENT)            # the parent before any child
    assert {e["action"].rsplit(" ", 1)[-1] for e in pauses} == set(auto)
    assert doc["facts"]["argocd_previous_policies"] == {k: (None if v == "<absent>" else v)
                                                        for k, v in before.policies.items()}
    # the children stayed paused all through reconfigure and install (the parent did not revert them)
    assert len(samples) >= 5, "too few samples of the policies during the run"
    for _, pol in samples:
        reverted = [k for k in auto if pol.get(k) not in (None, "<absent>")]
        assert not reverted, f"policy reverted during the migration: {reverted}"
    # verify restores every policy exactly, and it stays so
    ver = run(params, "verify", tmp_path, run_id=run_id)
    assert statuses(ver) == {"verify": "passed"}, ver.phases[0].error
    time.sleep(1.0)   # longer than the parent's self-heal delay (5 cluster s at 20x)
    assert policies(c) == before.policies
    # (3) the rollback brings the cluster back with nothing lost
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)


@pytest.mark.timeout(180)
def test_without_pause_parents_preflight_stops_with_an_explanation(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, faults={"argocd_parent_reverts": True},
                                             argocd={"pause_parents": False})
    res = run(params, "preflight,reconfigure", tmp_path, run_id="s6-noparents")
    # (1) stopped at preflight's prerequisites gate, before the backup and any pause
    assert statuses(res) == {"preflight": "failed", "reconfigure": "not-run"}
    assert res.failed.error.startswith("GateFailed") and "every prerequisite holds" in res.failed.error
    assert 'name="prerequisites"' in failed_cell_source(res.run_dir / "01-preflight.ipynb")
    doc = journal(res)
    assert not entries(doc, "velero-backup") and not entries(doc, "argocd-pause")
    assert policies(c) == before.policies
    # nothing was changed, so the failed run does not keep the migration lock
    from runbook import lock
    assert lock.status(c) is None
    # (2) the report names the parent, why it matters and the param that handles it
    text = report_text(res, "01-preflight.ipynb")
    assert PARENT in text and "reverts edits to their syncPolicy" in text
    assert "set argocd.pause_parents: true" in text
    # the risk is real: a child paused by hand while its parent self-heals is reverted
    child = "whoami"
    c.patch("applications", child, {"spec": {"syncPolicy": {"automated": None}}}, "argocd")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and policies(c)[f"argocd/{child}"] in (None, "<absent>"):
        time.sleep(0.2)
    assert policies(c)[f"argocd/{child}"] == before.policies[f"argocd/{child}"]
    # (3) nothing to undo: the rollback of the run (same params) passes, releases the lock,
    # and nothing is lost
    rb = run(params, "rollback", tmp_path, run_id="s6-noparents")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
    # recovery as docs/failure-modes.md says: pause_parents back on, a NEW run (a run
    # folder is tied to its params), which pauses the parent first and passes
    fixed = fast_params(twin, "params-faults-fixed.yaml", argocd={"pause_parents": True})
    res = run(fixed, "preflight", tmp_path, run_id="s6-fixed")
    assert statuses(res) == {"preflight": "passed"}, res.phases[0].error
    pauses = [e for e in entries(journal(res), "argocd-pause") if "auto-sync of" in e["action"]]
    assert pauses[0]["action"].endswith(PARENT)
    rb = run(fixed, "rollback", tmp_path, run_id="s6-fixed")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
