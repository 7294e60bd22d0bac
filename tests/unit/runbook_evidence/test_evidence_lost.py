"""Evidence that cannot be recorded is logged, kept by the session and shown on the phase
page as EVIDENCE LOST naming what and why; the gate itself still holds or fails."""
from __future__ import annotations

import logging
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from runbook import checks, evidence, report, session, verify
from runbook.errors import GateFailed
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def test_a_gate_whose_evidence_cannot_be_recorded_still_gates_and_says_so(caplog):
    gates: list = []
    lost: list = []
    with caplog.at_level(logging.WARNING, logger="runbook.evidence"):
        r = checks.gate(True, "every pod Running", name="bad name!", gates=gates, lost=lost)
        with pytest.raises(GateFailed):
            checks.gate(False, "no KUBE-SVC chains", name="also bad!", gates=gates, lost=lost)
    assert r.passed and [g.passed for g in gates] == [True, False]
    assert [x.name for x in lost] == ["gate/bad name!", "gate/also bad!"]
    assert all("ValueError" in x.reason and "must be a plain key" in x.reason for x in lost)
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "runbook.evidence"]
    assert len(logged) == 2 and "EVIDENCE LOST: gate/bad name! was not recorded" in logged[0]


def test_a_lost_record_is_redacted_in_the_warning():
    token = "K10" + "ab" * 16 + "::server:" + "s3cr3t" * 4
    item = evidence.evidence_lost("x", ValueError(f"cannot serialise token: {token}"))
    assert token not in item.reason and token not in item._repr_html_()


def _session(tmp_path: Path) -> session.Session:
    j = Journal.open(tmp_path / "r1", params_hash="h" * 8, cluster_uid="uid", run_id="r1")
    j.begin_phase("verify")
    return session.Session(phase="verify", params=None, values={}, run_dir=tmp_path / "r1", run_id="r1",
                           execute=False, cluster=None, journal=j, cluster_uid="uid")


def test_the_summary_lists_evidence_lost_in_the_phase(tmp_path):
    s = _session(tmp_path)
    assert s.record("pods_total", 3) == 3 and s.evidence_lost == []
    lost = s.record("not a key!", 3)
    v = verify.Verification(s)
    v.add(verify.Check("bad check!", True, "every pod Running"))
    assert [x.name for x in s.evidence_lost] == ["not a key!", "gate/bad check!"] and lost is s.evidence_lost[0]
    assert [g.name for g in s.gates] == ["bad check!"]
    table = s.finish("VERIFIED")
    rows = dict(zip(table["item"], table["result"]))
    assert rows["gate: every pod Running"] == "PASSED"
    assert "must be a plain key" in rows["EVIDENCE LOST: not a key!"]
    assert "EVIDENCE LOST: gate/bad check!" in rows


def test_the_phase_page_shows_what_was_lost_and_why(tmp_path):
    """A real kernel runs the cells; the rendered page carries the warning."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Phase 22 · 99 — evidence"),
        nbformat.v4.new_code_cell("from runbook import checks\ngates, lost = [], []"),
        nbformat.v4.new_code_cell("checks.gate(True, 'every pod Running', name='bad name!', gates=gates, lost=lost)\n"
                                  "checks.gate(True, 'API reachable', name='api', gates=gates, lost=lost)"),
        nbformat.v4.new_code_cell("print(len(gates), len(lost))"),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "99-evidence.ipynb"
    nbformat.write(nb, path)
    assert nb.cells[3].outputs[0]["text"] == "2 1\n"
    # the good gate's evidence is in the notebook for the index; the lost one is not
    assert set(evidence.read_records(path)) == {"gate/api"}
    text = report.render_phase(path, tmp_path).read_text()
    assert "EVIDENCE LOST" in text and "gate/bad name!" in text
    assert "must be a plain key" in text
