"""runbook.probe_daemonset and runbook.verify_probe, the pure parts: the DaemonSet
(golden: tests/fixtures/verify_probe/manifest-*.json), busybox wget's answers (golden:
wget.json), the node pairs, the Service URL, the journal's leftovers, and the params."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import probe_daemonset, verify_probe
from runbook.errors import ParamsError
from runbook.params import from_dict
from runbook.params.schema import DEFAULT_PROBE_IMAGE
from runbook.verify import Check, Verification

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "verify_probe"
WGET = json.loads((FIXTURES / "wget.json").read_text())["cases"]


# ----------------------------------------------------------------------------- manifest
@pytest.mark.parametrize("case,kw", [
    ("default", dict(image=DEFAULT_PROBE_IMAGE, namespace="kube-system", run_id="2026-12-04-r1")),
    ("busybox", dict(image="docker.io/library/busybox:1.37", namespace="phase22", run_id="r/2", port=8081,
                     command=["httpd", "-f", "-p", "8081"])),
])
def test_manifest_golden(case, kw) -> None:
    want = json.loads((FIXTURES / f"manifest-{case}.json").read_text())
    assert probe_daemonset.manifest(**kw) == want


def test_manifest_lands_on_every_node_on_the_pod_network_without_privilege() -> None:
    body = probe_daemonset.manifest(image="x:1", namespace="kube-system", run_id="r1")
    spec = body["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is False and spec["dnsPolicy"] == "ClusterFirst"
    assert {"operator": "Exists"} in spec["tolerations"]          # servers' NoSchedule taints too
    assert spec["automountServiceAccountToken"] is False
    sc = spec["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    # the selector matches the template, and the labels name the run
    assert body["spec"]["selector"]["matchLabels"].items() <= body["spec"]["template"]["metadata"]["labels"].items()
    assert body["metadata"]["labels"]["phase22.io/run-id"] == "r1"


# ----------------------------------------------------------------------------- wget
@pytest.mark.parametrize("case", WGET, ids=[c["name"] for c in WGET])
def test_parse_wget_golden(case) -> None:
    got = verify_probe.parse_wget(case["rc"], case["stdout"], case["stderr"])
    assert got.__dict__ == case["want"]


def test_wget_is_bounded_and_quiet() -> None:
    argv = verify_probe.wget_argv("http://10.42.1.5:8080/")
    assert argv[:2] == ["wget", "-q"] and argv[argv.index("-T") + 1] == str(verify_probe.WGET_SECONDS)
    assert argv[argv.index("-O") + 1] == "/dev/null" and argv[-1] == "http://10.42.1.5:8080/"


# ----------------------------------------------------------------------------- pairs
def test_pairs_cover_every_ordered_pair_on_a_small_cluster() -> None:
    nodes = ["set-hog", "fast-skunk", "fast-heron"]
    got = verify_probe.pairs(nodes, 20)
    assert len(got) == 6 and len(set(got)) == 6
    assert {(a, b) for a in nodes for b in nodes if a != b} == set(got)


def test_pairs_are_bounded_and_each_node_is_source_and_target() -> None:
    nodes = [f"n{i:02d}" for i in range(30)]
    got = verify_probe.pairs(nodes, 3)
    assert len(got) == 90 and all(a != b for a, b in got)
    assert {a for a, _ in got} == set(nodes) == {b for _, b in got}
    assert [b for a, b in got if a == "n29"] == ["n00", "n01", "n02"]      # wraps around


def test_pairs_of_one_node_or_none() -> None:
    assert verify_probe.pairs([], 5) == [] and verify_probe.pairs(["a"], 5) == []


# ----------------------------------------------------------------------------- service
def test_service_url_needs_a_cluster_ip_and_the_tcp_port() -> None:
    svc = {"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"},
                                                         {"port": 53, "protocol": "TCP"},
                                                         {"port": 9153, "protocol": "TCP"}]}}
    assert verify_probe.service_url(svc, 9153) == ("http://10.43.0.10:9153/", "")
    url, why = verify_probe.service_url(svc, 8080)
    assert url is None and "no TCP port 8080" in why and "9153" in why
    assert verify_probe.service_url(None, 80) == (None, "no such Service")
    v6 = {"spec": {"clusterIP": "fd00:43::a", "ports": [{"port": 80}]}}
    assert verify_probe.service_url(v6, 80)[0] == "http://[fd00:43::a]:80/"


# ----------------------------------------------------------------------------- readiness
def _pod(name: str, node: str, ready: bool, **status) -> dict:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": {"name": name, "namespace": "kube-system"}, "spec": {"nodeName": node},
            "status": {"phase": "Running" if ready else "Pending", "conditions": cond, **status}}


def test_missing_nodes_names_each_node_without_a_ready_probe() -> None:
    pods = [_pod("p1", "a", True), _pod("p2", "b", False,
                                        containerStatuses=[{"name": "probe", "state": {"waiting": {
                                            "reason": "ImagePullBackOff", "message": "not found"}}}])]
    got = probe_daemonset.missing_nodes(["a", "b", "c"], pods)
    assert set(got) == {"b", "c"}
    assert "ImagePullBackOff" in got["b"] and "not found" in got["b"]
    assert got["c"] == "no probe pod scheduled"
    assert list(probe_daemonset.ready_pods(pods)) == ["a"]


def test_ready_check_fails_naming_the_nodes() -> None:
    probe = probe_daemonset.Probe("kube-system", probe_daemonset.NAME, "img", 8080,
                                  pods={"a": _pod("p1", "a", True)}, missing={"b": "no probe pod scheduled"})
    c = verify_probe.ready_check(probe)
    assert not c.ok and c.details == ["b: no Ready probe pod (no probe pod scheduled)"]
    assert list(c.table["node"]) == ["a", "b"]


# ----------------------------------------------------------------------------- journal
def test_leftovers_follow_the_journal() -> None:
    made = {"step": "probe-create", "status": "done", "data": {"namespace": "kube-system", "name": "p"}}
    crashed = {"step": "probe-create", "status": "intent", "data": {"namespace": "x", "name": "p"}}
    gone = {"step": "probe-delete", "status": "done", "data": {"namespace": "kube-system", "name": "p"}}
    failed = {"step": "probe-delete", "status": "failed", "data": {"namespace": "x", "name": "p"}}
    assert probe_daemonset.leftovers([made]) == [("kube-system", "p")]
    assert probe_daemonset.leftovers([made, gone]) == []
    assert probe_daemonset.leftovers([made, gone, dict(made)]) == [("kube-system", "p")]   # verify re-run
    assert probe_daemonset.leftovers([crashed, failed]) == [("x", "p")]    # a failed delete left it
    others = [{"step": "storage-scale-down", "status": "done", "data": [{"name": "x"}]},
              {"step": "write-file", "status": "intent", "data": None}]
    assert probe_daemonset.leftovers(others + [made] + others) == [("kube-system", "p")]
    assert probe_daemonset.leftovers([{"step": "probe-create", "status": "failed",
                                       "data": {"namespace": "x", "name": "p"}}]) == []  # never created


# ----------------------------------------------------------------------------- skipped
def test_a_skipped_check_is_shown_skipped_and_recorded_as_such() -> None:
    v = Verification(None)
    c = v.add(verify_probe.skipped("pod-to-pod", "a pod on every node reaches a pod on the other nodes"))
    v.add(Check("other", True, "fine"))
    assert c.skipped and c.word == "SKIPPED" and repr(c).startswith("SKIPPED: ")
    assert "SKIPPED" in c._repr_html_() and "PASSED" not in c._repr_html_()
    assert list(v.table()["result"]) == ["SKIPPED", "PASSED"]
    assert v.ok and v.failures == []


# ----------------------------------------------------------------------------- params
BASE = {"target": {"name": "c"}, "nodes": [{"name": "n1", "role": "server", "address": "10.0.0.2"}]}


def test_params_default_probe_is_an_image_the_fixture_cluster_runs() -> None:
    p = from_dict(dict(BASE))
    assert p.verify.probe_image == DEFAULT_PROBE_IMAGE and p.verify.service == ("kube-system", "kube-dns", 9153)
    assert p.limits.timeouts.probe_ready > 0
    from twin.fixtures import load
    images = {c.get("image") for o in load("minicloud").objects_of("Deployment")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert DEFAULT_PROBE_IMAGE in images          # the loki gateway: no node pulls anything new


@pytest.mark.parametrize("bad", ["kube-dns:9153", "kube-system/kube-dns", "kube-system/kube-dns:http",
                                 "kube-system/kube-dns:70000", "/kube-dns:53"])
def test_params_refuse_a_probe_service_that_is_not_namespace_name_port(bad) -> None:
    with pytest.raises(ParamsError) as ei:
        from_dict({**BASE, "verify": {"probe_service": bad}})
    assert "probe_service" in str(ei.value)


def test_repo_params_name_the_probe() -> None:
    from runbook import params
    root = Path(__file__).resolve().parents[3] / "params"
    for name in ("minicloud.yaml", "twin.yaml"):
        text = (root / name).read_text()
        assert "probe_image: docker.io/nginxinc/nginx-unprivileged:1.27-alpine" in text, name
    assert params.load(root / "twin.yaml").verify.probe_port == 8080


def test_cross_node_check_on_a_single_node_has_nothing_to_reach_and_passes() -> None:
    probe = probe_daemonset.Probe("kube-system", probe_daemonset.NAME, "img", 8080,
                                  pods={"solo": _pod("p1", "solo", True)})
    c = verify_probe.cross_node_check(_session(), probe)
    assert c.ok and "single node" in c.message and c.table.empty


def test_cross_node_check_with_no_probe_pod_at_all_fails() -> None:
    probe = probe_daemonset.Probe("kube-system", probe_daemonset.NAME, "img", 8080,
                                  missing={"a": "no probe pod scheduled", "b": "no probe pod scheduled"})
    c = verify_probe.cross_node_check(_session(), probe)
    assert not c.ok and c.details == ["a: no Ready probe pod (no probe pod scheduled)",
                                      "b: no Ready probe pod (no probe pod scheduled)"]


def _session():
    from types import SimpleNamespace
    return SimpleNamespace(params=from_dict(dict(BASE)))
