"""The real kubectl reads the controllers' status fields: `kubectl rollout status` works."""
from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import pytest

from twin.apiserver import APIServer
from twin.clock import Clock
from twin.controllers import WorkloadControllers
from twin.faults import Faults
from twin.runtime import Runtime
from twin.store import Store
from twin_controllers_helpers import NODES, node_obj, ready_condition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: "agent:1"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: pg, image: "postgres:16"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


@pytest.fixture
def twin_api(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="twin-ctrl-test", daemon=True)
    thread.start()
    rt = Runtime(state_dir=state, clock=Clock(speed=0.02), faults=Faults())

    async def start() -> None:
        rt.store = Store()
        for ns in ("default", "kube-system"):
            rt.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for n in NODES:
            rt.store.create(node_obj(*n))
        await rt.start_all([APIServer(), WorkloadControllers()])
    asyncio.run_coroutine_threadsafe(start(), loop).result(60)

    def call(fn):
        async def run():
            return fn(rt.store)
        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)
    yield state / "kubeconfig", call
    asyncio.run_coroutine_threadsafe(rt.stop_all(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_kubectl_rollout_status(twin_api, kubectl_bin, tool_env, tmp_path):
    env = dict(tool_env, KUBECONFIG=str(twin_api[0]))

    def kubectl(*args, stdin=None):
        r = subprocess.run([kubectl_bin, *args], env=env, input=stdin, capture_output=True,
                           text=True, timeout=90)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout

    kubectl("apply", "-f", "-", stdin=MANIFEST)
    out = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert 'deployment "web" successfully rolled out' in out
    out = kubectl("-n", "kube-system", "rollout", "status", "daemonset/agent", "--timeout=60s")
    assert 'daemon set "agent" successfully rolled out' in out
    out = kubectl("rollout", "status", "statefulset/db", "--timeout=60s")
    assert "partitioned roll out complete" in out or "roll out complete" in out

    kubectl("set", "image", "deployment/web", "web=nginx:1.28")
    out = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in out
    images = kubectl("get", "pods", "-l", "app=web", "-o",
                     "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}").split()
    assert images == ["nginx:1.28"] * 3
    # undo reads the ReplicaSets' revision annotations: back to revision 1's template
    kubectl("rollout", "undo", "deployment/web")
    out = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in out
    images = kubectl("get", "pods", "-l", "app=web", "-o",
                     "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}").split()
    assert images == ["nginx:1.27"] * 3
    rev = kubectl("get", "deployment", "web", "-o",
                  "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
    assert rev == "3"
    assert len(kubectl("get", "rs", "-l", "app=web", "-o", "name").split()) == 2
    kubectl("-n", "kube-system", "rollout", "restart", "daemonset/agent")
    out = kubectl("-n", "kube-system", "rollout", "status", "daemonset/agent", "--timeout=60s")
    assert "successfully rolled out" in out
    kubectl("rollout", "restart", "statefulset/db")
    out = kubectl("rollout", "status", "statefulset/db", "--timeout=60s")
    assert "roll out complete" in out
    wide = kubectl("get", "pods", "-A", "-o", "wide")
    assert wide.count("Running") == 3 + 3 + 2, wide
    history = kubectl("rollout", "history", "deployment/web")
    assert "2" in history


CHART_FILES = {
    "Chart.yaml": "apiVersion: v2\nname: waitdemo\nversion: 0.1.0\n",
    "values.yaml": "replicas: 2\ntag: '1'\n",
    "templates/workloads.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-web}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}-web}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}-web}}
    spec: {containers: [{name: web, image: "web:{{ .Values.tag }}"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: {{ .Release.Name }}-agent}
spec:
  selector: {matchLabels: {app: {{ .Release.Name }}-agent}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}-agent}}
    spec: {containers: [{name: agent, image: "agent:{{ .Values.tag }}"}]}
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}-web}
spec:
  selector: {app: {{ .Release.Name }}-web}
  ports: [{port: 80}]
""",
}


def test_helm_wait_with_controllers(twin_api, helm_bin, tool_env, tmp_path):
    chart = tmp_path / "chart"
    for rel, text in CHART_FILES.items():
        (chart / rel).parent.mkdir(parents=True, exist_ok=True)
        (chart / rel).write_text(text)
    kubeconfig, call = twin_api
    env = dict(tool_env, KUBECONFIG=str(kubeconfig))

    def helm(*args, check=True):
        r = subprocess.run([helm_bin, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 or not check, f"helm {' '.join(args)}: {r.stderr}"
        return r

    helm("install", "w", str(chart), "-n", "default", "--wait", "--timeout", "60s")
    helm("upgrade", "w", str(chart), "-n", "default", "--wait", "--reuse-values",
         "--set", "tag=2", "--set", "replicas=3", "--timeout", "60s")
    assert "deployed" in helm("status", "w", "-n", "default").stdout
    helm("uninstall", "w", "-n", "default", "--wait", "--timeout", "60s")

    # With every node NotReady nothing can start: --wait must time out, as on a cluster.
    def not_ready(store):
        nodes = next(t for t in store.resource_types() if t.plural == "nodes")
        for n in NODES:
            store.mutate(nodes, None, n[0], lambda o: o["status"].__setitem__(
                "conditions", [ready_condition("False")]), subresource="status")
    call(not_ready)
    r = helm("install", "x", str(chart), "-n", "default", "--wait", "--timeout", "5s", check=False)
    assert r.returncode != 0
    helm("uninstall", "x", "-n", "default")
