"""The real kubectl (1.32) against the twin's API server."""
from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from twin_api_helpers import APPLICATION_CRD, application

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def kubectl(bin_: str, api, env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([bin_, "--kubeconfig", str(api.kubeconfig), *args], env=env,
                       capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p


def rows(out: str) -> list[list[str]]:
    """Split kubectl's table output on runs of 2+ spaces."""
    import re
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


def test_requests_without_the_token_get_401(api):
    ctx = ssl.create_default_context(cafile=str(api.ca_path))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(api.url + "/api/v1/pods", context=ctx, timeout=10)
    assert e.value.code == 401
    body = json.loads(e.value.read())
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
    req = urllib.request.Request(api.url + "/api/v1/pods", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert e.value.code == 401


def test_get_pods_wide_shows_status_ip_and_node(kubectl_bin, api, kube_env):
    out = kubectl(kubectl_bin, api, kube_env, "get", "pods", "-A", "-o", "wide").stdout
    table = rows(out)
    assert table[0][:7] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert "NODE" in table[0]
    by_name = {r[1]: dict(zip(table[0], r)) for r in table[1:]}
    coredns = by_name["coredns-7b98449c4-abcde"]
    assert (coredns["NAMESPACE"], coredns["READY"], coredns["STATUS"], coredns["IP"], coredns["NODE"]) == \
        ("kube-system", "1/1", "Running", "10.42.0.5", "set-hog")
    assert by_name["stuck-0"]["STATUS"] == "ContainerCreating"
    n_pods = api.call(lambda: api.rt.store.count(api.rt.store.lookup("", "v1", "pods")))
    assert len(by_name) == n_pods


def test_get_svc_shows_external_ip(kubectl_bin, api, kube_env):
    table = rows(kubectl(kubectl_bin, api, kube_env, "get", "svc", "-A").stdout)
    assert table[0] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    lb = next(r for r in table if r[1] == "ingress-nginx-controller")
    assert lb[2:6] == ["LoadBalancer", "10.43.12.34", "10.0.0.200", "80:31080/TCP,443:31443/TCP"]


def test_field_selector_phase_not_running(kubectl_bin, api, kube_env):
    table = rows(kubectl(kubectl_bin, api, kube_env, "get", "pods", "-A",
                         "--field-selector=status.phase!=Running").stdout)
    assert [r[1] for r in table[1:]] == ["stuck-0"]
    table = rows(kubectl(kubectl_bin, api, kube_env, "get", "pods", "-A",
                         "--field-selector=spec.nodeName=fast-heron,metadata.namespace=demo").stdout)
    assert {r[1] for r in table[1:]} == {"web-02", "web-05", "web-08", "web-11"}


def test_no_kube_proxy_daemonset(kubectl_bin, api, kube_env):
    p = kubectl(kubectl_bin, api, kube_env, "get", "ds", "-n", "kube-system", "-l", "k8s-app=kube-proxy")
    assert "No resources found" in p.stdout + p.stderr
    table = rows(kubectl(kubectl_bin, api, kube_env, "get", "ds", "-n", "kube-system").stdout)
    assert table[0][:4] == ["NAME", "DESIRED", "CURRENT", "READY"]


def test_label_selectors_with_set_operators(kubectl_bin, api, kube_env):
    out = kubectl(kubectl_bin, api, kube_env, "get", "pods", "-n", "demo", "-l",
                  "app=web,tier in (front),tier notin (back)", "-o", "name").stdout.split()
    assert sorted(out) == [f"pod/web-{i:02d}" for i in range(1, 12, 2)]


def test_nodes_wide_roles_and_internal_ip(kubectl_bin, api, kube_env):
    table = rows(kubectl(kubectl_bin, api, kube_env, "get", "nodes", "-o", "wide").stdout)
    by_name = {r[0]: dict(zip(table[0], r)) for r in table[1:]}
    assert by_name["set-hog"]["ROLES"] == "control-plane,master"
    assert by_name["fast-skunk"]["ROLES"] == "<none>"
    assert by_name["fast-heron"]["INTERNAL-IP"] == "10.0.0.7"
    assert by_name["set-hog"]["STATUS"] == "Ready"


def test_patch_application_removes_automated(kubectl_bin, api, kube_env, tmp_path):
    crd = tmp_path / "crd.json"
    crd.write_text(json.dumps(APPLICATION_CRD))
    kubectl(kubectl_bin, api, kube_env, "create", "-f", str(crd))
    app = tmp_path / "app.json"
    app.write_text(json.dumps(application("homer", automated={"prune": True, "selfHeal": True})))
    kubectl(kubectl_bin, api, kube_env, "create", "-f", str(app))
    before = json.loads(kubectl(kubectl_bin, api, kube_env, "-n", "argocd", "get", "application",
                                "homer", "-o", "json").stdout)
    assert before["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    kubectl(kubectl_bin, api, kube_env, "-n", "argocd", "patch", "application", "homer", "--type", "merge",
            "-p", '{"spec":{"syncPolicy":{"automated":null}}}')
    after = json.loads(kubectl(kubectl_bin, api, kube_env, "-n", "argocd", "get", "applications.argoproj.io",
                               "homer", "-o", "json").stdout)
    assert "automated" not in after["spec"]["syncPolicy"]
    assert after["spec"]["syncPolicy"]["syncOptions"] == ["CreateNamespace=true"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    # The CRD's printer columns show up in kubectl's table.
    table = rows(kubectl(kubectl_bin, api, kube_env, "-n", "argocd", "get", "app").stdout)
    assert table[0][:3] == ["NAME", "SYNC STATUS", "HEALTH STATUS"]
    assert table[1][:3] == ["homer", "Synced", "Healthy"]


def test_create_apply_and_delete_with_kubectl(kubectl_bin, api, kube_env, tmp_path):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kc", "namespace": "default"},
          "data": {"a": "1"}}
    f = tmp_path / "cm.json"
    f.write_text(json.dumps(cm))
    kubectl(kubectl_bin, api, kube_env, "apply", "--server-side", "-f", str(f))
    cm["data"] = {"a": "2"}
    f.write_text(json.dumps(cm))
    kubectl(kubectl_bin, api, kube_env, "apply", "--server-side", "-f", str(f))
    got = json.loads(kubectl(kubectl_bin, api, kube_env, "get", "cm", "kc", "-o", "json").stdout)
    assert got["data"] == {"a": "2"}
    p = kubectl(kubectl_bin, api, kube_env, "get", "cm", "nope", check=False)
    assert p.returncode != 0 and 'configmaps "nope" not found' in p.stderr
    kubectl(kubectl_bin, api, kube_env, "delete", "cm", "kc")
    p = kubectl(kubectl_bin, api, kube_env, "get", "cm", "kc", check=False)
    assert p.returncode != 0
