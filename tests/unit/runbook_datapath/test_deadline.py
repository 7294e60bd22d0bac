"""runbook.deadline: the no-CNI window's deadline and the run's rollback command."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runbook import checks, deadline
from runbook.errors import GateFailed, WaitTimeout

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class Journal(dict):
    def set(self, k: str, v: Any) -> None:
        self[k] = v


def session(tmp_path: Path, *, opened_ago: float | None, limit: float = 600, closed: bool = False,
            kind: str = "real", execute: bool = True) -> Any:
    j = Journal()
    if opened_ago is not None:
        at = datetime.fromtimestamp(time.time() - opened_ago, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        j["no_cni_window"] = {"opened_at": at, "closed_at": at if closed else None, "seconds": None}
    gates: list[Any] = []
    params = SimpleNamespace(limits=SimpleNamespace(no_cni_window_max=limit), source=Path("/srv/p22/params.yaml"),
                             target=SimpleNamespace(name="minicloud", kind=kind))
    s = SimpleNamespace(journal=j, params=params, run_id="r1", run_dir=tmp_path / "reports" / "r1",
                        execute=execute, gates=gates)
    s.gate = lambda cond, msg, **kw: checks.gate(cond, msg, gates=gates, record=False, **kw)
    return s


def test_the_rollback_command_is_the_one_the_report_prints(tmp_path: Path) -> None:
    real = session(tmp_path, opened_ago=None, kind="real")
    assert deadline.session_rollback_command(real) == (
        "runbook run --params /srv/p22/params.yaml --phases rollback --run-id r1 "
        f"--reports-dir {tmp_path / 'reports'} --execute --confirm minicloud")
    twin = session(tmp_path, opened_ago=None, kind="twin")
    assert "--confirm" not in deadline.session_rollback_command(twin)


def test_no_window_or_a_closed_one_has_no_deadline(tmp_path: Path) -> None:
    for s in (session(tmp_path, opened_ago=None), session(tmp_path, opened_ago=9999, closed=True)):
        assert deadline.remaining(s) is None and deadline.cap(s, 300) == 300
        deadline.check(s, "anywhere")          # nothing to stop


def test_inside_the_window_waits_are_cut_to_what_is_left(tmp_path: Path) -> None:
    s = session(tmp_path, opened_ago=500, limit=600)
    assert 95 <= deadline.remaining(s) <= 100
    # rounded up, one second more: a wait that gives up has outlived the deadline
    assert 96 <= deadline.cap(s, 300) <= 101 and deadline.cap(s, 30) == 30
    deadline.check(s, "helm")                 # not past it yet


def test_past_the_deadline_the_phase_stops_with_the_rollback_command(tmp_path: Path) -> None:
    s = session(tmp_path, opened_ago=700, limit=600)
    with pytest.raises(deadline.DeadlineExceeded) as e:
        deadline.check(s, "03-install, helm upgrade --install --wait")
    text = str(e.value)
    assert "limits.no_cni_window_max (600s)" in text and "03-install, helm" in text
    assert "runbook run --params /srv/p22/params.yaml --phases rollback --run-id r1" in text
    assert "--confirm minicloud" in e.value.hint
    assert isinstance(e.value, GateFailed) and s.gates[-1].name == deadline.GATE
    assert s.journal["no_cni_deadline"]["where"] == "03-install, helm upgrade --install --wait"


def test_a_dry_run_is_never_stopped(tmp_path: Path) -> None:
    deadline.check(session(tmp_path, opened_ago=700, execute=False), "x")


def test_a_wait_that_fails_after_the_deadline_becomes_the_deadline_gate(tmp_path: Path, monkeypatch) -> None:
    s = session(tmp_path, opened_ago=500, limit=600)
    later = time.time() + 200               # the wait outlives the window
    with pytest.raises(deadline.DeadlineExceeded) as e:
        with deadline.watch(s, "waiting for the agents"):
            monkeypatch.setattr(deadline.time, "time", lambda: later)
            raise WaitTimeout("timed out")
    assert isinstance(e.value.__cause__, WaitTimeout)


def test_a_wait_that_fails_before_the_deadline_keeps_its_own_error(tmp_path: Path) -> None:
    s = session(tmp_path, opened_ago=10, limit=600)
    with pytest.raises(WaitTimeout):
        with deadline.watch(s, "waiting"):
            raise WaitTimeout("timed out")


def test_reraise_finds_the_deadline_behind_a_fleet_failure(tmp_path: Path) -> None:
    exc = deadline.DeadlineExceeded("g")
    res = SimpleNamespace(failed=[SimpleNamespace(exception=ValueError()), SimpleNamespace(exception=exc)])
    with pytest.raises(deadline.DeadlineExceeded):
        deadline.reraise(res)
    deadline.reraise(SimpleNamespace(failed=[]))
