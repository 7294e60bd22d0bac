"""Unit tests of the controllers' cache indexes (fed like the store's subscribers)."""
from __future__ import annotations

import pytest

from twin.controllers.base import Cache

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

POD = ("", "pods")


def pod(name, node=None, owner=None, ns="default"):
    md = {"name": name, "namespace": ns}
    if owner:
        md["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": True}]
    spec = {"nodeName": node} if node else {}
    return {"metadata": md, "spec": spec}


def test_indexes_follow_changes():
    c = Cache()
    a = pod("a")
    c.put(POD, a, None)
    assert [p["metadata"]["name"] for p in c.orphans_in(POD, "default")] == ["a"]
    a2 = pod("a", node="n1", owner="u1")
    c.put(POD, a2, a)                       # a new dict per version, as the store does
    assert c.orphans_in(POD, "default") == []
    assert c.pods_on("n1") == [a2] and c.owned(POD, "u1") == [a2]
    a3 = pod("a", node="n2", owner="u1")
    c.put(POD, a3, a2)
    assert c.pods_on("n1") == [] and c.pods_on("n2") == [a3]
    c.remove(POD, a3)
    assert c.pods_on("n2") == [] and c.owned(POD, "u1") == [] and c.get(POD, "default", "a") is None


def test_in_place_updates_use_old_for_unindexing():
    c = Cache()
    p = pod("b", node="n1")
    c.put(POD, p, None)
    old = {"metadata": dict(p["metadata"]), "spec": dict(p["spec"])}
    p["spec"]["nodeName"] = "n2"            # same dict mutated in place
    c.put(POD, p, old)
    assert c.pods_on("n1") == [] and c.pods_on("n2") == [p]
