"""The twin's Longhorn node controller rules (``longhorn_nodes``), as a table from
longhorn-manager v1.7.2 ``controller/node_controller.go`` (setReadyAndSchedulableConditions,
updateDiskStatusSchedulableCondition)."""
from __future__ import annotations

import pytest

from twin.controllers.addons.longhorn_nodes import disk_status, node_conditions

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GiB = 1 << 30
SETTINGS = {"storage-over-provisioning-percentage": "100", "storage-minimal-available-percentage": "25"}


def kube(ready: str = "True", cordoned: bool = False, **pressure: str) -> dict:
    conds = [{"type": "Ready", "status": ready, "reason": "KubeletNotReady" if ready != "True" else ""}]
    conds += [{"type": t, "status": s, "reason": t, "message": "m"} for t, s in pressure.items()]
    return {"spec": {"unschedulable": cordoned}, "status": {"conditions": conds}}


@pytest.mark.parametrize("node, manager, setting, ready, schedulable", [
    (kube(), "ready", True, ("True", ""), ("True", "")),
    (kube(cordoned=True), "ready", True, ("True", ""), ("False", "KubernetesNodeCordoned")),
    (kube(cordoned=True), "ready", False, ("True", ""), ("True", "")),
    (kube(), "missing", True, ("False", "ManagerPodMissing"), ("True", "")),
    (kube(), "down", True, ("False", "ManagerPodDown"), ("True", "")),
    (kube(ready="Unknown"), "ready", True, ("False", "KubernetesNodeNotReady"), ("True", "")),
    (kube(MemoryPressure="True"), "ready", True, ("False", "KubernetesNodePressure"), ("True", "")),
    (kube(DiskPressure="False"), "ready", True, ("True", ""), ("True", "")),
])
def test_node_conditions(node, manager, setting, ready, schedulable) -> None:
    got = node_conditions("n1", node, manager, setting)
    assert got["Ready"][:2] == ready and got["Schedulable"][:2] == schedulable


def test_a_node_gone_from_kubernetes_is_not_ready() -> None:
    assert node_conditions("n1", None, "ready", True) == {"Ready": (
        "False", "KubernetesNodeGone", "Kubernetes node missing: node n1 has been removed from the cluster")}


@pytest.mark.parametrize("reps, other, reserved, scheduled, available, sched", [
    ([], 10 * GiB, 30 * GiB, 0, 90 * GiB, "True"),
    ([("r1", 20 * GiB, 5 * GiB), ("r2", 10 * GiB, 1 * GiB)], 10 * GiB, 30 * GiB, 30 * GiB, 84 * GiB, "True"),
    # more than (100 - 30) GiB of volumes scheduled: over-provisioning exceeded
    ([("r1", 71 * GiB, 1 * GiB)], 0, 30 * GiB, 71 * GiB, 99 * GiB, "False"),
    # 25 % must stay free: 75 GiB of other files leave exactly 25, not more
    ([], 75 * GiB, 0, 0, 25 * GiB, "False"),
])
def test_disk_status(reps, other, reserved, scheduled, available, sched) -> None:
    st = disk_status("n1", "default-disk-1", {"path": "/var/lib/longhorn/", "storageReserved": reserved},
                     {"diskUUID": "u1", "storageMaximum": 100 * GiB}, reps, other, SETTINGS)
    assert (st["storageScheduled"], st["storageAvailable"]) == (scheduled, available)
    assert st["scheduledReplica"] == {name: size for name, size, _ in reps}
    assert st["_conditions"]["Schedulable"][0] == sched
    assert st["_conditions"]["Schedulable"][1] == ("" if sched == "True" else "DiskPressure")
    assert st["diskUUID"] == "u1" and st["diskName"] == "default-disk-1"
