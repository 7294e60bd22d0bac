"""runbook.preflight: the execute-or-defer decision from golden figures, blast-radius
figures, and the prerequisite checks against minicloud's own params and values."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from runbook import cluster_tables as tables
from runbook import params as params_mod
from runbook import preflight

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "preflight"


@pytest.fixture(scope="module")
def minicloud():
    return params_mod.load(REPO / "params" / "minicloud.yaml")


def _decision(spec, minicloud):
    if isinstance(spec, str):  # a params file: its real thresholds
        return params_mod.load(REPO / spec).decision if spec != "params/minicloud.yaml" else minicloud.decision
    return SimpleNamespace(**spec)


@pytest.mark.parametrize("case", sorted(p.name for p in (FIXTURES / "decide").iterdir() if p.is_dir()))
def test_decide_golden(case, minicloud):
    """tests/fixtures/preflight/decide/<case>/: figures.json, decision.json, expected.json."""
    d = FIXTURES / "decide" / case
    figures = json.loads((d / "figures.json").read_text())
    decision = _decision(json.loads((d / "decision.json").read_text()), minicloud)
    want = json.loads((d / "expected.json").read_text())
    radius = SimpleNamespace(figures=figures)
    got = preflight.decide(radius, decision)
    assert got.verdict == want["verdict"]
    assert got.criteria.values.tolist() == want["criteria"]
    assert got.reasons == [f"{c}: {o}" for c, o, _ in want["criteria"]]
    assert want["verdict"] in got._repr_html_()


def test_minicloud_fixture_figures_defer(minicloud):
    """The twin's minicloud fixture itself, counted as blast_radius counts it, gives DEFER."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the fixture is large: the C parser keeps this fast
    objs = yaml.load((REPO / "lib" / "twin" / "fixtures" / "minicloud.yaml").read_text(), Loader=loader)["objects"]
    pods = [o for o in objs if o.get("kind") == "Pod"]
    host = sum(1 for p in pods if (p.get("spec") or {}).get("hostNetwork"))
    figures = {"pods_total": len(pods), "pods_affected": len(pods) - host,
               "networkpolicies": sum(1 for o in objs if o.get("kind") == "NetworkPolicy")}
    assert preflight.decide(SimpleNamespace(figures=figures), minicloud.decision).verdict == "DEFER"


class SnapshotCluster:
    """Serves snapshots built by the real row builders from raw objects."""

    def __init__(self, objects: dict[str, list[dict]], resources: set[str]) -> None:
        self.objects = objects
        self.resources = resources
        self.requests: list[str] = []

    def snapshot(self, kind):
        rows = {"pods": lambda o: tables.row_pod(o, {}), "pvcs": tables.row_pvc}.get(kind) or tables.ROWS[kind]
        return pd.DataFrame([rows(o) for o in self.objects.get(kind, [])], columns=tables.COLUMNS[kind])

    def list(self, resource, namespace=None, **_):
        return copy.deepcopy(self.objects.get(resource, []))

    def has_resource(self, resource):
        return resource in self.resources

    def request(self, method, path, ok_missing=False, **_):
        self.requests.append(path)
        return copy.deepcopy(self.objects.get("bsl", [None])[0])


def _pod(ns, name, host=False):
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"hostNetwork": host}, "status": {"phase": "Running"}}


def _app(name, automated):
    sp = {"automated": automated} if automated is not None else {}
    return {"metadata": {"namespace": "argocd", "name": name}, "spec": {"syncPolicy": sp}}


def radius_cluster() -> SnapshotCluster:
    return SnapshotCluster({
        "pods": [_pod("a", "p1"), _pod("a", "p2"), _pod("kube-system", "svclb", host=True)],
        "services": [
            {"metadata": {"namespace": "a", "name": "lb"}, "spec": {"type": "LoadBalancer"},
             "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.201"}]}}},
            {"metadata": {"namespace": "b", "name": "lb2"}, "spec": {"type": "LoadBalancer"},
             "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}},
            {"metadata": {"namespace": "c", "name": "ext"}, "spec": {"type": "ExternalName"}}],
        "ingresses": [{"metadata": {"namespace": "a", "name": "i"},
                       "spec": {"rules": [{"host": "x.example"}, {"host": "y.example"}]}},
                      {"metadata": {"namespace": "b", "name": "j"}, "spec": {"rules": [{"host": "x.example"}]}}],
        "pvcs": [{"metadata": {"namespace": "db", "name": "data"}, "status": {"phase": "Bound"}},
                 {"metadata": {"namespace": "db", "name": "wal"}, "status": {"phase": "Pending"}}],
        "statefulsets": [{"metadata": {"namespace": "db", "name": "pg"}}],
        "applications": [_app("manual", None), _app("auto-empty", {}), _app("auto-prune", {"prune": True}), _app("auto-empty-2", {}),
                         _app("disabled", {"enabled": False})],
        "networkpolicies": [{"metadata": {"name": "np"}}],
    }, resources={"applications"})


def test_blast_radius_figures():
    r = preflight.blast_radius(radius_cluster())
    f = r.figures
    assert (f["pods_total"], f["pods_host_network"], f["pods_affected"]) == (3, 1, 2)
    assert (f["lb_services"], f["lb_ips"]) == (2, ["10.0.0.200", "10.0.0.201"])
    assert (f["ingresses"], f["ingress_hosts"]) == (2, 2)
    assert (f["pvcs"], f["pvcs_bound"]) == (2, 1)
    assert f["statefulset_names"] == ["db/pg"]
    # `automated: {}` is auto-sync; `enabled: false` is not
    assert (f["argocd_apps"], f["argocd_auto"]) == (5, 3)
    assert f["networkpolicies"] == 1 and r.namespaces_with_services == 2
    table = r.table()
    assert table.loc[table["at risk"] == "Argo CD apps with auto-sync", "count"].item() == "3 of 5"
    assert r.pvcs_by_namespace().to_dict("records") == [{"namespace": "db", "pvcs": 2, "bound": 1}]


def _facts(kernel_ok=True, flannel=True):
    return pd.DataFrame([{"node": "set-hog", "kernel": "6.1.0", "kernel_ok": kernel_ok, "flannel.1": flannel}])


def _session(minicloud, values=None, *, bsl_phase="Available", ciliumnodes=False, control_plane_ip="10.0.0.2",
             velero=True):
    objects = {"nodes": [{"metadata": {"name": "set-hog", "labels": {"node-role.kubernetes.io/control-plane": "true"}},
                          "status": {"addresses": [{"type": "InternalIP", "address": control_plane_ip}]}}],
               "bsl": [{"status": {"phase": bsl_phase}} if bsl_phase else None]}
    c = SnapshotCluster(objects, ({"ciliumnodes"} if ciliumnodes else set()) | ({"backups"} if velero else set()))
    return SimpleNamespace(params=minicloud, values=values if values is not None else minicloud.values(), cluster=c,
                           journal=SimpleNamespace(backups=lambda: []))    # a first preflight: nothing changed yet


def _by_check(df):
    return {r.check: (r.status, r.detail) for r in df.itertuples()}


def test_prerequisites_minicloud_values_pass(minicloud):
    s = _session(minicloud)
    radius = SimpleNamespace(apps=[])
    rows = _by_check(preflight.prerequisites(s, _facts(), radius))
    assert rows["kernel >= 5.10 on every node (Cilium KPR)"][0] == "ok"
    assert rows["k8sServiceHost reaches the API"][0] == "ok"
    assert rows["disable-kube-proxy consistent with kubeProxyReplacement"][0] == "ok"
    assert rows["VXLAN port differs from flannel's 8472"] == ("ok", "Cilium uses 8473; flannel.1 cannot block it")
    assert rows["no Cilium already installed"][0] == "ok"
    assert rows["Velero backup location available"] == ("ok", "velero/default: Available")
    assert not [k for k, (st, _) in rows.items() if st == "fail"]


def test_prerequisites_catch_each_problem(minicloud):
    values = dict(minicloud.values(), k8sServiceHost="10.0.0.2", k8sServicePort=6443, tunnelPort=8472)
    values.pop("tunnelPort")  # default 8472: flannel's port
    s = _session(minicloud, values, bsl_phase=None, ciliumnodes=True)
    apps = [preflight.argocd.App("argocd", "root", {"selfHeal": True}, children=["a"])]
    rows = _by_check(preflight.prerequisites(s, _facts(kernel_ok=False), SimpleNamespace(apps=apps)))
    assert rows["kernel >= 5.10 on every node (Cilium KPR)"] == ("fail", "set-hog: 6.1.0")
    st, detail = rows["k8sServiceHost reaches the API"]
    assert st == "warn" and "single point of failure" in detail
    st, detail = rows["VXLAN port differs from flannel's 8472"]
    assert st == "warn" and "set-hog" in detail
    assert rows["no Cilium already installed"][0] == "warn"
    assert rows["Velero backup location available"] == ("fail", "velero/default: absent")
    # pause_parents is on in minicloud.yaml: the parent is a handled risk
    assert rows["Argo CD app-of-apps-parent: argocd/root"][0] == "ok"


def test_prerequisites_without_velero_skip_its_backup_with_a_reason(minicloud):
    rows = _by_check(preflight.prerequisites(_session(minicloud, velero=False), _facts(), SimpleNamespace(apps=[])))
    assert "Velero backup location available" not in rows
    st, detail = rows["add-on: Velero"]
    assert st == "warn" and "backup is skipped" in detail
    assert rows["add-on: Argo CD"] == ("ok", "not installed: nothing to pause before or resume after")
    assert not [k for k, (st, _) in rows.items() if st == "fail"]


def test_prerequisites_unknown_service_host_fails(minicloud):
    values = dict(minicloud.values(), k8sServiceHost="10.9.9.9", k8sServicePort=6443)
    rows = _by_check(preflight.prerequisites(_session(minicloud, values), _facts(), SimpleNamespace(apps=[])))
    st, detail = rows["k8sServiceHost reaches the API"]
    assert st == "fail" and "10.0.0.2" in detail
