"""Schemas (published built-ins, CRDs), unknown fields, semantic checks, field labels, RBAC."""
from __future__ import annotations

import pytest

from twin.apiserver import schemas
from twin.apiserver.rbac import Attributes, UserInfo, authorize, rule_allows
from twin.apiserver.validation import semantic_causes, unknown_fields, unsupported_field_labels
from twin.store import Store

pytestmark = pytest.mark.unit


def test_unknown_fields_of_a_pod_and_pruning():
    defs = schemas.builtin_definitions()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labelz": {}},
           "spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicyy": "Always",
                                    "resources": {"limits": {"cpu": "1"}}}]}}
    node = defs[schemas.definition_name(defs, "", "v1", "Pod")]
    assert unknown_fields(defs, node, pod) == ["metadata.labelz", "spec.containers[0].imagePullPolicyy"]
    assert unknown_fields(defs, node, pod, prune=True)
    assert "imagePullPolicyy" not in pod["spec"]["containers"][0] and unknown_fields(defs, node, pod) == []


def test_crd_schemas_keep_what_they_preserve():
    crd = {"spec": {"group": "example.com", "names": {"kind": "Widget"}, "versions": [{
        "name": "v1", "served": True, "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": {"type": "object", "properties": {
                "size": {"type": "integer"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}}}]}}
    d = schemas.crd_definition(crd, "v1")
    assert d["x-kubernetes-group-version-kind"] == [{"group": "example.com", "version": "v1", "kind": "Widget"}]
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
           "spec": {"size": 3, "colour": "red", "free": {"anything": 1}}}
    assert unknown_fields(schemas.builtin_definitions(), d, obj) == ["spec.colour"]
    assert schemas.crd_definition(crd, "v2") is None


def test_semantic_causes():
    st = Store()
    pods, deploys = st.lookup("", "v1", "pods"), st.lookup("apps", "v1", "deployments")
    assert semantic_causes(pods, {"spec": {"containers": [{"name": "a", "image": "x"}]}}) == []
    assert [c["field"] for c in semantic_causes(pods, {"spec": {}})] == ["spec.containers"]
    d = {"spec": {"selector": {"matchLabels": {"app": "a"}},
                  "template": {"metadata": {"labels": {"app": "b"}},
                               "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert [c["field"] for c in semantic_causes(deploys, d)] == ["spec.template.metadata.labels"]


def test_field_labels():
    assert unsupported_field_labels("", "pods", "spec.nodeName=a,status.phase!=Running,,") == []
    assert unsupported_field_labels("", "configmaps", "metadata.name=x,data.k=v") == ["data.k"]
    assert unsupported_field_labels("", "events", "involvedObject.name=x,reason=BackOff") == []


def test_rbac():
    sa = UserInfo("system:serviceaccount:demo:ci", ("system:serviceaccounts", "system:authenticated"))
    rules = {"clusterroles": [{"metadata": {"name": "view"},
                               "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"],
                                          "verbs": ["get", "list"]}]}],
             "roles": [], "clusterrolebindings": [],
             "rolebindings": [{"metadata": {"name": "b", "namespace": "demo"},
                               "roleRef": {"kind": "ClusterRole", "name": "view"},
                               "subjects": [{"kind": "ServiceAccount", "name": "ci"}]}]}
    objects = lambda plural: rules[plural]  # noqa: E731
    assert authorize(objects, sa, Attributes("list", "pods", namespace="demo"))
    assert authorize(objects, sa, Attributes("get", "pods", namespace="demo", subresource="log"))
    assert not authorize(objects, sa, Attributes("list", "pods", namespace="other"))
    assert not authorize(objects, sa, Attributes("delete", "pods", namespace="demo"))
    assert authorize(objects, sa, Attributes("get", path="/version"))
    assert authorize(objects, UserInfo("x", ("system:masters",)), Attributes("delete", "nodes"))
    assert rule_allows({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "resourceNames": ["a"]},
                       Attributes("get", "secrets", name="b")) is False
