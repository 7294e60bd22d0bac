"""The storage waits after a scale-up share one ``limits.timeouts.storage_healthy``.

storage_ops.scale_up (the volume users' pods Ready) and storage_ops.healthy_check (every
volume healthy) run on a fake cluster and a fake clock: each wait advances the clock by
what it waited. When volumes cannot heal, the two together wait the limit once, and the
failing check says which part ran the budget out; a check without a scale-up before it
(node-by-node's, or a re-run) waits the whole limit.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runbook import storage, storage_ops
from runbook.errors import WaitTimeout
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

LIMIT = 900.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Cluster:
    """A Deployment ``app/web`` mounting volume ``vol-web``; ``ready_after`` and
    ``healthy_after`` are the clock readings at which its pods get Ready and the volume
    healthy (None: never)."""

    def __init__(self, clock: _Clock, *, ready_after: float | None, healthy_after: float | None) -> None:
        self.clock, self.ready_after, self.healthy_after = clock, ready_after, healthy_after
        self.waits: list[tuple[str, float]] = []      # (what, timeout) of each wait, in order

    def _since(self, at: float | None) -> bool:
        return at is not None and self.clock.now >= at

    def request(self, method: str, path: str, **_: Any) -> Any:
        if path == f"/apis/{storage.LONGHORN_API}":
            return {"resources": [{"name": "volumes"}]}
        return {}

    def iter_collection(self, api: str, plural: str, ns: str | None = None, **_: Any) -> list[dict]:
        if plural != "volumes":
            return []
        robustness = "healthy" if self._since(self.healthy_after) else "degraded"
        return [{"metadata": {"name": "vol-web"}, "spec": {"accessMode": "rwo"},
                 "status": {"state": "attached", "robustness": robustness}}]

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        return {"status": {"readyReplicas": 2 if self._since(self.ready_after) else 0}}

    def patch(self, *_: Any) -> None:
        pass

    def wait_for(self, check: Any, *, timeout: float, what: str, progress: Any = None, **_: Any) -> float:
        """Jump the clock to the first moment ``check`` holds, or by ``timeout``."""
        self.waits.append((what, timeout))
        t0 = self.clock.now
        ok, pending = check()
        if not ok and progress is not None:
            progress(f"still waiting for {what} (10s): {len(pending)} pending")
        if ok:
            return 0.0
        due = [a for a in (self.ready_after, self.healthy_after) if a is not None and t0 < a <= t0 + timeout]
        for at in sorted(due):
            self.clock.now = at
            ok, pending = check()
            if ok:
                return at - t0
        self.clock.now = t0 + timeout
        raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}", pending=pending)


def _session(tmp_path: Path, c: _Cluster) -> Any:
    j = Journal.open(tmp_path / "r", params_hash="h" * 16, cluster_uid="u", run_id="r")
    j.set(storage_ops.FACT, {"Deployment/app/web": {"kind": "Deployment", "namespace": "app", "name": "web",
                                                    "replicas": 2, "volumes": ["vol-web"], "owner": None,
                                                    "owner_paused": None}})
    params = SimpleNamespace(limits=SimpleNamespace(timeouts=SimpleNamespace(storage_healthy=LIMIT)))
    said: list[str] = []
    return SimpleNamespace(cluster=c, journal=j, params=params, execute=True, storage_budget=None, progress=said.append, said=said,
                           require_execute=lambda what: True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clk = _Clock()
    monkeypatch.setattr(storage_ops, "time", clk)
    return clk


def test_volumes_that_cannot_heal_spend_the_limit_once_and_the_check_names_the_part(clock, tmp_path) -> None:
    c = _Cluster(clock, ready_after=None, healthy_after=None)
    s = _session(tmp_path, c)
    t0 = clock.now
    frame = storage_ops.scale_up(s)
    check = storage_ops.healthy_check(s)
    assert clock.now - t0 == LIMIT                       # once, not 2 x LIMIT
    assert c.waits == [("the Longhorn volume users Ready again", LIMIT), ("every Longhorn volume healthy", 0.0)]
    assert frame["ready"].tolist() == [False]
    assert not check.ok
    assert check.message.startswith("every Longhorn volume healthy within limits.timeouts.storage_healthy (900s")
    assert "vol-web: attached, robustness degraded" in check.details[0]
    assert "volume user not Ready after the scale-up: Deployment/app/web: 0/2 Ready" in check.details
    assert "ran out while the volume users' pods were not Ready" in check.hint
    assert any("The budget is spent: the volume check below looks once" in m for m in s.said)


def test_what_the_scale_up_leaves_is_what_the_check_waits(clock, tmp_path) -> None:
    c = _Cluster(clock, ready_after=clock.now + 120, healthy_after=None)
    s = _session(tmp_path, c)
    t0 = clock.now
    storage_ops.scale_up(s)
    check = storage_ops.healthy_check(s)
    assert c.waits == [("the Longhorn volume users Ready again", LIMIT), ("every Longhorn volume healthy", LIMIT - 120)]
    assert clock.now - t0 == LIMIT and not check.ok
    assert "shared with the volume users' scale-up, which waited 120s" in check.message
    assert "ran out here, after the scale-up took 120s of it" in check.hint
    assert not [d for d in check.details if d.startswith("volume user")]
    # the progress lines of a long wait say how much of the budget is left
    assert any("left of limits.timeouts.storage_healthy (900s, shared" in m for m in s.said)


def test_volumes_healing_within_the_budget_pass(clock, tmp_path) -> None:
    c = _Cluster(clock, ready_after=clock.now + 30, healthy_after=clock.now + 400)
    s = _session(tmp_path, c)
    storage_ops.scale_up(s)
    check = storage_ops.healthy_check(s)
    assert check.ok and c.waits[1] == ("every Longhorn volume healthy", LIMIT - 30)


def test_a_check_without_a_scale_up_before_it_waits_the_whole_limit(clock, tmp_path) -> None:
    # node-by-node's check before each node, and a re-run of the check after a shared one
    c = _Cluster(clock, ready_after=None, healthy_after=None)
    s = _session(tmp_path, c)
    assert not storage_ops.healthy_check(s).ok
    storage_ops.scale_up(s)
    storage_ops.healthy_check(s)
    rerun = storage_ops.healthy_check(s)
    assert [t for _, t in c.waits] == [LIMIT, LIMIT, 0.0, LIMIT]
    assert "shared" not in rerun.message and "budget" not in rerun.hint


def test_a_scale_up_with_nothing_to_restore_leaves_the_check_the_whole_limit(clock, tmp_path) -> None:
    # verify run again in the same session long after: everything restored, no deadline left over
    c = _Cluster(clock, ready_after=clock.now, healthy_after=None)
    s = _session(tmp_path, c)
    storage_ops.scale_up(s)
    clock.now += 5000
    storage_ops.scale_up(s)
    storage_ops.healthy_check(s)
    assert c.waits == [("the Longhorn volume users Ready again", LIMIT), ("every Longhorn volume healthy", LIMIT)]
