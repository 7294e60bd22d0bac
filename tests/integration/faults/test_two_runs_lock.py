"""Scenario 8 (issue 6): two runs against the same cluster at once.

Both runs start preflight (execute) at the same moment: exactly one takes the migration
lock (Lease ``kube-system/phase22-migration``); the other stops in its first cell with
``LockHeld`` naming the run that holds it, before changing anything. The lock holder's
rollback releases it, with nothing lost.

A crashed run's lock does not block forever: the lease lasts ``limits.lock_seconds``
(default 1800 s). A run that crashed right after taking the lock leaves only the Lease;
once it is older than its duration (here: its renewal time moved back, rather than a
race against a two-second lease), a new run takes over, the Lease says from whom, and
the new run's journal records the takeover (fact ``lock_takeover``).
"""
from __future__ import annotations

import datetime as dt
import os
import threading

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, failed_cell_source, journal, report_text
from runbook import lock
from runbook import params as params_mod

pytestmark = [pytest.mark.integration]
#: the crashed run's lease: longer than this test may run at all (its timeout, 180 s), so
#: the first refusal cannot race its expiry however slow a kernel start is on a loaded
#: machine (60 s could be reached); it expires only when the test backdates its renewal
CRASHED_LEASE = 3600


@pytest.mark.timeout(180)
def test_second_run_refused_while_first_holds_the_lock(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin)
    results: dict[str, object] = {}
    go = threading.Barrier(2)

    def start(run_id: str) -> None:
        go.wait()
        results[run_id] = run(params, "preflight", tmp_path, run_id=run_id)

    umask = os.umask(0o022)
    os.umask(umask)
    threads = [threading.Thread(target=start, args=(r,)) for r in ("s8-one", "s8-two")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
    finally:
        os.umask(umask)   # runner.run sets a process umask per run; two threads interleave it
    by_status = {rid: statuses(r)["preflight"] for rid, r in results.items()}
    assert sorted(by_status.values()) == ["failed", "passed"], by_status
    winner = next(r for r, st in by_status.items() if st == "passed")
    loser = next(r for r, st in by_status.items() if st == "failed")
    lost = results[loser]
    # (1) the second run stopped in its first cell, at the lock, naming the other run
    assert lost.failed.error.startswith("LockHeld"), lost.failed.error
    assert f"run {winner}" in lost.failed.error
    assert "session.start(" in failed_cell_source(lost.run_dir / "01-preflight.ipynb")
    doc = journal(lost)
    assert doc["entries"] == []                # it changed nothing
    # (2) the report says who holds the lock and what to do
    text = report_text(lost, "01-preflight.ipynb")
    assert "another migration run holds the lock" in text and winner in text
    assert "expires" in text and "phase22-migration" in text
    st = lock.status(c)
    assert st["run_id"] == winner and st["leaseDurationSeconds"] == 1800   # the default
    assert entries(journal(results[winner]), "argocd-pause")
    # (3) the holder's rollback brings everything back and releases the lock
    rb = run(params, "rollback", tmp_path, run_id=winner)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert lock.status(c) is None
    assert_nothing_lost(twin, c, before)


@pytest.mark.timeout(180)
def test_a_crashed_runs_lock_expires_and_the_takeover_is_recorded(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, limits={"lock_seconds": 60})
    assert params_mod.load(params).limits.lock_seconds == 60
    # a run that crashed right after taking the lock: its Lease is all that is left. Its
    # lease outlasts the whole test ...
    lock.acquire(c, "s8-crashed", lease_seconds=CRASHED_LEASE)
    res = run(params, "preflight", tmp_path, run_id="s8-early")
    assert statuses(res) == {"preflight": "failed"}
    assert res.failed.error.startswith("LockHeld") and "s8-crashed" in res.failed.error
    # ... and then grows older than its duration: its last renewal lies further back
    long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=CRASHED_LEASE + 1)
                ).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    c.patch("leases", lock.LEASE_NAME, {"spec": {"acquireTime": long_ago, "renewTime": long_ago}},
            lock.LEASE_NAMESPACE)
    res = run(params, "preflight", tmp_path, run_id="s8-new")
    assert statuses(res) == {"preflight": "passed"}, res.phases[0].error
    lease = c.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{lock.LEASE_NAMESPACE}"
                             f"/leases/{lock.LEASE_NAME}")
    ann = lease["metadata"]["annotations"]
    assert ann[lock.RUN_ANNOTATION] == "s8-new"
    assert ann[lock.TAKEOVER_ANNOTATION].startswith("s8-crashed (expired ")
    assert lease["spec"]["leaseDurationSeconds"] == 60          # limits.lock_seconds
    assert lease["spec"]["holderIdentity"].startswith("s8-new@")
    doc = journal(res)
    assert doc["facts"]["lock_takeover"]["from"].startswith("s8-crashed")
    assert "took over the migration lock from run s8-crashed" in report_text(res, "01-preflight.ipynb")
    # the new run goes on under its own lock; its rollback brings everything back
    rb = run(params, "rollback", tmp_path, run_id="s8-new")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert lock.status(c) is None
    assert_nothing_lost(twin, c, before)
