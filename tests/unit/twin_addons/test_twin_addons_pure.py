"""Pure parts of the twin's add-on models: MetalLB IPAM, Velero selection and restore
decisions, Argo CD drift detection, ingress routing helpers."""
from __future__ import annotations

import pytest

from twin.controllers.addons import applicationsets as appsets
from twin.controllers.addons import argocd_diff as argo
from twin.controllers.addons import metallb
from twin.controllers.addons import velero_items as velero
from twin.ingress import _host_matches, pick_backend

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


# ---------------------------------------------------------------- MetalLB pools and IPAM
def test_pool_ranges_and_cidrs_in_order() -> None:
    addrs = [str(a) for a in metallb.parse_pool_addresses(["10.0.0.200-10.0.0.203", "10.0.1.0/30"])]
    assert addrs == ["10.0.0.200", "10.0.0.201", "10.0.0.202", "10.0.0.203",
                     "10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3"]


def test_pool_avoid_buggy_ips_skips_dot_zero_and_255() -> None:
    addrs = {str(a) for a in metallb.parse_pool_addresses(["10.0.2.0/24"], avoid_buggy=True)}
    assert "10.0.2.0" not in addrs and "10.0.2.255" not in addrs and len(addrs) == 254


@pytest.mark.parametrize("bad", ["10.0.0.9-10.0.0.1", "10.0.0.300/32", "banana", "10.0.0.1-fe80::1"])
def test_pool_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(metallb.PoolError):
        metallb.parse_pool_addresses([bad])


def _ipam(*ranges: str, auto: bool = True) -> metallb.IPAM:
    return metallb.IPAM([metallb.Pool("p", metallb.parse_pool_addresses(list(ranges)), auto)])


def test_ipam_reserved_ips_are_never_handed_out_again() -> None:
    ipam = _ipam("10.0.0.200-10.0.0.202")
    assert ipam.reserve("10.0.0.200", ("a", "x")) == "p"
    assert ipam.reserve("10.0.0.201", ("b", "y")) == "p"
    assert ipam.allocate(("c", "z")) == ("10.0.0.202", "p")
    with pytest.raises(metallb.PoolError, match="no available IPs"):
        ipam.allocate(("d", "w"))


def test_ipam_keeps_a_service_ip_stable_after_release() -> None:
    ipam = _ipam("10.0.0.200-10.0.0.210")
    ipam.reserve("10.0.0.205", ("ns", "svc"))
    ipam.release(("ns", "svc"))
    # someone else allocates meanwhile: gets the first free one, not 10.0.0.205
    assert ipam.allocate(("ns", "other"))[0] == "10.0.0.200"
    assert ipam.allocate(("ns", "svc"))[0] == "10.0.0.205"


def test_ipam_requested_ip_must_be_in_a_pool_and_free() -> None:
    ipam = _ipam("10.0.0.200-10.0.0.210")
    assert ipam.allocate(("ns", "a"), requested=["10.0.0.207"]) == ("10.0.0.207", "p")
    with pytest.raises(metallb.PoolError, match="already allocated to ns/a"):
        ipam.allocate(("ns", "b"), requested=["10.0.0.207"])
    with pytest.raises(metallb.PoolError, match="not allowed"):
        ipam.allocate(("ns", "b"), requested=["192.168.1.1"])


def test_ipam_pool_without_auto_assign_only_serves_requests() -> None:
    ipam = _ipam("10.0.0.200-10.0.0.201", auto=False)
    with pytest.raises(metallb.PoolError):
        ipam.allocate(("ns", "a"))
    assert ipam.allocate(("ns", "a"), requested=["10.0.0.201"])[0] == "10.0.0.201"
    assert ipam.allocate(("ns", "b"), pool_name="p")[0] == "10.0.0.200"


def test_requested_ips_from_annotation_then_spec() -> None:
    svc = {"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "10.0.0.9, 10.0.0.10"}},
           "spec": {"loadBalancerIP": "10.0.0.1"}}
    assert metallb.requested_ips(svc) == ["10.0.0.9", "10.0.0.10"]
    assert metallb.requested_ips({"metadata": {}, "spec": {"loadBalancerIP": "10.0.0.1"}}) == ["10.0.0.1"]
    assert metallb.is_metallb_service({"spec": {"type": "LoadBalancer"}})
    assert not metallb.is_metallb_service({"spec": {"type": "LoadBalancer", "loadBalancerClass": "other"}})


# ---------------------------------------------------------------- Velero
def test_backup_filter_defaults_and_cluster_scope() -> None:
    every = velero.ItemFilter.from_spec({})
    assert every.includes("", "configmaps", True, "any")
    assert every.includes("", "persistentvolumes", False, "")       # nil + all namespaces
    for excluded in [("", "nodes"), ("", "events"), ("velero.io", "backups"), ("velero.io", "restores")]:
        assert not every.includes(*excluded, excluded[1] != "nodes", "velero")
    some = velero.ItemFilter.from_spec({"includedNamespaces": ["podinfo"]})
    assert some.includes("", "services", True, "podinfo") and not some.includes("", "services", True, "x")
    assert not some.includes("", "persistentvolumes", False, "")     # nil + some namespaces
    assert some.includes("", "namespaces", False, "", {"metadata": {"name": "podinfo"}})
    assert not some.includes("", "namespaces", False, "", {"metadata": {"name": "other"}})
    no_cluster = velero.ItemFilter.from_spec({"includeClusterResources": False})
    assert not no_cluster.includes("storage.k8s.io", "storageclasses", False, "")
    res = velero.ItemFilter.from_spec({"excludedResources": ["secrets", "deployments.apps"]})
    assert not res.includes("", "secrets", True, "a") and not res.includes("apps", "deployments", True, "a")
    assert res.includes("apps", "statefulsets", True, "a")


def _cm(data: str, **meta: object) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "d", "uid": "u1", "resourceVersion": "7", **meta},
            "data": {"k": data}}


def test_restore_decisions() -> None:
    backed = _cm("1")
    assert velero.restore_decision("", "configmaps", backed, None, "none").action == "create"
    same = _cm("1", uid="u2", resourceVersion="99")
    assert velero.restore_decision("", "configmaps", backed, same, "none").action == "skip-identical"
    changed = _cm("2", uid="u2")
    d = velero.restore_decision("", "configmaps", backed, changed, "none")
    assert d.action == "skip-exists" and not d.restores
    assert velero.restore_decision("", "configmaps", backed, changed, "update").action == "update"


def test_restore_skips_objects_owned_by_a_controller() -> None:
    pod = {"metadata": {"name": "p", "namespace": "d",
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]}}
    assert velero.restore_decision("", "pods", pod, None, "none").action == "skip-owned"
    bare = {"metadata": {"name": "p", "namespace": "d"}}
    assert velero.restore_decision("", "pods", bare, None, "none").action == "create"
    # a ConfigMap with an owner is not in the skip list
    cm = dict(_cm("1"), metadata={"name": "c", "namespace": "d", "ownerReferences": pod["metadata"]["ownerReferences"]})
    assert velero.restore_decision("", "configmaps", cm, None, "none").action == "create"


def test_clean_for_restore_drops_server_fields_and_cluster_ips() -> None:
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "s", "namespace": "d", "uid": "u", "resourceVersion": "3",
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "type": "NodePort",
                    "ports": [{"port": 80, "nodePort": 30080}]},
           "status": {"loadBalancer": {}}}
    out = velero.clean_for_restore("", "services", svc)
    assert "uid" not in out["metadata"] and "resourceVersion" not in out["metadata"]
    assert "status" not in out and "clusterIP" not in out["spec"]
    assert "nodePort" not in out["spec"]["ports"][0]
    headless = dict(svc, spec={"clusterIP": "None", "ports": []})
    assert velero.clean_for_restore("", "services", headless)["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["uid"] == "u"      # the backup copy is untouched


def test_restore_order_puts_namespaces_and_crds_first() -> None:
    def item(group: str, plural: str, name: str) -> velero.BackupItem:
        return velero.BackupItem(group, plural, plural not in ("namespaces", "customresourcedefinitions"),
                            {"metadata": {"name": name}})
    items = [item("apps", "deployments", "a"), item("", "services", "s"), item("", "namespaces", "n"),
             item("apiextensions.k8s.io", "customresourcedefinitions", "c"), item("", "configmaps", "m")]
    assert [i.plural for i in velero.restore_order(items)] == [
        "customresourcedefinitions", "namespaces", "configmaps", "services", "deployments"]


def test_go_durations() -> None:
    assert velero.parse_go_duration("720h0m0s", 1) == 720 * 3600
    assert velero.parse_go_duration("90s", 1) == 90
    assert velero.parse_go_duration("soon", 42) == 42
    assert velero.parse_go_duration(None, 42) == 42


# ---------------------------------------------------------------- Argo CD
def _deploy(replicas: int, **extra: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "d", "labels": {"app": "web"}, "uid": "u"},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}}}, **extra},
            "status": {"readyReplicas": replicas}}


def test_drift_only_counts_fields_git_sets() -> None:
    want = argo.desired_of(_deploy(2))
    assert "status" not in want and "uid" not in want["metadata"]
    live = _deploy(2, paused=False)
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "3"}
    live["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}
    live["status"] = {"readyReplicas": 0}
    assert not argo.drift(want, live)
    assert argo.drift(want, _deploy(0))
    relabelled = _deploy(2)
    relabelled["metadata"]["labels"] = {"app": "other"}
    assert argo.drift(want, relabelled)
    assert argo.drift(want, None)


def test_drift_ignores_pointers_in_place_and_leaves_want_untouched() -> None:
    want = argo.desired_of(_deploy(2, strategy={"type": "Recreate"},
                                   selector={"matchLabels": {"app": "web"}}))
    before = repr(want)
    live = _deploy(5, strategy={"type": "RollingUpdate"}, selector={"matchLabels": {"app": "web"}})
    assert argo.drift(want, live)
    assert argo.drift(want, live, ["/spec/replicas"])             # the strategy still differs
    assert not argo.drift(want, live, ["/spec/replicas", "/spec/strategy/type"])
    # a pointer through a missing field, or into a list, ignores nothing
    assert argo.drift(want, live, ["/spec/replicas", "/spec/nothing/type", "/spec/strategy/0"])
    # apiVersion and kind are never compared
    assert not argo.drift(want, {**live, "apiVersion": "apps/v2", "kind": "Other"},
                          ["/spec/replicas", "/spec/strategy"])
    assert repr(want) == before


def test_apply_desired_reverts_and_keeps_foreign_fields() -> None:
    want = argo.desired_of(_deploy(2))
    live = _deploy(0, paused=False)
    live["metadata"]["annotations"] = {"x": "y"}
    out = argo.apply_desired(want, live)
    assert out["spec"]["replicas"] == 2 and out["spec"]["paused"] is False
    assert out["metadata"]["annotations"] == {"x": "y"} and out["metadata"]["uid"] == "u"
    assert not argo.drift(want, out)


def _app(name: str, automated: dict | None, **spec: object) -> dict:
    sp = {"syncOptions": ["CreateNamespace=true"]}
    if automated is not None:
        sp["automated"] = automated
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {"project": "default", "source": {"path": name}, "syncPolicy": sp, **spec}}


def test_child_sync_policy_is_ignored_unless_the_parent_reverts() -> None:
    parent = _app("root", {"prune": True, "selfHeal": True})
    child_key = ("argoproj.io", "Application", "argocd", "podinfo")
    want = argo.desired_of(_app("podinfo", {"prune": True, "selfHeal": True}))
    paused = _app("podinfo", None)
    benign = argo.ignored_pointers(parent, child_key, parent_reverts=False)
    assert benign == ["/spec/syncPolicy"]
    assert not argo.drift(want, paused, benign)
    assert argo.drift(want, paused, argo.ignored_pointers(parent, child_key, parent_reverts=True))
    # other drift of a child is still drift
    moved = _app("podinfo", None)
    moved["spec"]["source"] = {"path": "elsewhere"}
    assert argo.drift(want, moved, benign)
    # and re-applying it leaves the paused policy alone
    healed = argo.apply_desired(want, moved, benign)
    assert healed["spec"]["source"] == {"path": "podinfo"} and "automated" not in healed["spec"]["syncPolicy"]
    appset_key = ("argoproj.io", "ApplicationSet", "argocd", "demo")
    assert argo.ignored_pointers(parent, appset_key, False) == ["/spec/template/spec/syncPolicy"]


def test_ignore_differences_from_the_app_spec() -> None:
    app = _app("web", {"selfHeal": True}, ignoreDifferences=[
        {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}])
    key = ("apps", "Deployment", "d", "web")
    want = argo.desired_of(_deploy(2))
    assert not argo.drift(want, _deploy(5), argo.ignored_pointers(app, key, False))
    assert argo.ignored_pointers(app, ("", "Service", "d", "web"), False) == []


@pytest.mark.parametrize("automated,heals", [
    (None, False), ({}, False), ({"prune": True}, False), ({"selfHeal": True}, True),
    ({"selfHeal": True, "enabled": False}, False)])
def test_self_heal_policy(automated: dict | None, heals: bool) -> None:
    assert argo.self_heals(_app("a", automated)) is heals


# ---------------------------------------------------------------- ingress routing
def test_host_matching() -> None:
    assert _host_matches("podinfo.10.0.0.200.nip.io", "PODINFO.10.0.0.200.nip.io")
    assert _host_matches("*.apps.example", "a.apps.example")
    assert not _host_matches("*.apps.example", "a.b.apps.example")
    assert not _host_matches(None, "x")


def test_pick_backend_longest_path_wins() -> None:
    ing = {"spec": {"rules": [{"host": "h", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "front"}}},
        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api"}}},
        {"path": "/exact", "pathType": "Exact", "backend": {"service": {"name": "ex"}}}]}}]}}
    assert pick_backend(ing, "h", "/")["service"]["name"] == "front"
    assert pick_backend(ing, "h", "/api/v1")["service"]["name"] == "api"
    assert pick_backend(ing, "h", "/apix")["service"]["name"] == "front"
    assert pick_backend(ing, "h", "/exact")["service"]["name"] == "ex"
    assert pick_backend(ing, "other", "/") is None


# ---------------------------------------------------------------- ApplicationSets
def test_applicationset_list_generator_renders_the_fixture_app() -> None:
    from twin.fixtures import load

    fx = load("minicloud")
    appset = next(o for o in fx.objects if o["kind"] == "ApplicationSet")
    app = next(o for o in fx.objects if o["kind"] == "Application"
               and any(r.get("kind") == "ApplicationSet" for r in o["metadata"].get("ownerReferences") or ()))
    rendered = appsets.generated_apps(appset)
    assert set(rendered) == {app["metadata"]["name"]}
    # the fixture is converged: the generated app is exactly what the template renders
    assert rendered[app["metadata"]["name"]] == app["spec"]


def test_applicationset_template_placeholders() -> None:
    appset = {"spec": {"generators": [{"list": {"elements": [{"name": "a", "path": "x"},
                                                             {"name": "b", "path": "y"}]}}],
                       "template": {"metadata": {"name": "{{.name}}"},
                                    "spec": {"source": {"path": "apps/{{ path }}"},
                                             "destination": {"namespace": "{{name}}"}}}}}
    out = appsets.generated_apps(appset)
    assert out == {"a": {"source": {"path": "apps/x"}, "destination": {"namespace": "a"}},
                   "b": {"source": {"path": "apps/y"}, "destination": {"namespace": "b"}}}
    assert appsets.generated_apps({"spec": {"generators": [{"git": {}}], "template": {}}}) == {}


@pytest.mark.parametrize("kind,obj,want", [
    ("Deployment", {"spec": {"replicas": 2}, "status": {"updatedReplicas": 2, "availableReplicas": 2}}, "Healthy"),
    ("Deployment", {"spec": {"replicas": 2}, "status": {"updatedReplicas": 1, "availableReplicas": 1}}, "Progressing"),
    ("Deployment", {"spec": {"replicas": 1, "paused": True}, "status": {}}, "Suspended"),
    ("StatefulSet", {"spec": {"replicas": 3}, "status": {"readyReplicas": 3}}, "Healthy"),
    ("DaemonSet", {"spec": {}, "status": {"desiredNumberScheduled": 3, "numberAvailable": 2}}, "Progressing"),
    ("PersistentVolumeClaim", {"status": {"phase": "Bound"}}, "Healthy"),
    ("PersistentVolumeClaim", {"status": {"phase": "Lost"}}, "Degraded"),
    ("Service", {"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}}, "Progressing"),
    ("Service", {"spec": {"type": "ClusterIP"}, "status": {}}, "Healthy"),
    ("ConfigMap", None, "Missing"),
])
def test_resource_health(kind: str, obj: dict | None, want: str) -> None:
    assert argo.resource_health(kind, obj)[0] == want
