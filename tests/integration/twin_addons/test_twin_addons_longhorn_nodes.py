"""``nodes.longhorn.io`` on the twin: served, kept current, honoured by its replica scheduler, and
read by the runbook's ``nbn-longhorn-drain`` gate, whose verdict must match what the twin's
Longhorn then does on a drain.

The case: under ``block-for-eviction`` (with replica soft anti-affinity on, so minicloud's
three-replica volumes can move) a two-replica volume gets a ``nodeSelector`` only the node to be
drained fulfils: its replica there cannot move. The gate, reading the Longhorn nodes, says so
(from node names alone it would not); the twin's Longhorn fails to schedule the replica
(``ReplicaSchedulingFailure``) and the drain waits. Once the operator tags the third node the gate
passes and the drain finishes, the replica moved there.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from runbook import longhorn_drain, storage
from test_twin_addons_longhorn_pdb import LH, kubectl, lh_list, set_setting

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def patch(at, kind: str, name: str, body: dict) -> None:
    r = kubectl(at, "-n", LH, "patch", kind, name, "--type=merge", "-p", json.dumps(body))
    assert r.returncode == 0, r.stderr


def condition(obj: dict, ctype: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def test_the_twin_serves_longhorn_nodes_and_keeps_their_status(lh) -> None:
    at = lh
    r = kubectl(at, "get", "nodes.longhorn.io", "-n", LH)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "ALLOWSCHEDULING", "SCHEDULABLE", "AGE"]
    kube = sorted(n["metadata"]["name"] for n in at.cluster.list("nodes"))
    assert sorted(line.split()[0] for line in lines[1:]) == kube
    assert all(line.split()[1:4] == ["True", "true", "True"] for line in lines[1:]), r.stdout
    assert kubectl(at, "get", "lhn", "-n", LH, "-o", "name").stdout.split() == [f"node.longhorn.io/{n}" for n in kube]

    reps = lh_list(at, "replicas")
    for o in lh_list(at, "nodes"):
        name = o["metadata"]["name"]
        (disk,) = o["status"]["diskStatus"].values()
        mine = {r["metadata"]["name"]: int(r["spec"]["volumeSize"]) for r in reps if r["spec"]["nodeID"] == name}
        assert disk["scheduledReplica"] == mine and disk["storageScheduled"] == sum(mine.values())
        assert {r["spec"]["diskID"] for r in reps if r["spec"]["nodeID"] == name} == {disk["diskUUID"]}
        zone = next(n for n in at.cluster.list("nodes") if n["metadata"]["name"] == name)["metadata"]["labels"].get(
            "topology.kubernetes.io/zone", "")
        assert o["status"]["zone"] == zone

    # a cordon turns Schedulable False (KubernetesNodeCordoned); the setting off keeps it True
    node = kube[0]
    assert kubectl(at, "cordon", node).returncode == 0

    def sched() -> dict:
        return condition(next(o for o in lh_list(at, "nodes") if o["metadata"]["name"] == node), "Schedulable")
    at.until(lambda: sched()["reason"] == "KubernetesNodeCordoned", timeout=10, what="Schedulable False")
    assert sched()["status"] == "False"
    set_setting(at, "disable-scheduling-on-cordoned-node", "false")
    at.until(lambda: sched()["status"] == "True", timeout=10, what="Schedulable True with the setting off")
    assert kubectl(at, "uncordon", node).returncode == 0


def test_the_gate_reads_longhorn_nodes_and_the_twin_does_what_it_says(lh) -> None:
    at = lh
    s = SimpleNamespace(cluster=at.cluster)
    nodes = sorted(n["metadata"]["name"] for n in at.cluster.list("nodes"))
    vols = {v["metadata"]["name"]: v for v in lh_list(at, "volumes")}
    reps = lh_list(at, "replicas")
    held = {v: sorted(r["spec"]["nodeID"] for r in reps if r["spec"]["volumeName"] == v) for v in vols}
    two = sorted((v for v in vols if len(set(held[v])) == 2),
                 key=lambda v: (vols[v]["status"].get("actualSize") or 0, v))
    vol = two[0]
    drained, keeper = held[vol]
    (third,) = set(nodes) - {drained, keeper}

    set_setting(at, "replica-soft-anti-affinity", "true")
    set_setting(at, "node-drain-policy", "block-for-eviction")
    # only the node to drain is tagged (Longhorn leaves replicas where they are when a
    # selector changes; it applies to the next one it schedules)
    patch(at, "nodes.longhorn.io", drained, {"spec": {"tags": ["fast"]}})
    patch(at, "volumes.longhorn.io", vol, {"spec": {"nodeSelector": ["fast"]}})

    # the gate takes the nodes.longhorn.io path: only this volume is stuck, for its nodeSelector
    v = longhorn_drain.verdict(s)
    assert v is not None and not v.ok
    assert v.facts["unmovable_volumes"] == [vol], v.details
    assert "nodeSelector" in v.details[0] and "tag another schedulable node" in v.hint, (v.details, v.hint)
    # from node names alone it would have said the volume can move (to the third node)
    rows = storage.read_volumes(at.cluster)
    names_only = longhorn_drain.drain_verdict("block-for-eviction", rows, nodes=longhorn_drain.read_nodes(s),
                                              shareable=longhorn_drain.read_shareable(s))
    assert vol not in names_only.facts["unmovable_volumes"]

    # the twin's Longhorn: the replica cannot be scheduled, the drain waits
    r = kubectl(at, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=15s", timeout=60)
    assert r.returncode != 0 and "disruption budget" in r.stdout + r.stderr, r.stdout + r.stderr

    def scheduled() -> dict:
        return condition(next(x for x in lh_list(at, "volumes") if x["metadata"]["name"] == vol), "Scheduled")
    at.until(lambda: scheduled()["reason"] == "ReplicaSchedulingFailure", timeout=20, what="scheduling failure")
    msg = scheduled()["message"]
    assert scheduled()["status"] == "False" and f"{third}: its tags do not hold" in msg and \
        f"{keeper}: its tags do not hold" in msg, msg
    assert [r["spec"]["nodeID"] for r in lh_list(at, "replicas") if r["spec"]["volumeName"] == vol
            and r["spec"].get("evictionRequested")] == [drained]

    # the operator uncordons the node to fix the tags first, and waits until Longhorn sees it
    # schedulable again: while it is cordoned it takes nothing, and the gate would judge the
    # other nodes' drains without it (and the twin might already be moving the replica)
    kubectl(at, "uncordon", drained)

    def lh_node(name: str) -> dict:
        return next(o for o in lh_list(at, "nodes") if o["metadata"]["name"] == name)
    at.until(lambda: condition(lh_node(drained), "Schedulable")["status"] == "True", timeout=20,
             what="the uncordoned node schedulable for Longhorn")
    # then tags the third node: the gate passes and the drain finishes, the replica moved there
    patch(at, "nodes.longhorn.io", third, {"spec": {"tags": ["fast"]}})
    v2 = longhorn_drain.verdict(s)
    assert v2 is not None and v2.ok and v2.facts["unmovable_volumes"] == [], v2.details
    r = kubectl(at, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=200s", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    now = sorted(r["spec"]["nodeID"] for r in lh_list(at, "replicas") if r["spec"]["volumeName"] == vol)
    assert now == sorted([keeper, third])
    disk = next(iter(next(o for o in lh_list(at, "nodes") if o["metadata"]["name"] == third)["status"]
                     ["diskStatus"].values()))
    moved = next(r for r in lh_list(at, "replicas") if r["spec"]["volumeName"] == vol and r["spec"]["nodeID"] == third)
    assert moved["spec"]["diskID"] == disk["diskUUID"]
    at.until(lambda: moved["metadata"]["name"] in next(
        iter(next(o for o in lh_list(at, "nodes") if o["metadata"]["name"] == third)["status"]["diskStatus"].values())
    )["scheduledReplica"], timeout=10, what="the moved replica scheduled on the third node's disk")
    kubectl(at, "uncordon", drained)
