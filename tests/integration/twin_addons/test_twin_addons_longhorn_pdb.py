"""longhorn-manager's PodDisruptionBudgets on the instance managers, as an operator meets them.

A real Longhorn cluster refuses a drain the instance-manager pod of a node until
longhorn-manager removes that pod's PDB: only on a cordoned node, once no volume is
attached there, and (``node-drain-policy``, default ``block-if-contains-last-replica``)
once each replica there has a healthy, PDB-protected copy on another schedulable node.
The twin had no such PDB, so a drain there stopped replicas a real drain would have
waited for (twin/controllers/addons/longhorn_pdb.py).

Under ``block-for-eviction`` Longhorn first moves every replica off the cordoned node
(twin/controllers/addons/longhorn_eviction.py): such a drain finishes once they are
rebuilt elsewhere, and never while one has no eligible node.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from runbook.errors import ClusterError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LH = "longhorn-system"


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


def set_setting(at: Any, name: str, value: str) -> None:
    r = kubectl(at, "-n", LH, "patch", "settings.longhorn.io", name, "--type=merge",
                "-p", json.dumps({"value": value}))
    assert r.returncode == 0, r.stderr


def set_policy(at: Any, value: str) -> None:
    set_setting(at, "node-drain-policy", value)


def lh_list(at: Any, plural: str) -> list[dict]:
    return list(at.cluster.iter_collection("longhorn.io/v1beta2", plural, LH))


def replicas_on(at: Any, node: str) -> list[dict]:
    return [r for r in lh_list(at, "replicas") if r["spec"].get("nodeID") == node]


def attached_on(at: Any, node: str) -> list[str]:
    return [v["metadata"]["name"] for v in lh_list(at, "volumes")
            if v["status"].get("currentNodeID") == node and v["status"].get("state") == "attached"]


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

    # block-for-eviction on three nodes with hard anti-affinity: a volume with three
    # replicas has no node left for the one on the drained node, so Longhorn cannot move
    # it and keeps the PDB; such a volume attached there stays attached (the eviction's
    # attachment ticket), its moved pod waits. The drain times out, as on a real cluster.
    set_policy(at, "block-for-eviction")
    r = kubectl(at, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=10s", timeout=60)
    assert r.returncode != 0 and "disruption budget" in r.stdout + r.stderr, r.stdout + r.stderr
    vols = {v["metadata"]["name"]: v for v in lh_list(at, "volumes")}
    stuck = {r["spec"]["volumeName"] for r in replicas_on(at, node)}
    assert stuck and all(vols[v]["spec"]["numberOfReplicas"] == 3 for v in stuck), stuck
    assert all(r["spec"].get("evictionRequested") for r in replicas_on(at, node))
    for v in stuck:
        cond = next(c for c in vols[v]["status"]["conditions"] if c["type"] == "Scheduled")
        assert (cond["status"], cond["reason"]) == ("False", "ReplicaSchedulingFailure"), (v, cond)
    held = attached_on(at, node)
    assert set(held) <= stuck
    why = at.addons.longhorn.pdbs.blocked[node]
    assert name in pdbs(at)
    assert why.startswith("some volumes are still attached") if held else \
        why.startswith("some replicas block eviction"), why
    assert evict(at, im_pod(at, node)) == 429

    # the default policy: the evictions are cancelled, the held volumes detach, and every
    # replica on the node has a healthy copy elsewhere
    set_policy(at, "block-if-contains-last-replica")
    at.until(lambda: name not in pdbs(at), timeout=20, what="PDB removed under the default policy")
    assert evict(at, im_pod(at, node)) == 201
    assert not [r for r in replicas_on(at, node) if r["spec"].get("evictionRequested")]


def test_block_for_eviction_drain_finishes_once_longhorn_moved_every_replica(lh):
    """What the ``block-for-eviction`` policy is for: the drain of a node waits until every
    replica there is rebuilt on another node, then goes through. Soft anti-affinity lets
    minicloud's three-replica volumes keep three replicas on the two nodes left."""
    at = lh
    node = attached_node(at)
    name = im_pod(at, node)["metadata"]["name"]
    at.until(lambda: name in pdbs(at), timeout=10)
    before = {r["metadata"]["name"]: r["spec"]["volumeName"] for r in replicas_on(at, node)}
    assert before and attached_on(at, node)
    set_setting(at, "replica-soft-anti-affinity", "true")
    set_policy(at, "block-for-eviction")

    r = kubectl(at, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=150s",
                timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "disruption budget" in out and f"pod/{name} evicted" in out, out

    assert not replicas_on(at, node), "every replica left the drained node"
    assert not attached_on(at, node)
    assert name not in pdbs(at)
    reps = lh_list(at, "replicas")
    assert not set(before) & {x["metadata"]["name"] for x in reps}, "the evicted replicas were deleted"
    for v in lh_list(at, "volumes"):
        mine = [x for x in reps if x["spec"]["volumeName"] == v["metadata"]["name"]]
        healthy = [x for x in mine if x["spec"].get("healthyAt") and not x["spec"].get("failedAt")]
        assert len(healthy) >= v["spec"]["numberOfReplicas"], (v["metadata"]["name"], mine)
    events = [e for e in at.cluster.list("events", LH) if e.get("reason") == "EvictionAutomatic"]
    assert {e["involvedObject"]["name"] for e in events} >= set(before)

    kubectl(at, "uncordon", node)
    at.until(lambda: name in pdbs(at), timeout=20, what="the PDB back once the node is schedulable")
