"""Scenario 4 (issue 6): the Cilium agents never become Ready (images never pull).

``tests/integration/phases/test_verify_rollback.py`` proves that a rollback with the
optional Velero restore brings flannel back. This test runs the whole story once with the
shared "nothing lost" check: install stops at its gate within its timeout, the notebook
and the report name each agent pod with its node and the reason (once a test of its own
in test_reconfigure_install.py: the same failed install, merged here); the rollback's own
gates pass and flannel is back; verify of the flannel state passes (nodes Ready, every pod
Running, every ingress check answering its expected status); configs, Argo CD policies,
PVCs and workloads are as before the run.
"""
from __future__ import annotations

import re

import pytest

from faults_helpers import FAST_TIMEOUTS, assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, failed_cell_source, journal, notebook_outputs, report_text
from runbook import checks, evidence
from runbook import params as params_mod
from runbook.cluster import node_ready

pytestmark = [pytest.mark.integration]
NODES = ("set-hog", "fast-skunk", "fast-heron")


@pytest.mark.timeout(300)
def test_install_gate_fails_then_rollback_restores_flannel_with_nothing_lost(make_twin, tmp_path):
    helm_timeout = 20
    twin, params, c, before = start_scenario(make_twin, faults={"cilium_image_pull_fails": True},
                                             limits={"timeouts": {**FAST_TIMEOUTS, "helm": helm_timeout}})
    run_id = "s4-pull"
    res = run(params, "preflight,reconfigure,install,verify", tmp_path, run_id=run_id)
    # (1) stopped at install's gate, within its timeout; verify never ran
    assert statuses(res) == {"preflight": "passed", "reconfigure": "passed", "install": "failed",
                             "verify": "not-run"}
    install = next(p for p in res.phases if p.phase == "install")
    assert install.error.startswith("GateFailed"), install.error
    # helm was given this scenario's timeout, not the default one (no wall-clock assertion:
    # the gate's wording and the journaled command line say which timeout was in force)
    assert f"--wait succeeded within {helm_timeout}s" in install.error, install.error
    assert "helm" in failed_cell_source(res.run_dir / "03-install.ipynb").lower()
    doc = journal(res)
    [h] = entries(doc, "helm-install")
    assert h["status"] == "failed"
    assert not doc["facts"].get("cilium_installed")
    # (2) the notebook and the report list each agent pod with its node and its reason
    notebook = notebook_outputs(res.run_dir / "03-install.ipynb")
    text = report_text(res, "03-install.ipynb")
    for n in NODES:
        assert re.search(rf"kube-system/cilium-[a-z0-9]+ on {n}", notebook), n
        assert re.search(rf"kube-system/cilium-[a-z0-9]+ on {n}", text), n
    assert "ImagePullBackOff" in notebook and "ImagePullBackOff" in text
    # (3) the rollback (its own gates) brings flannel back ...
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    rec = evidence.read_records(rb.run_dir / "05-rollback.ipynb")
    gates = {k: v for k, v in rec.items() if k.startswith("gate/")}
    assert gates and all(g["passed"] for g in gates.values()), gates
    assert journal(rb)["facts"]["rolled_back"] is True
    for n in NODES:
        assert "flannel.1" in twin.call(lambda n=n: list(twin.rt.nodes[n].interfaces)), n
    # ... and verify of the flannel state passes: nodes Ready, pods Running, ingress answers
    ver = run(params, "verify", tmp_path, run_id=run_id)
    assert statuses(ver) == {"verify": "passed"}, ver.phases[0].error
    vrec = evidence.read_records(ver.run_dir / "04-verify.ipynb")
    for name in ("gate/verification", "gate/argocd-exact"):
        assert vrec[name]["passed"] is True, name
    assert all(node_ready(n) for n in c.list("nodes"))
    plain = [p for p in c.list("pods") if (p.get("status") or {}).get("phase") not in ("Succeeded",)]
    assert all(p["status"]["phase"] == "Running" for p in plain), \
        [p["metadata"]["name"] for p in plain if p["status"]["phase"] != "Running"]
    p = params_mod.load(params)
    probes = checks.probe_all(p.checks.ingress, kind=p.target.kind)
    assert len(probes) and probes["ok"].all(), probes.to_dict("records")
    assert (probes["status"] == probes["expect_status"]).all()
    assert set(probes["status"]) == {200}          # the twin's checks all expect 200 OK
    assert_nothing_lost(twin, c, before)
