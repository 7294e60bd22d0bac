"""Create/get/update/mutate/delete semantics of the twin store."""
from __future__ import annotations

import re

import pytest

from twin.store import (AlreadyExists, BadRequest, Conflict, Forbidden, Invalid, NotFound,
                        Store, builtin_types)
from twin_store_helpers import ns_obj, pod

pytestmark = pytest.mark.unit


def test_create_sets_identity_fields(store, pods):
    created = store.create(pod("web"))
    meta = created["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) == store.resource_version
    assert created["apiVersion"] == "v1" and created["kind"] == "Pod"
    assert created["status"]["phase"] == "Pending"    # server default
    assert store.get(pods, "default", "web") == created


def test_resource_version_is_global_and_increasing(store):
    a = store.create(pod("a"))
    b = store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "c", "namespace": "default"}})
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1


def test_get_returns_copies(store, pods):
    store.create(pod("web"))
    got = store.get(pods, "default", "web")
    got["spec"]["containers"][0]["image"] = "evil"
    assert store.get(pods, "default", "web")["spec"]["containers"][0]["image"] == "nginx"


def test_create_does_not_keep_a_reference_to_the_input(store, pods):
    obj = pod("web")
    store.create(obj)
    obj["spec"]["containers"][0]["image"] = "changed"
    assert store.get(pods, "default", "web")["spec"]["containers"][0]["image"] == "nginx"


def test_duplicate_create_is_already_exists(store):
    store.create(pod("web"))
    with pytest.raises(AlreadyExists) as e:
        store.create(pod("web"))
    assert e.value.code == 409 and 'pods "web" already exists' in e.value.message


def test_same_name_in_other_namespace_is_fine(store, pods):
    store.create(pod("web"))
    store.create(pod("web", "other"))
    assert store.count(pods) == 2 and store.count(pods, "other") == 1


def test_missing_and_unknown(store, pods):
    with pytest.raises(NotFound) as e:
        store.get(pods, "default", "nope")
    assert e.value.code == 404 and e.value.details["name"] == "nope"
    assert store.try_get(pods, "default", "nope") is None
    deploy = store.lookup("apps", "v1", "deployments")
    with pytest.raises(NotFound, match='deployments.apps "x" not found'):
        store.get(deploy, "default", "x")
    with pytest.raises(BadRequest):
        store.create({"apiVersion": "v9", "kind": "Unknown", "metadata": {"name": "x"}})


def test_generate_name(store):
    a = store.create(pod("", generateName="web-"))
    b = store.create(pod("", generateName="web-"))
    for obj in (a, b):
        assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", obj["metadata"]["name"])
    assert a["metadata"]["name"] != b["metadata"]["name"]


@pytest.mark.parametrize("name", ["", "Upper", "bad_name", "-lead", "trail-", "a" * 254])
def test_invalid_names(store, name):
    with pytest.raises(Invalid) as e:
        store.create(pod(name))
    assert e.value.code == 422


def test_name_rules_per_kind(store):
    # Services are DNS-1035 labels: no leading digit; RBAC names may hold colons.
    with pytest.raises(Invalid):
        store.create({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": "1svc", "namespace": "default"}})
    store.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": "system:controller:x"}})
    with pytest.raises(Invalid):   # namespaces are labels: no dots
        store.create(ns_obj("a.b"))
    store.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "kube-root-ca.crt", "namespace": "default"}})


def test_namespace_must_exist(store):
    with pytest.raises(NotFound, match='namespaces "ghost" not found'):
        store.create(pod("web", "ghost"))
    store.create(ns_obj("ghost"))
    store.create(pod("web", "ghost"))


def test_cluster_scoped_drops_namespace(store):
    node = store.create({"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": "n1", "namespace": "default"}})
    assert "namespace" not in node["metadata"]
    nodes = store.lookup("", "v1", "nodes")
    assert store.get(nodes, None, "n1")["metadata"]["name"] == "n1"
    assert store.get(nodes, "whatever", "n1")["metadata"]["name"] == "n1"


def test_update_conflict_and_version_check(store, pods):
    created = store.create(pod("web"))
    stale = dict(created)
    first = store.update({**created, "spec": {"containers": [{"name": "c", "image": "v2"}]}})
    assert int(first["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(Conflict) as e:
        store.update({**stale, "spec": {"containers": [{"name": "c", "image": "v3"}]}})
    assert e.value.code == 409 and "the object has been modified" in e.value.message
    # Without a resourceVersion, or with check_version=False, the write goes through.
    no_rv = {**stale, "metadata": {k: v for k, v in stale["metadata"].items()
                                   if k != "resourceVersion"}}
    store.update({**no_rv, "spec": {"containers": [{"name": "c", "image": "v4"}]}})
    store.update({**stale, "spec": {"containers": [{"name": "c", "image": "v5"}]}},
                 check_version=False)
    assert store.get(pods, "default", "web")["spec"]["containers"][0]["image"] == "v5"


def test_update_missing_is_not_found(store):
    with pytest.raises(NotFound):
        store.update(pod("ghost"))


def test_generation_bumps_only_on_spec_changes(store, pods):
    created = store.create(pod("web"))
    labelled = store.mutate(pods, "default", "web",
                            lambda o: o["metadata"]["labels"].update(a="1"))
    assert labelled["metadata"]["generation"] == 1
    status = store.mutate(pods, "default", "web",
                          lambda o: o["status"].update(phase="Running"))
    assert status["metadata"]["generation"] == 1
    spec = store.mutate(pods, "default", "web",
                        lambda o: o["spec"].update(nodeName="n1"))
    assert spec["metadata"]["generation"] == 2
    assert spec["metadata"]["uid"] == created["metadata"]["uid"]


def test_noop_update_keeps_version_and_emits_nothing(store, pods):
    created = store.create(pod("web"))
    seen = []
    store.subscribe(lambda *a: seen.append(a[0]))
    again = store.update(created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    store.mutate(pods, "default", "web", lambda o: None)
    assert seen == []


def test_identity_fields_cannot_be_overwritten(store, pods):
    created = store.create(pod("web"))
    forged = store.get(pods, "default", "web")
    forged["metadata"].update(uid="forged", creationTimestamp="1999-01-01T00:00:00Z",
                              generation=99)
    forged["metadata"]["labels"] = {"x": "y"}
    out = store.update(forged)
    for k in ("uid", "creationTimestamp"):
        assert out["metadata"][k] == created["metadata"][k]
    assert out["metadata"]["generation"] == 1


def test_status_subresource_update_only_touches_status(store, pods):
    created = store.create(pod("web"))
    sent = store.get(pods, "default", "web")
    sent["status"] = {"phase": "Running"}
    sent["spec"]["nodeName"] = "sneaky"
    out = store.update(sent, subresource="status")
    assert out["status"] == {"phase": "Running"}
    assert "nodeName" not in out["spec"]
    assert out["metadata"]["generation"] == created["metadata"]["generation"]


def test_preserve_status_emulates_main_resource_put(store, pods):
    store.create(pod("web", phase="Running"))
    sent = store.get(pods, "default", "web")
    sent["status"] = {"phase": "Failed"}
    sent["metadata"]["labels"] = {"a": "b"}
    out = store.update(sent, preserve_status=True)
    assert out["status"]["phase"] == "Running" and out["metadata"]["labels"] == {"a": "b"}
    # ConfigMaps have no status subresource: nothing to preserve, the body wins.
    cms = store.lookup("", "v1", "configmaps")
    assert not cms.status_subresource


def test_mutate_writes_everything(store, pods):
    store.create(pod("web"))

    def fn(o):
        o["spec"]["nodeName"] = "n1"
        o["status"]["phase"] = "Running"

    out = store.mutate(pods, "default", "web", fn)
    assert out["spec"]["nodeName"] == "n1" and out["status"]["phase"] == "Running"
    only_status = store.mutate(pods, "default", "web",
                               lambda o: (o["spec"].update(nodeName="n2"),
                                          o["status"].update(phase="Succeeded")),
                               subresource="status")
    assert only_status["spec"]["nodeName"] == "n1"
    assert only_status["status"]["phase"] == "Succeeded"


def test_delete_removes_immediately_without_finalizers(store, pods):
    store.create(pod("web"))
    last = store.delete(pods, "default", "web")
    assert last["metadata"]["name"] == "web"
    assert store.try_get(pods, "default", "web") is None
    with pytest.raises(NotFound):
        store.delete(pods, "default", "web")


def test_finalizers_hold_deletion_until_emptied(store, pods):
    store.create(pod("web", finalizers=["example.com/hold"]))
    held = store.delete(pods, "default", "web", grace_period=30)
    assert held["metadata"]["deletionTimestamp"]
    # An unscheduled pod has nothing to stop: its grace period is 0 (pod strategy).
    assert held["metadata"]["deletionGracePeriodSeconds"] == 0
    assert store.try_get(pods, "default", "web") is not None
    # A second delete changes nothing.
    again = store.delete(pods, "default", "web")
    assert again["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"]
    # Adding finalizers to an object being deleted is refused.
    with pytest.raises(Forbidden):
        store.mutate(pods, "default", "web",
                     lambda o: o["metadata"]["finalizers"].append("another/one"))
    store.mutate(pods, "default", "web", lambda o: o["metadata"].update(finalizers=[]))
    assert store.try_get(pods, "default", "web") is None


def test_delete_preconditions(store, pods):
    store.create(pod("web"))
    with pytest.raises(Conflict):
        store.delete(pods, "default", "web", preconditions={"uid": "other"})
    store.delete(pods, "default", "web",
                 preconditions={"uid": store.get(pods, "default", "web")["metadata"]["uid"]})


def test_scale_subresource(store):
    deploy = store.lookup("apps", "v1", "deployments")
    store.create({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "d", "namespace": "default"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                           "template": {}}})
    scale = store.get_scale(deploy, "default", "d")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=d"
    assert store.set_scale(deploy, "default", "d", 5)["spec"]["replicas"] == 5
    assert store.get(deploy, "default", "d")["metadata"]["generation"] == 2
    with pytest.raises(NotFound):
        store.get_scale(store.lookup("", "v1", "configmaps"), "default", "d")


def test_subscriber_errors_never_break_writes(store, pods, caplog):
    calls = []

    def broken(*args):
        raise RuntimeError("boom")

    store.subscribe(broken)
    unsubscribe = store.subscribe(lambda etype, rtype, obj, old: calls.append(
        (etype, rtype.plural, obj["metadata"]["name"], old is None)))
    store.create(pod("web"))
    store.mutate(pods, "default", "web", lambda o: o["metadata"]["labels"].update(a="1"))
    store.delete(pods, "default", "web")
    assert calls == [("ADDED", "pods", "web", True), ("MODIFIED", "pods", "web", False),
                     ("DELETED", "pods", "web", False)]
    assert "boom" in caplog.text
    unsubscribe()
    store.create(pod("web2"))
    assert len(calls) == 3


def test_builtin_types_table():
    types = {(t.group, t.plural): t for t in builtin_types()}
    expected_short = {("", "namespaces"): ("ns",), ("", "nodes"): ("no",), ("", "pods"): ("po",),
                      ("", "services"): ("svc",), ("apps", "deployments"): ("deploy",),
                      ("apps", "daemonsets"): ("ds",), ("", "persistentvolumeclaims"): ("pvc",),
                      ("", "persistentvolumes"): ("pv",), ("networking.k8s.io", "ingresses"): ("ing",),
                      ("apiextensions.k8s.io", "customresourcedefinitions"): ("crd", "crds"),
                      ("storage.k8s.io", "storageclasses"): ("sc",)}
    for key, short in expected_short.items():
        assert types[key].short_names == short, key
    for key in [("", "pods"), ("", "services"), ("apps", "deployments"), ("apps", "replicasets"),
                ("apps", "daemonsets"), ("apps", "statefulsets")]:
        assert "all" in types[key].categories
    assert "all" not in types[("", "configmaps")].categories
    assert {k for k, t in types.items() if t.scale_subresource} == {
        ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
        ("", "replicationcontrollers")}
    assert not types[("", "nodes")].namespaced and types[("", "secrets")].namespaced
    assert types[("rbac.authorization.k8s.io", "clusterrolebindings")].kind == "ClusterRoleBinding"
    assert types[("", "endpoints")].kind == "Endpoints"
    assert types[("policy", "poddisruptionbudgets")].singular == "poddisruptionbudget"
    assert len(types) == len(builtin_types())   # no duplicates


def test_lookup_kind(store):
    rt = store.lookup_kind("apps/v1", "Deployment")
    assert rt is not None and rt.plural == "deployments"
    assert store.lookup_kind("apps/v1", "Nope") is None
    assert store.lookup("", "v1", "pods").api_version == "v1"


def test_store_without_builtins_accepts_registration():
    s = Store(register_builtins=False)
    assert s.resource_types() == []
    for rt in builtin_types():
        s.register(rt)
        s.register(rt)   # idempotent
    assert len(s.resource_types()) == len(builtin_types())


@pytest.mark.parametrize("labels", [{"bad key": "x"}, {"app": "has space"}, {"app": 3},
                                    {"a": "x" * 64}, {"-a": "1"}])
def test_invalid_labels_are_rejected(store, pods, labels):
    with pytest.raises(Invalid):
        store.create(pod("web", labels=labels))
    store.create(pod("web", labels={"ok": "1"}))
    with pytest.raises(Invalid):
        store.mutate(pods, "default", "web", lambda o: o["metadata"].update(labels=labels))
    assert store.get(pods, "default", "web")["metadata"]["labels"] == {"ok": "1"}


def test_annotations_must_be_strings(store):
    with pytest.raises(Invalid):
        store.create(pod("web", annotations={"a": 1}))
    store.create(pod("web", annotations={"a": "any text / with : symbols"}))


def test_reset_status_on_create(store, pods):
    out = store.create(pod("web", phase="Running"), reset_status=True)
    assert out["status"] == {"phase": "Pending"}       # client status dropped, default set
    cm = store.create({"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": "y"},
                       "metadata": {"name": "c", "namespace": "default"}}, reset_status=True)
    assert cm["status"] == {"x": "y"}                  # no status subresource: kept
    assert store.create(pod("seeded", phase="Running"))["status"]["phase"] == "Running"


def test_bound_pod_terminates_gracefully_until_deleted_with_grace_0(store, pods):
    store.create(pod("web", node="n1"))
    held = store.delete(pods, "default", "web")
    assert held["metadata"]["deletionGracePeriodSeconds"] == 30   # the default grace period
    assert held["metadata"]["deletionTimestamp"]
    # A status write while terminating does not remove it.
    store.mutate(pods, "default", "web", lambda o: o.setdefault("status", {}).update(phase="Running"),
                 subresource="status")
    assert store.try_get(pods, "default", "web") is not None
    # A longer grace period changes nothing; a shorter one shortens it.
    again = store.delete(pods, "default", "web", grace_period=60)
    assert again["metadata"]["deletionGracePeriodSeconds"] == 30
    short = store.delete(pods, "default", "web", grace_period=5)
    assert short["metadata"]["deletionGracePeriodSeconds"] == 5
    # The kubelet's final delete (grace 0) removes it.
    store.delete(pods, "default", "web", grace_period=0)
    assert store.try_get(pods, "default", "web") is None


def test_force_delete_of_a_bound_pod_with_finalizers_waits_for_them(store, pods):
    store.create(pod("web", node="n1", finalizers=["example.com/hold"]))
    held = store.delete(pods, "default", "web", grace_period=0)
    assert held["metadata"]["deletionGracePeriodSeconds"] == 0
    store.mutate(pods, "default", "web", lambda o: o["metadata"].update(finalizers=[]))
    assert store.try_get(pods, "default", "web") is None


def test_finished_pod_goes_at_once(store, pods):
    p = pod("done", node="n1")
    p["status"] = {"phase": "Succeeded"}
    store.create(p)
    store.delete(pods, "default", "done")
    assert store.try_get(pods, "default", "done") is None
