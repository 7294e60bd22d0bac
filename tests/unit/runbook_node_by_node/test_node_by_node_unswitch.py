"""runbook.node_by_node_unswitch: what the reverse of the switch must do, read from the journal (pure),
and the availability stages of a rollback after it."""
from __future__ import annotations

import pytest

from runbook import node_by_node_plan as nbp
from runbook import node_by_node_unswitch as us

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NODES = [("fast-skunk", "agent"), ("fast-heron", "agent"), ("set-hog", "server")]


def _e(step: str, node: str | None = None, status: str = "done", phase: str = "install",
       at: str | None = None) -> dict:
    return {"step": step, "node": node, "status": status, "phase": phase, "recorded_at": at}


def _switch(kpr: bool = True, restarted: tuple[str, ...] = ("set-hog", "fast-skunk", "fast-heron")) -> list[dict]:
    out = [_e("nbn-final-values"), _e("nbn-delete-cnc"), _e("nbn-unlabel"), _e("write-file", "set-hog")]
    if kpr:
        out += [_e("nbn-kpr"), _e("nbn-kpr-rollout")]
    return out + [_e("restart-k3s", n) for n in restarted]


def _rb(*steps: tuple[str, str | None]) -> list[dict]:
    return [_e(s, n, phase="rollback") for s, n in steps]


def test_the_unswitch_is_needed_once_any_step_of_the_switch_was_recorded() -> None:
    assert not us.needed([_e("nbn-uncordon", "set-hog")])
    assert us.needed([_e("nbn-final-values", status="intent")])     # an intent may have happened
    assert us.needed([_e("restart-k3s", "set-hog", status="failed")])
    # the rollback's own restarts are not the switch's
    assert not us.needed([_e("restart-k3s", "set-hog", phase="rollback")])


def test_kube_proxy_replacement_is_undone_only_when_the_switch_recorded_it() -> None:
    assert us.kpr_was_on(_switch(kpr=True))
    assert not us.kpr_was_on(_switch(kpr=False))
    assert us.kpr_was_on([_e("nbn-kpr", status="intent")])


def test_the_nodes_the_switch_restarted_restart_again_servers_first() -> None:
    assert us.restarted_nodes(_switch(), NODES) == ["set-hog", "fast-skunk", "fast-heron"]
    # killed after the server's restart: only it comes back
    assert us.restarted_nodes(_switch(restarted=("set-hog",)), NODES) == ["set-hog"]
    assert us.restarted_nodes(_switch(restarted=()), NODES) == []


def test_finished_needs_every_step_the_journal_calls_for() -> None:
    base = _switch(kpr=True)
    steps = [("nbn-us-cnc", None), ("nbn-us-label", None), ("nbn-us-values", None)]
    restarts = [("nbn-us-restart-k3s", n) for n in ("set-hog", "fast-skunk", "fast-heron")]
    assert not us.finished(base + _rb(*steps, *restarts), NODES)           # kube-proxy replacement still on
    assert us.finished(base + _rb(*steps, *restarts, ("nbn-us-kpr-off", None), ("nbn-us-kpr-rollout", None)), NODES)
    assert not us.finished(base + _rb(*steps, *restarts[:2], ("nbn-us-kpr-rollout", None)), NODES)
    assert us.finished(_switch(kpr=False) + _rb(*steps, *restarts), NODES)
    # a step recorded but not completed (a killed rollback) is not done
    intent = [_e("nbn-us-values", status="intent", phase="rollback")]
    assert not us.finished(_switch(kpr=False) + _rb(*steps[:2], *restarts) + intent, NODES)


def test_the_rollback_stages_open_at_their_first_step_in_the_rollback() -> None:
    steps = [("nbn-cordon", "a", "install"), ("nbn-final-values", None, "install"),
             ("helm-uninstall", None, "install"),                              # not the rollback's
             ("nbn-us-cnc", None, "rollback"), ("nbn-rb-cordon", "a", "rollback"),
             ("nbn-rb-cordon", "b", "rollback"), ("restart-pods", None, "rollback"),   # b's own pods
             ("nbn-rb-uncordon", "b", "rollback"), ("restart-pods", None, "rollback"),
             ("storage-scale-down", None, "rollback"), ("helm-uninstall", None, "rollback")]
    entries = [{"step": s, "node": n, "phase": ph, "seq": i, "recorded_at": f"T{i}", "status": "done"}
               for i, (s, n, ph) in enumerate(steps)]
    assert nbp.stage_starts(entries) == [("node by node", "T0"), ("switch", "T1"), ("rollback: unswitch", "T3"),
                                         ("rollback: node by node", "T4"), ("rollback: cleanup", "T9")]


# ------------------------------------------------------------------ storage after the per-node rollback
class _Journal:
    def __init__(self, entries: list[dict]) -> None:
        self._e = entries

    def entries(self) -> list:
        from types import SimpleNamespace
        return [SimpleNamespace(**e) for e in self._e]


def _session(entries: list[dict], pod_ips: list[str], *, execute: bool = True):
    from types import SimpleNamespace
    pods = [{"metadata": {"name": f"p{i}"}, "spec": {}, "status": {"podIP": ip}} for i, ip in enumerate(pod_ips)]
    params = SimpleNamespace(strategy="node-by-node", cilium=SimpleNamespace(migration_cidr="10.44.0.0/16"),
                             nodes=[SimpleNamespace(name=n, role=r) for n, r in NODES])
    return SimpleNamespace(params=params, execute=execute, journal=_Journal(entries),
                           cluster=SimpleNamespace(list=lambda kind: pods))


def _migrated_then_reverted(reverted: tuple[str, ...]) -> list[dict]:
    seq = iter(range(1, 1000))
    out = [{**_e(nbp.journal_step(s), n), "seq": next(seq)} for n, _ in NODES for s in nbp.NODE_STEPS]
    return out + [{**_e("nbn-rb-uncordon", n, phase="rollback"), "seq": next(seq)} for n in reverted]


def test_longhorns_users_stay_up_only_once_every_pod_is_back_on_flannel() -> None:
    from runbook.node_by_node_rollback import storage_kept_up

    every = tuple(n for n, _ in NODES)
    assert storage_kept_up(_session(_migrated_then_reverted(every), ["10.42.0.5", "10.42.1.9"]))
    # a node not taken back yet, a pod still on Cilium's pool, or a dry run: scale down as big-bang does
    assert storage_kept_up(_session(_migrated_then_reverted(every[:2]), ["10.42.0.5"])) is None
    assert storage_kept_up(_session(_migrated_then_reverted(every), ["10.42.0.5", "10.44.1.7"])) is None
    assert storage_kept_up(_session(_migrated_then_reverted(every), ["10.42.0.5"], execute=False)) is None
    # after a switch whose reverse is not complete
    switch = [{**e, "seq": 900 + i} for i, e in enumerate(_switch(kpr=False))]
    assert storage_kept_up(_session(_migrated_then_reverted(every) + switch, ["10.42.0.5"])) is None
