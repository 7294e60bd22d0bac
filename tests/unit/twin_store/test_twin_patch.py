"""Patch functions: golden cases (one JSON file per case) plus server-side apply."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from twin.patch import (PatchError, fields_v1, json_patch, merge_patch, server_side_apply,
                        strategic_merge_patch)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden_patches"
FUNCS = {"merge": merge_patch, "json": json_patch, "strategic": strategic_merge_patch}


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_patch(path):
    case = json.loads(path.read_text())
    fn = FUNCS[case["type"]]
    target_before = copy.deepcopy(case["target"])
    patch_before = copy.deepcopy(case["patch"])
    if "error" in case:
        with pytest.raises(PatchError) as e:
            fn(case["target"], case["patch"])
        assert e.value.code == case["error"]
    else:
        assert fn(case["target"], case["patch"]) == case["expected"]
    # Pure functions: inputs untouched.
    assert case["target"] == target_before and case["patch"] == patch_before


def test_golden_cases_exist():
    kinds = {json.loads(p.read_text())["type"] for p in GOLDEN.glob("*.json")}
    assert kinds == {"merge", "json", "strategic"}


def _deploy(**spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": spec}


def test_apply_creates_from_nothing_and_records_managed_fields():
    applied = _deploy(replicas=2, template={"spec": {"containers": [
        {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}})
    out = server_side_apply(None, applied, field_manager="helm", now="2026-01-01T00:00:00Z")
    assert out["spec"] == applied["spec"]
    (entry,) = out["metadata"]["managedFields"]
    assert entry["manager"] == "helm" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == "apps/v1" and entry["fieldsType"] == "FieldsV1"
    fields = entry["fieldsV1"]
    assert "f:replicas" in fields["f:spec"]
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert 'k:{"name":"web"}' in containers
    assert "f:image" in containers['k:{"name":"web"}']
    assert fields["f:metadata"] == {"f:labels": {"f:app": {}}}   # name/namespace are server's


def test_apply_merges_named_lists_and_replaces_others():
    live = _deploy(replicas=1, template={"spec": {
        "containers": [{"name": "web", "image": "nginx:1", "resources": {"limits": {"cpu": "1"}}},
                       {"name": "injected", "image": "mesh:1"}],
        "tolerations": [{"key": "a", "operator": "Exists"}]}})
    applied = _deploy(template={"spec": {
        "containers": [{"name": "web", "image": "nginx:2"}],
        "tolerations": [{"key": "b", "operator": "Exists"}]}})
    out = server_side_apply(live, applied, field_manager="kubectl")
    spec = out["spec"]["template"]["spec"]
    assert spec["containers"] == [
        {"name": "web", "image": "nginx:2", "resources": {"limits": {"cpu": "1"}}},
        {"name": "injected", "image": "mesh:1"}]
    assert spec["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert out["spec"]["replicas"] == 1      # not in the applied config: untouched


def test_reapply_removes_fields_the_manager_dropped():
    first = server_side_apply(None, _deploy(replicas=2, paused=False, template={"spec": {
        "containers": [{"name": "web", "image": "nginx:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                       {"name": "old-sidecar", "image": "s:1"}]}}), field_manager="helm")
    # Another writer (a controller, kubectl patch) sets a field helm never owned.
    first["spec"]["template"]["spec"]["hostNetwork"] = True
    second = server_side_apply(first, _deploy(replicas=2, template={"spec": {
        "containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]}]}}),
        field_manager="helm")
    tspec = second["spec"]["template"]["spec"]
    assert "paused" not in second["spec"]
    assert tspec["containers"] == [{"name": "web", "image": "nginx:2",
                                    "env": [{"name": "A", "value": "1"}]}]
    assert tspec["hostNetwork"] is True
    assert len(second["metadata"]["managedFields"]) == 1


def test_fields_owned_by_another_manager_are_kept():
    one = server_side_apply(None, {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}},
                            field_manager="alice")
    two = server_side_apply(one, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "c"}, "data": {"b": "2"}},
                            field_manager="bob")
    three = server_side_apply(two, {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "c"}, "data": {"a": "1"}},
                              field_manager="alice")
    assert three["data"] == {"a": "1", "b": "2"}      # bob still claims b
    assert sorted(e["manager"] for e in three["metadata"]["managedFields"]) == ["alice", "bob"]


def test_apply_ignores_status_and_server_metadata():
    live = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "uid": "u-1", "resourceVersion": "5"},
            "spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {}}}
    out = server_side_apply(live, {"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "s", "uid": "forged",
                                                "resourceVersion": "1"},
                                   "spec": {"type": "LoadBalancer"},
                                   "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}},
                            field_manager="m")
    assert out["metadata"]["uid"] == "u-1" and out["metadata"]["resourceVersion"] == "5"
    assert out["status"] == {"loadBalancer": {}} and out["spec"]["type"] == "LoadBalancer"


def test_apply_errors():
    with pytest.raises(PatchError) as e:
        server_side_apply(None, {"kind": "X"}, field_manager="")
    assert e.value.code == 400
    with pytest.raises(PatchError):
        server_side_apply(None, ["not", "a", "map"], field_manager="m")   # type: ignore[arg-type]


def test_fields_v1_shape():
    assert fields_v1({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "x", "annotations": {"a": "b"}},
                      "data": {"k": "v"}, "list": [1, 2]}) == {
        "f:metadata": {"f:annotations": {"f:a": {}}}, "f:data": {"f:k": {}}, "f:list": {}}
