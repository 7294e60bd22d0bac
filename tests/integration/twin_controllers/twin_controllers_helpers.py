"""Helpers for the workload controller tests: a real Store on an asyncio loop, 3 nodes."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from twin.clock import Clock
from twin.controllers import WorkloadControllers
from twin.faults import Faults
from twin.runtime import Runtime
from twin.store import Store

NODES = [("set-hog", "10.0.0.2", "10.42.0.0/24", True),
         ("fast-skunk", "10.0.0.4", "10.42.1.0/24", False),
         ("fast-heron", "10.0.0.7", "10.42.2.0/24", False)]


def node_obj(name: str, ip: str, cidr: str, server: bool, ready: str = "True") -> dict:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if server:
        labels["node-role.kubernetes.io/control-plane"] = "true"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [ready_condition(ready)]}}


def ready_condition(status: str) -> dict:
    if status == "True":
        return {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status"}
    return {"type": "Ready", "status": status, "reason": "KubeletNotReady",
            "message": "container runtime network not ready: NetworkReady=false "
                       "reason:NetworkPluginNotReady message:Network plugin returns error: "
                       "cni plugin not initialized"}


class Env:
    """A running store + controllers, with small helpers."""

    def __init__(self, store: Store, rt: Runtime, wc: WorkloadControllers) -> None:
        self.store, self.rt, self.wc = store, rt, wc

    def rtype(self, plural: str, group: str = "") -> Any:
        return next(t for t in self.store.resource_types() if t.key == (group, plural))

    def pods(self, ns: str = "default", selector: str | None = None) -> list[dict]:
        return self.store.list(self.rtype("pods"), ns, label_selector=selector).items

    def get(self, plural: str, ns: str | None, name: str, group: str = "") -> dict | None:
        return self.store.try_get(self.rtype(plural, group), ns, name)

    def set_node_ready(self, name: str, status: str) -> None:
        def fn(n: dict) -> None:
            conds = [c for c in n["status"].get("conditions", []) if c["type"] != "Ready"]
            n["status"]["conditions"] = conds + [ready_condition(status)]
        self.store.mutate(self.rtype("nodes"), None, name, fn, subresource="status")

    async def until(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            v = pred()
            if v:
                return v
            if loop.time() > end:
                raise AssertionError(f"timed out waiting for {what or pred}")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, speed: float = 0.01, nodes=NODES,
                  setup: Callable[[Store], None] | None = None) -> AsyncIterator[Env]:
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    for n in nodes:
        store.create(node_obj(*n))
    if setup is not None:
        setup(store)
    rt = Runtime(state_dir=tmp_path, clock=Clock(speed=speed), faults=Faults(), store=store)
    wc = WorkloadControllers()
    await rt.start_all([wc])
    try:
        yield Env(store, rt, wc)
    finally:
        await rt.stop_all()


def deployment(name: str, replicas: int, image: str = "nginx:1.27", ns: str = "default",
               **spec: Any) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}},
                     **spec}}


def run(coro: Any) -> Any:
    return asyncio.run(coro)
