"""Issue 12: a Longhorn volume that does not recover, and the storage plan around the swap.

A node is cordoned between reconfigure and install (someone drains it in the window).
longhorn-manager creates no instance manager on an unschedulable node, so after the
install recreated the instance managers, the replicas on that node stay down. 04-verify
scales the volume users back up; volumes whose third replica has no free node to move
to stay ``degraded``, and the storage check fails naming them, within
``limits.timeouts.storage_healthy``. Uncordoning the node lets Longhorn start its
instance manager and rebuild; a rerun of 04-verify then passes, and the rollback leaves
nothing lost. Along the way: every instance manager was recreated only while every
volume was detached, and each workload's replica count was journaled before its
scale-down.

The failing check waits the whole ``storage_healthy`` timeout, so the scenario's params
set it to :data:`STORAGE_HEALTHY` seconds, once, before the first phase (the journal pins
the params of a run). That is still far longer than any storage wait that succeeds here:
at the twin's 20x an attach takes a quarter of a second, a 1 GiB rebuild under one.
"""
from __future__ import annotations

import time

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, journal, report_text
from runbook import storage

pytestmark = [pytest.mark.integration]
NODE = "fast-heron"
STORAGE_HEALTHY = 20.0   # seconds (400 cluster seconds); the scenarios' default is 90


@pytest.mark.timeout(780)
def test_a_degraded_volume_stops_verify_naming_it_then_recovers(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, timeouts={"storage_healthy": STORAGE_HEALTHY})
    run_id = "lh-degraded"
    res = run(params, "preflight,reconfigure", tmp_path, run_id=run_id)
    assert statuses(res) == {"preflight": "passed", "reconfigure": "passed"}, res.failed and res.failed.error
    doc = journal(res)
    scaled = doc["facts"]["storage_scaled"]
    downs = entries(doc, "storage-scale-down")
    assert scaled and len(downs) == len(scaled)
    # each count was journaled before the change: the fact holds the count the entry scaled from
    for e in downs:
        key = e["action"].split()[1]
        assert scaled[key]["replicas"] == e["before"]["replicas"] > 0
    c.patch("nodes", NODE, {"spec": {"unschedulable": True}})
    res = run(params, "install", tmp_path, run_id=run_id)
    assert statuses(res) == {"install": "passed"}, res.failed and res.failed.error
    # the instance managers are on Cilium now: recreated by the install (journaled), or by
    # Longhorn after an eviction in the no-CNI window (nothing was attached either way);
    # the one on the cordoned node is not recreated
    assert all(e["status"] == "done" for e in entries(journal(res), "storage-recycle-manager"))
    ims = [p for p in c.list("pods", "longhorn-system") if storage.is_manager_pod(p)
           and p["metadata"]["name"].startswith("instance-manager-")]
    ceps = {e["metadata"]["name"] for e in c.list("ciliumendpoints", "longhorn-system")}
    assert {p["spec"]["nodeName"] for p in ims if p["metadata"]["name"] in ceps} >= {"set-hog", "fast-skunk"}
    ver = run(params, "verify", tmp_path, run_id=run_id)
    assert statuses(ver) == {"verify": "failed"}
    text = report_text(ver, "04-verify.ipynb")
    assert ("FAILED: every Longhorn volume healthy within limits.timeouts.storage_healthy "
            f"({STORAGE_HEALTHY:.0f}s" in text)
    assert "robustness degraded" in text and "pvc-" in text
    # the operator's fix: uncordon; Longhorn starts the instance manager and rebuilds (a new
    # replica after replica-replenishment-wait-interval, then the copy); they rerun verify
    # once the volumes are healthy again, as the check's hint says
    c.patch("nodes", NODE, {"spec": {"unschedulable": None}})
    deadline = time.monotonic() + 300
    while storage.health_problems(storage.read_volumes(c)) and time.monotonic() < deadline:
        time.sleep(2)
    assert not storage.health_problems(storage.read_volumes(c))
    ver = run(params, "verify", tmp_path, run_id=run_id)
    assert statuses(ver) == {"verify": "passed"}, ver.phases[0].error
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
