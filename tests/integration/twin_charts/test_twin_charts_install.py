"""helm install/upgrade of the cilium chart from the twin's repository into the twin's
API server: every object the chart renders is accepted, and the helm-generated TLS
Secrets are re-used on upgrade through `lookup` (keys compared by hash, never shown)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from twin_charts_harness import ApiAndRepo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[3]
PHASE22_VALUES = REPO_ROOT / "tests" / "fixtures" / "cilium-values-phase22.yaml"
TLS_SECRETS = ("cilium-ca", "hubble-server-certs", "hubble-relay-client-certs")


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{Path(args[0]).name} {' '.join(args[1:3])} failed: {p.stderr}"
    return p


def key_fingerprints(kubectl: str, env: dict[str, str]) -> dict[str, str]:
    """sha256 of each TLS Secret's private key field: comparable without revealing keys."""
    out = run([kubectl, "get", "secret", "-n", "kube-system", *TLS_SECRETS, "-o", "yaml"], env).stdout
    return {s["metadata"]["name"]:
            hashlib.sha256((s["data"].get("ca.key") or s["data"]["tls.key"]).encode()).hexdigest()
            for s in yaml.safe_load(out)["items"]}


@pytest.fixture(params=["stand-in", "official"])
def twin(request, tmp_path):
    chart = None
    if request.param == "official":
        chart = str(request.getfixturevalue("cilium_chart"))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    t = ApiAndRepo(state, chart).start()
    yield t
    t.stop()


def test_install_and_upgrade_reuse_tls_secrets(twin, helm_bin, kubectl_bin, tool_env):
    env = dict(tool_env, KUBECONFIG=str(twin.kubeconfig))
    url = twin.rt.endpoints["charts"]
    run([helm_bin, "repo", "add", "twin", url], env)
    install = [helm_bin, "install", "cilium", "twin/cilium", "--version", "1.19.3",
               "-n", "kube-system", "-f", str(PHASE22_VALUES)]
    assert "STATUS: deployed" in run(install, env).stdout

    objs = run([kubectl_bin, "get", "ds,deploy,svc,cm,sa,role,rolebinding", "-n", "kube-system",
                "-o", "name"], env).stdout.split()
    for name in ("daemonset.apps/cilium", "daemonset.apps/cilium-envoy",
                 "deployment.apps/cilium-operator", "deployment.apps/hubble-relay",
                 "deployment.apps/hubble-ui", "configmap/cilium-config", "service/hubble-peer"):
        assert name in objs
    assert "namespace/cilium-secrets" in run([kubectl_bin, "get", "ns", "-o", "name"], env).stdout
    before = key_fingerprints(kubectl_bin, env)
    assert set(before) == set(TLS_SECRETS)

    run([helm_bin, "upgrade", "cilium", "twin/cilium", "--version", "1.19.3", "-n", "kube-system",
         "-f", str(PHASE22_VALUES), "--set", "tunnelPort=8473"], env)
    cfg = yaml.safe_load(run([kubectl_bin, "get", "cm", "-n", "kube-system", "cilium-config",
                              "-o", "yaml"], env).stdout)["data"]
    assert cfg["tunnel-port"] == "8473"
    assert key_fingerprints(kubectl_bin, env) == before  # lookup re-used them

    run([helm_bin, "uninstall", "cilium", "-n", "kube-system"], env)
    left = run([kubectl_bin, "get", "ds,deploy", "-n", "kube-system", "-o", "name"], env).stdout
    assert "cilium" not in left
