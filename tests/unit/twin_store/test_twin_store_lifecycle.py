"""Garbage collection, namespaces and CustomResourceDefinitions."""
from __future__ import annotations

import asyncio

import pytest

from twin.store import AlreadyExists, Forbidden, Invalid, NotFound
from twin_store_helpers import ns_obj, owner_ref, pod

pytestmark = pytest.mark.unit


def _deploy(store, name="web", ns="default"):
    return store.create({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": name, "namespace": ns},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                                  "template": {"metadata": {"labels": {"app": name}}}}})


def _chain(store):
    deploy = _deploy(store)
    rs = store.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "metadata": {"name": "web-1", "namespace": "default",
                                    "ownerReferences": [owner_ref(deploy)]},
                       "spec": {"replicas": 2}})
    p1 = store.create(pod("web-1-a", owners=[owner_ref(rs)]))
    p2 = store.create(pod("web-1-b", owners=[owner_ref(rs)]))
    return deploy, rs, p1, p2


def test_background_cascade(store, pods):
    _deploy_obj, rs, *_ = _chain(store)
    deploys = store.lookup("apps", "v1", "deployments")
    rss = store.lookup("apps", "v1", "replicasets")
    assert [d["metadata"]["name"] for d in store.dependents(rs["metadata"]["uid"])] == [
        "web-1-a", "web-1-b"]
    events = []
    store.subscribe(lambda t, rt, o, old: events.append((t, rt.plural, o["metadata"]["name"])))
    store.delete(deploys, "default", "web")
    assert store.try_get(rss, "default", "web-1") is None
    assert store.list(pods).items == []
    assert events == [("DELETED", "deployments", "web"), ("DELETED", "replicasets", "web-1"),
                      ("DELETED", "pods", "web-1-a"), ("DELETED", "pods", "web-1-b")]


def test_foreground_deletes_dependents_first(store, pods):
    _chain(store)
    events = []
    store.subscribe(lambda t, rt, o, old: events.append((t, rt.plural)))
    store.delete(store.lookup("apps", "v1", "deployments"), "default", "web",
                 propagation="Foreground")
    assert events == [("DELETED", "pods"), ("DELETED", "pods"), ("DELETED", "replicasets"),
                      ("DELETED", "deployments")]


def test_orphan_strips_owner_references(store, pods):
    _deploy_obj, rs, *_ = _chain(store)
    rss = store.lookup("apps", "v1", "replicasets")
    store.delete(rss, "default", "web-1", propagation="Orphan")
    left = store.list(pods).items
    assert [p["metadata"]["name"] for p in left] == ["web-1-a", "web-1-b"]
    assert all("ownerReferences" not in p["metadata"] for p in left)
    assert store.dependents(rs["metadata"]["uid"]) == []


def test_dependent_with_another_live_owner_survives(store, pods):
    a = store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "a", "namespace": "default"}})
    b = store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "b", "namespace": "default"}})
    store.create(pod("shared", owners=[owner_ref(a), owner_ref(b)]))
    store.delete(store.lookup("", "v1", "configmaps"), "default", "a")
    left = store.get(pods, "default", "shared")
    assert [r["name"] for r in left["metadata"]["ownerReferences"]] == ["b"]
    store.delete(store.lookup("", "v1", "configmaps"), "default", "b")
    assert store.try_get(pods, "default", "shared") is None


def test_finalizer_on_owner_delays_collection(store, pods):
    cm = store.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "owner", "namespace": "default",
                                    "finalizers": ["x/y"]}})
    store.create(pod("child", owners=[owner_ref(cm)]))
    cms = store.lookup("", "v1", "configmaps")
    store.delete(cms, "default", "owner")
    assert store.try_get(pods, "default", "child") is not None
    store.mutate(cms, "default", "owner", lambda o: o["metadata"].pop("finalizers"))
    assert store.try_get(cms, "default", "owner") is None
    assert store.try_get(pods, "default", "child") is None


def test_finalizer_on_dependent_keeps_it_terminating(store, pods):
    cm = store.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "owner", "namespace": "default"}})
    store.create(pod("child", owners=[owner_ref(cm)], finalizers=["keep/me"]))
    store.delete(store.lookup("", "v1", "configmaps"), "default", "owner")
    child = store.get(pods, "default", "child")
    assert child["metadata"]["deletionTimestamp"]
    store.mutate(pods, "default", "child", lambda o: o["metadata"].update(finalizers=[]))
    assert store.try_get(pods, "default", "child") is None


def test_namespace_deletion_removes_contents(store, pods):
    nss = store.lookup("", "v1", "namespaces")
    store.create(ns_obj("doomed"))
    store.create(pod("p", "doomed"))
    store.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "c", "namespace": "doomed"}})
    store.create(pod("keep", "default"))
    ns = store.get(nss, None, "doomed")
    assert ns["status"]["phase"] == "Active" and ns["spec"]["finalizers"] == ["kubernetes"]
    store.delete(nss, None, "doomed")
    assert store.try_get(nss, None, "doomed") is None
    assert store.namespace_contents("doomed") == 0
    assert [p["metadata"]["name"] for p in store.list(pods).items] == ["keep"]
    with pytest.raises(NotFound):
        store.create(pod("late", "doomed"))


def test_namespace_terminating_while_finalizers_hold(store, pods):
    nss = store.lookup("", "v1", "namespaces")
    store.create(ns_obj("slow"))
    store.create(pod("held", "slow", finalizers=["hold/it"]))
    store.delete(nss, None, "slow")
    ns = store.get(nss, None, "slow")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    with pytest.raises(Forbidden):
        store.create(pod("new", "slow"))
    store.mutate(pods, "slow", "held", lambda o: o["metadata"].update(finalizers=[]))
    assert store.try_get(nss, None, "slow") is None


def _crd(versions=("v1alpha1",), *, storage=None, scope="Namespaced", status=True,
         columns=None):
    storage = storage or versions[0]
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "applications.argoproj.io"},
            "spec": {"group": "argoproj.io", "scope": scope,
                     "names": {"plural": "applications", "singular": "application",
                               "kind": "Application", "listKind": "ApplicationList",
                               "shortNames": ["app", "apps"], "categories": ["argo"]},
                     "versions": [{"name": v, "served": True, "storage": v == storage,
                                   "schema": {"openAPIV3Schema": {"type": "object"}},
                                   **({"subresources": {"status": {}}} if status else {}),
                                   **({"additionalPrinterColumns": columns} if columns else {})}
                                  for v in versions]}}


def _app(name, api_version="argoproj.io/v1alpha1"):
    return {"apiVersion": api_version, "kind": "Application",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"project": "default"}}


def test_crd_registration(store):
    cols = [{"name": "Sync Status", "type": "string", "jsonPath": ".status.sync.status"}]
    crd = store.create(_crd(columns=cols))
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds == {"Established": "True", "NamesAccepted": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Application"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["app", "apps"]
    rt = store.lookup("argoproj.io", "v1alpha1", "applications")
    assert rt is not None and rt.namespaced and rt.kind == "Application"
    assert rt.short_names == ("app", "apps") and rt.categories == ("argo",)
    assert rt.list_kind == "ApplicationList" and rt.singular == "application"
    assert rt.status_subresource and rt.table_columns == tuple(cols)
    assert store.lookup_kind("argoproj.io/v1alpha1", "Application") is rt
    created = store.create(_app("guestbook"))
    assert created["metadata"]["uid"]


def test_crd_multiple_versions_share_storage(store):
    store.create(_crd(("v1", "v2"), storage="v1"))
    v1 = store.lookup("argoproj.io", "v1", "applications")
    v2 = store.lookup("argoproj.io", "v2", "applications")
    store.create(_app("a", "argoproj.io/v1"))
    assert store.get(v2, "default", "a")["apiVersion"] == "argoproj.io/v2"
    assert [o["apiVersion"] for o in store.list(v2).items] == ["argoproj.io/v2"]
    assert store.count(v1) == 1


def test_crd_update_reregisters_and_delete_unregisters(store):
    crds = store.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    store.create(_crd(("v1alpha1",)))
    store.create(_app("keep"))

    def add_version(o):
        o["spec"]["versions"].append({"name": "v1", "served": True, "storage": False})

    store.mutate(crds, None, "applications.argoproj.io", add_version)
    v1 = store.lookup("argoproj.io", "v1", "applications")
    assert v1 is not None and not v1.status_subresource
    assert store.count(v1) == 1     # objects survive a re-registration

    async def main():
        w = store.watch(v1)
        store.delete(crds, None, "applications.argoproj.io")
        ev = await w.next(1)
        assert ev is not None and ev.type == "DELETED" and ev.object["metadata"]["name"] == "keep"
        assert await w.next(0.01) is None   # closed when the type goes

    asyncio.run(main())
    assert store.lookup("argoproj.io", "v1alpha1", "applications") is None
    assert store.lookup_kind("argoproj.io/v1", "Application") is None
    # Recreating the CRD starts empty.
    store.create(_crd())
    assert store.count(store.lookup("argoproj.io", "v1alpha1", "applications")) == 0


def test_crd_validation(store):
    bad = _crd()
    bad["metadata"]["name"] = "wrong.name.io"
    with pytest.raises(Invalid):
        store.create(bad)
    no_storage = _crd()
    no_storage["spec"]["versions"][0]["storage"] = False
    with pytest.raises(Invalid):
        store.create(no_storage)
    assert store.lookup("argoproj.io", "v1alpha1", "applications") is None
    store.create(_crd())
    with pytest.raises(AlreadyExists):
        store.create(_crd())


def test_cluster_scoped_crd(store):
    crd = _crd(scope="Cluster")
    store.create(crd)
    rt = store.lookup("argoproj.io", "v1alpha1", "applications")
    assert not rt.namespaced
    obj = store.create({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                        "metadata": {"name": "x"}})
    assert "namespace" not in obj["metadata"]
