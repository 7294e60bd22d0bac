"""A ``config.toml.tmpl`` on one agent that hard-codes k3s's CNI folder (issue #12).

With flannel off, k3s leaves containerd on its default CNI folder, where Cilium writes its
conflist; a template that hard-codes k3s's own folder keeps containerd there, and the node
would stay NotReady with no CNI. Two gates stop the run before that happens:

* the template is there before the run: preflight fails (prerequisites), naming the node,
  the template and the folders, and nothing changes;
* the template appears after preflight (placed over SSH as an operator would): reconfigure
  stops at the gate ``containerd-cni-folder`` right after that agent's restart, the agents
  after it untouched, the report naming it; the rollback then brings flannel back with
  nothing lost.
"""
from __future__ import annotations

import pytest

from faults_helpers import assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import entries, journal, report_text
from runbook import evidence
from runbook import params as params_mod
from runbook.containerd import CONFIG_TMPL
from runbook.nodes import Node
from twin.node.containerd import HARDCODED_K3S_TEMPLATE

pytestmark = [pytest.mark.integration]
AGENT = "fast-heron"        # the last agent: the others restart before it


@pytest.mark.timeout(240)
def test_preflight_refuses_a_template_that_keeps_containerd_on_k3s_folder(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin, faults={"containerd_template": [AGENT]})
    res = run(params, "preflight,reconfigure", tmp_path, run_id="tmpl-pre")
    assert statuses(res) == {"preflight": "failed", "reconfigure": "not-run"}
    pre = res.phases[0]
    assert pre.error.startswith("GateFailed") and "every prerequisite holds" in pre.error, pre.error
    gate = evidence.read_records(res.run_dir / "01-preflight.ipynb")["gate/prerequisites"]
    assert gate["passed"] is False
    [why] = [d for d in gate["details"] if CONFIG_TMPL in d]
    assert why.startswith(f"containerd will read Cilium's CNI folder once flannel is off: {AGENT}: ")
    assert "/var/lib/rancher/k3s/agent/etc/cni/net.d" in why and "NotReady" in why and "Fix:" in why
    text = report_text(res, "01-preflight.ipynb")
    assert CONFIG_TMPL in text and AGENT in text
    # nothing changed: no config written, no restart
    doc = journal(res)
    assert not entries(doc, "write-file") and not entries(doc, "restart-k3s")
    assert_nothing_lost(twin, c, before)


@pytest.mark.timeout(360)
def test_a_template_placed_after_preflight_stops_reconfigure_at_that_agent(make_twin, tmp_path):
    twin, params, c, before = start_scenario(make_twin)
    run_id = "tmpl-post"
    res = run(params, "preflight", tmp_path, run_id=run_id)
    assert statuses(res) == {"preflight": "passed"}, res.phases[0].error
    node = next(n for n in Node.from_params(params_mod.load(params)) if n.name == AGENT)
    node.run("tee %s", CONFIG_TMPL, stdin=HARDCODED_K3S_TEMPLATE, sudo=True).check_output()
    res = run(params, "reconfigure,install", tmp_path, run_id=run_id)
    assert statuses(res) == {"reconfigure": "failed", "install": "not-run"}
    err = res.phases[0].error
    assert err.startswith("GateFailed") and "containerd reads the CNI folder Cilium writes to" in err, err
    gate = evidence.read_records(res.run_dir / "02-reconfigure.ipynb")["gate/containerd-cni-folder"]
    assert gate["passed"] is False
    assert gate["details"][0].startswith(
        f"{AGENT}: /var/lib/rancher/k3s/agent/etc/containerd/config.toml (rendered from config.toml.tmpl) "
        "has conf_dir /var/lib/rancher/k3s/agent/etc/cni/net.d"), gate["details"]
    assert "runbook run --params" in gate["hint"] and "--phases rollback" in gate["hint"]   # the way back
    assert "containerd-cni-folder" in report_text(res, "02-reconfigure.ipynb")
    restarted = [e["node"] for e in entries(journal(res), "restart-k3s") if e["status"] == "done"]
    assert restarted == ["set-hog", "fast-skunk", AGENT]        # stopped at the last agent
    # the way back: flannel on again, nothing lost (the template names k3s's folder, flannel's)
    rb = run(params, "rollback", tmp_path, run_id=run_id)
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(twin, c, before)
