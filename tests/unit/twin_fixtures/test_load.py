"""load(), dump() and load_into(): fixture files and loading them into a store."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import yaml

from twin.fixtures import (FixtureError, NodeSpec, dump, generate, load, load_into,
                           ordered_objects)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def _doc(**over):
    doc = {
        "cluster": {"name": "tiny", "k3s_version": "v1.31.4+k3s1", "cluster_cidr": "10.42.0.0/16",
                    "service_cidr": "10.43.0.0/16", "cluster_dns": "10.43.0.10",
                    "server_url": "https://10.0.0.2:6443"},
        "nodes": [{"name": "a", "role": "server", "ip": "10.0.0.2", "pod_cidr": "10.42.0.0/24",
                   "kernel": "6.8.0-51-generic", "os_image": "Ubuntu 24.04.1 LTS"}],
        "objects": [],
    }
    doc.update(over)
    return doc


def _write(tmp_path: Path, doc, name="fx.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


def test_load_a_path(tmp_path):
    fx = load(_write(tmp_path, _doc()))
    assert fx.nodes == [NodeSpec(name="a", role="server", ip="10.0.0.2", pod_cidr="10.42.0.0/24",
                                 kernel="6.8.0-51-generic", os_image="Ubuntu 24.04.1 LTS")]
    assert fx.server.name == "a" and fx.objects == []


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("cluster"), "cluster: missing"),
    (lambda d: d["cluster"].pop("server_url"), "cluster.server_url"),
    (lambda d: d["cluster"].update(cluster_cidr="10.42.0.0/33"), "cluster.cluster_cidr: not a valid"),
    (lambda d: d["cluster"].update(service_cidr="10.42.128.0/17"), "overlaps cluster_cidr"),
    (lambda d: d["cluster"].update(cluster_dns="10.44.0.10"), "not inside service_cidr"),
    (lambda d: d.update(nodes=[]), "nodes: missing or empty"),
    (lambda d: d["nodes"][0].update(role="master"), r"nodes\[0\].role"),
    (lambda d: d["nodes"][0].update(ip="10.0.0.300"), r"nodes\[0\].ip"),
    (lambda d: d["nodes"][0].update(pod_cidr="10.50.0.0/24"), "not inside cluster_cidr"),
    (lambda d: d["nodes"][0].update(colour="red"), "unknown keys"),
    (lambda d: d["nodes"][0].update(role="agent"), "no node has role 'server'"),
    (lambda d: d["nodes"].append(dict(d["nodes"][0], ip="10.0.0.3", pod_cidr="10.42.1.0/24")),
     r"nodes\[1\].name: duplicate"),
    (lambda d: d["nodes"].append(dict(d["nodes"][0], name="b", ip="10.0.0.3")),
     "overlaps node a"),
    (lambda d: d.update(objects=[{"apiVersion": "v1", "kind": "Pod", "metadata": {}}]),
     r"objects\[0\] \(Pod\): metadata.name"),
    (lambda d: d.update(objects=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}] * 2),
     "duplicate Namespace x"),
])
def test_bad_files_name_file_and_field(tmp_path, mutate, message):
    doc = _doc()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(FixtureError, match=message) as e:
        load(path)
    assert str(path) in str(e.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(FixtureError, match="cannot read fixture.*packaged fixtures: minicloud"):
        load(tmp_path / "absent.yaml")
    bad = _write(tmp_path, "cluster: [unclosed\n")
    with pytest.raises(FixtureError, match="not valid YAML"):
        load(bad)
    with pytest.raises(FixtureError, match="expected a mapping"):
        load(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))


def test_dump_round_trip_and_copies(tmp_path):
    fx = generate(2, 40)
    path = tmp_path / "g.yaml"
    dump(fx, path)
    back = load(path)
    assert back.cluster == fx.cluster and back.nodes == fx.nodes and back.objects == fx.objects
    # Each load is an independent copy (the loader caches the parsed document).
    again = load(path)
    again.objects[0]["metadata"]["name"] = "changed"
    assert load(path).objects[0]["metadata"]["name"] == fx.objects[0]["metadata"]["name"]


class FakeStore:
    """The part of the store contract load_into uses; drops status on create like a
    server with a status subresource, assigns uids."""

    def __init__(self, served=None):
        self.objects: dict[tuple, dict] = {}
        self.served = served
        self.status_updates = 0
        self._uids = itertools.count(1)
        self.calls: list[str] = []

    def lookup_kind(self, api_version, kind):
        if self.served is not None and kind not in self.served:
            return None
        return (api_version, kind)

    def create(self, obj, *, rtype=None):
        md = obj["metadata"]
        key = (obj["kind"], md.get("namespace"), md["name"])
        assert key not in self.objects, key
        new = copy.deepcopy(obj)
        new.pop("status", None)
        new["metadata"]["uid"] = f"uid-{next(self._uids)}"
        self.objects[key] = new
        self.calls.append(obj["kind"])
        return copy.deepcopy(new)

    def update(self, obj, *, rtype=None, subresource=None, check_version=True):
        assert subresource == "status"
        md = obj["metadata"]
        stored = self.objects[(obj["kind"], md.get("namespace"), md["name"])]
        stored["status"] = copy.deepcopy(obj["status"])
        self.status_updates += 1
        return copy.deepcopy(stored)


def test_load_into_resolves_owner_uids_and_writes_status():
    fx = load("minicloud")
    store = FakeStore()
    counts = load_into(store, fx)
    assert counts["Pod"] == sum(1 for o in fx.objects if o["kind"] == "Pod")
    # counted by kind: the 3 Kubernetes nodes (made by the loader from fx.nodes) and the
    # fixture's 3 nodes.longhorn.io
    assert counts["Node"] == 3 + 3 and counts["CustomResourceDefinition"] >= 9
    assert [o["apiVersion"] for o in fx.objects if o["kind"] == "Node"] == ["longhorn.io/v1beta2"] * 3
    assert sum(counts.values()) == len(fx.objects) + 3
    by_uid = {o["metadata"]["uid"]: o for o in store.objects.values()}
    for o in store.objects.values():
        for ref in o["metadata"].get("ownerReferences") or ():
            owner = by_uid[ref["uid"]]
            assert (owner["kind"], owner["metadata"]["name"]) == (ref["kind"], ref["name"])
            assert owner["metadata"].get("namespace") == o["metadata"].get("namespace")
    pod = next(o for o in store.objects.values() if o["kind"] == "Pod")
    assert pod["status"]["phase"] == "Running"
    assert store.calls[0] == "CustomResourceDefinition"
    # The fixture itself is untouched: no uids leak back into it.
    assert not any("uid" in r for o in fx.objects for r in o["metadata"].get("ownerReferences") or ())


def test_load_into_skips_unserved_kinds_unless_strict(caplog):
    fx = generate(1, 20)
    served = {o["kind"] for o in ordered_objects(fx)} - {"StorageClass", "IngressClass"}
    counts = load_into(FakeStore(served), fx)
    assert "StorageClass" not in counts and counts["Pod"] == 20
    assert "skipped 1 StorageClass" in caplog.text
    with pytest.raises(FixtureError, match="StorageClass local-path: storage.k8s.io/v1 "
                                           "StorageClass is not served"):
        load_into(FakeStore(served), fx, strict=True)


def test_load_into_reports_missing_owner():
    fx = generate(1, 20)
    pod = next(o for o in fx.objects if o["kind"] == "Pod")
    pod["metadata"]["ownerReferences"][0]["name"] = "ghost"
    with pytest.raises(FixtureError, match=r"Pod .*: owner \w+ ghost was not created before it"):
        load_into(FakeStore(), fx)


def test_load_into_wraps_store_errors():
    class Failing(FakeStore):
        def create(self, obj, *, rtype=None):
            if obj["kind"] == "Service":
                raise RuntimeError("boom")
            return super().create(obj, rtype=rtype)

    with pytest.raises(FixtureError, match=r"creating Service default/kubernetes failed: boom"):
        load_into(Failing(), generate(1, 20))


def _real_store():
    from twin import store as store_mod

    store = store_mod.Store()
    for t in store_mod.builtin_types():
        store.register(t)
    return store_mod, store


def test_load_into_real_store():
    store_mod, store = _real_store()
    fx = load("minicloud")
    counts = load_into(store, fx)
    assert counts["Pod"] == sum(1 for o in fx.objects if o["kind"] == "Pod")
    # CRDs registered their types: the custom resources were stored and are listable.
    apps = store.list(store.lookup_kind("argoproj.io/v1alpha1", "Application"), "argocd").items
    assert len(apps) == counts["Application"]
    pods_t = store.lookup_kind("v1", "Pod")
    running = store.list(pods_t, field_selector="status.phase=Running").items
    assert len(running) == counts["Pod"]
    # Owner references carry the uids the store assigned.
    rs_t = store.lookup_kind("apps/v1", "ReplicaSet")
    for pod in store.list(pods_t, "podinfo").items:
        (ref,) = pod["metadata"]["ownerReferences"]
        rs = store.get(rs_t, "podinfo", ref["name"])
        assert ref["uid"] == rs["metadata"]["uid"]
    on_heron = store.list(pods_t, field_selector="spec.nodeName=fast-heron").items
    assert on_heron and all(p["spec"]["nodeName"] == "fast-heron" for p in on_heron)
    nodes = store.list(store.lookup_kind("v1", "Node")).items
    assert sorted(n["metadata"]["name"] for n in nodes) == ["fast-heron", "fast-skunk", "set-hog"]
    assert store.lookup_kind("cilium.io/v2", "CiliumNode") is None


class AlreadyExists(Exception):
    """Named like the store's error: load_into matches on the class name."""


class AutoSAStore(FakeStore):
    """A store whose namespaces come with their "default" service account."""

    def create(self, obj, *, rtype=None):
        md = obj["metadata"]
        if (obj["kind"], md.get("namespace"), md["name"]) in self.objects:
            raise AlreadyExists(f"{obj['kind']} {md['name']} already exists")
        created = super().create(obj, rtype=rtype)
        if obj["kind"] == "Namespace":
            super().create({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "default", "namespace": md["name"]}})
        return created

    def get(self, rtype, namespace, name):
        return copy.deepcopy(self.objects[(rtype[1], namespace, name)])


def test_load_into_adopts_auto_created_default_service_accounts():
    fx = generate(1, 20)
    store = AutoSAStore()
    counts = load_into(store, fx)
    assert counts["ServiceAccount"] == sum(1 for o in fx.objects if o["kind"] == "ServiceAccount")
    # Any other conflict is still an error naming the object.
    fx.objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "velero"}})
    with pytest.raises(FixtureError, match="creating Namespace velero failed: .*already exists"):
        load_into(AutoSAStore(), fx)


def test_docstring_examples_run():
    import doctest
    import importlib

    for name in ("twin.fixtures", "twin.fixtures.generate", "twin.fixtures.model",
                 "twin.fixtures.files", "twin.fixtures.node_objects", "twin.fixtures.store_loading",
                 "twin.fixtures.shapes", "twin.fixtures.cluster_facts", "twin.fixtures.builder",
                 "twin.fixtures.applications", "twin.fixtures.minicloud"):
        module = importlib.import_module(name)
        result = doctest.testmod(module, verbose=False)
        assert result.failed == 0 and result.attempted > 0, name
