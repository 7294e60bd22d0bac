"""Scenario 5 (issue 6): MetalLB does not reassign the LoadBalancer IP.

With the twin's fault ``metallb_sticky``, the install phase's pod restarts (which
restart the MetalLB controller) drop every LoadBalancer IP, and they stay ``<pending>``
until the controller restarts again. Verify remediates it as the original step 4 said:
it restarts the controller once (journaled ``metallb-restart``) and passes.

When one restart is not enough (here the IPAddressPool is gone, so no controller can
hand the address back), verify fails with the service named and the hint to check the
pool. Recovery: put the pool back and rerun verify with the same run id.

Both cases share one migration (module-scoped :func:`journey`, as in
``tests/integration/phases/test_migrate_then_rollback.py``): a migration is the
expensive part. In order, on one twin with the fault:

1. 01-03: the install's pod restarts drop the IPs;
2. the pool deleted, 04 fails after one restart in vain; the pool put back, 04 rerun
   with the same run id passes (the restart released the stuck IPs: the new pool serves
   them);
3. the ingress IP removed again while the fault is on (the twin's other sticky case:
   only a controller restart hands it back), 04 rerun restarts the controller once and
   passes with the same address;
4. 05 leaves nothing lost.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from faults_helpers import Baseline, assert_nothing_lost, run, start_scenario
from helpers.phase_runs import statuses
from helpers.run_evidence import journal, read_journal, report_text
from runbook import evidence, runner
from runbook.cluster import Cluster

pytestmark = [pytest.mark.integration]
SERVICE = "ingress-nginx/ingress-nginx-controller"
POOLS = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools"
SERVICE_STATUS = "/api/v1/namespaces/ingress-nginx/services/ingress-nginx-controller/status"
RUN_ID = "s5-sticky"


def lb_ip(c) -> list:
    svc = c.get("services", "ingress-nginx-controller", "ingress-nginx") or {}
    return ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


@dataclass
class VerifySeen:
    """One 04-verify run as it was right after it finished (a rerun overwrites its notebook)."""

    result: runner.RunResult
    restarts: list[dict[str, Any]]        # this run's own ``metallb-restart`` entries
    steps: list[str]                      # every step journaled by then (this run's last)
    records: dict[str, Any]               # evidence records of its 04-verify.ipynb
    text: str                             # its report text
    lb_ip_after: list = field(default_factory=list)


@dataclass
class Journey:
    """What the one run saw at each step (the tests assert on it)."""

    twin: Any
    cluster: Cluster
    before: Baseline
    ip_before: list
    migration: runner.RunResult | None = None
    ip_after_install: list = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    failed_verify: VerifySeen | None = None
    pool_back_verify: VerifySeen | None = None
    restart_verify: VerifySeen | None = None
    rollback: runner.RunResult | None = None


def _verify(params: Any, tmp: Any, c: Cluster, run_dir: Any) -> VerifySeen:
    """Run 04-verify with the module's run id (its folder ``run_dir``) and keep what only
    this run journaled and wrote."""
    done = len(read_journal(run_dir / "journal.json")["entries"])
    ver = run(params, "verify", tmp, run_id=RUN_ID)
    doc = journal(ver)
    new = doc["entries"][done:]
    return VerifySeen(result=ver, restarts=[e for e in new if e["step"] == "metallb-restart"],
                      steps=[e["step"] for e in doc["entries"]],
                      records=evidence.read_records(ver.run_dir / "04-verify.ipynb"),
                      text=report_text(ver, "04-verify.ipynb"), lb_ip_after=lb_ip(c))


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory):
    from twin.api import Twin

    tmp = tmp_path_factory.mktemp("metallb")
    started: list[Any] = []

    def make_twin(**kw: Any) -> Any:
        started.append(Twin(tmp / "twin", **kw).start())
        return started[-1]

    try:
        twin, params, c, before = start_scenario(make_twin, faults={"metallb_sticky": True})
        j = Journey(twin=twin, cluster=c, before=before, ip_before=lb_ip(c))
        j.migration = run(params, "preflight,reconfigure,install", tmp, run_id=RUN_ID)
        if not j.migration.ok:
            yield j
            return
        j.ip_after_install = lb_ip(c)
        # the address pool is gone: no controller restart can hand the IP back
        j.pools = c.request("GET", POOLS)["items"]
        for p in j.pools:
            c.request("DELETE", f"{POOLS}/{p['metadata']['name']}")
        j.failed_verify = _verify(params, tmp, c, j.migration.run_dir)
        # recovery: put the pool back, rerun verify with the same run id
        for p in j.pools:
            body = copy.deepcopy(p)
            body["metadata"] = {k: v for k, v in p["metadata"].items()
                                if k in ("name", "namespace", "labels", "annotations")}
            body.pop("status", None)
            c.request("POST", POOLS, body=body)
        j.pool_back_verify = _verify(params, tmp, c, j.migration.run_dir)
        if statuses(j.pool_back_verify.result) == {"verify": "passed"}:
            # the address removed while the fault is on: pending until the controller restarts
            c.request("PATCH", SERVICE_STATUS, body={"status": {"loadBalancer": {"ingress": None}}},
                      content_type="application/merge-patch+json")
            j.restart_verify = _verify(params, tmp, c, j.migration.run_dir)
        if j.restart_verify is not None and statuses(j.restart_verify.result) == {"verify": "passed"}:
            j.rollback = run(params, "rollback", tmp, run_id=RUN_ID)
        yield j
    finally:
        for t in started:
            t.stop()


def migrated(j: Journey) -> None:
    assert j.ip_before, "the ingress Service had no LoadBalancer IP before the migration"
    assert j.migration is not None and j.migration.ok, j.migration.failed and j.migration.failed.error
    assert j.ip_after_install == []       # the fault bit: the controller restart lost the IPs
    assert j.pools, "the twin served no IPAddressPool to delete"


# ----------------------------------------------------------------------------- tests
@pytest.mark.timeout(480)   # the module's run: a migration, three verifies, a rollback
def test_when_a_restart_is_not_enough_verify_fails_naming_the_service(journey):
    migrated(journey)
    ver = journey.failed_verify
    assert ver is not None
    # (1) verify failed at its collected gate; the controller was restarted once, in vain
    assert statuses(ver.result) == {"verify": "failed"}
    assert ver.result.failed.error.startswith("GateFailed"), ver.result.failed.error
    [r] = ver.restarts
    assert r["status"] == "done" and any(SERVICE in d for d in r["result"]["still_lost"])
    assert "argocd-resume" not in ver.steps   # Argo CD stays paused
    # (2) the report names the service and says what to check
    assert ver.records["gate/loadbalancer-ips"]["passed"] is False
    assert any(SERVICE in d for d in ver.records["gate/loadbalancer-ips"]["details"])
    assert SERVICE in ver.text and "IPAddressPool" in ver.text


def test_with_the_pool_back_a_rerun_of_verify_passes(journey):
    migrated(journey)
    ver = journey.pool_back_verify
    assert ver is not None and statuses(ver.result) == {"verify": "passed"}, ver.result.phases[0].error
    assert ver.lb_ip_after == journey.ip_before


def test_verify_restarts_the_controller_and_passes(journey):
    migrated(journey)
    ver = journey.restart_verify
    assert ver is not None
    # (1) verify found the IP still lost (the fault bit), passed after one journaled restart
    assert statuses(ver.result) == {"verify": "passed"}, ver.result.phases[0].error
    [r] = ver.restarts
    assert r["status"] == "done" and r["result"]["still_lost"] == []
    assert any(SERVICE in d for d in r["data"]["lost"])
    assert ver.lb_ip_after == journey.ip_before          # the same address came back
    # (2) the report shows the remediation
    assert ver.records["gate/loadbalancer-ips"]["passed"] is True
    assert "after restarting the MetalLB controller" in ver.text


def test_the_rollback_leaves_nothing_lost(journey):
    migrated(journey)
    assert journey.restart_verify is not None and statuses(journey.restart_verify.result) == {"verify": "passed"}
    rb = journey.rollback
    assert rb is not None and statuses(rb) == {"rollback": "passed"}, rb.phases[0].error
    assert_nothing_lost(journey.twin, journey.cluster, journey.before)
