"""longhorn-manager's PodDisruptionBudgets on the instance managers, as an operator meets them.

A real Longhorn cluster refuses a drain the instance-manager pod of a node until
longhorn-manager removes that pod's PDB: only on a cordoned node, once no volume is
attached there, and (``node-drain-policy``, default ``block-if-contains-last-replica``)
once each replica there has a healthy, PDB-protected copy on another schedulable node.
The twin had no such PDB, so a drain there stopped replicas a real drain would have
waited for (twin/controllers/addons/longhorn_pdb.py).
"""
from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from runbook.errors import ClusterError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LH = "longhorn-system"


@pytest.fixture
def lh(addon_twin, kubectl_bin: str, tool_env: dict):
    at = addon_twin
    at.kubectl_bin = kubectl_bin
    at.env = dict(tool_env, KUBECONFIG=str(at.twin.kubeconfig))
    return at


def kubectl(at: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([at.kubectl_bin, *args], env=at.env, capture_output=True, text=True, timeout=timeout)


def pdbs(at: Any) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in at.cluster.list("poddisruptionbudgets", LH)}


def im_pod(at: Any, node: str) -> dict:
    return next(p for p in at.cluster.list("pods", LH)
                if (p["metadata"].get("labels") or {}).get("longhorn.io/component") == "instance-manager"
                and p["spec"].get("nodeName") == node)


def evict(at: Any, pod: dict) -> int:
    md = pod["metadata"]
    try:
        at.cluster.request("POST", f"/api/v1/namespaces/{LH}/pods/{md['name']}/eviction",
                           body={"apiVersion": "policy/v1", "kind": "Eviction",
                                 "metadata": {"name": md["name"], "namespace": LH}},
                           raise_status=frozenset({429}))
    except ClusterError as e:
        return e.status or 0
    return 201


def attached_node(at: Any) -> str:
    """A node with an attached volume's engine (what keeps its PDB while it runs)."""
    nodes = [v["status"].get("currentNodeID") for v in list(at.cluster.iter_collection("longhorn.io/v1beta2", "volumes", LH))
             if v["status"].get("state") == "attached"]
    return max(set(nodes), key=nodes.count)


def set_policy(at: Any, value: str) -> None:
    r = kubectl(at, "-n", LH, "patch", "settings.longhorn.io", "node-drain-policy", "--type=merge",
                "-p", json.dumps({"value": value}))
    assert r.returncode == 0, r.stderr


def test_every_instance_manager_has_a_pdb_and_a_drain_waits_for_its_volumes(lh):
    at = lh
    ims = {m["metadata"]["name"]: m for m in list(at.cluster.iter_collection("longhorn.io/v1beta2", "instancemanagers", LH))}
    got = at.until(lambda: (p := pdbs(at)) and set(p) >= set(ims) and p, timeout=10, what="instance-manager PDBs")
    for name, im in ims.items():
        spec = got[name]["spec"]
        assert spec["minAvailable"] == 1
        assert spec["selector"]["matchLabels"] == im["metadata"]["labels"]
    node = attached_node(at)
    pod = im_pod(at, node)
    at.until(lambda: pdbs(at)[pod["metadata"]["name"]].get("status", {}).get("expectedPods") == 1, timeout=10)
    assert evict(at, pod) == 429, "an instance manager is protected while its node is schedulable"

    # What an operator runs: the drain evicts the workload pods, is refused the instance
    # manager until its volumes detach and longhorn-manager drops the PDB, then evicts it.
    r = kubectl(at, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=150s",
                timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f'pods/"{pod["metadata"]["name"]}"' in out and "disruption budget" in out, out
    assert f'pod/{pod["metadata"]["name"]} evicted' in out, out
    left = pdbs(at)
    assert pod["metadata"]["name"] not in left
    assert set(left) == set(ims) - {pod["metadata"]["name"]}, "the other nodes keep theirs"
    assert not [v for v in list(at.cluster.iter_collection("longhorn.io/v1beta2", "volumes", LH))
                if v["status"].get("currentNodeID") == node and v["status"].get("state") == "attached"]

    kubectl(at, "uncordon", node)
    at.until(lambda: pod["metadata"]["name"] in pdbs(at), timeout=20,
             what="the PDB back once the instance manager runs on a schedulable node")


def test_drain_policy_decides_when_a_cordoned_node_loses_its_pdb(lh):
    at = lh
    node = attached_node(at)
    name = im_pod(at, node)["metadata"]["name"]
    at.until(lambda: name in pdbs(at), timeout=10)
    assert [r for r in at.cluster.iter_collection("longhorn.io/v1beta2", "replicas", LH)
            if r["spec"].get("nodeID") == node], "the node holds replicas"

    # block-for-eviction: Longhorn keeps the PDB while any replica is on the node, even
    # once the drain has moved every volume's user away (the twin does not evict replicas
    # itself as Longhorn would: the drain times out here instead of waiting for that).
    set_policy(at, "block-for-eviction")
    r = kubectl(at, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=10s", timeout=60)
    assert r.returncode != 0 and "disruption budget" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not [v for v in at.cluster.iter_collection("longhorn.io/v1beta2", "volumes", LH)
                if v["status"].get("currentNodeID") == node and v["status"].get("state") == "attached"]
    assert name in pdbs(at)
    assert evict(at, im_pod(at, node)) == 429

    # the default policy: every replica on the node has a healthy copy elsewhere
    set_policy(at, "block-if-contains-last-replica")
    at.until(lambda: name not in pdbs(at), timeout=20, what="PDB removed under the default policy")
    assert evict(at, im_pod(at, node)) == 201
