"""`kubectl drain` against a PodDisruptionBudget: blocked while the budget is spent,
allowed once it permits (issue 10, row 1)."""
from __future__ import annotations

import json

import pytest

from twin_lifecycle_helpers import condition, start_twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: shop, namespace: shop}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: shop}}
"""


@pytest.fixture(scope="module")
def kube(kubectl_bin, helm_bin, tmp_path_factory):
    k = start_twin(tmp_path_factory, kubectl_bin, helm_bin)
    yield k
    k.twin.stop()


def _pdb_status(kube) -> dict:
    return kube.get("pdb", "shop", "-n", "shop").get("status") or {}


def test_drain_is_blocked_by_the_budget_then_allowed(kube):
    kube.kubectl("create", "namespace", "shop")
    kube.apply(APP)
    kube.kubectl("rollout", "status", "deployment/shop", "-n", "shop", "--timeout=60s")
    st = kube.until(lambda: (lambda s: s if s.get("currentHealthy") == 3 else None)(_pdb_status(kube)),
                    what="PDB status")
    pdb = kube.get("pdb", "shop", "-n", "shop")
    assert (st["desiredHealthy"], st["expectedPods"], st["disruptionsAllowed"]) == (3, 3, 0)
    assert st["observedGeneration"] == pdb["metadata"]["generation"]
    assert condition(pdb, "DisruptionAllowed")["status"] == "False"
    assert condition(pdb, "DisruptionAllowed")["reason"] == "InsufficientPods"
    row = kube.kubectl("get", "pdb", "shop", "-n", "shop").stdout.splitlines()[1].split()
    assert row[1:4] == ["3", "N/A", "0"]

    node = kube.get("pods", "-n", "shop")["items"][0]["spec"]["nodeName"]
    blocked = kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                           "--timeout=5s", check=False, timeout=60)
    assert blocked.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in blocked.stderr
    assert "global timeout reached: 5s" in blocked.stderr
    on_node = [p for p in kube.get("pods", "-n", "shop")["items"] if p["spec"]["nodeName"] == node]
    assert on_node and not any(p["metadata"].get("deletionTimestamp") for p in on_node)
    assert kube.get("node", node)["spec"].get("unschedulable") is True     # cordoned anyway

    # the budget allows one disruption: the drain goes through
    kube.kubectl("patch", "pdb", "shop", "-n", "shop", "--type=merge", "-p", '{"spec":{"minAvailable":2}}')
    kube.until(lambda: _pdb_status(kube).get("disruptionsAllowed") == 1, what="one disruption allowed")
    assert condition(kube.get("pdb", "shop", "-n", "shop"), "DisruptionAllowed")["reason"] == "SufficientPods"
    out = kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s",
                       timeout=120)
    assert "evicted" in out.stdout and f"node/{node} drained" in out.stdout
    kube.kubectl("rollout", "status", "deployment/shop", "-n", "shop", "--timeout=60s")
    pods = kube.get("pods", "-n", "shop")["items"]
    assert all(p["spec"]["nodeName"] != node for p in pods if not p["metadata"].get("deletionTimestamp"))
    # replacements run elsewhere: the budget is whole again
    kube.until(lambda: _pdb_status(kube).get("currentHealthy") == 3 and
               _pdb_status(kube).get("disruptionsAllowed") == 1, what="budget restored")
    kube.kubectl("uncordon", node)


def test_eviction_api_answers_429_with_the_budget_as_cause(kube):
    kube.kubectl("patch", "pdb", "shop", "-n", "shop", "--type=merge", "-p", '{"spec":{"minAvailable":3}}')
    kube.until(lambda: _pdb_status(kube).get("disruptionsAllowed") == 0, what="budget spent")
    pod = kube.get("pods", "-n", "shop")["items"][0]["metadata"]["name"]
    eviction = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                           "metadata": {"name": pod, "namespace": "shop"}})
    p = kube.kubectl("create", "--raw", f"/api/v1/namespaces/shop/pods/{pod}/eviction", "-f", "-",
                     check=False, input=eviction)
    assert p.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in p.stderr
    assert kube.get("pod", pod, "-n", "shop")["metadata"].get("deletionTimestamp") is None


def test_operator_drain_of_a_cordoned_node_with_daemonsets(kubectl_bin, helm_bin, tmp_path_factory):
    """As an operator runs it before moving a node (docs/node-by-node.md step 2): cordon,
    a drain that refuses DaemonSet pods and emptyDir data until told, then the drain
    with --ignore-daemonsets: everything else is evicted and comes back elsewhere, the
    DaemonSet pods stay on the node."""
    k = start_twin(tmp_path_factory, kubectl_bin, helm_bin)
    node = "fast-heron"
    try:
        def on_node() -> list[dict]:
            return [p for p in k.get("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]
                    if not p["metadata"].get("deletionTimestamp")]

        def ds_owned(p: dict) -> bool:
            return any(o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or ())

        before = on_node()
        daemons = {p["metadata"]["name"] for p in before if ds_owned(p)}
        others = [p for p in before if not ds_owned(p)]
        assert daemons and others
        assert "cordoned" in k.kubectl("cordon", node).stdout
        assert k.get("node", node)["spec"].get("unschedulable") is True
        refused = k.kubectl("drain", node, "--timeout=20s", check=False, timeout=60)
        assert refused.returncode != 0
        assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)" in refused.stderr
        assert not any(p["metadata"].get("deletionTimestamp") for p in
                       k.get("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"])

        out = k.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s",
                        timeout=200)
        assert f"node/{node} already cordoned" in out.stdout and f"node/{node} drained" in out.stdout
        assert "Warning: ignoring DaemonSet-managed Pods" in out.stderr
        left = k.until(lambda: (lambda ps: ps if all(ds_owned(p) for p in ps) else None)(on_node()),
                       what="only DaemonSet pods left on the node")
        assert {p["metadata"]["name"] for p in left} == daemons
        # The replacements of ReplicaSet and StatefulSet pods run on other nodes (an
        # operator-owned pod such as Longhorn's instance manager waits for the uncordon).
        for p in others:
            ns, owner = p["metadata"]["namespace"], (p["metadata"].get("ownerReferences") or [{}])[0]
            if owner.get("kind") not in ("ReplicaSet", "StatefulSet"):
                continue
            k.until(lambda ns=ns, owner=owner: any(
                q["spec"].get("nodeName") not in (None, node) and
                (q["metadata"].get("ownerReferences") or [{}])[0].get("name") == owner["name"]
                for q in k.get("pods", "-n", ns)["items"]), timeout=60,
                what=f"a replacement of {ns}/{p['metadata']['name']} on another node")
        assert "uncordoned" in k.kubectl("uncordon", node).stdout
    finally:
        k.twin.stop()
