"""Table printers: the columns and cells kubectl shows (pure functions)."""
from __future__ import annotations

import pytest

from twin import tables

pytestmark = pytest.mark.unit

NOW = tables.parse_time("2026-01-02T00:00:00Z")


def pod(**status) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T23:55:00Z"},
            "spec": {"nodeName": "set-hog", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": status}


def cells(group: str, plural: str, obj: dict) -> dict:
    t = tables.render_table(group, plural, [obj], now=NOW)
    names = [c["name"] for c in t["columnDefinitions"]]
    return dict(zip(names, t["rows"][0]["cells"]))


@pytest.mark.parametrize("seconds,text", [
    (5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600 + 60, "3h1m"),
    (9 * 3600, "9h"), (50 * 3600, "2d2h"), (30 * 86400, "30d"), (3 * 365 * 86400, "3y"), (-5, "<invalid>"),
])
def test_human_duration_matches_kubectl(seconds, text):
    assert tables.human_duration(seconds) == text


def test_pod_columns_and_wide_priorities():
    t = tables.render_table("", "pods", [pod(phase="Running", podIP="10.42.0.5")], now=NOW)
    defs = {c["name"]: c["priority"] for c in t["columnDefinitions"]}
    assert list(defs) == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                          "Nominated Node", "Readiness Gates"]
    assert [n for n, p in defs.items() if p == 1] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    row = t["rows"][0]
    assert row["cells"][:5] == ["p", "0/2", "Running", "0", "5m"]
    assert row["cells"][5:7] == ["10.42.0.5", "set-hog"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "p"


def test_pod_ready_and_restarts_count_containers():
    p = pod(phase="Running", containerStatuses=[
        {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}}},
        {"name": "b", "ready": False, "restartCount": 1,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    c = cells("", "pods", p)
    assert c["Ready"] == "1/2"
    assert c["Restarts"] == "3"
    assert c["Status"] == "CrashLoopBackOff"


def test_pod_status_variants():
    assert tables.pod_status(pod(phase="Pending", containerStatuses=[
        {"state": {"waiting": {"reason": "ContainerCreating"}}}])) == "ContainerCreating"
    assert tables.pod_status(pod(phase="Succeeded", containerStatuses=[
        {"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}])) == "Completed"
    assert tables.pod_status(pod(phase="Failed", reason="Evicted")) == "Evicted"
    init = pod(phase="Pending", initContainerStatuses=[{"state": {"waiting": {"reason": "PodInitializing"}}}])
    init["spec"]["initContainers"] = [{"name": "i"}]
    assert tables.pod_status(init) == "Init:0/1"
    gone = pod(phase="Running")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T23:59:00Z"
    assert tables.pod_status(gone) == "Terminating"


def test_node_status_roles_and_wide_columns():
    node = {"metadata": {"name": "set-hog", "labels": {
                "node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1"}}}
    c = cells("", "nodes", node)
    assert c["Status"] == "NotReady,SchedulingDisabled"
    assert c["Roles"] == "control-plane,master"
    assert c["Internal-IP"] == "10.0.0.2"
    assert c["External-IP"] == "<none>"
    assert c["Version"] == "v1.31.4+k3s1"
    assert tables.node_roles({"metadata": {"labels": {}}}) == "<none>"


def test_service_external_ip_and_ports():
    lb = {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9",
          "ports": [{"port": 80, "nodePort": 31080}], "selector": {"app": "x"}},
          "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}}
    c = cells("", "services", lb)
    assert (c["External-IP"], c["Port(s)"], c["Selector"]) == ("10.0.0.200", "80:31080/TCP", "app=x")
    lb["status"] = {}
    assert tables.service_external_ip(lb) == "<pending>"
    assert tables.service_external_ip({"spec": {"type": "ClusterIP"}}) == "<none>"


def test_workload_columns():
    dep = {"metadata": {"name": "d"}, "spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "c", "image": "img:1"}]}}, "selector": {"matchLabels": {"app": "d"}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    c = cells("apps", "deployments", dep)
    assert (c["Ready"], c["Up-to-date"], c["Available"], c["Images"], c["Selector"]) == \
        ("2/3", 3, 2, "img:1", "app=d")
    ds = {"metadata": {"name": "ds"}, "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
          "status": {"desiredNumberScheduled": 3, "numberReady": 1}}
    c = cells("apps", "daemonsets", ds)
    assert (c["Desired"], c["Ready"], c["Node Selector"]) == (3, 1, "kubernetes.io/os=linux")


def test_ingress_and_secret_columns():
    ing = {"metadata": {"name": "homer"}, "spec": {"ingressClassName": "nginx", "rules": [
        {"host": "homer.10.0.0.200.nip.io"}], "tls": [{"hosts": ["homer.10.0.0.200.nip.io"]}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}}
    c = cells("networking.k8s.io", "ingresses", ing)
    assert (c["Class"], c["Hosts"], c["Address"], c["Ports"]) == \
        ("nginx", "homer.10.0.0.200.nip.io", "10.0.0.200", "80, 443")
    c = cells("", "secrets", {"metadata": {"name": "s"}, "type": "helm.sh/release.v1", "data": {"a": "", "b": ""}})
    assert (c["Type"], c["Data"]) == ("helm.sh/release.v1", 2)


def test_jsonpath_and_crd_printer_columns():
    obj = {"metadata": {"name": "app", "labels": {"a/b": "x"}},
           "spec": {"project": "default"},
           "status": {"sync": {"status": "Synced"}, "conditions": [{"type": "Ready"}]}}
    assert tables.eval_jsonpath(obj, ".status.sync.status") == "Synced"
    assert tables.eval_jsonpath(obj, "{.status.conditions[0].type}") == "Ready"
    assert tables.eval_jsonpath(obj, ".metadata.labels['a/b']") == "x"
    assert tables.eval_jsonpath(obj, ".status.missing") is None
    # an equality filter takes the first match (nodes.longhorn.io, CiliumNode printer columns)
    assert tables.eval_jsonpath(obj, ".status.conditions[?(@.type=='Ready')].type") == "Ready"
    assert tables.eval_jsonpath(obj, ".status.conditions[?(@.type==\"Nope\")].status") is None
    obj["metadata"]["creationTimestamp"] = "2026-01-01T23:00:00Z"
    cols = [{"name": "Sync Status", "type": "string", "jsonPath": ".status.sync.status"},
            {"name": "Project", "type": "string", "jsonPath": ".spec.project", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    t = tables.render_table("argoproj.io", "applications", [obj], printer_columns=cols, now=NOW)
    assert [(c["name"], c["priority"]) for c in t["columnDefinitions"]] == \
        [("Name", 0), ("Sync Status", 0), ("Project", 1), ("Age", 0)]
    assert t["rows"][0]["cells"] == ["app", "Synced", "default", "60m"]
    t = tables.render_table("velero.io", "backups", [obj], now=NOW)
    assert t["rows"][0]["cells"] == ["app", "60m"]


def test_default_columns_and_include_object():
    obj = {"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    t = tables.render_table("coordination.k8s.io", "leases", [obj], now=NOW, include_object="Object")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"][0]["cells"] == ["x", "24h"]
    assert t["rows"][0]["object"] is obj
    t = tables.render_table("", "configmaps", [obj], now=NOW, include_object="None")
    assert "object" not in t["rows"][0]


def test_a_malformed_object_does_not_break_the_table():
    t = tables.render_table("", "pods", [{"metadata": {"name": "bad"}, "status": {"containerStatuses": "oops"}}],
                            now=NOW)
    assert t["rows"][0]["cells"][0] == "bad"
