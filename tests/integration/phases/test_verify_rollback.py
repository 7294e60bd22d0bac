"""04-verify and 05-rollback run with papermill (runbook.runner.run) against fresh twins.

What is proven here, over real sockets (API, SSH) with the real notebooks:

* a dry run of 04 and 05 changes nothing: every node file byte-identical, and the API
  objects the runbook could touch unchanged;
* the rollback after a reconfigure (k3s configs rewritten, k3s restarted, flannel
  leftovers cleaned) restores each ``config.yaml`` byte-for-byte, puts the flannel files
  back and brings ``flannel.1`` back, and a second run of the rollback changes nothing;
* (the full migration and its rollback: ``test_migrate_then_rollback``, one shared run);
* the rollback after a failed install (scenario 4: agents never Ready) brings flannel
  back with nothing lost;
* MetalLB not reassigning an IP (scenario 5) is remediated by verify.

Every phase's waits are shortened (``FAST_TIMEOUTS`` in a copy of the twin's params) so
a phase that cannot succeed fails inside the test's own timeout.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.phase_runs import fast_params, run_phases, statuses
from helpers.run_evidence import journal, steps
from helpers.twin_disks import interfaces, k3s_configs as configs, node_files

from runbook import runner
from runbook.cluster import Cluster
from runbook import params as params_mod

pytestmark = [pytest.mark.integration]

NODES = ("set-hog", "fast-skunk", "fast-heron")
FLANNEL_FILES = ("var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
                 "var/lib/rancher/k3s/agent/etc/flannel/net-conf.json")
#: short waits, so a phase that cannot succeed fails inside the test's timeout
FAST_TIMEOUTS = {"helm": 45, "agents_ready": 45, "pods_ready": 90, "node_ready": 90, "velero": 60,
                 "api_ready": 60, "storage_healthy": 90}


# ----------------------------------------------------------------------------- helpers
def node_root(twin: Any, node: str) -> Path:
    return twin.state_dir / "nodes" / node


def api_state(twin: Any) -> dict[str, Any]:
    """What a dry run must not change: pods (identity, placement), and the objects the
    runbook writes (configs, services, workloads, Argo CD apps, leases, helm secrets)."""
    c = Cluster.from_params(params_mod.load(twin.params_path))
    state: dict[str, Any] = {}
    for p in c.list("pods"):
        md = p["metadata"]
        state[f"pod/{md['namespace']}/{md['name']}"] = (md["uid"], (p.get("spec") or {}).get("nodeName"))
    for res in ("configmaps", "services", "deployments", "daemonsets", "leases", "secrets"):
        for o in c.list(res):
            md = o["metadata"]
            if res == "leases" and md.get("namespace") == "kube-node-lease":
                continue  # node heartbeats renew these on their own
            state[f"{res}/{md.get('namespace')}/{md['name']}"] = (md.get("uid"), (o.get("spec") or o.get("data")))
    if c.has_resource("applications"):
        for o in c.list("applications"):
            md = o["metadata"]
            state[f"app/{md['namespace']}/{md['name']}"] = json.dumps(o.get("spec"), sort_keys=True)
    return state


def run(twin: Any, phases: str, tmp: Path, *, execute: bool, run_id: str,
        timeouts: dict[str, float] | None = None, **extra: Any) -> runner.RunResult:
    """The phases on this module's fast params (``timeouts`` on top), into ``tmp/reports``."""
    return run_phases(fast_params(twin, {**FAST_TIMEOUTS, **(timeouts or {})}), phases, tmp / "reports",
                      execute=execute, run_id=run_id, **extra)


def assert_flannel_back(twin: Any, before: dict[str, bytes]) -> None:
    assert configs(twin) == before, "config.yaml not byte-identical after the rollback"
    for n in NODES:
        root = node_root(twin, n)
        assert not (root / "etc/cni/net.d/05-cilium.conflist").exists(), n
        assert "flannel.1" in interfaces(twin, n), n
        assert not {"cilium_host", "cilium_net", "cilium_vxlan"} & interfaces(twin, n), n
        for f in FLANNEL_FILES:
            assert (root / f).exists(), f"{n}: {f} not back"


# ----------------------------------------------------------------------------- tests
@pytest.mark.timeout(180)
def test_dry_run_of_verify_and_rollback_changes_nothing(fresh_twin, tmp_path):
    files, objects = node_files(fresh_twin), api_state(fresh_twin)
    res = run(fresh_twin, "verify", tmp_path, execute=False, run_id="dry-verify")
    # nothing was migrated: verify must FAIL (kube-proxy is not replaced) and say why
    assert statuses(res) == {"verify": "failed"}
    assert "every verification check passed" in (res.phases[0].error or "")
    res = run(fresh_twin, "rollback", tmp_path, execute=False, run_id="dry-rollback")
    assert statuses(res) == {"rollback": "passed"}
    assert node_files(fresh_twin) == files
    assert api_state(fresh_twin) == objects
    assert steps(journal(res)) == []        # a dry run records no change


@pytest.mark.timeout(240)
def test_rollback_after_reconfigure_restores_configs_and_flannel(fresh_twin, tmp_path):
    """Reconfigure driven through the library (the 02 notebook's own calls), then the
    05 notebook with execute: configs byte-for-byte, flannel files and flannel.1 back."""
    from runbook import reconfigure, session

    twin = fresh_twin
    before = configs(twin)
    run_dir = tmp_path / "reports" / "rb-reconf"
    s = session.start("reconfigure", str(fast_params(twin, FAST_TIMEOUTS)), str(run_dir), execute=True)
    plans = reconfigure.config_plans(s)
    assert any(not p.noop for p in plans)
    reconfigure.write_configs(s, plans)
    reconfigure.restart_servers(s)
    reconfigure.restart_agents(s)
    reconfigure.cleanup(s)
    s.journal.end_phase("reconfigure", "passed")
    assert configs(twin) != before
    assert "flannel.1" not in interfaces(twin, "set-hog")

    res = run(twin, "rollback", tmp_path, execute=True, run_id="rb-reconf")
    assert statuses(res) == {"rollback": "passed"}, res.phases[0].error
    assert_flannel_back(twin, before)
    doc = journal(res)
    rb = steps(doc, "rollback")
    assert rb.count("restore-config") == 1 and rb.count("start-k3s") == 3
    assert "helm-uninstall" not in rb and "delete-cilium-ifaces" not in rb   # never installed
    # the server restarted before the agents, which stopped first
    order = [(e["step"], e["node"]) for e in doc["entries"] if e["step"] in ("stop-k3s", "start-k3s")]
    assert order[-1][0] == "start-k3s" and order[-3] == ("start-k3s", "set-hog")
    assert order[2] == ("stop-k3s", "set-hog")
    assert doc["facts"]["rolled_back"] is True

    # a second rollback of the same run changes nothing
    files = node_files(twin)
    res2 = run(twin, "rollback", tmp_path, execute=True, run_id="rb-reconf")
    assert statuses(res2) == {"rollback": "passed"}, res2.phases[0].error
    assert configs(twin) == before
    new = [e["step"] for e in journal(res2)["entries"][len(doc["entries"]):]]
    assert "stop-k3s" not in new and "restore-config" not in new
    assert {k: v for k, v in node_files(twin).items() if "/var/backups/" not in k} == \
        {k: v for k, v in files.items() if "/var/backups/" not in k}


def argo_policies(c: Cluster) -> dict[str, str]:
    return {f"{a['metadata']['namespace']}/{a['metadata']['name']}":
            json.dumps(((a.get("spec") or {}).get("syncPolicy") or {}).get("automated"), sort_keys=True)
            for a in c.list("applications")}


def heron_files(twin: Any) -> dict[str, str]:
    return {k: v for k, v in node_files(twin).items() if k.startswith("fast-heron/")
            and "/var/log/" not in k}


@pytest.mark.timeout(240)
def test_rollback_leaves_an_unreached_agent_alone(make_twin, tmp_path):
    """Scenario 2: an agent's SSH is down in the middle of reconfigure. The journal says
    which nodes changed; the rollback restores those and does not touch (or even need)
    the unreached one; verify after the rollback passes once it is back."""
    twin = make_twin()
    before = configs(twin)
    res = run(twin, "preflight", tmp_path, execute=True, run_id="ssh-down", proceed_despite_deferral=True)
    assert statuses(res) == {"preflight": "passed"}, res.phases[0].error
    heron = heron_files(twin)
    # 02-reconfigure's own calls; the agent's SSH goes down between the server restart
    # and the agents' (the notebook itself refuses to start with a node unreachable)
    from runbook import reconfigure, session
    from runbook.errors import NodeError

    s = session.start("reconfigure", str(fast_params(twin, FAST_TIMEOUTS)), str(res.run_dir), execute=True)
    reconfigure.write_configs(s, reconfigure.config_plans(s))
    reconfigure.restart_servers(s)
    twin.set_fault("ssh_down", ["fast-heron"])
    with pytest.raises(NodeError) as ei:
        reconfigure.restart_agents(s)
    assert "fast-heron" in str(ei.value)
    s.journal.end_phase("reconfigure", "failed")
    doc = json.loads((res.run_dir / "journal.json").read_text())
    assert {e["node"] for e in doc["entries"] if e["step"] == "restart-k3s"} == {"set-hog", "fast-skunk"}

    res = run(twin, "rollback", tmp_path, execute=True, run_id="ssh-down")   # heron still down
    assert statuses(res) == {"rollback": "passed"}, res.phases[0].error
    assert configs(twin) == before
    doc = journal(res)
    assert not [e for e in doc["entries"] if e.get("phase") == "rollback" and e.get("node") == "fast-heron"]
    assert heron_files(twin) == heron
    assert {e["node"] for e in doc["entries"] if e["step"] == "start-k3s"} == {"set-hog", "fast-skunk"}

    twin.set_fault("ssh_down", [])
    res = run(twin, "verify", tmp_path, execute=True, run_id="ssh-down")
    assert statuses(res) == {"verify": "passed"}, res.phases[0].error
    assert all("flannel.1" in interfaces(twin, n) for n in NODES)


@pytest.mark.timeout(300)
def test_rollback_after_failed_install(make_twin, tmp_path):
    """Scenario 4: the Cilium agents never become Ready; install stops; the rollback brings
    flannel back with nothing lost, and verify-after-rollback passes."""
    twin = make_twin(faults={"cilium_image_pull_fails": True})
    doomed = {"helm": 20}      # the install cannot succeed: let helm give up sooner
    before = configs(twin)
    c = Cluster.from_params(params_mod.load(twin.params_path))
    pvcs = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in c.list("persistentvolumeclaims")}
    policies = argo_policies(c)
    assert any(v != "null" for v in policies.values())   # there is something to restore
    res = run(twin, "preflight,reconfigure,install", tmp_path, execute=True, run_id="bad-install",
              timeouts=doomed, proceed_despite_deferral=True)
    assert statuses(res)["install"] == "failed"
    assert "helm upgrade --install cilium --wait" in (res.failed.error or "")
    from runbook import evidence
    failed = [g for g in evidence.gates(evidence.read_records(res.run_dir / "03-install.ipynb"))
              if not g["passed"]]
    assert any("ImagePull" in " ".join(g["details"]) for g in failed), failed
    # with the optional Velero restore, policy none: only deleted objects come back
    res = run(twin, "rollback", tmp_path, execute=True, run_id="bad-install", timeouts=doomed,
              velero_restore=True, existing_resource_policy="none")
    assert statuses(res) == {"rollback": "passed"}, res.phases[0].error
    vr = [e for e in journal(res)["entries"] if e["step"] == "velero-restore"]
    assert len(vr) == 1 and vr[0]["status"] == "done" and vr[0]["data"]["policy"] == "none"
    assert_flannel_back(twin, before)
    assert {(p["metadata"]["namespace"], p["metadata"]["name"])
            for p in c.list("persistentvolumeclaims")} == pvcs
    assert argo_policies(c) == policies                  # every Argo CD policy exactly as before
    res = run(twin, "verify", tmp_path, execute=True, run_id="bad-install", timeouts=doomed)
    assert statuses(res) == {"verify": "passed"}, res.phases[0].error


@pytest.mark.timeout(240)
def test_verify_restarts_metallb_when_an_ip_does_not_reattach(make_twin, tmp_path):
    """Scenario 5: with MetalLB "sticky", the first controller restart drops every
    LoadBalancer IP (as the migration's pod restarts would). Verify restarts the
    controller once, journaled as metallb-restart, and the IPs come back; the rest of
    verify still fails (nothing was migrated), which shows the checks are collected."""
    twin = make_twin(faults={"metallb_sticky": True})
    res = run(twin, "preflight", tmp_path, execute=True, run_id="sticky", proceed_despite_deferral=True)
    assert statuses(res) == {"preflight": "passed"}, res.phases[0].error
    c = Cluster.from_params(params_mod.load(twin.params_path))
    ctrl = c.list("pods", "metallb-system", label_selector="app.kubernetes.io/component=controller")
    for p in ctrl:
        c.delete("pods", p["metadata"]["name"], "metallb-system")

    def lb_lost() -> tuple[bool, list[str]]:
        svc = c.get("services", "ingress-nginx-controller", "ingress-nginx") or {}
        ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return not ing, ["the IP still attached"]
    c.wait_for(lb_lost, timeout=60, what="MetalLB to drop the IP")

    res = run(twin, "verify", tmp_path, execute=True, run_id="sticky")
    assert statuses(res) == {"verify": "failed"}
    doc = journal(res)
    restarts = [e for e in doc["entries"] if e["step"] == "metallb-restart"]
    assert len(restarts) == 1 and restarts[0]["status"] == "done"
    assert restarts[0]["result"]["still_lost"] == []
    assert any("ingress-nginx/ingress-nginx-controller" in d for d in restarts[0]["data"]["lost"])
    from runbook import evidence
    rec = evidence.read_records(res.run_dir / "04-verify.ipynb")
    assert rec["gate/loadbalancer-ips"]["passed"] is True
    assert rec["gate/kube-proxy-replacement"]["passed"] is False
    assert rec["gate/verification"]["passed"] is False
    # Argo CD stays paused after a failed verification
    assert "argocd-resume" not in steps(doc, "verify")
