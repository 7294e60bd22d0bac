"""kubectl explain, --validate=strict and invalid objects against the twin's API server.

The schemas are the published ones of the Kubernetes release the twin claims; objects a
real server refuses are refused with the real codes (422 Invalid with causes, 400 for
strict decoding and field selectors a resource does not support).
"""
from __future__ import annotations

import json

import pytest

from test_twin_api_kubectl import kubectl
from twin_api_helpers import APPLICATION_CRD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_explain_pod_spec_containers(kubectl_bin, api, kube_env):
    out = kubectl(kubectl_bin, api, kube_env, "explain", "pod.spec.containers").stdout
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "FIELD: containers <[]Container>" in out
    assert "image\t<string>" in out and "name\t<string> -required-" in out


def test_explain_recursive_deployment_and_a_crd(kubectl_bin, api, kube_env):
    out = kubectl(kubectl_bin, api, kube_env, "explain", "deployments.spec.strategy",
                  "--recursive").stdout
    assert "rollingUpdate\t<RollingUpdateDeployment>" in out and "maxSurge\t<string>" in out   # IntOrString is a string schema in v3
    api.call(lambda: api.rt.store.create(json.loads(json.dumps(APPLICATION_CRD)))
             if api.rt.store.lookup("argoproj.io", "v1alpha1", "applications") is None else None)
    out = kubectl(kubectl_bin, api, kube_env, "explain", "applications").stdout
    assert "KIND:       Application" in out and "GROUP:      argoproj.io" in out
    assert "metadata\t<ObjectMeta>" in out


POD_WITHOUT_IMAGE = """
apiVersion: v1
kind: Pod
metadata: {name: no-image, namespace: demo}
spec:
  containers: [{name: main}]
"""

POD_WITH_TYPO = """
apiVersion: v1
kind: Pod
metadata: {name: typo, namespace: demo}
spec:
  containers: [{name: main, image: busybox:1.36, imagePullPolicyy: Always}]
"""


def test_a_pod_without_an_image_is_invalid(kubectl_bin, api, kube_env, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_WITHOUT_IMAGE)
    p = kubectl(kubectl_bin, api, kube_env, "apply", "-f", str(f), check=False)
    assert p.returncode == 1
    assert 'The Pod "no-image" is invalid: spec.containers[0].image: Required value' in p.stderr
    store = api.rt.store
    assert api.call(lambda: store.try_get(store.lookup("", "v1", "pods"), "demo", "no-image")) is None


def test_invalid_object_status_has_causes(api):
    import requests
    r = requests.post(f"{api.url}/api/v1/namespaces/demo/pods", verify=str(api.ca_path),
                      headers={"Authorization": f"Bearer {api.token}"}, timeout=30,
                      json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                            "spec": {"containers": [{"name": "a"}, {"image": "b"}]}})
    assert r.status_code == 422
    body = r.json()
    assert (body["reason"], body["details"]["kind"], body["details"]["name"]) == ("Invalid", "Pod", "x")
    assert body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"},
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[1].name"}]


def test_unknown_field_strict_is_refused_and_warn_drops_it(kubectl_bin, api, kube_env, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_WITH_TYPO)
    p = kubectl(kubectl_bin, api, kube_env, "create", "--validate=strict", "-f", str(f), check=False)
    assert p.returncode == 1
    assert 'strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"' in p.stderr
    p = kubectl(kubectl_bin, api, kube_env, "create", "--validate=warn", "-f", str(f))
    assert 'unknown field "spec.containers[0].imagePullPolicyy"' in p.stderr   # the Warning header
    store = api.rt.store
    pod = api.call(lambda: store.get(store.lookup("", "v1", "pods"), "demo", "typo"))
    assert "imagePullPolicyy" not in pod["spec"]["containers"][0]


def test_field_selectors_unknown_label_and_trailing_comma(kubectl_bin, api, kube_env):
    p = kubectl(kubectl_bin, api, kube_env, "get", "pods", "-A", "--field-selector=spec.foo=bar",
                check=False)
    assert p.returncode == 1 and "field label not supported: spec.foo" in p.stderr
    out = kubectl(kubectl_bin, api, kube_env, "get", "pods", "-n", "demo", "-o", "name",
                  "--field-selector=spec.nodeName=fast-heron,").stdout.split()
    assert sorted(out) == ["pod/web-02", "pod/web-05", "pod/web-08", "pod/web-11"]
