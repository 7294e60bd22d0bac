"""Bulk loads: a store may keep the caller's object (adopt) and return it uncopied."""
from __future__ import annotations

import pytest

from twin import fixtures
from twin.store import Store
from twin_store_helpers import pod

pytestmark = pytest.mark.unit


def test_default_create_copies_in_and_out(store, pods):
    obj = pod("a", node="n1")
    out = store.create(obj, rtype=pods)
    assert "uid" not in obj["metadata"]                  # the caller's object is untouched
    out["metadata"]["labels"]["x"] = "changed"            # and the result is a copy
    assert store.get(pods, "default", "a")["metadata"]["labels"] == {}


def test_adopt_keeps_the_object_and_copy_result_returns_the_stored_one(store, pods):
    obj = pod("b", node="n1")
    out = store.create(obj, rtype=pods, adopt=True, copy_result=False)
    assert out is obj and store.peek(pods, "default", "b") is obj
    assert obj["metadata"]["uid"] and obj["metadata"]["resourceVersion"]
    assert [p["metadata"]["name"] for p in store.pods_on_node("n1")] == ["b"]
    # reads still hand out copies
    got = store.get(pods, "default", "b")
    assert got == obj and got is not obj


def test_a_fixture_adopted_by_a_store_loads_the_same_objects():
    fx_copied, fx_adopted = fixtures.load("minicloud"), fixtures.load("minicloud")
    a, b = Store(seed=1), Store(seed=1)
    counts = fixtures.load_into(a, fx_copied)
    assert fixtures.load_into(b, fx_adopted, adopt=True) == counts
    for rtype in a.resource_types():
        def content(s):
            # what the fixture says (the store's own timestamps, e.g. CRD conditions, differ)
            return sorted(repr((o["metadata"].get("namespace", ""), o["metadata"]["name"],
                                o["metadata"].get("labels"), o.get("spec"),
                                o.get("status") if o["kind"] in ("Pod", "Deployment") else None))
                          for o in s.iter_objects(rtype))
        assert content(a) == content(b), rtype.plural
