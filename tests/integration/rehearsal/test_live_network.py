"""The report's "pods with a live network" agrees with the twin's own data path.

The runbook judges a pod's network from the cluster's state only
(:func:`runbook.timeline.classify`: node Ready, the CNI in force, CiliumEndpoints, the
sandbox's age). The twin knows the truth (:meth:`NetworkModel.pod_reachable`: the CNI
that made the pod's sandbox against the CNI working on its node). After each step of a
migration and its rollback, on the same snapshot of pods, both must say the same of
every pod.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _compare(twin) -> tuple[dict[str, bool], dict[str, bool]]:
    from runbook import params
    from runbook.cluster import Cluster
    from runbook.timeline import classify

    p = params.load(twin.params_path)
    c = Cluster.from_params(p)
    pods = c.list("pods")
    ours = classify(c.list("nodes"), pods, c.list("ciliumendpoints"), cilium_namespace=p.cilium.namespace)
    net = twin.rt.component("network")
    truth = {}
    for pod in pods:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if key in ours:
            reachable, _why = twin.call(net.pod_reachable, pod)
            truth[key] = reachable
    return ours, truth


def _agree(twin, when: str, *, some_live: bool | None = None) -> None:
    ours, truth = _compare(twin)
    assert ours, when
    differ = {k: (ours[k], truth[k]) for k in ours if ours[k] != truth[k]}
    assert not differ, f"{when}: runbook vs twin differ on {len(differ)} pod(s): {sorted(differ.items())[:10]}"
    if some_live is not None:
        assert any(ours.values()) if some_live else not any(ours.values()), when


def test_live_network_matches_the_twins_data_path_through_a_migration_and_rollback(tmp_path: Path) -> None:
    from runbook import runner
    from twin.api import Twin

    twin = Twin(tmp_path / "twin").start()
    quiet = dict(reports_dir=tmp_path / "reports", progress=lambda m: None, sample_timeline=False,
                 render=False)
    try:
        _agree(twin, "before the migration", some_live=True)
        r = runner.run(twin.params_path, phases="preflight,reconfigure", execute=True, run_id="live",
                       extra={"proceed_despite_deferral": True}, **quiet)
        assert r.ok, [(p.phase, p.error) for p in r.phases]
        _agree(twin, "in the no-CNI window (after reconfigure)", some_live=False)
        r = runner.run(twin.params_path, phases="install", execute=True, run_id="live", **quiet)
        assert r.ok, [(p.phase, p.error) for p in r.phases]
        _agree(twin, "after the install", some_live=True)
        r = runner.run(twin.params_path, phases="rollback", execute=True, run_id="live", **quiet)
        assert r.ok, [(p.phase, p.error) for p in r.phases]
        _agree(twin, "after the rollback")
    finally:
        twin.stop()
