"""The cleanup pod's waits (runbook.cilium_cleanup) wake on a pods watch, not on a clock.

Each wait is handed to the cluster's ``wait_for`` with the pods of the cleanup pod's
namespace to watch; its interval is only the poll of a wait whose watch could not open
(``watched_interval`` is the re-check while one is open). A scripted cluster runs each
check as the API would answer it and records how each wait was asked for.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from runbook import cilium_cleanup as cc
from runbook.errors import NodeError
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NS = "kube-system"


class ScriptedCluster:
    """The cleanup pod appears, runs, and is gone once deleted; every wait is recorded."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states          # what ``get`` returns for the pod until it is deleted
        self.deleted = False
        self.created: list[dict] = []
        self.waits: list[dict[str, Any]] = []

    def get(self, kind: str, name: str, namespace: str) -> dict | None:
        if self.deleted or not self.created:
            return None
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def create(self, kind: str, body: dict, namespace: str) -> dict:
        self.created.append(body)
        return body

    def request(self, method: str, path: str, **kw: Any) -> None:
        assert method == "DELETE"
        self.deleted = True

    def exec(self, namespace: str, pod: str, argv: list[str], **kw: Any) -> Any:
        return SimpleNamespace(rc=0, stdout="removed link cilium_host\n", stderr="")

    def wait_for(self, check, *, timeout: float, what: str, **kw: Any) -> float:
        self.waits.append({"what": what, **kw})
        for _ in range(10):
            done, _left = check()
            if done:
                return 0.0
        raise AssertionError(f"{what} never came")


def _running() -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": "Running",
                                                  "containerStatuses": [{"state": {"running": {"startedAt": "T1"}}}]}}


def _pending() -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}


def _session(tmp_path, cluster: ScriptedCluster) -> Any:
    return SimpleNamespace(cluster=cluster, run_id="r1", journal=Journal.open(tmp_path / "r1", params_hash="h" * 16,
                                                                        cluster_uid="u", run_id="r1"))


def test_the_cleanup_pod_waits_watch_its_namespaces_pods(tmp_path) -> None:
    c = ScriptedCluster([_pending(), _pending(), _running()])
    out = cc.run_on_node(_session(tmp_path, c), "fast-skunk", image="quay.io/cilium/cilium:v1.19.3",
                         namespace=NS, cni_conf_dir="/etc/cni/net.d", timeout=60)
    assert out.removed == ["removed link cilium_host"] and c.deleted
    assert [w["what"] for w in c.waits] == [f"cleanup pod {NS}/{cc.pod_name('fast-skunk')} running",
                                            f"cleanup pod {NS}/{cc.pod_name('fast-skunk')} gone"]
    for w in c.waits:
        assert w["watch"] == [("pods", NS)]
        # the interval is the poll of a failed watch; an open one re-checks far less often
        assert w["interval"] == cc.POLL and w["watched_interval"] == cc.RECHECK > cc.POLL


def test_a_pod_that_cannot_start_still_fails_at_once(tmp_path) -> None:
    bad = {"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}}
    c = ScriptedCluster([bad])
    with pytest.raises(NodeError, match="cannot start"):
        cc.run_on_node(_session(tmp_path, c), "fast-skunk", image="quay.io/cilium/cilium:v1.19.3",
                       namespace=NS, cni_conf_dir="/etc/cni/net.d", timeout=60)
    assert c.deleted            # deleted whatever happens
