"""The node-by-node strategy on a twin of minicloud: killed mid-nodes, then resumed or rolled back.

* the runner is SIGKILLed while a node's drain is in progress; re-running 03-install with
  the same run continues with that node's drain (its cordon is not repeated, no step done
  before the kill is repeated); the same run, rolled back after its switch, is SIGKILLed
  while the reverse of the switch restarts k3s node by node, and re-running 05-rollback
  continues there and ends in the big-bang rollback's checked state;
* the runner is SIGKILLed while a node's agent is being re-created (the node is labelled:
  it may be on Cilium); 05-rollback takes every node back, the per-node way first, and the
  twin's own view afterwards is the big-bang rollback's checked state (configs identical,
  flannel back, no Cilium device, BPF state or file, ClusterIP DNS from every node), with
  every node schedulable and unlabelled, and no node's k3s stopped or started by the tail;
* the whole rehearsal, ``rehearse(strategy="node-by-node", with_rollback=True)``, passes and
  the ingress hosts whose backend has two or more replicas never fail while the nodes move
  one by one (the "node by node" stage; a single-replica backend shows its outage while its
  node is drained, and the switch's agent restarts are their own stage), nor while the
  rollback undoes the switch and takes every node back ("rollback: unswitch", "rollback:
  node by node"), nor while it removes Cilium ("rollback: cleanup": every node is on flannel
  by then, so no k3s is stopped and kube-dns answers from every node throughout); every
  rollback check passes (configs byte-identical, flannel back, no Cilium leftovers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.journal_watch import kill_phase_when
from helpers.phase_runs import fast_params as _fast_params
from helpers.phase_runs import run_phases as run
from helpers.run_evidence import entries, journal

from runbook import node_by_node_plan as nbp
from runbook import params as params_mod
from runbook.cluster import Cluster
from runbook.rehearse import _config_digests, verify_back_on_flannel

pytestmark = [pytest.mark.integration]

FAST_TIMEOUTS = {"api_ready": 60, "node_ready": 60, "helm": 120, "agents_ready": 90,
                 "pods_ready": 90, "velero": 60, "ssh_command": 30, "storage_healthy": 120}
ORDER = ["fast-skunk", "fast-heron", "set-hog"]


def nbn_params(twin: Any) -> Path:
    return _fast_params(twin, FAST_TIMEOUTS, name="params-nbn.yaml", strategy="node-by-node",
                        cilium={"migration_cidr": "10.44.0.0/16"})


def _kill_when(params: Path, run_id: str, reports: Path, predicate: Any) -> dict[str, Any]:
    """Run 03-install in a child process and SIGKILL it (runner and kernel) once the
    journal satisfies ``predicate``; returns the journal as the kill left it."""
    killed, doc = kill_phase_when(params, "install", run_id, reports, predicate, timeout=300)
    assert killed, f"the run ended before the kill: {[(e['step'], e['node'], e['status']) for e in doc['entries']][-5:]}"
    return doc


def _intent(step: str) -> Any:
    return lambda doc: any(e["step"] == step and e["status"] == "intent" for e in doc["entries"])


def _preflight(params: Path, reports: Path, run_id: str) -> None:
    res = run(params, "preflight", reports, run_id=run_id, proceed_despite_deferral=True)
    assert res.ok, res.phases[0].error


@pytest.mark.timeout(1200)
def test_killed_mid_drain_the_rerun_continues_then_killed_mid_unswitch_the_rollback_continues(
        fresh_twin, tmp_path: Path) -> None:
    params = nbn_params(fresh_twin)
    run_id = "nbn-resume"
    before = _config_digests(fresh_twin.state_dir)
    _preflight(params, tmp_path, run_id)
    killed = _kill_when(params, run_id, tmp_path, _intent("nbn-drain"))
    assert killed["phases"]["install"]["status"] == "running"
    (drained,) = [e for e in killed["entries"] if e["step"] == "nbn-drain" and e["status"] == "intent"]
    node = drained["node"]
    done_before = {(e["step"], e["node"]) for e in killed["entries"] if e["status"] == "done"}
    assert ("nbn-cordon", node) in done_before
    rp = nbp.resume_point(killed["entries"], ORDER)
    assert (rp.node, rp.step, rp.pending) == (node, "drain", ["drain"])

    res = run(params, "install", tmp_path, run_id=run_id)
    doc = journal(res)
    after = [e for e in doc["entries"] if e["seq"] > max(e["seq"] for e in killed["entries"])]
    first = next(e for e in after if e["step"].startswith("nbn-") and e["step"] != "nbn-delete-pod")
    assert (first["step"], first["node"]) == ("nbn-drain", node)      # the node in progress, its step
    assert entries(doc, "nbn-drain", node, "done"), "the interrupted drain was finished"
    assert len(entries(doc, "nbn-cordon", node)) == 1                  # not repeated
    for step, n in done_before:                                       # nothing done is done again
        if step.startswith("nbn-") or step == "helm-install":
            assert len(entries(doc, step, n)) == 1, (step, n)
    # no node after the interrupted one was started before it was resumed
    assert not [e for e in killed["entries"] if e["step"].startswith("nbn-")
                and e["node"] in ORDER[ORDER.index(node) + 1:]]
    assert res.ok, res.phases[-1].error                              # the switch included

    # the same run, rolled back from after the switch, killed while k3s restarts one node at
    # a time with flannel back: the re-run continues from the journal and ends on flannel
    def mid_restarts(doc: dict[str, Any]) -> bool:
        return bool(entries(doc, "nbn-us-restart-k3s", "set-hog", "done")) and any(
            e["step"] == "nbn-us-restart-k3s" and e["node"] != "set-hog" for e in doc["entries"])
    killed, doc = kill_phase_when(params, "rollback", run_id, tmp_path, mid_restarts, timeout=300)
    assert killed, [(e["step"], e["node"], e["status"]) for e in doc["entries"]][-5:]
    done_before = {(e["step"], e["node"]) for e in doc["entries"] if e.get("phase") == "rollback"
                   and e["status"] == "done" and e["step"].startswith("nbn-us-")}
    assert {("nbn-us-cnc", None), ("nbn-us-values", None), ("nbn-us-restart-k3s", "set-hog")} <= done_before
    assert not [e for e in doc["entries"] if e["step"].startswith("nbn-rb-")]   # no node went back yet
    res = run(params, "rollback", tmp_path, run_id=run_id)
    assert res.ok, res.phases[-1].error
    after = journal(res)
    rb = [e for e in after["entries"] if e.get("phase") == "rollback"]
    for step, n in done_before:                                       # nothing done is done again
        assert len([e for e in rb if e["step"] == step and e["node"] == n]) == 1, (step, n)
    restarts = [e["node"] for e in rb if e["step"] == "nbn-us-restart-k3s" and e["status"] == "done"]
    assert sorted(set(restarts)) == sorted(ORDER) and restarts[0] == "set-hog"   # the server first
    # the switch was undone before any node went back, then every node went back, the newest first
    last_us = max(e["seq"] for e in rb if e["step"].startswith("nbn-us-"))
    first_rb = [e for e in rb if e["step"] == "nbn-rb-cordon"]
    assert first_rb and first_rb[0]["seq"] > last_us
    assert [e["node"] for e in first_rb] == list(reversed(ORDER))
    checks = verify_back_on_flannel(fresh_twin, before)
    assert all(c["ok"] for c in checks.values()), checks


@pytest.mark.timeout(900)
def test_killed_mid_nodes_the_rollback_returns_every_node_to_flannel(fresh_twin, tmp_path: Path) -> None:
    params = nbn_params(fresh_twin)
    run_id = "nbn-rollback"
    before = _config_digests(fresh_twin.state_dir)
    _preflight(params, tmp_path, run_id)
    killed = _kill_when(params, run_id, tmp_path, _intent("nbn-agent"))
    (agent,) = [e for e in killed["entries"] if e["step"] == "nbn-agent" and e["status"] == "intent"]
    node = agent["node"]
    assert nbp.rollback_order(killed["entries"])[0] == node and nbp.needs_revert(killed["entries"], node)

    res = run(params, "rollback", tmp_path, run_id=run_id)
    assert res.ok, res.phases[-1].error
    doc = journal(res)
    # the per-node way back ran for that node, each step once, before the big-bang steps
    rb = [e["step"] for e in doc["entries"] if e.get("phase") == "rollback" and e["node"] == node
          and e["step"].startswith("nbn-rb-")]
    assert rb == [f"nbn-rb-{s}" for s in ("cordon", "drain", "unlabel", "agent", "restore-cni", "pods",
                                          "validate", "uncordon")]
    first_helm = min(e["seq"] for e in doc["entries"] if e["step"] == "helm-uninstall")
    assert max(e["seq"] for e in doc["entries"] if e["step"].startswith("nbn-rb-")) < first_helm
    # every node is on flannel once the per-node way back is done (taken back, or never labelled):
    # Cilium is removed from each, and none has its k3s stopped or started again
    tail = [(e["step"], e["node"]) for e in doc["entries"] if e.get("phase") == "rollback" and e["seq"] > first_helm
            and e["status"] == "done"]
    assert {n for s, n in tail if s == "cilium-cleanup"} == set(ORDER)
    assert {n for s, n in tail if s == "delete-cilium-ifaces"} == set(ORDER)
    assert not [x for x in tail if x[0] in ("stop-k3s", "start-k3s", "remove-cni-chains-ipsets")], tail
    checks = verify_back_on_flannel(fresh_twin, before)
    assert all(c["ok"] for c in checks.values()), checks
    c = Cluster.from_params(params_mod.load(params))
    for n in c.list("nodes"):
        assert not (n.get("spec") or {}).get("unschedulable"), n["metadata"]["name"]
        assert nbp.LABEL not in (n["metadata"].get("labels") or {}), n["metadata"]["name"]
    assert c.list("pods", "kube-system", label_selector=f"{nbp.PROBE_LABEL}=true") == []


def _replicated_ingress_hosts(c: Cluster) -> set[str]:
    """Ingress hosts whose Service selects the pods of a workload with two or more replicas."""
    workloads = [w for res in ("deployments", "statefulsets") for w in c.list(res)]
    out = set()
    for ing in c.list("ingresses"):
        ns = ing["metadata"]["namespace"]
        for rule in (ing.get("spec") or {}).get("rules") or ():
            for path in ((rule.get("http") or {}).get("paths") or ()):
                svc = c.get("services", ((path.get("backend") or {}).get("service") or {}).get("name", ""), ns)
                sel = ((svc or {}).get("spec") or {}).get("selector") or {}
                if sel and any(w["metadata"]["namespace"] == ns and (w["spec"].get("replicas") or 1) >= 2 and all(
                        ((w["spec"].get("template") or {}).get("metadata") or {}).get("labels", {}).get(k) == v
                        for k, v in sel.items()) for w in workloads):
                    out.add(f"https://{rule.get('host')}/")
    return out


@pytest.mark.timeout(1500)
def test_rehearse_node_by_node_with_rollback(tmp_path: Path) -> None:
    from twin.api import Twin

    from runbook.rehearse import rehearse

    t = Twin(tmp_path / "probe-twin").start()
    try:
        replicated = _replicated_ingress_hosts(Cluster.from_params(params_mod.load(t.params_path)))
    finally:
        t.stop()
    out = rehearse(with_rollback=True, strategy="node-by-node", reports_dir=str(tmp_path / "reports"),
                   state_dir=str(tmp_path / "twin"), run_id="nbn-e2e", progress=lambda m: None)
    assert out.ok, [p.error for p in (out.run.phases if out.run else [])]
    doc = json.loads((out.rollback.run_dir / "rehearsal.json").read_text())
    assert doc["strategy"] == "node-by-node" and doc["availability"]["strategy"] == "node-by-node"
    assert doc["compare_key"] and all(c["ok"] for c in doc["checks"].values())
    j = json.loads((out.rollback.run_dir / "journal.json").read_text())
    for node in ORDER:                                  # every node went through every step
        assert [e["step"] for e in j["entries"] if e["node"] == node and e["status"] == "done" and
                e["step"] in {nbp.journal_step(s) for s in nbp.NODE_STEPS}] == \
            [nbp.journal_step(s) for s in nbp.NODE_STEPS], node
    assert "reconfigure" not in j["phases"]             # 02-reconfigure never ran under node-by-node
    stages = doc["availability"]["stages"]
    assert list(stages) == ["migration", "node by node", "switch", "rollback", "rollback: unswitch",
                            "rollback: node by node", "rollback: cleanup"]
    nodes = stages["node by node"]["per_target"]
    assert replicated, "minicloud has replicated ingress backends to measure"
    # while the nodes move one by one, a Service with replicas on other nodes keeps answering
    assert {h: nodes[h]["failed"] for h in replicated} == {h: 0 for h in replicated}
    # a single-replica backend shows its outage while its node is drained, and it is measured
    assert any(f["failed"] for h, f in nodes.items() if h.startswith("https://") and h not in replicated)
    # the rollback from after the switch: the switch undone, then every node back one at a time,
    # the newest first, and a replicated Service never fails in either stage
    rb = [e for e in j["entries"] if e.get("phase") == "rollback" and e["status"] == "done"]
    assert {e["step"] for e in rb} >= {"nbn-us-cnc", "nbn-us-label", "nbn-us-values", "restore-config",
                                       "nbn-us-restart-k3s", "nbn-us-kpr-off", "nbn-us-kpr-rollout"}
    assert [e["node"] for e in rb if e["step"] == "nbn-us-restart-k3s"][0] == "set-hog"   # the server first
    assert [e["node"] for e in rb if e["step"] == "nbn-rb-uncordon"] == list(reversed(ORDER))
    for stage in ("rollback: unswitch", "rollback: node by node", "rollback: cleanup"):
        back = stages[stage]["per_target"]
        assert {h: back[h]["failed"] for h in replicated} == {h: 0 for h in replicated}, stage
    # the cleanup keeps k3s running on every node (each is on flannel by then): kube-proxy keeps
    # serving the kube-dns ClusterIP from every node throughout
    assert not [e for e in rb if e["step"] in ("stop-k3s", "start-k3s")]
    dns = {t: f["failed"] for t, f in stages["rollback: cleanup"]["per_target"].items() if "kube-dns" in t}
    assert len(dns) == len(ORDER) and set(dns.values()) == {0}, dns
    # every check of the rollback passed (above), these among them
    assert {"configs byte-identical", "flannel back on every node", "no cilium leftovers on nodes",
            "no Cilium BPF state on nodes", "no Cilium files on nodes"} <= set(doc["checks"])
