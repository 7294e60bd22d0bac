"""A bare API server over real sockets: Runtime + Store + APIServer, nothing else.

The fixture runs the twin's event loop in a background thread (as ``twin.api.Twin``
does) and seeds a small cluster: three nodes, pods in several phases, a LoadBalancer
service, a DaemonSet. Tests touch the store only through :meth:`ApiHarness.call`, which
runs a function on the loop thread (the store is not thread-safe).
"""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from twin.apiserver import APIServer
from twin.clock import Clock
from twin.faults import Faults
from twin.runtime import Runtime
from twin.store import Store

NODES = [("set-hog", "10.0.0.2", True), ("fast-skunk", "10.0.0.4", False),
         ("fast-heron", "10.0.0.7", False)]


def _node(name: str, ip: str, server: bool) -> dict:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if server:
        labels.update({"node-role.kubernetes.io/control-plane": "true",
                       "node-role.kubernetes.io/master": "true"})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": "10.42.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1", "osImage": "Ubuntu 24.04.1 LTS",
                                    "kernelVersion": "6.8.0-49-generic",
                                    "containerRuntimeVersion": "containerd://1.7.23-k3s2"}}}


def _pod(ns: str, name: str, node: str, ip: str, phase: str = "Running", ready: bool = True,
         labels: dict | None = None, waiting: str | None = None) -> dict:
    state: dict = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if waiting:
        state = {"waiting": {"reason": waiting}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name.rsplit("-", 1)[0]}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1.36"}]},
            "status": {"phase": phase, "podIP": ip, "hostIP": "10.0.0.2",
                       "containerStatuses": [{"name": "main", "ready": ready, "restartCount": 0,
                                              "image": "busybox:1.36", "imageID": "",
                                              "state": state}]}}


def seed(store: Store) -> None:
    """The small cluster every test module starts from."""
    for ns in ("default", "kube-system", "argocd", "ingress-nginx", "demo"):
        store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for name, ip, server in NODES:
        store.create(_node(name, ip, server))
    store.create(_pod("kube-system", "coredns-7b98449c4-abcde", "set-hog", "10.42.0.5",
                      labels={"k8s-app": "kube-dns"}))
    store.create(_pod("kube-system", "metrics-server-5985cbc9d7-xyz12", "fast-skunk", "10.42.1.7",
                      labels={"k8s-app": "metrics-server"}))
    store.create(_pod("ingress-nginx", "ingress-nginx-controller-6d8f-q2w3e", "fast-heron", "10.42.2.9",
                      labels={"app.kubernetes.io/name": "ingress-nginx"}))
    store.create(_pod("default", "stuck-0", "fast-skunk", "", phase="Pending", ready=False,
                      waiting="ContainerCreating"))
    for i in range(12):
        store.create(_pod("demo", f"web-{i:02d}", NODES[i % 3][0], f"10.42.{i % 3}.{20 + i}",
                          labels={"app": "web", "tier": "front" if i % 2 else "back"}))
    store.create({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
                  "spec": {"type": "LoadBalancer", "clusterIP": "10.43.12.34",
                           "selector": {"app.kubernetes.io/name": "ingress-nginx"},
                           "ports": [{"port": 80, "nodePort": 31080, "protocol": "TCP"},
                                     {"port": 443, "nodePort": 31443, "protocol": "TCP"}]},
                  "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}})
    store.create({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "kubernetes", "namespace": "default"},
                  "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1",
                           "ports": [{"port": 443, "protocol": "TCP"}]}})
    store.create({"apiVersion": "apps/v1", "kind": "DaemonSet",
                  "metadata": {"name": "svclb-ingress-nginx", "namespace": "kube-system",
                               "labels": {"app": "svclb-ingress-nginx"}},
                  "spec": {"selector": {"matchLabels": {"app": "svclb"}},
                           "template": {"metadata": {"labels": {"app": "svclb"}},
                                        "spec": {"containers": [{"name": "lb", "image": "klipper-lb"}]}}},
                  "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                             "numberReady": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}})


@dataclass
class ApiHarness:
    """A running API server and the handles tests need."""

    rt: Runtime
    server: APIServer
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def ca_path(self) -> Path:
        return self.rt.pki.ca_cert_path

    def call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        """Run ``fn()`` on the twin's loop thread and return its result."""
        async def _run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(timeout)

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the twin's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run_async(self, coro: Any) -> Any:
        """Start a coroutine on the twin's loop; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


def start_harness(state_dir: Path, *, seed_fn: Callable[[Store], None] = seed,
                  bookmark_interval: float = 1.0) -> tuple[ApiHarness, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="twin-api-test", daemon=True)
    thread.start()
    rt = Runtime(state_dir=state_dir, clock=Clock(), faults=Faults())

    async def _start() -> APIServer:
        rt.store = Store()
        seed_fn(rt.store)
        srv = APIServer(bookmark_interval=bookmark_interval)
        await rt.start_all([srv])
        return srv

    srv = asyncio.run_coroutine_threadsafe(_start(), loop).result(60)
    return ApiHarness(rt, srv, loop, state_dir / "kubeconfig"), thread


def stop_harness(h: ApiHarness, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(h.rt.stop_all(), h.loop).result(30)
    h.loop.call_soon_threadsafe(h.loop.stop)
    thread.join(10)
    h.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    """A seeded API server for a test module; yields an :class:`ApiHarness`."""
    state = tmp_path_factory.mktemp("twin-api")
    os.chmod(state, 0o700)
    h, thread = start_harness(state)
    yield h
    stop_harness(h, thread)


@pytest.fixture
def kube_env(tmp_path: Path, api: ApiHarness) -> dict[str, str]:
    """Environment for kubectl/helm: a private HOME and our kubeconfig only."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"),
               CLOUDSDK_CONFIG=str(home / ".gcloud"), KUBECONFIG=str(api.kubeconfig))
    return env
