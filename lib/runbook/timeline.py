"""Sample node readiness and the pods' network during a run, for the report's timeline.

The runner starts a :class:`Sampler` next to the notebooks. It polls the API once a
second (without retries, so an API outage shows as a gap rather than a stall) and
appends one JSON line per sample to ``<run_dir>/timeline.jsonl``::

    {"t": 1764133920.1, "api": true, "nodes_ready": 3, "nodes": 3,
     "pods_ready": 98, "pods_live": 61, "pods": 105}

``pods`` counts non-hostNetwork pods: those are the ones a CNI swap takes down.
``pods_ready`` is the kubelet's view; it stays high through a CNI swap, because a pod
whose network is gone keeps running. ``pods_live`` is what the report plots: the pods
whose network is live, judged from the cluster's own state (:func:`live_network`).

Example:
    >>> node = {"metadata": {"name": "n1"}, "status": {"conditions": [
    ...     {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T05:00:00Z"}]}}
    >>> pod = {"metadata": {"namespace": "web", "name": "a"}, "spec": {"nodeName": "n1"},
    ...        "status": {"startTime": "2026-11-26T05:01:00Z",
    ...                   "conditions": [{"type": "Ready", "status": "True"}]}}
    >>> live_network([node], [pod], [])            # flannel in force, pod started after: live
    (1, 1)
    >>> agent = {"metadata": {"namespace": "kube-system", "name": "cilium-x",
    ...          "labels": {"k8s-app": "cilium"}},
    ...          "spec": {"nodeName": "n1", "hostNetwork": True},
    ...          "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    >>> live_network([node], [pod, agent], [])      # Cilium in force, no CiliumEndpoint: not live
    (0, 1)
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .cluster import Cluster, node_ready, pod_ready
from .outage import ts

log = logging.getLogger("runbook.timeline")

__all__ = ["live_network", "classify", "sample", "Sampler", "load", "CILIUM_AGENT_LABEL"]

#: the label of Cilium's agent pods (the chart's DaemonSet)
CILIUM_AGENT_LABEL = ("k8s-app", "cilium")


def _condition(obj: dict, kind: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return {}


def _sandbox_time(pod: dict) -> float | None:
    """When the pod's current sandbox was made: the kubelet's PodReadyToStartContainers
    condition (Kubernetes 1.29+), else the pod's start time."""
    return ts(_condition(pod, "PodReadyToStartContainers").get("lastTransitionTime")) or \
        ts((pod.get("status") or {}).get("startTime"))


def _is_agent(pod: dict, namespace: str | None) -> bool:
    md = pod.get("metadata") or {}
    key, value = CILIUM_AGENT_LABEL
    return (md.get("labels") or {}).get(key) == value and (namespace is None or md.get("namespace") == namespace)


def live_network(nodes: list[dict], pods: list[dict], endpoints: list[dict], *,
                 cilium_namespace: str | None = "kube-system") -> tuple[int, int]:
    """(pods with a live network, non-hostNetwork pods), from the cluster's own state
    (:func:`classify` says which pod is which)."""
    live = classify(nodes, pods, endpoints, cilium_namespace=cilium_namespace)
    return sum(live.values()), len(live)


def classify(nodes: list[dict], pods: list[dict], endpoints: list[dict], *,
             cilium_namespace: str | None = "kube-system") -> dict[str, bool]:
    """``namespace/name`` -> whether the pod has a live network, for every counted pod.

    A non-hostNetwork pod counts as live when it is Ready, its node is Ready, and the CNI
    in force on that node manages it:

    * a node whose Cilium agent pod is Ready runs Cilium: the pod must have a
      CiliumEndpoint, which the agent creates when it gives the pod its network (a pod
      still on its flannel sandbox has none: Running, but unreachable);
    * any other node runs flannel (k3s' own CNI): the pod must have no CiliumEndpoint
      (one means its sandbox came from Cilium, which no longer serves it), and its
      sandbox must be newer than the node's last return to Ready. During a run a node
      is NotReady only while its CNI is gone, and a sandbox older than that hangs off a
      bridge that was taken down (reconfigure deletes ``cni0``).

    A Succeeded pod (a finished Job) needs no network and is not counted.
    """
    by_node = {(n.get("metadata") or {}).get("name"): n for n in nodes}
    cilium_nodes = {(p.get("spec") or {}).get("nodeName") for p in pods
                    if _is_agent(p, cilium_namespace) and pod_ready(p)}
    ceps = {((e.get("metadata") or {}).get("namespace"), (e.get("metadata") or {}).get("name"))
            for e in endpoints}
    out: dict[str, bool] = {}
    for p in pods:
        spec, md = p.get("spec") or {}, p.get("metadata") or {}
        if spec.get("hostNetwork") or (p.get("status") or {}).get("phase") == "Succeeded":
            continue
        key = f"{md.get('namespace')}/{md.get('name')}"
        node = by_node.get(spec.get("nodeName"))
        if node is None or not node_ready(node) or not pod_ready(p) or md.get("deletionTimestamp"):
            out[key] = False
            continue
        has_cep = (md.get("namespace"), md.get("name")) in ceps
        if spec.get("nodeName") in cilium_nodes:
            out[key] = has_cep
            continue
        back = ts(_condition(node, "Ready").get("lastTransitionTime"))
        made = _sandbox_time(p)
        out[key] = (not has_cep) and (back is None or made is None or made >= back)
    return out


def sample(c: Cluster, *, cilium_namespace: str = "kube-system") -> dict[str, Any]:
    """One reading of the cluster (raises ClusterError when the API is away)."""
    nodes = c.list("nodes")
    pods = c.list("pods")
    endpoints = c.list("ciliumendpoints")   # [] while the cilium.io CRDs do not exist
    live, total = live_network(nodes, pods, endpoints, cilium_namespace=cilium_namespace)
    counted = [p for p in pods if not (p.get("spec") or {}).get("hostNetwork")
               and (p.get("status") or {}).get("phase") != "Succeeded"]
    return {"t": time.time(), "api": True,
            "nodes": len(nodes), "nodes_ready": sum(node_ready(n) for n in nodes),
            "pods": total, "pods_ready": sum(pod_ready(p) for p in counted), "pods_live": live}


class Sampler:
    """Background sampler writing ``timeline.jsonl`` into the run folder."""

    def __init__(self, params: Any, run_dir: Path, interval: float = 1.0) -> None:
        self.params = params
        self.path = Path(run_dir) / "timeline.jsonl"
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        try:
            c = Cluster.from_params(self.params)
            namespace = self.params.cilium.namespace
        except Exception as e:  # noqa: BLE001 - bad params are reported by the notebooks themselves
            log.warning("no timeline for this run (the report has no readiness plot): "
                        "cannot build an API client from the params: %s: %s", type(e).__name__, e)
            return
        c.retry_for, c.request_timeout = 0.0, 5.0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # run folder: owner-only
        with os.fdopen(fd, "a") as f:
            while not self._stop.is_set():
                try:
                    row = sample(c, cilium_namespace=namespace)
                except Exception:  # noqa: BLE001 - recorded: an API outage is a gap in the plot
                    row = {"t": time.time(), "api": False}
                f.write(json.dumps(row) + "\n")
                f.flush()
                self._stop.wait(self.interval)


def load(run_dir: Path) -> list[dict[str, Any]]:
    """The samples of ``timeline.jsonl`` (a line cut by a killed run is skipped)."""
    path = Path(run_dir) / "timeline.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a killed run
    return rows
