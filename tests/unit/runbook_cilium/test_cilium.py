"""runbook.cilium: status, unmanaged pods, restart plan and problem lines from golden
pod + CiliumEndpoint lists (tests/fixtures/cilium/<case>/), and kpr_evidence's counting."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook import cilium, pods
from runbook.facts import IptablesChains, IptablesSummary

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cilium"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


class ListCluster:
    """Serves a case's pods, CiliumEndpoints, workloads and cilium-config (read only)."""

    def __init__(self, case: str) -> None:
        d = FIXTURES / case
        self.pods = json.loads((d / "pods.json").read_text())
        self.ceps = json.loads((d / "ceps.json").read_text())
        self.objects = json.loads((d / "objects.json").read_text())
        self.crds = json.loads((d / "expected.json").read_text())["crds"]
        self.deleted: list[tuple[str, str]] = []

    def list(self, resource, namespace=None, **_):
        if resource == "ciliumendpoints":
            assert self.crds, "listing CEPs without the CRD"
            return copy.deepcopy(self.ceps)
        assert resource == "pods"
        return [copy.deepcopy(p) for p in self.pods
                if namespace is None or p["metadata"]["namespace"] == namespace]

    def has_resource(self, resource):
        return self.crds if resource in ("ciliumendpoints", "ciliumnodes") else True

    def get(self, resource, name, namespace=None):
        assert namespace == "kube-system"
        return copy.deepcopy(self.objects.get(f"{resource}/{name}"))

    def request(self, method, path, ok_missing=False, **_):
        assert (method, path) == ("GET", "/api/v1/namespaces/kube-system/configmaps/cilium-config")
        return copy.deepcopy(self.objects.get("configmap"))

    def delete(self, resource, name, namespace=None):
        self.deleted.append((namespace, name))


def _names(pods):
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]


def _want(case):
    return json.loads((FIXTURES / case / "expected.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_status_golden(case):
    want = _want(case)
    st = cilium.status(ListCluster(case))
    assert (st.managed, st.total) == (want["managed"], want["total"])
    assert _names(st.unmanaged) == want["unmanaged"]
    assert [[c.kind + "/" + c.name, c.desired, c.ready, c.ok if c.present else "absent"]
            for c in st.components] == want["components"]
    assert st.summary() == want["summary"]
    assert st.agent_problems == want["agent_problems"]
    html = st._repr_html_()
    assert f"{want['managed']}/{want['total']} managed by Cilium" in html


@pytest.mark.parametrize("case", [c for c in CASES if _want(c)["crds"]])
def test_unmanaged_pods_golden(case):
    want = _want(case)
    c = ListCluster(case)
    managed, total, unmanaged = cilium.unmanaged_pods(c, c.list("pods"))
    assert (managed, total, _names(unmanaged)) == (want["managed"], want["total"], want["unmanaged"])


def _install_plan(c):
    return pods.plan_restart(cilium.restart_candidates(c), policy=pods.policy_for("install"))


@pytest.mark.parametrize("case", CASES)
def test_restart_plan_golden_kube_system_first_bare_skipped(case):
    want = _want(case)
    p = _install_plan(ListCluster(case))
    assert _names(p.restart) == want["restart"]
    assert [s.pod for s in p.skipped] == want["skipped"]
    assert all(s.owner_kind is None for s in p.skipped)     # only bare pods are left alone


@pytest.mark.parametrize("case", CASES)
def test_dry_run_restart_deletes_nothing(case):
    want = _want(case)
    c = ListCluster(case)
    res = pods.restart(c, _install_plan(c), action="delete {n} pod(s)", execute=False)
    assert res.deleted == want["restart"] and c.deleted == []
    assert [s.pod for s in res.skipped] == want["skipped"]
    assert all("no controller" in s.reason for s in res.skipped)


@pytest.mark.parametrize("case", CASES)
def test_pod_problem_golden(case):
    want = _want(case)["pod_problems"]
    from runbook.cluster import pod_ready

    got = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": cilium.pod_problem(p)
           for p in ListCluster(case).pods if not pod_ready(p)}
    assert got == want


def test_component_ok_needs_presence_and_desired():
    assert cilium.Component("DaemonSet", "cilium", 3, 3, True).ok
    assert not cilium.Component("DaemonSet", "cilium", 0, 0, True).ok     # nothing scheduled yet
    assert not cilium.Component("DaemonSet", "cilium", 3, 3, False).ok


def test_count_reads_each_summary_shape():
    summ = IptablesSummary(chains={"KUBE-SVC": 12, "CILIUM": 3})
    assert cilium._count(summ, "KUBE-SVC") == 12
    assert cilium._count(summ, "KUBE-ROUTER") == 0

    class WithMethod:
        def chain_count(self, prefix):
            return {"CILIUM": 7}.get(prefix, 0)

    assert cilium._count(WithMethod(), "CILIUM") == 7
    assert cilium._count(SimpleNamespace(kube_svc=4), "KUBE-SVC") == 4
    assert cilium._count(SimpleNamespace(), "KUBE-ROUTER") == 0


def test_kpr_evidence_rows():
    c = ListCluster("mid-migration")
    nodes = [SimpleNamespace(name="server-1", iptables_chains=lambda: IptablesChains(chains={"CILIUM": 9})),
             SimpleNamespace(name="agent-1", iptables_chains=lambda: IptablesChains(
                 chains={"KUBE-SVC": 5, "KUBE-ROUTER": 2}))]
    df = cilium.kpr_evidence(c, nodes)
    assert df.to_dict("records") == [
        {"node": "server-1", "kube-proxy-replacement": "true", "KUBE-SVC chains": 0, "KUBE-ROUTER chains": 0,
         "CILIUM chains": 9},
        {"node": "agent-1", "kube-proxy-replacement": "true", "KUBE-SVC chains": 5, "KUBE-ROUTER chains": 2,
         "CILIUM chains": 0}]


def test_cli_status_without_cli_is_a_note():
    assert "not configured" in cilium.cli_status(None, "/nonexistent")
