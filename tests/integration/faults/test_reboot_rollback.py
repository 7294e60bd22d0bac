"""The rollback's reboot path (``rollback.reboot_nodes: true``) ends where the cleanup path
does (issue #12).

A full migration, then 05-rollback rebooting every node (servers first, one at a time)
instead of running Cilium's cleanup in pods: every gate of the rollback passes (no Cilium
program, map, device or file left; a ClusterIP DNS lookup answers from every node and a pod
on each), the twin's own view agrees (``runbook.rehearse.verify_back_on_flannel``), each
node was rebooted once, in order, the cilium.io CRDs are gone after their objects were saved
(``rollback.remove_crds``), and nothing is lost.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, journal
from runbook import evidence, rehearse

pytestmark = [pytest.mark.integration]
NODES = ["set-hog", "fast-skunk", "fast-heron"]


@pytest.mark.timeout(420)
def test_reboot_path_ends_in_the_same_state_as_the_cleanup(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, rollback={"reboot_nodes": True, "remove_crds": True})
    digests = rehearse._config_digests(twin.state_dir)
    boots = {n: twin.call(lambda n=n: twin.rt.nodes[n].boot_count) for n in NODES}
    run_id = "reboot"
    res = run(params, "preflight,reconfigure,install,verify", tmp_path, run_id=run_id)
    assert set(statuses(res).values()) == {"passed"}, res.failed and res.failed.error
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    doc = journal(rb)
    reboots = [e for e in entries(doc, "reboot-node") if e["phase"] == "rollback"]
    assert [e["node"] for e in reboots] == NODES and all(e["status"] == "done" for e in reboots)
    assert {n: twin.call(lambda n=n: twin.rt.nodes[n].boot_count) for n in NODES} == \
        {n: b + 1 for n, b in boots.items()}
    # no cleanup pod and no k3s stop/start on this path; the files went to the backup folder
    assert not entries(doc, "cilium-cleanup") and not entries(doc, "stop-k3s")
    assert {e["node"] for e in entries(doc, "remove-cilium-files")} == set(NODES)
    rec = evidence.read_records(rb.run_dir / "05-rollback.ipynb")
    for gate in ("gate/datapath-gone", "gate/clusterip-dns", "gate/flannel-back", "gate/rolled-back"):
        assert rec[gate]["passed"] is True, gate
    # rollback.remove_crds: every cilium.io object saved and journaled, then the CRDs gone
    [crds] = entries(doc, "remove-cilium-crds")
    assert crds["status"] == "done" and crds["data"]["crds"] and Path(crds["data"]["objects_file"]).is_file()
    assert not [d for d in c.list("customresourcedefinitions") if d["spec"]["group"].endswith("cilium.io")]
    checks = rehearse.verify_back_on_flannel(twin, digests)
    assert all(v["ok"] for v in checks.values()), checks
    assert_nothing_lost(twin, c, before)
