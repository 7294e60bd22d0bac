"""The add-ons through a CNI swap, with the network and Cilium models running: pods the
old CNI created are "unmanaged" (Running and Ready, but no data path), and everything
that needs a data path notices: the ingress answers 503/502, MetalLB cannot assign, the
Velero server cannot take a backup. Restarting the pods brings each one back.

This is the twin's side of defect 6 of the original procedure ("the old pods were not
restarted, and the ingress checks fail")."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook import velero

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[3]
STANDIN_CHART = REPO / "lib" / "twin" / "charts" / "cilium"
VALUES = REPO / "params" / "cilium-values.yaml"
PODINFO = "podinfo.10.0.0.200.nip.io"
NODES = ("set-hog", "fast-skunk", "fast-heron")


def _components(rt: Any) -> list[Any]:
    from twin_addons_harness import addon_components
    from twin.controllers.cilium import CiliumModel
    from twin.controllers.network import NetworkModel

    base = addon_components(rt)
    # network + cilium right after the workload controllers, as they need the kubelet
    i = next(i for i, c in enumerate(base) if c.name == "workloads") + 1
    return base[:i] + [NetworkModel(), CiliumModel()] + base[i:]


@pytest.fixture
def swap_twin(tmp_path_factory: pytest.TempPathFactory):
    from twin_addons_harness import SPEED, AddonTwin
    from twin.api import Twin

    t = Twin(tmp_path_factory.mktemp("twin"), speed=SPEED, components=_components).start()
    yield AddonTwin(t)
    t.stop()


def _render(helm: str, env: dict[str, str]) -> list[dict]:
    p = subprocess.run([helm, "template", "cilium", str(STANDIN_CHART), "-n", "kube-system",
                        "-f", str(VALUES), "--set", "tunnelPort=8473"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _install(at: Any, docs: list[dict]) -> None:
    """Create the rendered objects in the store, as ``helm install`` would."""
    store = at.twin.rt.store
    for d in docs:
        md = dict(d.get("metadata") or {})
        t = at.twin.call(store.lookup_kind, d["apiVersion"], d["kind"])
        assert t is not None, f"no type for {d['apiVersion']} {d['kind']}"
        if t.namespaced:
            md.setdefault("namespace", "kube-system")
        at.twin.call(store.create, dict(d, metadata=md), rtype=t)


def _flannel_off(at: Any) -> None:
    """``flannel-backend: none`` on the server, every node's k3s restarted: containerd's
    generated config then names /etc/cni/net.d, where Cilium writes its conflist (next to
    a running flannel, containerd never reads it)."""
    nodes = at.twin.rt.nodes
    server = nodes["set-hog"]
    cfg = at.twin.call(server.read_text, "/etc/rancher/k3s/config.yaml")
    at.twin.call(server.write, "/etc/rancher/k3s/config.yaml", cfg + "flannel-backend: none\n")
    for n in NODES:
        at.twin.call(nodes[n].k3s_restart)


def _delete(at: Any, ns: str, selector: str) -> set[str]:
    """Delete the pods; returns their uids (operators recreate some under the same name)."""
    pods = at.cluster.list("pods", ns, label_selector=selector)
    for p in pods:
        at.cluster.delete("pods", p["metadata"]["name"], ns)
    return {p["metadata"]["uid"] for p in pods}


def _restart(at: Any, ns: str, selector: str) -> None:
    old = _delete(at, ns, selector)
    at.until(lambda: (ps := at.ready_pods(ns, selector)) and all(p["metadata"]["uid"] not in old for p in ps),
             timeout=20, what=f"{ns} {selector} restarted")


def test_unrestarted_pods_break_ingress_metallb_and_velero(swap_twin, helm_bin, tool_env) -> None:
    at = swap_twin
    net = at.twin.rt.component("network")
    assert at.https(PODINFO).status == 200
    _flannel_off(at)
    _install(at, _render(helm_bin, tool_env))
    at.until(lambda: all(at.twin.call(net.working_cni, n) == "cilium" for n in NODES),
             timeout=30, what="cilium is the working CNI everywhere")

    # The old controller and backend pods still look healthy ...
    ctrl = at.ready_pods("ingress-nginx", "app.kubernetes.io/component=controller")
    assert ctrl and all(p["status"]["phase"] == "Running" for p in ctrl)
    # ... but the ingress has no reachable controller.
    r = at.until(lambda: (a := at.https(PODINFO)).status == 503 and a, timeout=30, what="503")
    assert "unmanaged" in r.headers["x-twin-reason"]

    # MetalLB's controller is unmanaged too: a new LoadBalancer service stays pending.
    at.cluster.create("services", {"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "late", "namespace": "default"},
                                   "spec": {"type": "LoadBalancer", "selector": {"app": "late"},
                                            "ports": [{"port": 80}]}}, "default")
    at.cluster_sleep(10)
    assert at.lb_ip("default", "late") is None
    # Velero's server cannot work either: the backup stays New.
    velero.create_backup(at.cluster, "during-swap")
    at.cluster_sleep(10)
    assert (at.cluster.get("backups", "during-swap", "velero").get("status") or {}).get("phase", "New") == "New"

    # Restart the controller: the backend is still unmanaged -> 502.
    _restart(at, "ingress-nginx", "app.kubernetes.io/component=controller")
    r = at.until(lambda: (a := at.https(PODINFO)).status == 502 and a, what="502")
    assert "podinfo" in r.headers["x-twin-reason"]
    # Restart the backend. Its data volume is ReadWriteMany: the new pods mount it over NFS
    # from Longhorn's share-manager pod, which is unmanaged too, so they wait in
    # ContainerCreating. Longhorn's instance managers (engines and replicas) are unmanaged
    # as well: they are restarted first, then the share managers (longhorn-manager
    # recreates both).
    old = _delete(at, "podinfo", "app.kubernetes.io/name=podinfo")

    def waiting_for_nfs() -> list[dict]:
        ps = [p for p in at.cluster.list("pods", "podinfo", label_selector="app.kubernetes.io/name=podinfo")
              if p["metadata"]["uid"] not in old]
        msgs = [((c.get("state") or {}).get("waiting") or {}).get("message", "")
                for p in ps for c in p["status"].get("containerStatuses") or ()]
        return ps if ps and all("mount.nfs: Connection timed out" in m for m in msgs) and msgs else []
    at.until(waiting_for_nfs, timeout=20, what="new podinfo pods waiting for their NFS share")
    assert not at.ready_pods("podinfo", "app.kubernetes.io/name=podinfo")
    _restart(at, "longhorn-system", "longhorn.io/component=instance-manager")
    _restart(at, "longhorn-system", "longhorn.io/component=share-manager")
    # 200, served by a pod cilium manages.
    at.until(lambda: (ps := at.ready_pods("podinfo", "app.kubernetes.io/name=podinfo"))
             and all(p["metadata"]["uid"] not in old for p in ps), timeout=20, what="podinfo back")
    r = at.until(lambda: (a := at.https(PODINFO)).status == 200 and a, what="200")
    pod_ns, pod_name = r.headers["x-twin-backend-pod"].split("/")
    pod = at.cluster.get("pods", pod_name, pod_ns)
    assert at.twin.call(net.pod_reachable, pod) == (True, "managed by cilium")

    _restart(at, "metallb-system", "app.kubernetes.io/component=controller,app.kubernetes.io/name=metallb")
    assert at.until(lambda: at.lb_ip("default", "late")) == "10.0.0.202"
    _restart(at, "velero", "name=velero")
    assert velero.wait(at.cluster, "Backup", "during-swap", timeout=30, interval=0.05).phase == "Completed"
