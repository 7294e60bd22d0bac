"""The whole twin, started as `runbook twin up` starts it, answers real clients like a cluster.

Issue 2's "done when": kubectl and the Python client against the minicloud fixture.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def kubectl(kubectl_bin: str, twin, env: dict, *args: str, check: bool = True):
    return run_tool([kubectl_bin, "--kubeconfig", str(twin.kubeconfig), *args], env, check=check)


def test_get_pods_wide_lists_fixture_pods(shared_twin, kubectl_bin, tool_env):
    out = kubectl(kubectl_bin, shared_twin, tool_env, "get", "pods", "-A", "-o", "wide").stdout
    lines = out.strip().splitlines()
    header = lines[0].split()
    for col in ("STATUS", "IP", "NODE"):
        assert col in header
    rows = lines[1:]
    assert 105 <= len(rows) <= 115
    assert all(" Running " in r for r in rows)
    nodes = {r.split()[header.index("NODE")] for r in rows}
    assert nodes == {"set-hog", "fast-skunk", "fast-heron"}


def test_services_show_metallb_external_ip(shared_twin, kubectl_bin, tool_env):
    out = kubectl(kubectl_bin, shared_twin, tool_env, "get", "svc", "-A").stdout
    row = next(r for r in out.splitlines() if "ingress-nginx-controller " in r)
    assert "LoadBalancer" in row and "10.0.0.200" in row


def test_field_selector_not_running_is_empty(shared_twin, kubectl_bin, tool_env):
    p = kubectl(kubectl_bin, shared_twin, tool_env, "get", "pods", "-A",
                "--field-selector=status.phase!=Running")
    assert "No resources found" in p.stderr + p.stdout


def test_no_kube_proxy_daemonset_on_k3s(shared_twin, kubectl_bin, tool_env):
    p = kubectl(kubectl_bin, shared_twin, tool_env, "get", "ds", "-n", "kube-system", "-l", "k8s-app=kube-proxy")
    assert "No resources found" in p.stderr + p.stdout


def test_no_cilium_crds_before_install(shared_twin, kubectl_bin, tool_env):
    p = kubectl(kubectl_bin, shared_twin, tool_env, "get", "ciliumnodes", check=False)
    assert p.returncode != 0
    assert "the server doesn't have a resource type" in p.stderr


def test_python_client_pages_all_pods(shared_twin):
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(shared_twin.kubeconfig)))
    names, token, pages = [], None, 0
    while True:
        resp = api.list_pod_for_all_namespaces(limit=25, _continue=token)
        names += [p.metadata.name for p in resp.items]
        pages += 1
        token = resp.metadata._continue
        if not token:
            break
    assert pages >= 5
    assert len(names) == len(set(names))
    everything = api.list_pod_for_all_namespaces()
    assert sorted(names) == sorted(p.metadata.name for p in everything.items)


def test_argocd_patch_removes_automated(fresh_twin, kubectl_bin, tool_env):
    apps = yaml.safe_load(kubectl(kubectl_bin, fresh_twin, tool_env, "-n", "argocd", "get",
                                  "applications", "-o", "yaml").stdout)["items"]
    app = next(a for a in apps if (a["spec"].get("syncPolicy") or {}).get("automated") is not None)
    name = app["metadata"]["name"]
    kubectl(kubectl_bin, fresh_twin, tool_env, "-n", "argocd", "patch", "application", name,
            "--type", "merge", "-p", '{"spec":{"syncPolicy":{"automated":null}}}')
    after = yaml.safe_load(kubectl(kubectl_bin, fresh_twin, tool_env, "-n", "argocd", "get",
                                   "application", name, "-o", "yaml").stdout)
    assert "automated" not in (after["spec"].get("syncPolicy") or {})
    assert int(after["metadata"]["resourceVersion"]) > int(app["metadata"]["resourceVersion"])


def test_twin_up_cli_writes_ready_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "runbook.cli", "twin", "up", "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (state / "ready").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "twin did not become ready"
            time.sleep(0.2)
        assert (state / "kubeconfig").exists() and (state / "params.yaml").exists()
        assert os.stat(state / "kubeconfig").st_mode & 0o077 == 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "twin ready" in out and "apiserver:" in out and "twin stopped" in out
    assert Path(state / "ready").read_text().strip()
