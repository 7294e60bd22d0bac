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
