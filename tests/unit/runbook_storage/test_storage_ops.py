"""runbook.storage_ops against a small fake cluster: each count journaled before its change,
a second scale-down (05-rollback after 04-verify) keeps the first count, the scale-up
restores it, and the instance managers are never recreated under an attached volume."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runbook import storage, storage_ops
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class _Cluster:
    def __init__(self, attached: bool = False) -> None:
        self.replicas = {"web": 2}
        self.attached = attached
        self.calls: list[tuple] = []
        self.journal: Journal | None = None

    def request(self, method: str, path: str, **kw: Any) -> Any:
        if path == f"/apis/{storage.LONGHORN_API}":
            return {"resources": [{"name": "volumes"}]}
        self.calls.append((method, path))
        return {"items": []}

    def iter_collection(self, api: str, plural: str, ns: str | None = None, **_: Any) -> list[dict]:
        if plural == "volumes":
            state = "attached" if self.attached else "detached"
            return [{"metadata": {"name": "vol-web"}, "spec": {"accessMode": "rwo"},
                     "status": {"state": state, "robustness": "healthy" if self.attached else "unknown"}}]
        return []

    def list(self, resource: str, namespace: str | None = None, **_: Any) -> list[dict]:
        if resource == "pods":
            return [{"metadata": {"namespace": "app", "name": f"web-{i}",
                                  "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": True}]},
                     "spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "web"}}]}}
                    for i in range(self.replicas["web"])]
        if resource == "persistentvolumeclaims":
            return [{"metadata": {"namespace": "app", "name": "web"}, "spec": {"volumeName": "pv-web"}}]
        if resource == "persistentvolumes":
            return [{"metadata": {"name": "pv-web"},
                     "spec": {"csi": {"driver": storage.CSI_DRIVER, "volumeHandle": "vol-web"}}}]
        if resource == "replicasets":
            return [{"metadata": {"namespace": "app", "name": "web-1",
                                  "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]}}]
        if resource == "deployments":
            return [{"metadata": {"namespace": "app", "name": "web"}, "spec": {"replicas": self.replicas["web"]}}]
        return []

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        return {"status": {"readyReplicas": self.replicas["web"]}}

    def patch(self, resource: str, name: str, body: dict, namespace: str | None = None) -> None:
        # the count must be in the journal before the change
        fact = self.journal.get(storage_ops.FACT) or {}
        assert fact["Deployment/app/web"]["replicas"] == 2
        self.replicas[name] = body["spec"]["replicas"]

    def delete(self, *a: Any) -> None:
        self.calls.append(("DELETE",) + a)

    def wait_for(self, check: Any, **_: Any) -> float:
        ok, pending = check()
        assert ok, pending
        return 0.0


def _session(tmp_path: Path, c: _Cluster) -> Any:
    j = Journal.open(tmp_path / "r", params_hash="h" * 16, cluster_uid="u", run_id="r")
    c.journal = j
    params = SimpleNamespace(limits=SimpleNamespace(timeouts=SimpleNamespace(storage_healthy=5, pods_ready=5)),
                             argocd=SimpleNamespace(namespace="argocd", pause_parents=True))
    return SimpleNamespace(cluster=c, journal=j, params=params, execute=True, storage_budget=None, progress=lambda m: None,
                           require_execute=lambda what: True, figure=lambda *a: None)


def test_scale_down_then_again_keeps_the_first_count_and_scale_up_restores_it(tmp_path: Path) -> None:
    c = _Cluster()
    s = _session(tmp_path, c)
    storage_ops.scale_down(s)
    assert c.replicas["web"] == 0
    assert [e.step for e in s.journal.entries()] == ["storage-scale-down"]
    assert s.journal.entries()[0].before == {"replicas": 2}
    storage_ops.scale_up(s)
    assert c.replicas["web"] == 2 and not storage_ops.restore_pending(s)
    storage_ops.scale_down(s, where="05-rollback")        # the rollback, after verify
    assert c.replicas["web"] == 0 and storage_ops.restore_pending(s)
    assert s.journal.get(storage_ops.FACT)["Deployment/app/web"]["replicas"] == 2
    storage_ops.scale_up(s)
    assert c.replicas["web"] == 2


def test_instance_managers_are_not_recreated_under_an_attached_volume(tmp_path: Path) -> None:
    c = _Cluster(attached=True)
    s = _session(tmp_path, c)
    im = {"metadata": {"namespace": "longhorn-system", "name": "instance-manager-1", "uid": "u1",
                       "ownerReferences": [{"apiVersion": "longhorn.io/v1beta2", "kind": "InstanceManager",
                                            "name": "instance-manager-1", "controller": True}]},
          "spec": {"nodeName": "n1"}}
    with pytest.raises(storage_ops.StorageError) as e:
        storage_ops.recycle_managers(s, [im], why="test")
    assert "vol-web" in str(e.value) and not [x for x in c.calls if x[0] == "DELETE"]
    assert s.journal.entries() == []
