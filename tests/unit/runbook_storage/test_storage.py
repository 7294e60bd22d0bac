"""runbook.storage (pure facts and plan) and runbook.verify_datapath's parsers."""
from __future__ import annotations

from runbook import storage, verify_datapath


def _vol(name, state, robustness, node="", access="rwo"):
    return {"metadata": {"name": name}, "spec": {"accessMode": access},
            "status": {"state": state, "robustness": robustness, "currentNodeID": node}}


def _rep(vol, node):
    return {"spec": {"volumeName": vol, "nodeID": node}}


def test_a_volume_is_fit_when_healthy_or_cleanly_detached() -> None:
    rows = storage.volume_rows(
        [_vol("a", "attached", "healthy", "n1"), _vol("b", "detached", "unknown"),
         _vol("c", "attached", "degraded", "n2"), _vol("d", "detached", "faulted")],
        [_rep("a", "n1"), _rep("a", "n2"), _rep("c", "n2"), _rep("d", "n3")])
    assert [r.name for r in rows if r.spans_nodes] == ["a"]
    assert storage.health_problems(rows) == ["c: attached, robustness degraded", "d: detached, robustness faulted"]


def _pod(ns, name, claim, owner):
    return {"metadata": {"namespace": ns, "name": name,
                         "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}] if owner else []},
            "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}


def _claims(ns, *names):
    pvcs = [{"metadata": {"namespace": ns, "name": n}, "spec": {"volumeName": f"pv-{n}"}} for n in names]
    pvs = [{"metadata": {"name": f"pv-{n}"}, "spec": {"csi": {"driver": storage.CSI_DRIVER, "volumeHandle": f"vol-{n}"}}}
           for n in names]
    return pvcs, pvs


def test_volume_users_follow_owners_and_list_what_no_workload_scales() -> None:
    pvcs, pvs = _claims("app", "web", "db", "job", "op", "prom")
    pods = [_pod("app", "web-1", "web", ("ReplicaSet", "web-abc")),
            _pod("app", "web-2", "web", ("ReplicaSet", "web-abc")),
            _pod("app", "db-0", "db", ("StatefulSet", "db")),
            _pod("app", "job-1", "job", ("Job", "backup")),
            _pod("app", "op-0", "op", ("StatefulSet", "op")),
            _pod("app", "prom-0", "prom", ("StatefulSet", "prom")),
            _pod("app", "nfs", "none", None)]                       # not a Longhorn claim: ignored
    rs = [{"metadata": {"namespace": "app", "name": "web-abc",
                        "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]}}]
    wl = {("Deployment", "app", "web"): {"metadata": {"name": "web"}, "spec": {"replicas": 2}},
          ("StatefulSet", "app", "db"): {"metadata": {"name": "db"}, "spec": {"replicas": 1}},
          ("StatefulSet", "app", "op"): {"metadata": {"name": "op", "ownerReferences": [
              {"kind": "RabbitmqCluster", "name": "rmq", "controller": True}]}, "spec": {"replicas": 3}},
          ("StatefulSet", "app", "prom"): {"metadata": {"name": "prom", "ownerReferences": [
              {"kind": "Prometheus", "name": "k", "controller": True}]}, "spec": {"replicas": 1}}}
    users, loose = storage.volume_users(pods, pvcs, pvs, rs, wl)
    assert [(w.key, w.replicas, w.volumes, w.owner) for w in users] == [
        ("Deployment/app/web", 2, ["vol-web"], None),
        ("StatefulSet/app/db", 1, ["vol-db"], None),
        ("StatefulSet/app/prom", 1, ["vol-prom"], ("Prometheus", "k"))]
    assert loose == ["StatefulSet app/op is owned by RabbitmqCluster/rmq, whose operator would scale it back: "
                     "scale it through that operator",
                     "app/job-1 (Job/backup) mounts vol-job: no workload to scale down"]


def test_longhorn_manager_pods_are_recognised_by_owner() -> None:
    im = {"metadata": {"ownerReferences": [{"apiVersion": "longhorn.io/v1beta2", "kind": "InstanceManager"}]}}
    other = {"metadata": {"ownerReferences": [{"apiVersion": "example.io/v1", "kind": "InstanceManager"}]}}
    assert storage.is_manager_pod(im) and not storage.is_manager_pod(other)


def test_the_plan_says_what_each_phase_does() -> None:
    assert storage.StoragePlan(False).steps() == ["Longhorn is not installed: nothing to do for storage"]
    p = storage.StoragePlan(True, storage.volume_rows([_vol("a", "attached", "healthy", "n1")],
                                                      [_rep("a", "n1"), _rep("a", "n2")]),
                            [storage.Workload("Deployment", "app", "web", 2, ["a"])], ["app/x: left"])
    steps = p.steps()
    assert steps[0].startswith("01-preflight: every one of the 1 volumes") and "1 have replicas" in steps[0]
    assert "scale 1 workload(s) (2 pod(s))" in steps[1]
    assert steps[-1] == "left for a person: app/x: left"
    assert "Volumes whose replicas span nodes (1)" in p._repr_html_()


def test_cilium_health_names_the_node_pairs() -> None:
    ok = {"icmp": {"status": ""}, "http": {"status": ""}}
    doc = {"nodes": [
        {"name": "kind/set-hog", "host": {"primary-address": dict(ip="10.0.0.1", **ok)},
         "health-endpoint": {"primary-address": dict(ip="10.42.0.9", **ok)}},
        {"name": "fast-heron", "host": {"primary-address": dict(ip="10.0.0.3", **ok)},
         "health-endpoint": {"primary-address": {"ip": "10.42.2.9", "icmp": {"status": "Connection timed out"},
                                                 "http": {"status": "Get \"http://10.42.2.9:4240\": timeout"}}}}]}
    assert verify_datapath.parse_health("fast-skunk", doc) == [
        "fast-skunk -> fast-heron: endpoint 10.42.2.9 ICMP: Connection timed out",
        'fast-skunk -> fast-heron: endpoint 10.42.2.9 HTTP: Get "http://10.42.2.9:4240": timeout']


def test_cilium_status_problems() -> None:
    text = ("KVStore:                 Disabled   \nCilium:                  Ok   1.19.3 (v1.19.3)\n"
            "KubeProxyReplacement:    True   [eth0   10.0.0.11 (Direct Routing)]\n"
            "Cluster health:          3/3 reachable\nController Status:\n  k8s-heartbeat  ok\n")
    fields = verify_datapath.parse_status(text)
    assert fields["Cluster health"] == "3/3 reachable" and "k8s-heartbeat" not in fields
    assert verify_datapath.status_problems("a", fields) == []
    assert verify_datapath.status_problems("a", {}) == ["a: agent not Ok: no status",
                                                        "a: KubeProxyReplacement is absent, not True"]
