"""The operator's in-pod probes through the real ``kubectl exec`` (WebSocket transport)
on a whole minicloud twin: the exec transport (``twin.apiserver``) reaches the network
commands (``twin.podexec.net``), and what they answer is the network model's."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _kubectl(kubectl_bin, twin, env, *args, check=True):
    return run_tool([kubectl_bin, "--kubeconfig", str(twin.kubeconfig), *args], env, check=check)


def _running_pods(kubectl_bin, twin, env) -> list[dict]:
    doc = json.loads(_kubectl(kubectl_bin, twin, env, "get", "pods", "-A", "-o", "json").stdout)
    return [p for p in doc["items"] if p["status"].get("phase") == "Running"
            and not p["spec"].get("hostNetwork") and p["status"].get("podIP")]


def test_kubectl_exec_dns_and_cross_node_curl_answer_from_the_network_model(kubectl_bin, tool_env, shared_twin):
    pods = _running_pods(kubectl_bin, shared_twin, tool_env)
    by_node: dict[str, dict] = {}
    for p in pods:
        by_node.setdefault(p["spec"]["nodeName"], p)
    assert len(by_node) >= 2, sorted(by_node)
    (node_a, src), (node_b, dst) = sorted(by_node.items())[:2]
    where = ["-n", src["metadata"]["namespace"], src["metadata"]["name"],
             "-c", src["spec"]["containers"][0]["name"], "--"]

    dns = _kubectl(kubectl_bin, shared_twin, tool_env, "exec", *where, "nslookup", "kubernetes.default")
    assert "10.43.0.10" in dns.stdout and "10.43.0.1" in dns.stdout, dns.stdout

    # a TCP connect across nodes (flannel's VXLAN carries it): curl reaches the node-b pod's IP
    port = next((c["containerPort"] for c in dst["spec"]["containers"][0].get("ports") or []), 80)
    p = _kubectl(kubectl_bin, shared_twin, tool_env, "exec", *where, "curl", "-s", "-o", "/dev/null",
                 "-m", "2", "-w", "%{http_code}", f"http://{dst['status']['podIP']}:{port}/", check=False)
    assert (p.returncode, p.stdout) == (0, "200"), (node_a, node_b, p.returncode, p.stdout, p.stderr)


def test_cilium_cleanup_binary_exists_only_in_the_cilium_image(kubectl_bin, tool_env, shared_twin):
    pod = _running_pods(kubectl_bin, shared_twin, tool_env)[0]
    p = _kubectl(kubectl_bin, shared_twin, tool_env, "exec", "-n", pod["metadata"]["namespace"],
                 pod["metadata"]["name"], "-c", pod["spec"]["containers"][0]["name"], "--",
                 "cilium-dbg", "post-uninstall-cleanup", "--all-state", "-f", check=False)
    assert p.returncode == 1
    assert 'exec: "cilium-dbg": executable file not found in $PATH' in p.stderr, p.stderr
