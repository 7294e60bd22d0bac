"""runbook.evidence: records round-trip through a really executed notebook; snapshots."""
from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass

import nbformat
import pandas as pd
import pytest

from runbook import evidence
from runbook.checks import GateResult

pytestmark = [pytest.mark.unit]

TOKEN = "K10" + "ab12" * 8 + "::server:" + "cd34" * 6


@pytest.mark.timeout(120)
def test_record_and_read_back_from_executed_notebook(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from runbook import evidence\n"
                                  "evidence.record('pods_total', 42)\n"
                                  "evidence.record('verdict', {'decision': 'DEFER', 'reasons': ['< 500 pods']})"),
        # built at run time so the secret is not in the cell source, only in the value
        nbformat.v4.new_code_cell("tok = 'K10' + 'ab12' * 8 + '::server:' + 'cd34' * 6\n"
                                  "evidence.record('config', 'token: ' + tok)\n"
                                  "evidence.record('pods_total', 43)"),
        nbformat.v4.new_code_cell("from runbook.checks import gate\n"
                                  "gate(True, 'all agents Ready', name='agents')"),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, str(path))
    recs = evidence.read_records(path)
    assert recs["pods_total"] == 43                       # the later record wins
    assert recs["verdict"] == {"decision": "DEFER", "reasons": ["< 500 pods"]}
    assert TOKEN not in json.dumps(recs) and TOKEN not in path.read_text()
    assert recs["config"].startswith("token:")
    (g,) = evidence.gates(recs)
    assert g["name"] == "agents" and g["passed"] is True
    # the plain-text fallback is there for people and HTML
    outs = [o for c in nb.cells for o in c.outputs if evidence.MIMETYPE in o.get("data", {})]
    assert all("text/plain" in o["data"] for o in outs)
    assert outs[0]["metadata"] == {"name": "pods_total"}


def test_record_outside_notebook_returns_redacted_value():
    @dataclass
    class V:
        n: int
        text: str

    v = evidence.record("x", V(1, f"Authorization: Bearer {TOKEN}"))
    assert v["n"] == 1 and TOKEN not in v["text"]
    with pytest.raises(ValueError):
        evidence.record("bad name!", 1)
    r = evidence.record_gate(GateResult("kpr", False, "no KUBE-SVC", ["n1: 3"]))
    assert r["passed"] is False and r["details"] == ["n1: 3"]


def test_snapshot_roundtrip_permissions_and_redaction(tmp_path):
    df = pd.DataFrame([{"namespace": "kube-system", "name": "cfg", "value": f"token: {TOKEN}", "n": 1},
                       {"namespace": "apps", "name": "web", "value": "plain", "n": 2}])
    p = evidence.save_snapshot(tmp_path, "preflight", "pods", df)
    assert p == tmp_path / "snapshots" / "preflight" / "pods.json"
    for f in (p, p.with_suffix(".csv")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert TOKEN not in f.read_text()
    assert stat.S_IMODE((tmp_path / "snapshots").stat().st_mode) == 0o700
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    back = evidence.load_snapshot(tmp_path, "preflight", "pods")
    assert list(back.columns) == ["namespace", "name", "value", "n"]
    assert back["n"].tolist() == [1, 2] and back.loc[1, "value"] == "plain"
    evidence.save_snapshot(tmp_path, "preflight", "verdict", {"decision": "DEFER"})
    assert evidence.load_snapshot(tmp_path, "preflight", "verdict") == {"decision": "DEFER"}
    with pytest.raises(ValueError):
        evidence.save_snapshot(tmp_path, "../x", "pods", {})
    with pytest.raises(ValueError):
        evidence.save_snapshot(tmp_path, "preflight", "a/b", {})


def test_a_record_shows_nothing_in_jupyterlab_but_stays_readable(tmp_path):
    """JupyterLab renders the richest type it knows: the record's HTML is a comment, so the
    ``[evidence] ...`` line does not print under every gate; the JSON is still there."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as cap:
        evidence.record("gate/kpr", {"passed": True})
    (out,) = cap.outputs
    html = out.data["text/html"]
    assert re.fullmatch(r"<!--[^>]*-->", html), html          # renders as nothing
    assert out.data[evidence.MIMETYPE] == {"passed": True}
    assert out.data["text/plain"].startswith("[evidence] gate/kpr")
