"""The rollback removes what ``k3s-killall.sh`` would: the portmap plugin's ``CNI-*`` chains
and kube-router's ipsets (issue #12).

Before the migration the cluster has a NetworkPolicy (kube-router keeps an ipset per
selector) and a pod with a ``hostPort`` (flannel's portmap plugin adds ``CNI-HOSTPORT-*``
and a ``CNI-DN-*`` chain for its sandbox). Both outlive the CNI swap: k3s cleans nothing up.
The rollback removes them with k3s stopped, so that after it the node has only the chains
of the pod's new flannel sandbox, and the ipsets kube-router builds again.
"""
from __future__ import annotations

import json
import re

import pytest

from test_verify_rollback import run, statuses

from runbook import params as params_mod
from runbook.cluster import Cluster
from runbook.nodes import Node

pytestmark = [pytest.mark.integration]

APP = {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": "hostport-demo", "namespace": "default"},
       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hostport-demo"}},
                "template": {"metadata": {"labels": {"app": "hostport-demo"}},
                             "spec": {"nodeSelector": {"kubernetes.io/hostname": "fast-skunk"},
                                      "containers": [{"name": "web", "image": "nginx:1.27",
                                                      "ports": [{"containerPort": 80, "hostPort": 8088}]}]}}}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "web-only", "namespace": "default"},
          "spec": {"podSelector": {"matchLabels": {"app": "hostport-demo"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}


def _dnat_targets(node: Node) -> list[str]:
    dump = node.run("iptables-save -t nat", sudo=True).check_output()
    return re.findall(r"^-A CNI-DN-\S+ .*-j DNAT --to-destination (\S+)$", dump, re.M)


def _pod_ip(c: Cluster) -> str:
    pods = [p for p in c.list("pods", "default", label_selector="app=hostport-demo")
            if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]
    return pods[0]["status"]["podIP"]


@pytest.mark.timeout(420)
def test_rollback_removes_stale_cni_chains_and_kube_router_ipsets(fresh_twin, tmp_path):
    twin = fresh_twin
    p = params_mod.load(twin.params_path)
    c = Cluster.from_params(p)
    c.create("networkpolicies", POLICY, "default")
    c.create("deployments", APP, "default")
    c.wait_for(lambda: (bool(c.list("pods", "default", label_selector="app=hostport-demo")) and
                        bool(_pod_ip_or_none(c)), ["pod"]), timeout=60, what="hostport pod", interval=0.5)
    node = next(n for n in Node.from_params(p) if n.name == "fast-skunk")
    ip_before = _pod_ip(c)
    assert f"{ip_before}:80" in _dnat_targets(node)
    sets = node.run("ipset list -n", sudo=True).check_output().split()
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in sets), sets

    res = run(twin, "preflight,reconfigure,install,verify", tmp_path, execute=True, run_id="ka",
              proceed_despite_deferral=True)
    assert set(statuses(res).values()) == {"passed"}, res.failed and res.failed.error
    assert f"{ip_before}:80" in _dnat_targets(node)          # k3s cleans nothing up
    rb = run(twin, "rollback", tmp_path, execute=True, run_id="ka")
    assert statuses(rb) == {"rollback": "passed"}, rb.phases[0].error

    doc = json.loads((rb.run_dir / "journal.json").read_text())
    [e] = [e for e in doc["entries"] if e["step"] == "remove-cni-chains-ipsets" and e["node"] == "fast-skunk"]
    assert e["status"] == "done" and e["result"]["chains_removed"] > 0
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in e["result"]["ipsets_destroyed"])
    # only the new flannel sandbox's DNAT is left; kube-router built its sets again
    ip_after = _pod_ip(c)
    assert _dnat_targets(node) == [f"{ip_after}:80"]
    sets = node.run("ipset list -n", sudo=True).check_output().split()
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in sets), sets


def _pod_ip_or_none(c: Cluster) -> str | None:
    try:
        return _pod_ip(c)
    except IndexError:
        return None
