"""02-reconfigure and 03-install run with papermill (runbook.runner.run) against fresh twins.

What is proven here, over real sockets (API, SSH) with the real notebooks:

* a dry run of 02 and 03 changes nothing: every node file byte-identical, and the API
  objects the runbook could touch unchanged;
* 02 (execute) changes the server's ``config.yaml`` only (agents byte-identical), deletes
  ``flannel.1``/``cni0``, moves flannel's files into the backup folder, removes the
  KUBE-ROUTER / FLANNEL / kube-proxy chains, journals every step, and a second run of the
  same run is a no-op that passes;
* scenario 2: an agent's SSH goes down in the middle of the agent restarts: the phase
  stops, the journal says which nodes changed, the unreached agent is untouched, and a
  rerun after the node comes back finishes without redoing done work;
* scenario 3: the API server is away for 20 (scaled) seconds when the server restarts:
  the choke point retries, the phase passes and the journal/report show the outage;
* scenario 7: the runner is SIGKILLed mid-phase; rerunning the same run id resumes;
* 01+02 end with nodes NotReady ("cni plugin not initialized"), 03 ends with every
  non-hostNetwork pod managed and Running and the window closed, and a second 03 is a
  no-op;
* scenario 4 (agents never Ready: install's gate fails within its timeout and lists each
  agent pod with its reason) lives in ``tests/integration/faults/test_cilium_never_ready.py``.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from helpers.journal_watch import kill_phase_when, restarted, ssh_down_after_restart
from helpers.phase_runs import fast_params as _fast_params
from helpers.phase_runs import run_phases as run
from helpers.run_evidence import entries, journal, notebook_outputs as outputs
from helpers.twin_disks import interfaces, iptables, node_files, read_node_file as read

from runbook.cluster import Cluster, node_ready
from runbook import params as params_mod

pytestmark = [pytest.mark.integration]

SERVER, AGENTS = "set-hog", ("fast-skunk", "fast-heron")
NODES = (SERVER, *AGENTS)
CONFIG = "etc/rancher/k3s/config.yaml"
FLANNEL_FILES = ("var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
                 "var/lib/rancher/k3s/agent/etc/flannel/net-conf.json")
# Short waits: a failing phase must fail within the test's budget (the twin runs at 20x).
FAST_TIMEOUTS = {"api_ready": 60, "node_ready": 60, "helm": 90, "agents_ready": 60,
                 "pods_ready": 60, "velero": 60, "ssh_command": 30, "storage_healthy": 90}


# ----------------------------------------------------------------------------- helpers
def fast_params(twin: Any, **timeouts: float) -> Any:
    """The twin's params with this module's short timeouts (same cluster, same values)."""
    return _fast_params(twin, {**FAST_TIMEOUTS, **timeouts})


def cluster(params: Any) -> Cluster:
    return Cluster.from_params(params_mod.load(params))


def api_state(c: Cluster) -> dict[str, Any]:
    """The API objects a dry run of 02/03 could touch, by identity and version."""
    def ids(resource: str, ns: str | None = None) -> list[tuple]:
        return sorted((o["metadata"].get("namespace"), o["metadata"]["name"], o["metadata"].get("uid"))
                      for o in c.list(resource, ns))
    return {"pods": ids("pods"), "secrets": ids("secrets", "kube-system"),
            "leases": ids("leases", "kube-system"), "daemonsets": ids("daemonsets"),
            "deployments": ids("deployments"), "configmaps": ids("configmaps", "kube-system"),
            "crds": ids("customresourcedefinitions"),
            "node_specs": sorted((n["metadata"]["name"], json.dumps(n.get("spec"), sort_keys=True))
                                 for n in c.list("nodes"))}


@pytest.fixture
def twin(fresh_twin):
    """A fresh minicloud twin as twin.api builds it by default."""
    return fresh_twin


# ----------------------------------------------------------------------------- dry run
@pytest.mark.timeout(180)
def test_dry_run_of_02_and_03_changes_nothing(twin, tmp_path):
    params = fast_params(twin)
    c = cluster(params)
    files, api = node_files(twin), api_state(c)
    res = run(params, "reconfigure,install", execute=False, reports=tmp_path)
    assert [p.status for p in res.phases] == ["passed", "passed"], [p.error for p in res.phases]
    assert node_files(twin) == files
    assert api_state(c) == api
    text = outputs(res.run_dir / "02-reconfigure.ipynb")
    assert "+flannel-backend: none" in text and "+disable-kube-proxy: true" in text
    assert "DRY RUN" in text
    text3 = outputs(res.run_dir / "03-install.ipynb")
    assert "helm upgrade --install cilium" in text3 and "--version 1.19.3" in text3
    assert "--wait" in text3 and "CORRECTED" in text3          # the values file, with its comments
    # no secret reaches the evidence: the agents' join token is masked in every output
    token = yaml.safe_load(read(twin, AGENTS[0], CONFIG))["token"]
    for f in res.run_dir.rglob("*"):
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f


# ----------------------------------------------------------------------------- 02 execute
@pytest.mark.timeout(180)
def test_reconfigure_changes_the_server_only_cleans_leftovers_and_reruns_as_noop(twin, tmp_path):
    params = fast_params(twin)
    before = {n: read(twin, n, CONFIG) for n in NODES}
    assert {"flannel.1", "cni0"} <= interfaces(twin, AGENTS[0])
    res = run(params, "reconfigure", execute=True, reports=tmp_path)
    assert res.ok, res.phases[0].error
    # configs: the server gets the three server-only keys; agents are byte-identical (defect 1)
    server = yaml.safe_load(read(twin, SERVER, CONFIG))
    assert server["flannel-backend"] == "none" and server["disable-network-policy"] is True
    assert server["disable-kube-proxy"] is True
    assert read(twin, SERVER, CONFIG).startswith(before[SERVER])   # untouched lines kept
    for a in AGENTS:
        assert read(twin, a, CONFIG) == before[a]
    # leftovers gone on every node; flannel files moved into the backup folder, not lost
    for n in NODES:
        assert not {"flannel.1", "cni0"} & interfaces(twin, n)
        dump = iptables(twin, n)
        assert "KUBE-ROUTER" not in dump and "KUBE-SVC" not in dump and "FLANNEL" not in dump
        assert "flanneld" not in dump and "KUBE-FIREWALL" in dump      # kubelet's chains kept
        for f in FLANNEL_FILES:
            assert not (twin.state_dir / "nodes" / n / f).exists()
    j = journal(res)
    assert len(entries(j, "restart-k3s", status="done")) == 3
    assert [e["node"] for e in entries(j, "restart-k3s")] == [SERVER, *AGENTS]   # server first
    for n in NODES:
        [cl] = entries(j, "cleanup-leftovers", n, "done")
        moved = cl["result"]["moved"]
        assert {m["path"] for m in moved} >= {"/" + f for f in FLANNEL_FILES}
        for m in moved:   # each moved file is in the backup folder, byte for byte
            assert (twin.state_dir / "nodes" / n / m["backup"].lstrip("/")).exists()
    [b] = j["facts"]["backups"]
    assert b["node"] == SERVER and b["path"] == "/" + CONFIG
    assert read(twin, SERVER, b["backup_path"].lstrip("/")) == before[SERVER]
    assert j["facts"]["no_cni_window"]["opened_at"] and j["facts"]["no_cni_window"]["closed_at"] is None
    assert "api_outages" in j["facts"]
    # the join token never reaches the evidence (notebook, HTML, journal, command log)
    token = yaml.safe_load(before[AGENTS[0]])["token"]
    for f in res.run_dir.rglob("*"):
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f
    # a second run of the same run is a no-op that passes
    files = node_files(twin)
    again = run(params, "reconfigure", execute=True, reports=tmp_path, run_id=res.run_id)
    assert again.ok, again.phases[0].error
    j2 = journal(again)
    for step in ("write-file", "restart-k3s", "cleanup-leftovers"):
        assert len(entries(j2, step)) == len(entries(j, step)), step
    assert node_files(twin) == files


# ----------------------------------------------------------------------------- scenario 2
@pytest.mark.timeout(240)
def test_agent_ssh_down_mid_reconfigure_stops_then_rerun_finishes(twin, tmp_path):
    params = fast_params(twin)
    victim = AGENTS[-1]
    run_id = "scenario2"
    jpath = tmp_path / run_id / "journal.json"
    # take the last agent's SSH down as soon as the server restart is done
    with ssh_down_after_restart(twin, jpath, SERVER, victim):
        res = run(params, "reconfigure", execute=True, reports=tmp_path, run_id=run_id)
    assert not res.ok and res.failed.phase == "reconfigure"
    assert "NodeError" in (res.failed.error or "")
    text = outputs(res.run_dir / "02-reconfigure.ipynb")
    assert victim in text and "re-run this notebook" in text
    j = journal(res)
    assert entries(j, "restart-k3s", SERVER, "done") and entries(j, "restart-k3s", AGENTS[0], "done")
    assert not entries(j, "restart-k3s", victim, "done")
    assert not entries(j, "cleanup-leftovers")          # the phase stopped before any cleanup
    assert {"flannel.1", "cni0"} <= interfaces(twin, victim)   # the unreached node is untouched
    # the node comes back: the rerun finishes without redoing the done work
    twin.set_fault("ssh_down", [])
    again = run(params, "reconfigure", execute=True, reports=tmp_path, run_id=run_id)
    assert again.ok, again.phases[0].error
    j2 = journal(again)
    for n in NODES:
        assert len(entries(j2, "restart-k3s", n, "done")) == 1, n
        assert len(entries(j2, "cleanup-leftovers", n, "done")) == 1, n
        assert not {"flannel.1", "cni0"} & interfaces(twin, n)
    assert len(entries(j2, "write-file", SERVER, "done")) == 1


# ----------------------------------------------------------------------------- scenario 3
@pytest.mark.timeout(180)
def test_api_away_20s_during_server_restart_is_waited_for(make_twin, tmp_path):
    t = make_twin(faults={"api_down_on_restart": True, "api_down_seconds": 20})
    params = fast_params(t)
    res = run(params, "reconfigure", execute=True, reports=tmp_path)
    assert res.ok, res.phases[0].error
    outages = journal(res)["facts"]["api_outages"]
    # 20 cluster seconds at the twin's speed (0.05): about one wall second away
    assert outages and max(o["seconds"] for o in outages) >= 0.5
    assert all(o["attempts"] >= 1 for o in outages)
    text = outputs(res.run_dir / "02-reconfigure.ipynb")
    assert "API answered" in text and "api_away_seconds" in text


# ----------------------------------------------------------------------------- scenario 7
@pytest.mark.timeout(240)
def test_killed_mid_reconfigure_rerun_resumes(twin, tmp_path):
    params = fast_params(twin)
    run_id = "scenario7"
    # runner and its kernel killed mid-phase, once any restart is done
    killed, j = kill_phase_when(params, "reconfigure", run_id, tmp_path, restarted(), timeout=120)
    assert killed, "the run finished before it could be killed"
    assert j["phases"]["reconfigure"]["status"] == "running"     # it never ended
    restarted_before = {e["node"] for e in entries(j, "restart-k3s", status="done")}
    res = run(params, "reconfigure", execute=True, reports=tmp_path, run_id=run_id)
    assert res.ok, res.phases[0].error
    j2 = journal(res)
    for n in NODES:
        assert len(entries(j2, "restart-k3s", n, "done")) == 1, n    # nothing restarted twice
        assert not {"flannel.1", "cni0"} & interfaces(twin, n)
    assert SERVER in restarted_before
    assert len(entries(j2, "write-file", SERVER, "done")) == 1


# ----------------------------------------------------------------------------- whole twin
@pytest.mark.timeout(300)
def test_preflight_reconfigure_install_on_the_whole_twin(make_twin, tmp_path):
    t = make_twin()
    params = fast_params(t)
    c = cluster(params)
    before = {n: read(t, n, CONFIG) for n in NODES}
    res = run(params, "preflight,reconfigure", execute=True, reports=tmp_path,
              proceed_despite_deferral=True)
    assert res.ok, [p.error for p in res.phases]
    assert read(t, SERVER, CONFIG) != before[SERVER]
    assert all(read(t, a, CONFIG) == before[a] for a in AGENTS)
    # the no-CNI window: every node NotReady, "cni plugin not initialized"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(node_ready(n) for n in c.list("nodes")):
        time.sleep(0.5)
    nodes = c.list("nodes")
    assert not any(node_ready(n) for n in nodes)
    assert all("cni plugin not initialized" in json.dumps(n["status"]["conditions"]) for n in nodes)
    inst = run(params, "install", execute=True, reports=tmp_path, run_id=res.run_id)
    assert inst.ok, inst.phases[0].error
    pods = c.list("pods")
    plain = [p for p in pods if not p["spec"].get("hostNetwork")]
    ceps = {(e["metadata"]["namespace"], e["metadata"]["name"]) for e in c.list("ciliumendpoints")}
    assert all(p["status"].get("phase") == "Running" for p in plain)
    assert all((p["metadata"]["namespace"], p["metadata"]["name"]) in ceps for p in plain)
    assert all(node_ready(n) for n in c.list("nodes"))
    j = journal(inst)
    win = j["facts"]["no_cni_window"]
    assert win["closed_at"] and win["seconds"] is not None and win["seconds"] >= 0
    assert j["facts"]["cilium_installed"] is True
    [h] = entries(j, "helm-install", status="done")
    assert h["data"]["version"] == "1.19.3" and h["data"]["values_sha256"]
    # a second install of the same run is a no-op that passes (no new helm revision)
    again = run(params, "install", execute=True, reports=tmp_path, run_id=res.run_id)
    assert again.ok, again.phases[0].error
    j2 = journal(again)
    assert len(entries(j2, "helm-install")) == 1 and len(entries(j2, "restart-pods")) == len(
        entries(j, "restart-pods"))
