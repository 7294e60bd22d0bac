"""auth can-i / whoami, create token, TokenReview and RBAC for service account tokens."""
from __future__ import annotations

import requests
import pytest

from test_twin_api_kubectl import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _as_token(api, token: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, api.url + path, headers={"Authorization": f"Bearer {token}"},
                            verify=str(api.ca_path), timeout=30, **kw)


def test_admin_can_do_everything(kubectl_bin, api, kube_env):
    assert kubectl(kubectl_bin, api, kube_env, "auth", "can-i", "delete", "nodes").stdout.strip() == "yes"
    assert kubectl(kubectl_bin, api, kube_env, "auth", "can-i", "*", "*").stdout.strip() == "yes"
    out = kubectl(kubectl_bin, api, kube_env, "auth", "whoami").stdout
    assert "system:admin" in out and "system:masters" in out


def test_service_account_token_follows_rbac(kubectl_bin, api, kube_env):
    kubectl(kubectl_bin, api, kube_env, "create", "sa", "auditor", "-n", "demo")
    token = kubectl(kubectl_bin, api, kube_env, "create", "token", "auditor", "-n", "demo",
                    "--duration=20m").stdout.strip()
    assert token.count(".") == 2 and token.startswith("eyJ")
    who = _as_token(api, token, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert who.status_code == 201
    assert who.json()["status"]["userInfo"]["username"] == "system:serviceaccount:demo:auditor"
    r = _as_token(api, token, "GET", "/api/v1/namespaces/demo/pods")
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    assert 'User "system:serviceaccount:demo:auditor" cannot list resource "pods"' in r.json()["message"]
    assert _as_token(api, token, "GET", "/api/v1").status_code == 200   # discovery is public
    p = kubectl(kubectl_bin, api, kube_env, "auth", "can-i", "list", "pods", "-n", "demo",
                "--as=system:serviceaccount:demo:auditor", check=False)
    assert (p.returncode, p.stdout.strip()) == (1, "no")
    kubectl(kubectl_bin, api, kube_env, "create", "role", "pod-reader", "-n", "demo",
            "--verb=get,list", "--resource=pods")
    kubectl(kubectl_bin, api, kube_env, "create", "rolebinding", "auditor", "-n", "demo",
            "--role=pod-reader", "--serviceaccount=demo:auditor")
    assert _as_token(api, token, "GET", "/api/v1/namespaces/demo/pods").status_code == 200
    assert _as_token(api, token, "GET", "/api/v1/namespaces/kube-system/pods").status_code == 403
    assert _as_token(api, token, "DELETE", "/api/v1/namespaces/demo/pods/web-00").status_code == 403
    p = kubectl(kubectl_bin, api, kube_env, "exec", "--as=system:serviceaccount:demo:auditor",
                "-n", "demo", "web-01", "--", "echo", check=False)
    assert p.returncode != 0 and 'cannot create resource "pods/exec"' in p.stderr
    review = requests.post(api.url + "/apis/authentication.k8s.io/v1/tokenreviews",
                           headers={"Authorization": f"Bearer {api.token}"}, verify=str(api.ca_path),
                           json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                 "spec": {"token": token}}, timeout=30).json()
    assert review["status"]["authenticated"] is True
    assert "system:serviceaccounts:demo" in review["status"]["user"]["groups"]
    assert "token" not in review["spec"]
    # The token dies with its service account, as a bound token does.
    kubectl(kubectl_bin, api, kube_env, "delete", "sa", "auditor", "-n", "demo")
    assert _as_token(api, token, "GET", "/api/v1/namespaces/demo/pods").status_code == 401


def test_token_request_limits_and_review_verbs(kubectl_bin, api, kube_env):
    kubectl(kubectl_bin, api, kube_env, "create", "sa", "short", "-n", "demo")
    p = kubectl(kubectl_bin, api, kube_env, "create", "token", "short", "-n", "demo",
                "--duration=1m", check=False)
    assert p.returncode == 1 and "may not specify a duration less than 10 minutes" in p.stderr
    p = kubectl(kubectl_bin, api, kube_env, "create", "token", "nobody", "-n", "demo", check=False)
    assert p.returncode == 1 and 'serviceaccounts "nobody" not found' in p.stderr
    r = requests.get(api.url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                     headers={"Authorization": f"Bearer {api.token}"}, verify=str(api.ca_path), timeout=30)
    assert r.status_code == 405
