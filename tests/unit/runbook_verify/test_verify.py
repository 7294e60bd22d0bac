"""runbook.verify checks against an in-memory session (no sockets).

The transports are swapped for small fakes holding API objects and node facts; the
checks' logic (what counts as an offender, the KPR evidence, the pre/post diff, the
MetalLB remediation's journal entry, the collected gate) runs for real.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from runbook import checks, evidence, verify
from runbook.errors import GateFailed
from runbook.facts import IptablesChains

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def pod(name: str, *, phase: str = "Running", ready: bool = True, ns: str = "apps",
        node: str = "n1", host: bool = False, waiting: str | None = None, owner: str = "web") -> dict:
    st: dict = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if waiting:
        st["containerStatuses"] = [{"state": {"waiting": {"reason": waiting}}}]
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{owner}-abc12", "controller": True}]},
            "spec": {"nodeName": node, "hostNetwork": host}, "status": st}


class FakeCluster:
    def __init__(self, pods: list[dict], *, kpr: str | None = "true", ceps: list[str] | None = None,
                 services: pd.DataFrame | None = None) -> None:
        self.pods = pods
        self.kpr = kpr
        self.ceps = ceps
        self.services = services
        self.deleted: list[str] = []

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        if resource == "pods":
            return [p for p in self.pods if namespace is None or p["metadata"]["namespace"] == namespace]
        if resource == "ciliumendpoints":
            return [{"metadata": {"namespace": k.split("/")[0], "name": k.split("/")[1]}} for k in self.ceps or []]
        return []

    def has_resource(self, resource: str) -> bool:
        return resource == "ciliumendpoints" and self.ceps is not None

    def request(self, method: str, path: str, **kw: Any) -> Any:
        if path.endswith("/configmaps/cilium-config"):
            return None if self.kpr is None else {"data": {"kube-proxy-replacement": self.kpr}}
        return None

    def snapshot(self, kind: str) -> pd.DataFrame:
        if kind == "services":
            return self.services
        rows = [{"namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"],
                 "phase": p["status"]["phase"], "status": p["status"]["phase"],
                 "workload": "Deployment/" + p["metadata"]["ownerReferences"][0]["name"].rsplit("-", 1)[0]}
                for p in self.pods]
        return pd.DataFrame(rows)

    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        self.deleted.append(f"{namespace}/{name}")

    def wait_for(self, check: Any, *, timeout: float, what: str, **kw: Any) -> float:
        done, pending = check()
        assert done, pending
        return 0.0


class FakeNode:
    def __init__(self, name: str, chains: dict[str, int]) -> None:
        self.name, self.role, self.chains = name, "agent", chains

    def iptables_chains(self) -> IptablesChains:
        return IptablesChains(chains=dict(self.chains))


class FakeJournal:
    def __init__(self, facts: dict | None = None) -> None:
        self.facts = dict(facts or {})
        self.entries: list[dict] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.facts.get(key, default)

    def record(self, step: str, action: str, **kw: Any) -> dict:
        e = {"step": step, "action": action, "status": "intent", **kw}
        self.entries.append(e)
        return e

    def complete(self, e: dict, result: Any = None) -> None:
        e.update(status="done", result=result)

    def fail(self, e: dict, err: Any) -> None:
        e.update(status="failed", error=str(err))


def session(tmp_path: Path, cluster: FakeCluster, *, nodes: list[FakeNode] | None = None,
            execute: bool = False, facts: dict | None = None, lb: list | None = None) -> Any:
    params = SimpleNamespace(
        cilium=SimpleNamespace(namespace="kube-system"),
        checks=SimpleNamespace(loadbalancer_ips=lb or [], ingress=[], regression=[]),
        limits=SimpleNamespace(timeouts=SimpleNamespace(pods_ready=5)),
        target=SimpleNamespace(kind="twin"), twin=None)
    s = SimpleNamespace(cluster=cluster, nodes=nodes or [], params=params, execute=execute,
                        journal=FakeJournal(facts), run_dir=tmp_path, progress=lambda m: None,
                        gates=[], evidence_lost=[])
    s.require_execute = lambda what: execute
    s.save = lambda name, obj: evidence.save_snapshot(tmp_path, "verify", name, obj)
    s.gate = lambda cond, msg, **kw: checks.gate(cond, msg, record=False, **kw)
    return s


def test_pods_running_lists_offenders(tmp_path):
    pods = [pod("ok"), pod("done", phase="Succeeded", ready=False),
            pod("stuck", phase="Pending", ready=False, waiting="ContainerCreating"),
            pod("crash", ready=False, waiting="CrashLoopBackOff")]
    c = verify.pods_running(session(tmp_path, FakeCluster(pods)))
    assert not c.ok
    assert c.details == ["apps/stuck on n1: ContainerCreating", "apps/crash on n1: CrashLoopBackOff"]
    assert list(c.table["pod"]) == ["apps/stuck", "apps/crash"]
    assert verify.pods_running(session(tmp_path, FakeCluster([pod("ok")]))).ok


def test_kpr_needs_the_flag_and_no_kube_svc_chain_anywhere(tmp_path):
    nodes = [FakeNode("a", {"CILIUM": 12}), FakeNode("b", {"KUBE-SVC": 3, "CILIUM": 12})]
    c = verify.kube_proxy_replacement(session(tmp_path, FakeCluster([]), nodes=nodes))
    assert not c.ok and c.details == ["b: 3 KUBE-SVC chain(s): k3s' kube-proxy still programs Services"]
    c = verify.kube_proxy_replacement(session(tmp_path, FakeCluster([], kpr="false"),
                                              nodes=[FakeNode("a", {})]))
    assert not c.ok and "'false'" in c.details[0]
    assert verify.kube_proxy_replacement(session(tmp_path, FakeCluster([]), nodes=[FakeNode("a", {})])).ok
    # no kube-proxy DaemonSet exists on k3s either way: the hint says why that proves nothing
    assert "no kube-proxy DaemonSet" in (c.hint or "")


def test_after_rollback_kube_proxy_must_be_back(tmp_path):
    s = session(tmp_path, FakeCluster([], kpr=None), nodes=[FakeNode("a", {"KUBE-SVC": 5}),
                                                          FakeNode("b", {"CILIUM": 1})],
                facts={"rolled_back": True})
    assert verify.mode(s) == "flannel"
    c = verify.kube_proxy_replacement(s)
    assert not c.ok
    assert any(d.startswith("b: no KUBE-SVC") for d in c.details)
    assert any("CILIUM" in d for d in c.details)
    assert verify.managed_pods(s).ok and verify.hubble(s).ok      # not applicable on flannel


def test_managed_pods(tmp_path):
    pods = [pod("a"), pod("b"), pod("h", host=True)]
    c = verify.managed_pods(session(tmp_path, FakeCluster(pods, ceps=["apps/a"])))
    assert not c.ok and "1/2" in c.message and c.details[0].startswith("apps/b on n1")
    assert verify.managed_pods(session(tmp_path, FakeCluster(pods, ceps=["apps/a", "apps/b"]))).ok
    assert not verify.managed_pods(session(tmp_path, FakeCluster(pods))).ok   # no CRD at all


def test_prepost_same_workloads(tmp_path):
    before = [pod("web-1"), pod("web-2"), pod("db-1", owner="db")]
    s = session(tmp_path, FakeCluster(before))
    evidence.save_snapshot(tmp_path, "preflight", "pods", FakeCluster(before).snapshot("pods"))
    assert verify.prepost(s).ok
    s.cluster.pods = [pod("web-3"), pod("cilium-x", owner="cilium-operator")]
    c = verify.prepost(s)
    assert not c.ok
    assert "apps/Deployment/db: 1 pod(s) before, none after" in c.details
    assert "apps/Deployment/web: 2 pod(s) before, 1 after" in c.details
    assert not any("cilium" in d for d in c.details)          # new workloads are not failures


def test_prepost_without_preflight_snapshot_fails(tmp_path):
    c = verify.prepost(session(tmp_path, FakeCluster([])))
    assert not c.ok and "no preflight snapshot" in c.details[0]


def _svcs(ip: str) -> pd.DataFrame:
    return pd.DataFrame([{"namespace": "ingress-nginx", "name": "ctrl", "type": "LoadBalancer",
                          "cluster_ip": "10.43.0.9", "lb_ips": ip, "ports": "443"}])


def test_lb_ips_and_metallb_remediation(tmp_path):
    evidence.save_snapshot(tmp_path, "preflight", "services", _svcs("10.0.0.200"))
    ctrl = pod("metallb-controller-x", ns="metallb-system", owner="metallb-controller")
    cluster = FakeCluster([ctrl], services=_svcs(""))
    want = [SimpleNamespace(namespace="ingress-nginx", name="ctrl", ip="10.0.0.200")]
    s = session(tmp_path, cluster, lb=want)
    c = verify.lb_ips(s)
    assert not c.ok
    assert "ingress-nginx/ctrl: 10.0.0.200 -> - (lost)" in c.details
    assert "ingress-nginx/ctrl: has <pending>, params expect 10.0.0.200" in c.details
    # dry run: nothing deleted, nothing journaled
    assert verify.remediate_lb(s, c) is c and cluster.deleted == []

    # execute: the controller pod is deleted (journaled), a new one comes, the IP is back
    s = session(tmp_path, cluster, lb=want, execute=True)
    orig_delete = cluster.delete

    def delete(resource: str, name: str, namespace: str | None = None) -> None:
        orig_delete(resource, name, namespace)
        cluster.pods = [pod("metallb-controller-y", ns="metallb-system", owner="metallb-controller")]
        cluster.services = _svcs("10.0.0.200")
    cluster.delete = delete
    again = verify.remediate_lb(s, c)
    assert again.ok and "after restarting the MetalLB controller" in again.message
    assert cluster.deleted == ["metallb-system/metallb-controller-x"]
    assert [e["step"] for e in s.journal.entries] == ["metallb-restart"]
    assert s.journal.entries[0]["status"] == "done"


def test_verification_collects_and_gates_once(tmp_path):
    s = session(tmp_path, FakeCluster([]), facts={"cilium_installed": True})
    v = verify.Verification(s)
    v.add(verify.Check("a", True, "first"))
    v.add(verify.Check("b", False, "second", ["x", "y"]))
    v.add(verify.Check("c", False, "third"))
    assert [(g.name, g.passed) for g in s.gates] == [("a", True), ("b", False), ("c", False)]
    assert v.failures == ["second: x; y", "third: failed"]
    assert list(v.table()["result"]) == ["PASSED", "FAILED", "FAILED"]
    with pytest.raises(GateFailed) as ei:
        v.gate(s)
    assert ei.value.details == ["second: x; y", "third: failed"]
    v.add(verify.Check("b", True, "second"))
    v.add(verify.Check("c", True, "third"))
    assert v.ok and v.gate(s).passed


def test_verify_before_any_migration_fails_with_a_hint_to_migrate_first(tmp_path):
    s = session(tmp_path, FakeCluster([]))                 # nothing in the journal
    v = verify.Verification(s)
    v.add(verify.Check("kpr", False, "kube-proxy replacement really active"))
    with pytest.raises(GateFailed) as ei:
        v.gate(s)
    assert "records no migration yet" in ei.value.hint and "03-install" in ei.value.hint
    migrated = session(tmp_path, FakeCluster([]), facts={"cilium_installed": True})
    with pytest.raises(GateFailed) as ei:
        verify.Verification.gate(v, migrated)
    assert "05-rollback" in ei.value.hint


def test_regression_command_quotes_argv(tmp_path):
    ran = []

    class Node:
        name = "n1"

        def run(self, cmd: str, *args: str):
            ran.append((cmd, args))
            return SimpleNamespace(ok=True, rc=0, stdout="10.43.0.1 kubernetes.default\n")

    s = session(tmp_path, FakeCluster([]))
    s.node = lambda name: Node()
    s.params.checks.regression = [SimpleNamespace(name="dns", kind="command", node="n1",
                                                  command=["getent", "hosts", "a; rm -rf /"],
                                                  expect_output="10.43.0.1", url=None)]
    c = verify.regression(s)
    assert c.ok
    assert ran == [("%s %s %s", ("getent", "hosts", "a; rm -rf /"))]   # one argument, quoted by run()
    s.params.checks.regression[0].expect_output = "10.43.0.99"
    assert not verify.regression(s).ok


def test_verdict_in_a_dry_run_says_so(tmp_path):
    assert verify.verdict(session(tmp_path, FakeCluster([]), execute=True)) == verify.VERDICT_OK
    assert "dry run" in verify.verdict(session(tmp_path, FakeCluster([])))


def test_metallb_restart_that_does_not_help_fails_naming_the_service(tmp_path):
    evidence.save_snapshot(tmp_path, "preflight", "services", _svcs("10.0.0.200"))
    cluster = FakeCluster([pod("metallb-controller-x", ns="metallb-system", owner="metallb-controller")],
                          services=_svcs(""))
    orig_delete = cluster.delete

    def delete(resource: str, name: str, namespace: str | None = None) -> None:
        orig_delete(resource, name, namespace)
        cluster.pods = [pod("metallb-controller-y", ns="metallb-system", owner="metallb-controller")]
    cluster.delete = delete
    s = session(tmp_path, cluster, execute=True)
    again = verify.remediate_lb(s, verify.lb_ips(s), timeout=1)
    assert not again.ok
    assert again.details == ["ingress-nginx/ctrl: 10.0.0.200 -> - (lost)"]
    assert "still not reattached" in again.hint
    assert s.journal.entries[0]["result"] == {"still_lost": again.details}
