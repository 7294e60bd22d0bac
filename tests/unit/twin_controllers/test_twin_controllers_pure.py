"""Unit tests of the pure parts of the twin's workload controllers."""
from __future__ import annotations

import pytest

from twin.controllers.kubelet import (IPAllocator, PodFate, build_pod_status, current_signature,
                                      image_ref, qos_class)
from twin.controllers.scheduler import (eviction_delay, matches_required_affinity, node_fits,
                                        toleration_matches, unschedulable_message)
from twin.controllers.workloads import (daemonset_node_decision, daemonset_tolerations,
                                        default_tolerations, deployment_status, pod_template_hash,
                                        replicaset_status, resolve_int_or_percent, templates_equal)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NOT_READY = [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
             {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]


def node(name="n1", labels=None, taints=None, unschedulable=False, ip="10.0.0.4",
         cidr="10.42.1.0/24"):
    spec = {"podCIDR": cidr}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def tmpl(image="nginx:1", labels=None):
    return {"metadata": {"labels": labels or {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}


# ---------------------------------------------------------------- template hash
def test_template_hash_is_stable_and_key_order_independent():
    a = {"spec": {"containers": [{"name": "c", "image": "x"}]}, "metadata": {"labels": {"a": "1"}}}
    b = {"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"image": "x", "name": "c"}]}}
    assert pod_template_hash(a) == pod_template_hash(b)
    h = pod_template_hash(a)
    assert 1 <= len(h) <= 10
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_template_hash_changes_with_template_and_ignores_its_own_label():
    h1 = pod_template_hash(tmpl("nginx:1"))
    assert pod_template_hash(tmpl("nginx:2")) != h1
    labelled = tmpl("nginx:1", {"app": "a", "pod-template-hash": h1})
    assert pod_template_hash(labelled) == h1
    assert templates_equal(labelled, tmpl("nginx:1"))
    assert not templates_equal(tmpl("nginx:2"), tmpl("nginx:1"))
    assert pod_template_hash(tmpl(), collision_count=1) != pod_template_hash(tmpl())


# ---------------------------------------------------------------- taints / tolerations / affinity
def test_toleration_matching_rules():
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert toleration_matches({"key": "k", "operator": "Equal", "value": "v"}, taint)
    assert not toleration_matches({"key": "k", "value": "w"}, taint)
    assert toleration_matches({"key": "k", "operator": "Exists"}, taint)
    assert toleration_matches({"operator": "Exists"}, taint)
    assert not toleration_matches({"key": "k", "operator": "Exists", "effect": "NoExecute"}, taint)


def test_node_fits_taints_and_message():
    tainted = node(taints=NOT_READY)
    why = node_fits({}, tainted)
    assert why == "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
    tol_all = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}
    assert node_fits(tol_all, tainted) is None
    # Tolerating only NoSchedule still leaves NoExecute untolerated.
    only_ns = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                "effect": "NoSchedule"}]}
    assert node_fits(only_ns, tainted) is not None
    # PreferNoSchedule never blocks.
    assert node_fits({}, node(taints=[{"key": "x", "effect": "PreferNoSchedule"}])) is None
    msg = unschedulable_message([why] * 3, 3)
    assert msg.startswith("0/3 nodes are available: 3 node(s) had untolerated taint "
                          "{node.kubernetes.io/not-ready: }.")


def test_node_fits_unschedulable_and_selector():
    assert node_fits({}, node(unschedulable=True)) == "node(s) were unschedulable"
    assert node_fits({}, node(unschedulable=True), ignore_unschedulable=True) is None
    sel = {"nodeSelector": {"disk": "ssd"}}
    assert node_fits(sel, node(labels={"disk": "ssd"})) is None
    assert "affinity/selector" in node_fits(sel, node(labels={"disk": "hdd"}))


@pytest.mark.parametrize("op,values,labels,expected", [
    ("In", ["a", "b"], {"zone": "a"}, True),
    ("In", ["a"], {"zone": "c"}, False),
    ("NotIn", ["a"], {"zone": "c"}, True),
    ("NotIn", ["a"], {}, True),
    ("Exists", None, {"zone": "x"}, True),
    ("Exists", None, {}, False),
    ("DoesNotExist", None, {}, True),
    ("DoesNotExist", None, {"zone": "x"}, False),
])
def test_required_affinity_operators(op, values, labels, expected):
    expr = {"key": "zone", "operator": op}
    if values is not None:
        expr["values"] = values
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}
    assert matches_required_affinity(aff, node(labels=labels)) is expected


def test_affinity_terms_are_ored_and_match_fields():
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
    assert matches_required_affinity(aff, node("n1"))
    assert not matches_required_affinity(aff, node("n2"))


def test_eviction_delay_defaults_and_tolerations():
    t = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
    assert eviction_delay({}, t) == 300
    assert eviction_delay({"tolerations": [{"key": t["key"], "operator": "Exists",
                                            "effect": "NoExecute", "tolerationSeconds": 30}]}, t) == 30
    assert eviction_delay({"tolerations": [{"operator": "Exists"}]}, t) is None
    assert eviction_delay({}, {"key": "other", "effect": "NoExecute"}) == 0


def test_daemonset_tolerations_and_decisions():
    tols = daemonset_tolerations({"hostNetwork": True})
    keys = {(t["key"], t["effect"]) for t in tols}
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") in keys
    # not-ready NoExecute is tolerated automatically (running pods stay), NoSchedule is not
    # (as in the real DaemonSet controller): no new pod unless the template tolerates it.
    assert daemonset_node_decision({}, node(taints=NOT_READY)) == (False, True)
    assert daemonset_node_decision({"tolerations": [{"operator": "Exists"}]},
                                   node(taints=NOT_READY)) == (True, True)
    custom_ns = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    assert daemonset_node_decision({}, node(taints=custom_ns)) == (False, True)
    custom_ne = [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]
    assert daemonset_node_decision({}, node(taints=custom_ne)) == (False, False)
    assert daemonset_node_decision({"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
                                   node(taints=custom_ne)) == (True, True)
    assert daemonset_node_decision({"nodeSelector": {"a": "b"}}, node()) == (False, False)
    assert daemonset_node_decision({}, node(unschedulable=True)) == (True, True)


def test_default_tolerations_added_once():
    tols = default_tolerations(None)
    assert {(t["key"], t["tolerationSeconds"]) for t in tols} == {
        ("node.kubernetes.io/not-ready", 300), ("node.kubernetes.io/unreachable", 300)}
    assert default_tolerations([{"operator": "Exists"}]) == [{"operator": "Exists"}]


def test_int_or_percent():
    assert resolve_int_or_percent("25%", 10, round_up=False, default=1) == 2
    assert resolve_int_or_percent("25%", 10, round_up=True, default=1) == 3
    assert resolve_int_or_percent(2, 10, round_up=True, default=1) == 2
    assert resolve_int_or_percent(None, 10, round_up=True, default=1) == 1


# ---------------------------------------------------------------- IPAM
def test_ip_allocator_never_reuses_an_address_in_use():
    a = IPAllocator()
    a.reserve("n1", "10.42.1.2", "old")
    ip1 = a.allocate("n1", "10.42.1.0/24", "p1")
    assert ip1 == "10.42.1.3"
    assert a.allocate("n1", "10.42.1.0/24", "p1") == ip1      # idempotent per pod
    ip2 = a.allocate("n1", "10.42.1.0/24", "p2")
    assert ip2 not in (ip1, "10.42.1.2")
    a.release("p1")
    assert ip1 not in a.in_use("n1")
    assert a.allocate("n2", "10.42.2.0/24", "p3") == "10.42.2.2"


def test_ip_allocator_exhaustion():
    a = IPAllocator()
    got = {a.allocate("n", "10.42.9.0/29", f"p{i}") for i in range(5)}   # .2 .. .6
    assert got == {f"10.42.9.{i}" for i in range(2, 7)}
    assert a.allocate("n", "10.42.9.0/29", "px") is None
    a.release("p3")
    assert a.allocate("n", "10.42.9.0/29", "px") is not None


# ---------------------------------------------------------------- status computation
def pod(ready=True, labels=None, init=False):
    p = {"metadata": {"name": "p", "uid": "u1", "labels": labels or {"app": "a"}},
         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
         "status": {"phase": "Running" if ready else "Pending",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if init:
        p["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    return p


def test_build_pod_status_running_and_creating():
    node_ = node()
    st = build_pod_status(pod(False, init=True), node_,
                          PodFate("Running", True, cni="flannel", ip="10.42.1.5"), "T")
    assert st["phase"] == "Running" and st["podIP"] == "10.42.1.5"
    assert st["podIPs"] == [{"ip": "10.42.1.5"}] and st["hostIP"] == "10.0.0.4"
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
                     "ContainersReady": "True", "PodScheduled": "True"}
    assert all(c.get("lastTransitionTime") for c in st["conditions"])
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "running" in cs["state"]
    assert cs["containerID"].startswith("containerd://") and "@sha256:" in cs["imageID"]
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert st["qosClass"] == "BestEffort" and st["startTime"]

    st2 = build_pod_status(pod(False), node_,
                           PodFate("Pending", False, "ContainerCreating", "no cni"), "T")
    assert st2["phase"] == "Pending" and "podIP" not in st2
    w = st2["containerStatuses"][0]["state"]["waiting"]
    assert w == {"reason": "ContainerCreating", "message": "no cni"}
    ready = next(c for c in st2["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"


def test_crashloop_counts_restarts_once_per_entry():
    p = pod()
    p["status"] = build_pod_status(p, node(), PodFate("Running", True, ip="10.42.1.5"), "T")
    crash = PodFate("Running", False, "CrashLoopBackOff", "back-off", ip="10.42.1.5")
    p["status"] = build_pod_status(p, node(), crash, "T")
    assert p["status"]["containerStatuses"][0]["restartCount"] == 1
    p["status"] = build_pod_status(p, node(), crash, "T")
    assert p["status"]["containerStatuses"][0]["restartCount"] == 1
    assert current_signature(p)[:3] == ("Running", False, "CrashLoopBackOff")


def test_qos_and_image_ref():
    assert qos_class({"containers": [{"resources": {}}]}) == "BestEffort"
    g = {"cpu": "100m", "memory": "64Mi"}
    assert qos_class({"containers": [{"resources": {"requests": g, "limits": g}}]}) == "Guaranteed"
    assert qos_class({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}) == "Burstable"
    assert image_ref("nginx:1.27") == "docker.io/library/nginx"
    assert image_ref("bitnami/redis:7") == "docker.io/bitnami/redis"
    assert image_ref("quay.io/cilium/cilium:v1.19.3@sha256:abc") == "quay.io/cilium/cilium"
    assert image_ref("localhost:5000/x:1") == "localhost:5000/x"


def test_replicaset_and_deployment_status():
    rs = {"metadata": {"name": "web-abc", "generation": 2},
          "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "a"}}}}}
    pods = [pod(True), pod(True), pod(False, labels={"other": "x"})]
    st = replicaset_status(rs, pods)
    assert st == {"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                  "availableReplicas": 2, "observedGeneration": 2}
    rs["status"] = st
    d = {"metadata": {"name": "web", "generation": 4}, "spec": {"replicas": 3}}
    ds = deployment_status(d, rs, [rs], "T")
    assert ds["observedGeneration"] == 4 and ds["updatedReplicas"] == 3
    assert ds["availableReplicas"] == 2 and ds["unavailableReplicas"] == 1
    cond = {c["type"]: c for c in ds["conditions"]}
    # maxUnavailable 25% of 3 rounds down to 0: all 3 must be available.
    assert (cond["Available"]["status"], cond["Available"]["reason"]) == \
        ("False", "MinimumReplicasUnavailable")
    assert cond["Progressing"]["reason"] == "ReplicaSetUpdated"
    rs["status"] = replicaset_status(rs, [pod(True)] * 3)
    ds = deployment_status(d, rs, [rs], "T")
    cond = {c["type"]: c for c in ds["conditions"]}
    assert cond["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert 'ReplicaSet "web-abc" has successfully progressed.' == cond["Progressing"]["message"]
    assert "unavailableReplicas" not in ds


def test_workload_defaults_fill_only_missing_fields():
    from twin.controllers.workloads import workload_defaults
    ds = {"spec": {"template": {"spec": {}}}}
    assert workload_defaults("DaemonSet", ds)
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["template"] == {"spec": {}}        # the template is never touched
    assert not workload_defaults("DaemonSet", ds)         # idempotent
    sts = {"spec": {"updateStrategy": {"type": "OnDelete"}}}
    workload_defaults("StatefulSet", sts)
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady" and sts["spec"]["replicas"] == 1
    d = {"spec": {"replicas": 4, "strategy": {"type": "Recreate"}}}
    workload_defaults("Deployment", d)
    assert d["spec"]["strategy"] == {"type": "Recreate"} and d["spec"]["replicas"] == 4
    assert d["spec"]["progressDeadlineSeconds"] == 600


def test_templates_equal_ignores_what_typed_clients_add():
    # kubectl rollout undo sends the RS template back through typed Go structs
    undo = {"metadata": {"creationTimestamp": None, "labels": {"app": "a", "pod-template-hash": "x"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1", "resources": {}}]}}
    assert templates_equal(undo, tmpl("nginx:1"))
    assert pod_template_hash(undo) == pod_template_hash(tmpl("nginx:1"))


def test_docstring_examples_of_the_controller_packages_run():
    # The split modules keep their examples (template hash, pools, drift, CRDs, ticker):
    # each must still hold where it now lives.
    import doctest
    import importlib
    import pkgutil

    attempted = 0
    names = ["twin.ticker"] + [f"twin.controllers.{p}.{m.name}" for p in ("workloads", "cilium", "addons")
                               for m in pkgutil.iter_modules(
                                   importlib.import_module(f"twin.controllers.{p}").__path__)]
    assert len(names) > 20
    for name in names:
        result = doctest.testmod(importlib.import_module(name), verbose=False)
        assert result.failed == 0, name
        attempted += result.attempted
    assert attempted >= 30
