"""Operators recreate the pods their custom resources own (Longhorn instance managers)."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _instance_manager_pods(t) -> list[dict]:
    return [p for p in t.cluster.list("pods", "longhorn-system")
            if any(r.get("kind") == "InstanceManager" for r in p["metadata"].get("ownerReferences") or [])]


def test_deleted_instance_manager_pod_comes_back_on_its_node(addon_twin):
    t = addon_twin
    pods = _instance_manager_pods(t)
    assert pods, "minicloud has Longhorn instance-manager pods owned by InstanceManagers"
    victim = pods[0]
    name, node, uid = victim["metadata"]["name"], victim["spec"]["nodeName"], victim["metadata"]["uid"]
    t.cluster.delete("pods", name, "longhorn-system")

    def back():
        p = t.cluster.get("pods", name, "longhorn-system")
        return p if p and p["metadata"]["uid"] != uid and p["status"].get("phase") == "Running" else None

    fresh = t.until(back, timeout=20, what="the instance-manager pod to be recreated")
    assert fresh["spec"]["nodeName"] == node
    assert fresh["metadata"]["ownerReferences"] == victim["metadata"]["ownerReferences"]


def test_pod_of_a_deleted_owner_is_not_recreated(addon_twin):
    t = addon_twin
    victim = _instance_manager_pods(t)[0]
    ref = next(r for r in victim["metadata"]["ownerReferences"] if r.get("controller"))
    group_version = ref["apiVersion"]
    t.cluster.request("DELETE", f"/apis/{group_version}/namespaces/longhorn-system/instancemanagers/{ref['name']}")
    name = victim["metadata"]["name"]
    t.until(lambda: t.cluster.get("pods", name, "longhorn-system") is None, timeout=10,
            what="the pod to be garbage-collected with its owner")
    t.cluster_sleep(5)
    assert t.cluster.get("pods", name, "longhorn-system") is None
