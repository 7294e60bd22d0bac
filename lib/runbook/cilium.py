"""Cilium's state through the Kubernetes API, and which pods it does not manage yet.

``status()`` is the equivalent of ``cilium status`` read from the API: the agent and
envoy DaemonSets, the operator, hubble-relay and hubble-ui Deployments, the
``cilium-config`` ConfigMap, and "Cluster Pods: X/Y managed by Cilium" where Y counts
non-hostNetwork pods that are Running or Pending and X those with a CiliumEndpoint.

Why restart pods: a pod keeps the network of the CNI that created its sandbox. After
the swap, every pod started under flannel keeps running but is no longer reachable:
a "no pod is not Running" check passes while the data path is broken (defect 6).
:func:`restart_candidates` names those pods (hostNetwork pods never had a sandbox and
are not among them); :mod:`runbook.pods` decides from each pod's owner which may be
deleted and restarts them in batches.

``cilium status --wait`` proves no data path (defect 7): the verify phase probes
ingress hosts and LoadBalancer IPs as well.

Example:
    >>> st = cilium.status(c)                      # doctest: +SKIP
    >>> st.managed, st.total                       # doctest: +SKIP
    (111, 111)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from .cluster import Cluster, pod_ready
from .errors import GateFailed, RunbookError
from .fleet import Fleet
from .pods import pod_problem  # noqa: F401 - re-exported: cilium.pod_problem
from .presentation import frame_html
from .watches import Changes, log_wait

COMPONENTS = [("DaemonSet", "cilium"), ("DaemonSet", "cilium-envoy"),
              ("Deployment", "cilium-operator"), ("Deployment", "hubble-relay"),
              ("Deployment", "hubble-ui")]


@dataclass
class Component:
    kind: str
    name: str
    desired: int
    ready: int
    present: bool

    @property
    def ok(self) -> bool:
        return self.present and self.desired > 0 and self.ready >= self.desired


@dataclass
class CiliumStatus:
    components: list[Component]
    config: dict[str, str]
    crds_registered: bool
    managed: int
    total: int
    unmanaged: list[dict] = field(default_factory=list)
    agent_problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Every component present and Ready (what ``cilium status --wait`` waits for)."""
        return all(c.ok for c in self.components)

    @property
    def kube_proxy_replacement(self) -> bool:
        return str(self.config.get("kube-proxy-replacement", "false")).lower() == "true"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"component": f"{c.kind}/{c.name}", "desired": c.desired, "ready": c.ready,
                              "ok": c.ok if c.present else "absent"} for c in self.components])

    def summary(self) -> dict[str, Any]:
        return {"ready": self.ready, "managed": self.managed, "total": self.total,
                "unmanaged": len(self.unmanaged), "kube_proxy_replacement": self.kube_proxy_replacement,
                "crds_registered": self.crds_registered}

    def _repr_html_(self) -> str:
        head = (f"<p><b>Cilium {'READY' if self.ready else 'NOT READY'}</b> · Cluster Pods: "
                f"{self.managed}/{self.total} managed by Cilium · KubeProxyReplacement: "
                f"{'True' if self.kube_proxy_replacement else 'False'}</p>")
        probs = "".join(f"<li>{p}</li>" for p in self.agent_problems[:20])
        return head + frame_html(self.table()) + (f"<ul>{probs}</ul>" if probs else "")


def _component(cluster: Cluster, kind: str, name: str, namespace: str) -> Component:
    resource = "daemonsets" if kind == "DaemonSet" else "deployments"
    obj = cluster.get(resource, name, namespace)
    if obj is None:
        return Component(kind, name, 0, 0, False)
    st = obj.get("status") or {}
    if kind == "DaemonSet":
        return Component(kind, name, int(st.get("desiredNumberScheduled") or 0),
                         int(st.get("numberReady") or 0), True)
    return Component(kind, name, int((obj.get("spec") or {}).get("replicas", 1) or 0),
                     int(st.get("readyReplicas") or 0), True)


def _candidates(pods: list[dict]) -> list[dict]:
    """Pods that need a Cilium endpoint: non-hostNetwork, Running or Pending, not terminating.

    One definition for the counts and the restart plan, with or without the cilium.io
    CRDs: a terminating pod is already going away, so it is neither counted nor deleted again.
    """
    return [p for p in pods if not (p.get("spec") or {}).get("hostNetwork")
            and (p.get("status") or {}).get("phase") in ("Running", "Pending")
            and not p["metadata"].get("deletionTimestamp")]


def unmanaged_pods(cluster: Cluster, pods: list[dict] | None = None) -> tuple[int, int, list[dict]]:
    """(managed, total, unmanaged pods): non-hostNetwork Running/Pending pods vs CiliumEndpoints."""
    pods = pods if pods is not None else cluster.list("pods")
    candidates = _candidates(pods)
    ceps = {(e["metadata"].get("namespace"), e["metadata"]["name"]) for e in cluster.list("ciliumendpoints")}
    unmanaged = [p for p in candidates if (p["metadata"].get("namespace"), p["metadata"]["name"]) not in ceps]
    return len(candidates) - len(unmanaged), len(candidates), unmanaged


def status(cluster: Cluster, namespace: str = "kube-system") -> CiliumStatus:
    """Cilium's state from the API (no CLI needed)."""
    comps = [_component(cluster, k, n, namespace) for k, n in COMPONENTS]
    cm = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/cilium-config", ok_missing=True)
    crds = cluster.has_resource("ciliumendpoints")
    pods = cluster.list("pods")
    if crds:
        managed, total, unmanaged = unmanaged_pods(cluster, pods)
    else:
        candidates = _candidates(pods)
        managed, total, unmanaged = 0, len(candidates), candidates
    agents = [p for p in pods if (p["metadata"].get("namespace") == namespace and
                                  (p["metadata"].get("labels") or {}).get("k8s-app") in ("cilium", "cilium-envoy")
                                  or (p["metadata"].get("labels") or {}).get("io.cilium/app") == "operator")]
    problems = [pod_problem(p) for p in agents if not pod_ready(p)]
    return CiliumStatus(components=comps, config=(cm or {}).get("data") or {}, crds_registered=crds,
                        managed=managed, total=total, unmanaged=unmanaged, agent_problems=problems)


def wait_ready(cluster: Cluster, *, namespace: str = "kube-system", timeout: float = 300,
               progress: Callable[[str], None] | None = None) -> CiliumStatus:
    """Wait until every Cilium component is Ready (``cilium status --wait``).

    Raises:
        GateFailed: on timeout, listing each unready agent pod with its reason.
    """
    t0 = time.monotonic()
    # re-checked at each change of the namespace's pods, DaemonSets or Deployments
    # (every second at the latest), as `cilium status --wait` follows them
    with Changes(cluster, [("pods", namespace), ("daemonsets", namespace),
                           ("deployments", namespace)]) as changes:
        st = _wait_ready(cluster, namespace, timeout, progress, t0, changes)
    log_wait(cluster, "Cilium components Ready", time.monotonic() - t0, ok=True, timeout=timeout,
             events=changes.events)
    return st


def _wait_ready(cluster: Cluster, namespace: str, timeout: float,
                progress: Callable[[str], None] | None, t0: float, changes: Changes) -> CiliumStatus:
    last = None
    while True:
        st = status(cluster, namespace)
        if st.ready:
            return st
        line = ", ".join(f"{c.name} {c.ready}/{c.desired}" for c in st.components if not c.ok)
        if progress and line != last:
            progress(f"waiting for Cilium: {line}")
            last = line
        if time.monotonic() - t0 > timeout:
            raise GateFailed(f"Cilium components Ready within {timeout:.0f}s",
                             details=[f"{c.kind}/{c.name}: {c.ready}/{c.desired} ready" +
                                      ("" if c.present else " (absent)") for c in st.components if not c.ok]
                             + st.agent_problems,
                             hint="read the reasons above: 'address already in use' means flannel.1 still "
                                  "exists on that node; 'unable to reach the API server' means "
                                  "k8sServiceHost/Port are wrong; ImagePullBackOff means the node cannot "
                                  "pull the images. The rollback notebook restores flannel.")
        changes.wait(min(1.0, max(0.0, timeout - (time.monotonic() - t0)) + 0.01))


def kpr_evidence(cluster: Cluster, fleet_nodes: list[Any], namespace: str = "kube-system", *,
                 parallel: int = 20) -> pd.DataFrame:
    """Kube-proxy replacement evidence: the config flag and each node's KUBE-SVC chains.

    On k3s there is no kube-proxy DaemonSet to look for (defect 2): kube-proxy runs
    inside the k3s process, so the proof is the nodes' iptables, read ``parallel``
    nodes at a time (``limits.parallel_reads``).
    """
    cm = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/cilium-config", ok_missing=True)
    flag = ((cm or {}).get("data") or {}).get("kube-proxy-replacement", "absent")
    res = Fleet(fleet_nodes, parallel_reads=parallel).read(
        lambda n: n.iptables_chains(), description="read iptables (kube-proxy replacement)")
    res.raise_for_failures()
    return pd.DataFrame([{"node": o.node, "kube-proxy-replacement": flag,
                          "KUBE-SVC chains": _count(o.value, "KUBE-SVC"),
                          "KUBE-ROUTER chains": _count(o.value, "KUBE-ROUTER"),
                          "CILIUM chains": _count(o.value, "CILIUM")} for o in res.outcomes])


def _count(summary: Any, prefix: str) -> int:
    chains = getattr(summary, "chains", None)
    if isinstance(chains, dict):
        return int(chains.get(prefix, 0))
    if hasattr(summary, "chain_count"):
        return int(summary.chain_count(prefix))
    return int(getattr(summary, prefix.lower().replace("-", "_"), 0))


def restart_candidates(cluster: Cluster) -> list[dict]:
    """The pods the install restarts so they come up under Cilium: non-hostNetwork,
    Running or Pending, not terminating, without a CiliumEndpoint (all of them before
    the cilium.io CRDs exist). Which of them may be deleted is :mod:`runbook.pods`' call."""
    if cluster.has_resource("ciliumendpoints"):
        _, _, unmanaged = unmanaged_pods(cluster)
        return unmanaged
    return _candidates(cluster.list("pods"))


def cli_status(cli_path: str | None, kubeconfig: str, *, timeout: float = 60) -> dict | str:
    """``cilium status`` through the CLI when one is configured (JSON), else a note saying so."""
    if not cli_path:
        return "cilium CLI not configured (cilium.cli_path): status read from the API instead"
    binary = shutil.which(cli_path) or cli_path
    try:
        p = subprocess.run([binary, "status", "--interactive=false", "-o", "json"],
                           capture_output=True, text=True, timeout=timeout,
                           env={"KUBECONFIG": kubeconfig, "PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunbookError(f"cilium CLI failed: {e}") from e
    if p.returncode != 0:
        raise RunbookError(f"cilium status failed ({p.returncode}): {p.stderr.strip()[:500]}")
    try:
        return json.loads(p.stdout)
    except ValueError:
        return p.stdout
