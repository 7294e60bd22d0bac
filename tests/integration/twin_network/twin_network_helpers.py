"""Helpers for the network/Cilium model tests: a socket-less twin (node models, workload
controllers, network and Cilium models on one loop thread) and the stand-in chart's
objects rendered by the real ``helm template``."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from twin.api import Twin
from twin.controllers import WorkloadControllers
from twin.controllers.cilium import CiliumModel
from twin.controllers.network import NetworkModel
from twin.node import NodesComponent

REPO = Path(__file__).resolve().parents[3]
STANDIN_CHART = REPO / "lib" / "twin" / "charts" / "cilium"
PHASE22_VALUES = REPO / "params" / "cilium-values.yaml"
SERVER, AGENT1, AGENT2 = "set-hog", "fast-skunk", "fast-heron"
NODES = (SERVER, AGENT1, AGENT2)
SPEED = 0.02     # 1 cluster second = 20 ms: 300 s eviction = 6 s wall


def model_components(kernels: dict[str, str] | None = None) -> Callable[[Any], list[Any]]:
    """The socket-less component list (kernels: node -> ``uname -r`` to override)."""
    def build(rt: Any) -> list[Any]:
        for spec in rt.fixture.nodes:
            if kernels and spec.name in kernels:
                spec.kernel = kernels[spec.name]
        return [NodesComponent(), WorkloadControllers(), NetworkModel(), CiliumModel()]
    return build


def render_cilium(helm: str, env: dict[str, str], chart: Path | None = None, **sets: Any) -> list[dict]:
    """The objects the stand-in chart (or ``chart``, e.g. the official archive) renders
    with the Phase 22 values and ``sets``."""
    args = [helm, "template", "cilium", str(chart or STANDIN_CHART), "-n", "kube-system",
            "-f", str(PHASE22_VALUES)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


class Net:
    """A running socket-less twin with helpers that run on its loop thread."""

    def __init__(self, twin: Twin) -> None:
        self.t = twin
        self.rt = twin.rt

    # -- loop access ---------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.t.call(fn, *args, **kw)

    def until(self, pred: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Poll ``pred`` (in the test's thread: use the helpers, which hop onto the loop)
        until it is truthy (wall seconds)."""
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
            time.sleep(0.02)

    @property
    def net(self) -> NetworkModel:
        return self.rt.component("network")

    @property
    def cil(self) -> CiliumModel:
        return self.rt.component("cilium")

    # -- nodes ---------------------------------------------------------------------
    def node(self, name: str) -> Any:
        return self.rt.nodes[name]

    def sh(self, node: str, command: str) -> Any:
        res = self.call(self.node(node).exec, command, timeout=60)
        assert res.rc == 0, f"{node}: {command}: rc={res.rc} {res.stderr!r}"
        return res

    def add_config(self, node: str, text: str) -> None:
        nm = self.node(node)
        cfg = self.call(nm.read_text, "/etc/rancher/k3s/config.yaml")
        self.call(nm.write, "/etc/rancher/k3s/config.yaml", cfg.rstrip("\n") + "\n" + text)

    def restart(self, *nodes: str) -> None:
        for n in nodes:
            unit = "k3s" if self.node(n).role == "server" else "k3s-agent"
            self.sh(n, f"sudo systemctl restart {unit}")

    def interfaces(self, node: str) -> set[str]:
        return self.call(lambda: set(self.node(node).interfaces))

    def iptables(self, node: str) -> str:
        return self.call(self.node(node).iptables_save)

    # -- store ---------------------------------------------------------------------
    def rtype(self, plural: str, group: str = "") -> Any:
        return self.call(lambda: next((t for t in self.rt.store.resource_types()
                                       if t.key == (group, plural)), None))

    def get(self, plural: str, ns: str | None, name: str, group: str = "") -> dict | None:
        t = self.rtype(plural, group)
        return None if t is None else self.call(self.rt.store.try_get, t, ns, name)

    def list(self, plural: str, ns: str | None = None, selector: str | None = None,
             group: str = "") -> list[dict]:
        t = self.rtype(plural, group)
        return self.call(lambda: self.rt.store.list(t, ns, label_selector=selector).items)

    def create(self, obj: dict) -> dict:
        return self.call(self.rt.store.create, obj)

    def delete(self, plural: str, ns: str | None, name: str, group: str = "") -> None:
        t = self.rtype(plural, group)
        self.call(self.rt.store.delete, t, ns, name)

    def apply(self, docs: list[dict]) -> None:
        """Create rendered chart objects, as ``helm install`` would (namespace defaulted)."""
        for d in docs:
            d = dict(d)
            md = dict(d.get("metadata") or {})
            t = self.call(self.rt.store.lookup_kind, d["apiVersion"], d["kind"])
            assert t is not None, f"no type for {d['apiVersion']} {d['kind']}"
            if t.namespaced:
                md.setdefault("namespace", "kube-system")
            d["metadata"] = md
            self.call(self.rt.store.create, d, rtype=t)

    def delete_release(self, docs: list[dict]) -> None:
        """Delete rendered objects, as ``helm uninstall`` does."""
        for d in reversed(docs):
            t = self.call(self.rt.store.lookup_kind, d["apiVersion"], d["kind"])
            ns = (d.get("metadata") or {}).get("namespace") or "kube-system"
            try:
                self.call(self.rt.store.delete, t, ns if t.namespaced else None, d["metadata"]["name"])
            except Exception as e:  # already gone (garbage-collected with its owner)
                assert "not found" in str(e), e

    # -- facts ---------------------------------------------------------------------
    def ready(self, node: str) -> tuple[str, str, str]:
        n = self.get("nodes", None, node) or {}
        for c in (n.get("status") or {}).get("conditions") or ():
            if c["type"] == "Ready":
                return (c["status"], c.get("reason", ""), c.get("message", ""))
        return ("", "", "")

    def agent_ready(self, node: str) -> bool:
        return self.call(self.cil.agent_ready, node)

    def cni(self, node: str) -> str | None:
        return self.call(self.net.working_cni, node)

    def reachable(self, pod: dict) -> tuple[bool, str]:
        return self.call(self.net.pod_reachable, pod)

    def now(self) -> float:
        """Cluster seconds of the twin's clock."""
        return self.rt.clock.cluster_now()

    def agent(self, node: str) -> Any:
        return self.call(self.cil.agent_status, node)

    def pods(self, ns: str, selector: str | None = None) -> list[dict]:
        return self.list("pods", ns, selector)


def deployment(name: str, replicas: int = 2, ns: str = "default", host_network: bool = False,
               node: str | None = None) -> dict:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "nginx:1.27"}]}
    if host_network:
        spec["hostNetwork"] = True
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def waiting(pod: dict) -> tuple[str | None, str | None]:
    """(reason, message) of the first waiting container (init containers first)."""
    st = pod.get("status") or {}
    for cs in list(st.get("initContainerStatuses") or ()) + list(st.get("containerStatuses") or ()):
        w = (cs.get("state") or {}).get("waiting")
        if w:
            return w.get("reason"), w.get("message")
    return None, None


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def sandbox(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get("twin.phase22.io/sandbox-cni")
