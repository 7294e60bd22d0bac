"""runbook.report and runbook.timeline: status of executed notebooks, the run index,
offline pages, and the readiness samples of a run cut short."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from runbook import report, timeline

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def executed(*, failed_at: int | None = None, kernel_died: bool = False, finished: bool = True) -> nbformat.NotebookNode:
    """A small notebook as papermill leaves it: a heading, two code cells, metadata."""
    cells = [v4.new_markdown_cell("# Preflight\n\n## Take the migration lock"),
             v4.new_code_cell("s = session.start('preflight')"),
             v4.new_markdown_cell("## Check the kernel"),
             v4.new_code_cell("s.gate(kernel_ok, 'kernel')")]
    for i, c in enumerate(cells):
        c.id = f"cell-{i}"
        c.metadata["papermill"] = {"duration": 0.5, "status": "completed", "exception": False}
        if c.cell_type == "code":
            c.outputs = [v4.new_output("stream", name="stdout", text="ok\n")]
    if failed_at is not None:
        c = cells[failed_at]
        c.metadata["papermill"].update(status="failed", exception=True)
        c.outputs.append(v4.new_output("error", ename="GateFailed", evalue="kernel >= 5.10 on every node",
                                       traceback=["GateFailed: kernel >= 5.10 on every node"]))
    nb = v4.new_notebook(cells=cells)
    nb.metadata["papermill"] = {"duration": 2.5, "parameters": {"execute": False},
                                "exception": bool(failed_at is not None or kernel_died),
                                "end_time": "2026-11-26T05:12:00" if finished else None}
    return nb


def test_status_passed():
    st = report.notebook_status(executed())
    assert (st["status"], st["error"], st["failed_cell"], st["seconds"]) == ("passed", None, None, 2.5)
    assert st["parameters"] == {"execute": False} and st["cells"] == [0.5] * 4


def test_status_failed_cell_with_error_output():
    st = report.notebook_status(executed(failed_at=3))
    assert st["status"] == "failed" and st["failed_cell"] == 3
    assert st["error"] == "GateFailed: kernel >= 5.10 on every node"


def test_status_killed_kernel():
    st = report.notebook_status(executed(kernel_died=True))
    assert st["status"] == "failed" and st["failed_cell"] is None
    assert st["error"] == "the kernel died or the run was interrupted"


def test_status_not_finished():
    assert report.notebook_status(executed(finished=False))["status"] == "incomplete"


def test_section_of_names_the_step():
    nb = executed(failed_at=3)
    assert report._section_of(nb, 3) == "Check the kernel"
    assert report._section_of(nb, 1) == "Preflight"
    assert report._section_of(nb, 0) is None


def test_index_html_of_failed_run_names_phase_step_and_error(tmp_path):
    page = tmp_path / "html" / "02-reconfigure.html"
    rows = [{"phase": "preflight", "status": "passed", "seconds": 3.0, "page": None, "nb": None,
             "summary": {"verdict": "DEFER", "gates": [{"name": "kernel", "passed": True}],
                         "figures": {"pods": 111}}, "error": None},
            {"phase": "reconfigure", "status": "failed", "seconds": 1.5, "page": page, "nb": None,
             "summary": {"gates": [{"name": "flannel.1 gone", "passed": False}]},
             "error": "GateFailed: flannel.1 <still> present " + "x" * 300}]
    failure = {"phase": "reconfigure", "error": "GateFailed: flannel.1 <still> present", "cell": 7,
               "source": "s.gate(ok, 'flannel.1 gone')", "page": page, "step": "Delete flannel.1",
               "anchor": "abc-1"}
    out = report._index_html(tmp_path / "run-1", rows, failure, None, {})
    assert "RUN STOPPED" in out and "verdict: DEFER" in out
    assert "Phase <b>reconfigure</b>, step <b>Delete flannel.1</b>" in out
    assert "html/02-reconfigure.html#cell-id=abc-1" in out
    assert "GateFailed: flannel.1 &lt;still&gt; present" in out   # escaped
    assert "s.gate(ok, &#x27;flannel.1 gone&#x27;)" in out
    assert "✘ flannel.1 gone" in out and "✔ kernel" in out
    assert "No readiness samples" in out
    # the table keeps one short line of the error
    cell = re.search(r"<td class='failed'>FAILED<div class='failed'>(.*?)</div>", out).group(1)
    assert cell.endswith("…") and len(cell) < 200


def test_index_html_without_step_names_cell_and_all_passed(tmp_path):
    failure = {"phase": "install", "error": None, "cell": 4, "source": "", "page": None, "step": None}
    out = report._index_html(tmp_path / "r", [], failure, None, {})
    assert "Phase <b>install</b>, cell 4" in out and "unknown error" in out
    ok = report._index_html(tmp_path / "r", [{"phase": "verify", "status": "passed", "seconds": None,
                                             "page": None, "nb": None, "summary": {}, "error": None}],
                            None, None, {"opened_at": "2026-11-26T05:00:00Z", "seconds": 12.34})
    assert "ALL PHASES PASSED" in ok and "Where and why" not in ok and "(12.3s)" in ok


def test_render_phase_has_no_remote_scripts(tmp_path):
    nb_path = tmp_path / "01-preflight.ipynb"
    nbformat.write(executed(failed_at=3), nb_path)
    out = report.render_phase(nb_path, tmp_path)
    text = out.read_text()
    assert "Check the kernel" in text and "GateFailed" in text
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text, re.I)
    assert (out.stat().st_mode & 0o777) == 0o600


def test_render_run_points_at_the_failing_step(tmp_path):
    run = tmp_path / "run-1"
    run.mkdir()
    nbformat.write(executed(), run / "01-preflight.ipynb")
    nbformat.write(executed(failed_at=3), run / "02-reconfigure.ipynb")
    index = report.render_run(run)
    text = index.read_text()
    assert "Phase <b>reconfigure</b>, step <b>Check the kernel</b>" in text
    assert "html/02-reconfigure.html#cell-id=cell-3" in text
    assert (run / "html" / "01-preflight.html").exists()


def test_timeline_load_skips_a_truncated_last_line(tmp_path):
    rows = [{"t": 1.0, "api": True, "nodes": 2, "nodes_ready": 2, "pods": 5, "pods_ready": 5},
            {"t": 2.0, "api": False}]
    (tmp_path / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                             + '{"t": 3.0, "api": tr')
    assert timeline.load(tmp_path) == rows
    assert timeline.load(tmp_path / "absent") == []


def test_timeline_png_from_samples(tmp_path):
    rows = [{"t": 100.0 + i, "api": i != 2, "nodes": 2, "nodes_ready": 2, "pods": 4, "pods_ready": i % 5}
            for i in range(5)]
    (tmp_path / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = report._timeline_png(tmp_path, [{"phase": "install", "started": 101.0}],
                               {"opened_at": 101.5, "closed_at": "1970-01-01T00:01:43Z"})
    import base64

    assert base64.b64decode(png).startswith(b"\x89PNG")
    (tmp_path / "timeline.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert report._timeline_png(tmp_path, [], {}) is None   # one sample draws nothing
