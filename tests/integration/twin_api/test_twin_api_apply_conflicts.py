"""Server-side apply with several field managers: conflicts, --force-conflicts, managedFields."""
from __future__ import annotations

import json

import pytest
import requests

from test_twin_api_kubectl import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CM = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: owned, namespace: demo}}
data: {{mode: "{mode}", level: "{level}"}}
"""


def _managers(api, name: str) -> dict[str, dict]:
    store = api.rt.store
    cm = api.call(lambda: store.get(store.lookup("", "v1", "configmaps"), "demo", name))
    return {(e["manager"], e["operation"]): e for e in cm["metadata"]["managedFields"]}


def test_second_manager_conflicts_then_forces(kubectl_bin, api, kube_env, tmp_path):
    f = tmp_path / "cm.yaml"
    f.write_text(CM.format(mode="a", level="1"))
    kubectl(kubectl_bin, api, kube_env, "apply", "--server-side", "--field-manager=team-a", "-f", str(f))
    f.write_text(CM.format(mode="b", level="1"))
    p = kubectl(kubectl_bin, api, kube_env, "apply", "--server-side", "--field-manager=team-b",
                "-f", str(f), check=False)
    assert p.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "team-a": .data.mode' in p.stderr
    assert _managers(api, "owned").keys() == {("team-a", "Apply")}
    # Same value for level: shared, not a conflict. --force-conflicts takes .data.mode.
    kubectl(kubectl_bin, api, kube_env, "apply", "--server-side", "--field-manager=team-b",
            "--force-conflicts", "-f", str(f))
    m = _managers(api, "owned")
    assert m[("team-b", "Apply")]["fieldsV1"] == {"f:data": {"f:level": {}, "f:mode": {}}}
    assert m[("team-a", "Apply")]["fieldsV1"] == {"f:data": {"f:level": {}}}
    out = json.loads(kubectl(kubectl_bin, api, kube_env, "get", "cm", "owned", "-n", "demo",
                             "-o", "json", "--show-managed-fields").stdout)
    assert out["data"] == {"mode": "b", "level": "1"}


def test_update_managers_and_conflict_status(kubectl_bin, api, kube_env):
    kubectl(kubectl_bin, api, kube_env, "create", "configmap", "edited", "-n", "demo",
            "--from-literal=mode=a")
    kubectl(kubectl_bin, api, kube_env, "patch", "cm", "edited", "-n", "demo",
            "-p", '{"data":{"mode":"c"}}')
    m = _managers(api, "edited")
    assert m[("kubectl-patch", "Update")]["fieldsV1"] == {"f:data": {"f:mode": {}}}
    assert ("kubectl-create", "Update") not in m   # it owned only data.mode: nothing left
    r = requests.patch(f"{api.url}/api/v1/namespaces/demo/configmaps/edited",
                       params={"fieldManager": "helm", "force": "false", "fieldValidation": "Strict"},
                       headers={"Authorization": f"Bearer {api.token}",
                                "Content-Type": "application/apply-patch+yaml"},
                       data=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "edited"}, "data": {"mode": "d"}}),
                       verify=str(api.ca_path), timeout=30)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["reason"] == "Conflict"
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict",
                                          "message": 'conflict with "kubectl-patch" using v1',
                                          "field": ".data.mode"}]


def test_client_side_apply_keeps_working(kubectl_bin, api, kube_env, tmp_path):
    f = tmp_path / "cm.yaml"
    f.write_text(CM.format(mode="x", level="1").replace("owned", "csa"))
    assert "created" in kubectl(kubectl_bin, api, kube_env, "apply", "-f", str(f)).stdout
    f.write_text(CM.format(mode="y", level="1").replace("owned", "csa"))
    assert "configured" in kubectl(kubectl_bin, api, kube_env, "apply", "-f", str(f)).stdout
    store = api.rt.store
    cm = api.call(lambda: store.get(store.lookup("", "v1", "configmaps"), "demo", "csa"))
    assert cm["data"]["mode"] == "y"
    assert "kubectl.kubernetes.io/last-applied-configuration" in cm["metadata"]["annotations"]
    assert {e["manager"] for e in cm["metadata"]["managedFields"]} == {"kubectl-client-side-apply"}
