"""Shared helpers of the fault scenarios (issue 6; a uniquely named module, so that no other
folder's conftest can shadow it): the scenarios' fast params and run, and the "nothing
lost" baseline and its check. Readers of a run's evidence come from ``tests/helpers``.

"Nothing lost" (issue 6) means, after the journal plus the rollback:

* every node's ``config.yaml`` byte-identical to the original;
* every Argo CD Application's ``spec.syncPolicy.automated`` exactly as before;
* no PVC gone;
* the same workloads running (Running pods counted by namespace and owning workload,
  compared with :func:`runbook.checks.compare_snapshots`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from helpers import phase_runs
from helpers.twin_disks import k3s_configs as configs

from runbook import checks, runner
from runbook import params as params_mod
from runbook.cluster import Cluster

# Short waits: a failing phase must fail within the test's budget (the twin runs at 20x).
FAST_TIMEOUTS = {"api_ready": 60, "node_ready": 60, "helm": 90, "agents_ready": 60,
                 "pods_ready": 60, "velero": 60, "ssh_command": 30, "storage_healthy": 90}


def fast_params(twin: Any, name: str = "params-faults.yaml", *, timeouts: dict[str, float] | None = None,
                **overrides: Any) -> Path:
    """The twin's params with short timeouts (:data:`FAST_TIMEOUTS`, then ``timeouts``), plus
    section overrides for one scenario.

    ``overrides`` are merged per top-level section, e.g. ``argocd={"pause_parents": False}``
    or ``limits={"lock_seconds": 60}``. A run's journal pins the params' hash, so a scenario
    that needs another timeout writes it here, before its first phase.
    """
    return phase_runs.fast_params(twin, {**FAST_TIMEOUTS, **(timeouts or {})}, name=name, **overrides)


def run(params: Path, phases: str, reports: Path, *, run_id: str, execute: bool = True,
        **extra: Any) -> runner.RunResult:
    """runner.run as the scenarios use it (rehearsal: proceed despite a DEFER verdict)."""
    extra.setdefault("proceed_despite_deferral", True)
    return phase_runs.run_phases(params, phases, reports, execute=execute, run_id=run_id, **extra)


def start_scenario(make_twin: Callable[..., Any], *, faults: dict[str, Any] | None = None,
                   timeouts: dict[str, float] | None = None,
                   **overrides: Any) -> tuple[Any, Path, Cluster, "Baseline"]:
    """A whole twin with ``faults``, its fast params (``timeouts`` and ``overrides`` as for
    :func:`fast_params`), a client and the "nothing lost" baseline taken before anything ran."""
    twin = make_twin(faults=faults) if faults else make_twin()
    params = fast_params(twin, timeouts=timeouts, **overrides)
    c = cluster(params)
    return twin, params, c, baseline(twin, c)


def cluster(params: Path) -> Cluster:
    return Cluster.from_params(params_mod.load(params))


# ----------------------------------------------------------------------------- nothing lost
@dataclass
class Baseline:
    """What must be exactly the same after the rollback."""

    configs: dict[str, bytes]
    policies: dict[str, Any]
    pvcs: set[tuple[str, str]]
    pods: Any       # Running pods (DataFrame from Cluster.snapshot("pods"))


def policies(c: Cluster) -> dict[str, Any]:
    """Every Application's spec.syncPolicy.automated exactly (absent -> the string "<absent>")."""
    out = {}
    for a in c.list("applications"):
        sp = (a.get("spec") or {}).get("syncPolicy") or {}
        out[f"{a['metadata']['namespace']}/{a['metadata']['name']}"] = sp.get("automated", "<absent>")
    return out


def pvcs(c: Cluster) -> set[tuple[str, str]]:
    return {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in c.list("persistentvolumeclaims")}


def running_pods(c: Cluster) -> Any:
    df = c.snapshot("pods")
    return df[df["phase"] == "Running"].reset_index(drop=True)


def baseline(twin: Any, c: Cluster) -> Baseline:
    return Baseline(configs(twin), policies(c), pvcs(c), running_pods(c))


def assert_nothing_lost(twin: Any, c: Cluster, before: Baseline, *, settle: float = 60.0) -> None:
    """Assert the four "nothing lost" facts; pods may take a moment to be Running again."""
    assert configs(twin) == before.configs, "a config.yaml is not byte-identical to the original"
    now = policies(c)
    diff = {k: (v, now.get(k, "<missing>")) for k, v in before.policies.items() if now.get(k, "<missing>") != v}
    assert not diff, f"Argo CD policies differ (before, after): {diff}"
    assert pvcs(c) >= before.pvcs, f"PVCs gone: {sorted(before.pvcs - pvcs(c))}"
    deadline = time.monotonic() + settle
    while True:
        d = checks.compare_snapshots(before.pods, running_pods(c))
        lost = d.missing.to_dict("records") + d.fewer.to_dict("records")
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not lost, f"workloads not running as before: {lost}"
