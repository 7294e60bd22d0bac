"""The real helm 4 against the twin's API server: release storage in protobuf Secrets,
server-side apply, watches for --wait, uninstall."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from kubernetes import client, config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHART = Path(__file__).parent / "chart-demo"


def helm(bin_: str, env: dict, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    p = subprocess.run([bin_, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p


class StatusWriter(threading.Thread):
    """Stands in for the workload controllers: reports every Deployment and DaemonSet of a
    namespace as fully rolled out, through the /status subresource as a controller would."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.ns = namespace
        self.stop = threading.Event()

    def run(self) -> None:
        apps = client.AppsV1Api(self.api)
        while not self.stop.wait(0.2):
            for d in apps.list_namespaced_deployment(self.ns).items:
                n = d.spec.replicas
                apps.patch_namespaced_deployment_status(d.metadata.name, self.ns, {"status": {
                    "observedGeneration": d.metadata.generation, "replicas": n, "updatedReplicas": n,
                    "readyReplicas": n, "availableReplicas": n,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}})
            for ds in apps.list_namespaced_daemon_set(self.ns).items:
                apps.patch_namespaced_daemon_set_status(ds.metadata.name, self.ns, {"status": {
                    "observedGeneration": ds.metadata.generation, "desiredNumberScheduled": 3,
                    "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3,
                    "numberAvailable": 3, "numberMisscheduled": 0}})


def test_helm_install_upgrade_list_status_uninstall(api, helm_bin, kube_env):
    before = api.server.protobuf_bodies
    out = helm(helm_bin, kube_env, "install", "demo", str(CHART), "-n", "demo").stdout
    assert "STATUS: deployed" in out
    # helm stores the release as a Secret sent in protobuf: the server decoded it.
    assert api.server.protobuf_bodies > before
    helm(helm_bin, kube_env, "upgrade", "demo", str(CHART), "-n", "demo", "--set", "message=one")
    helm(helm_bin, kube_env, "upgrade", "demo", str(CHART), "-n", "demo", "--reuse-values",
         "--set", "replicas=3")
    values = json.loads(helm(helm_bin, kube_env, "get", "values", "demo", "-n", "demo", "-o", "json").stdout)
    assert values == {"message": "one", "replicas": 3}
    releases = json.loads(helm(helm_bin, kube_env, "list", "-A", "-o", "json").stdout)
    demo = next(r for r in releases if r["name"] == "demo")
    assert (demo["namespace"], demo["revision"], demo["status"], demo["chart"]) == \
        ("demo", "3", "deployed", "demo-0.1.0")
    status = helm(helm_bin, kube_env, "status", "demo", "-n", "demo").stdout
    assert "REVISION: 3" in status and "STATUS: deployed" in status
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=str(api.kubeconfig)))
    apps = client.AppsV1Api(v1.api_client)
    assert v1.read_namespaced_config_map("demo-config", "demo").data == {"message": "one"}
    assert apps.read_namespaced_deployment("demo-web", "demo").spec.replicas == 3
    assert apps.read_namespaced_daemon_set("demo-agent", "demo").spec.template.spec.tolerations
    svc = v1.read_namespaced_service("demo-web", "demo")
    assert svc.spec.cluster_ip.startswith("10.43.")
    secrets = v1.list_namespaced_secret("demo", label_selector="owner=helm,name=demo").items
    assert sorted(s.metadata.labels["version"] for s in secrets) == ["1", "2", "3"]
    assert all(s.type == "helm.sh/release.v1" for s in secrets)
    out = helm(helm_bin, kube_env, "uninstall", "demo", "-n", "demo").stdout
    assert "uninstalled" in out
    assert not v1.list_namespaced_config_map("demo", label_selector="app.kubernetes.io/instance=demo").items
    assert not apps.list_namespaced_deployment("demo").items
    assert not v1.list_namespaced_secret("demo", label_selector="owner=helm").items
    assert json.loads(helm(helm_bin, kube_env, "list", "-A", "-o", "json").stdout) == []


def test_helm_wait_sees_rolled_out_workloads(api, helm_bin, kube_env):
    writer = StatusWriter(api.kubeconfig, "default")
    writer.start()
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(api.kubeconfig)))

    def rolled_out() -> tuple:
        d = apps.read_namespaced_deployment("waited-web", "default")
        return (d.metadata.generation, d.spec.replicas, d.status.observed_generation, d.status.ready_replicas)

    try:
        # helm returns (rc 0, well before its timeout fails it) once it has seen the rollout
        # of what it just wrote: the status it waited on is of this generation
        out = helm(helm_bin, kube_env, "install", "waited", str(CHART), "-n", "default", "--wait",
                   "--timeout", "60s").stdout
        assert "STATUS: deployed" in out
        gen, replicas, observed, ready = rolled_out()
        assert observed == gen and ready == replicas == 2
        helm(helm_bin, kube_env, "upgrade", "waited", str(CHART), "-n", "default", "--wait",
             "--reuse-values", "--set", "replicas=1", "--timeout", "60s")
        gen2, replicas, observed, ready = rolled_out()
        assert gen2 > gen and observed == gen2 and ready == replicas == 1
    finally:
        writer.stop.set()
        writer.join(5)
    helm(helm_bin, kube_env, "uninstall", "waited", "-n", "default", "--wait", "--timeout", "60s")


def test_helm_wait_times_out_when_nothing_rolls_out(api, helm_bin, kube_env):
    p = helm(helm_bin, kube_env, "install", "stuck", str(CHART), "-n", "default", "--wait",
             "--timeout", "4s", check=False)
    assert p.returncode != 0
    helm(helm_bin, kube_env, "uninstall", "stuck", "-n", "default")
