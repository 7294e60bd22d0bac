"""pods.restart (the install's and the rollback's restart) journals each batch, and a batch
that times out as failed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook import pods
from runbook.errors import WaitTimeout
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _pod(name: str, ns: str = "app") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"rs-{name}"}]},
            "spec": {}, "status": {"phase": "Running"}}


class _Cluster:
    """The four calls the restart makes; the replacements never become Ready."""

    def __init__(self, pods: list[dict], *, ready: bool) -> None:
        self.pods, self.ready, self.deleted = pods, ready, []

    def has_resource(self, name: str) -> bool:
        return False

    def list(self, resource: str, namespace: str | None = None, **_: Any) -> list[dict]:
        return [p for p in self.pods if namespace is None or p["metadata"]["namespace"] == namespace]

    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        self.deleted.append(name)

    def wait_for(self, check: Any, *, timeout: float, what: str, **_: Any) -> float:
        if not self.ready:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}", pending=["app/x"])
        return 0.0


def _journal(tmp_path: Path) -> Journal:
    j = Journal.open(tmp_path / "r", params_hash="h" * 16, cluster_uid="u", run_id="r")
    j.begin_phase("install")
    return j


def _restart(c: _Cluster, j: Journal, *, batch_size: int) -> pods.RestartResult:
    plan = pods.plan_restart(c.list("pods"), policy=pods.policy_for("install"))
    return pods.restart(c, plan, action="delete {n} unmanaged pod(s)", batch_size=batch_size,
                        execute=True, journal=j, timeout=30, timeout_scope="run")


def test_each_batch_is_journaled_done(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    c = _Cluster([_pod("a"), _pod("b"), _pod("c", "kube-system")], ready=True)
    res = _restart(c, j, batch_size=2)
    assert c.deleted == ["c", "a", "b"]          # kube-system first
    es = j.entries(step="restart-pods")
    assert [e.status for e in es] == ["done", "done"] and res.batches == 2
    assert es[0].data == ["kube-system/c", "app/a"]
    assert [e.action for e in es] == ["delete 2 unmanaged pod(s)", "delete 1 unmanaged pod(s)"]
    assert es[0].result == {"restarted": 2}


def test_a_batch_that_times_out_is_journaled_failed(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    c = _Cluster([_pod("a"), _pod("b")], ready=False)
    with pytest.raises(WaitTimeout):
        _restart(c, j, batch_size=1)
    [e] = j.entries(step="restart-pods")
    assert e.status == "failed" and "timed out" in (e.error or "")
    assert j.pending() == []
