"""runbook.pods: owner classes, the named policies (golden: tests/fixtures/pods/<case>/),
the phase -> policy table, and the restart's result listing skipped pods with owners."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runbook import pods
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pods"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _load(case: str) -> tuple[list[dict], dict]:
    d = FIXTURES / case
    return json.loads((d / "pods.json").read_text()), json.loads((d / "expected.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_owner_classes_golden(case: str) -> None:
    items, want = _load(case)
    assert {pods.pod_key(p): pods.owner_class(p) for p in items} == want["classes"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("policy", sorted(pods.POLICIES))
def test_plan_per_policy_golden(case: str, policy: str) -> None:
    items, want = _load(case)
    p = pods.plan_restart(items, policy=pods.POLICIES[policy])
    assert [pods.pod_key(x) for x in p.restart] == want["policies"][policy]["restart"]
    assert [[s.pod, s.owner, s.reason] for s in p.skipped] == want["policies"][policy]["skipped"]
    assert p.policy.name == policy


def test_every_policy_restarts_workloads_and_never_a_pod_without_owner() -> None:
    for pol in pods.POLICIES.values():
        assert pol.action("workload") == "restart"
        assert pol.action("none") == "skip"
        assert pol.custom in ("restart", "skip") and pol.why


def test_phase_policy_table_names_real_policies() -> None:
    # issue 12: the install and the rollback share one policy that never deletes a custom
    # resource's pod
    assert pods.policy_for("install") == pods.policy_for("rollback")
    assert pods.policy_for("install").custom == "skip"
    assert set(pods.PHASE_POLICY.values()) <= set(pods.POLICIES)


def test_the_install_policy_keeps_custom_resource_pods() -> None:
    items, _ = _load("owners")
    p = pods.plan_restart(items, policy=pods.policy_for("install"))
    assert "longhorn-system/instance-manager-e-1a2b" not in [pods.pod_key(x) for x in p.restart]
    assert ("longhorn-system/instance-manager-e-1a2b", "InstanceManager/instance-manager-e-1a2b") in [
        (s.pod, s.owner) for s in p.skipped]


class _Cluster:
    """Its owner replaces a deleted pod at once with a Ready one (a new uid)."""

    def __init__(self, items: list[dict]) -> None:
        self.items, self.deleted = copy.deepcopy(items), []

    def list(self, resource: str, namespace: str | None = None, **_: Any) -> list[dict]:
        return [copy.deepcopy(p) for p in self.items
                if namespace is None or p["metadata"]["namespace"] == namespace]

    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        self.deleted.append(name)
        old = next(p for p in self.items if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name))
        self.items.remove(old)
        new = copy.deepcopy(old)
        new["metadata"].update(name=name + "-new", uid=old["metadata"]["uid"] + "-new")
        new["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        self.items.append(new)

    def wait_for(self, check: Any, *, timeout: float, what: str, **_: Any) -> float:
        ok, pending = check()
        assert ok, pending
        return 0.0


def test_restart_deletes_only_the_plan_and_lists_skipped_with_owners(tmp_path: Path) -> None:
    items, want = _load("owners")
    c = _Cluster(items)
    j = Journal.open(tmp_path / "r", params_hash="h" * 16, cluster_uid="u", run_id="r")
    j.begin_phase("rollback")
    plan = pods.plan_restart(items, policy=pods.POLICIES["workloads-only"])
    lines: list[str] = []
    res = pods.restart(c, plan, action="restart {n} pod(s)", batch_size=3, execute=True,
                       journal=j, timeout=30, progress=lines.append)
    restarted = want["policies"]["workloads-only"]["restart"]
    assert res.deleted == restarted and len(c.deleted) == len(restarted)
    assert "instance-manager-e-1a2b" not in c.deleted and "debug-shell" not in c.deleted
    assert res.batches == 3 and len(lines) == 3 and res.policy == "workloads-only"
    assert [e.status for e in j.entries(step=pods.STEP)] == ["done"] * 3
    assert res.follow_ups()[0] == ("longhorn-system/instance-manager-e-1a2b (owned by InstanceManager/"
                                   "instance-manager-e-1a2b: restart it through its operator)")
    t = res.table()
    assert list(t.columns) == ["pod", "action", "owner"]
    assert t[t["action"] == "restarted"]["owner"].tolist()[:2] == ["ReplicaSet/coredns-6799fbcd5",
                                                                  "ReplicaSet/adopted-6f7d"]
    assert t[t["action"] == "skipped"]["owner"].tolist() == [
        "InstanceManager/instance-manager-e-1a2b", "-", "RabbitmqCluster/hello-world", "HelmChart/traefik"]
    assert "Left for a person" in res._repr_html_()


def test_dry_run_restart_deletes_nothing_and_journals_nothing(tmp_path: Path) -> None:
    items, want = _load("owners")
    c = _Cluster(items)
    j = Journal.open(tmp_path / "r", params_hash="h" * 16, cluster_uid="u", run_id="r")
    res = pods.restart(c, pods.plan_restart(items, policy=pods.policy_for("install")),
                       action="x {n}", journal=j)
    assert res.deleted == want["policies"]["workloads-only"]["restart"] and c.deleted == []
    assert j.entries() == [] and res.batches == 0
