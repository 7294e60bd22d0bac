"""runbook.session: what start() refuses before any connection, gates in dry runs, and
the record of a lock takeover."""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook import lock, session
from runbook.errors import ConfirmationRequired, GateFailed, ParamsError
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

MINICLOUD = str(Path(__file__).resolve().parents[3] / "params" / "minicloud.yaml")


@pytest.fixture
def no_connection(monkeypatch):
    """Any attempt to build a Cluster fails the test: these refusals come first."""
    def refuse(*a, **k):
        raise AssertionError("start() tried to connect")

    monkeypatch.setattr(session.Cluster, "from_params", classmethod(lambda cls, p: refuse()))
    monkeypatch.delenv("RUNBOOK_PARAMS", raising=False)
    monkeypatch.delenv("RUNBOOK_RUN_DIR", raising=False)


def test_unknown_phase(no_connection):
    with pytest.raises(ParamsError, match="unknown phase 'deploy'"):
        session.start("deploy", MINICLOUD)


def test_no_params_file(no_connection):
    with pytest.raises(ParamsError, match="no params file"):
        session.start("preflight")


def test_execute_on_real_target_needs_confirmation(no_connection, tmp_path):
    with pytest.raises(ConfirmationRequired, match="--confirm minicloud"):
        session.start("preflight", MINICLOUD, str(tmp_path / "r1"), execute=True, confirm="wrong")
    assert not (tmp_path / "r1").exists()   # refused before the run folder is made


def test_bad_run_dir_name_refused_before_connecting(no_connection, tmp_path):
    with pytest.raises(ParamsError):
        session.start("preflight", MINICLOUD, str(tmp_path / "bad name"))


def _session(tmp_path, execute):
    j = Journal.open(tmp_path / "r1", params_hash="h" * 8, cluster_uid="uid", run_id="r1")
    return session.Session(phase="install", params=None, values={}, run_dir=tmp_path / "r1", run_id="r1",
                           execute=execute, cluster=None, journal=j, cluster_uid="uid")


def test_gate_only_when_executing_is_skipped_in_a_dry_run(tmp_path):
    s = _session(tmp_path, execute=False)
    v = s.gate(False, "every pod managed by Cilium", only_when_executing=True)
    assert repr(v) == "GATE SKIPPED (dry run): every pod managed by Cilium"
    with pytest.raises(GateFailed):
        s.gate(False, "kernel >= 5.10")
    assert repr(s.gate(True, "API reachable")) == "GATE PASSED: API reachable"
    assert s.require_execute("the swap") is False
    # the session keeps every gate; the skipped one is marked skipped (shown SKIPPED, never PASSED)
    assert [(g.message, g.passed, g.skipped) for g in s.gates] == [
        ("every pod managed by Cilium", True, True), ("kernel >= 5.10", False, False),
        ("API reachable", True, False)]
    from runbook.checks import gate_summary
    assert gate_summary(s.gates)[["passed", "skipped"]].values.tolist() == [[False, True], [False, False], [True, False]]


def test_gate_when_executing_is_enforced(tmp_path):
    s = _session(tmp_path, execute=True)
    with pytest.raises(GateFailed):
        s.gate(False, "every pod managed by Cilium", only_when_executing=True)
    assert [g.passed for g in s.gates] == [False]


def test_gates_belong_to_their_session(tmp_path):
    a, b = _session(tmp_path, execute=False), _session(tmp_path, execute=False)
    a.gate(True, "API reachable")
    assert len(a.gates) == 1 and b.gates == []


def test_record_takeover_keeps_the_first(tmp_path, capsys):
    s = _session(tmp_path, True)
    j = s.journal
    assert session._record_takeover(j, {"metadata": {"annotations": {}}}) is None
    assert j.get("lock_takeover") is None
    lease = {"metadata": {"annotations": {lock.TAKEOVER_ANNOTATION: "run-old (expired x)"}}}
    assert session._record_takeover(j, lease) == "run-old (expired x)"
    assert session._record_takeover(
        j, {"metadata": {"annotations": {lock.TAKEOVER_ANNOTATION: "run-other"}}}) is None
    rec = j.get("lock_takeover")
    assert rec["from"] == "run-old (expired x)" and rec["lease"] == "kube-system/phase22-migration"
    # start() flags it for the index; outside a notebook the flag is printed
    item = s.attention("lock-takeover", session.takeover_advice(rec["from"]))
    assert "roll it back with its own run id" in capsys.readouterr().out
    assert s.attention_items == [item] and item.phase == s.phase
