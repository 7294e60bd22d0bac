"""runbook.report and runbook.timeline: status of executed notebooks, the run index,
offline pages, and the readiness samples of a run cut short."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from runbook import chart, outage, report, report_index, runinfo, timeline, timeline_plot
from runbook.errors import DeferredStop, GateFailed

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


def _data(tmp_path, rows, failure=None, **kw):
    return report_index.IndexData(run_dir=tmp_path / "run-1", rows=rows, failure=failure, **kw)


def test_index_html_of_failed_run_names_phase_step_and_error(tmp_path):
    page = tmp_path / "html" / "02-reconfigure.html"
    rows = [{"phase": "preflight", "title": "Phase 22 · 01 — Preflight", "status": "passed", "seconds": 3.0,
             "page": None, "nb": None,
             "summary": {"verdict": "DEFER", "gates": [{"name": "kernel", "passed": True}],
                         "figures": {"pods": 111, "lb_ips": ["10.0.0.200", "10.0.0.201"]}}, "error": None},
            {"phase": "reconfigure", "status": "failed", "seconds": 1.5, "page": page, "nb": None,
             "summary": {"gates": [{"name": "flannel.1 gone", "passed": False}]},
             "error": "GateFailed: flannel.1 <still> present " + "x" * 300}]
    failure = {"phase": "reconfigure", "error": "GateFailed: flannel.1 <still> present", "cell": 7,
               "source": "s.gate(ok, 'flannel.1 gone')", "page": page, "step": "Delete flannel.1",
               "anchor": "abc-1", "status": "failed"}
    out = report_index.index_html(_data(tmp_path, rows, failure))
    assert "RUN STOPPED" in out and "verdict: DEFER" in out
    assert "Phase <b>reconfigure</b>, step <b>Delete flannel.1</b>" in out
    assert "html/02-reconfigure.html#cell-id=abc-1" in out
    assert "GateFailed: flannel.1 &lt;still&gt; present" in out   # escaped
    assert "s.gate(ok, &#x27;flannel.1 gone&#x27;)" in out
    assert "✘ flannel.1 gone" in out and "✔ kernel" in out
    assert "No readiness samples" in out
    assert "lb_ips: <b>10.0.0.200, 10.0.0.201</b>" in out   # a list figure in words, not a repr
    # the table keeps one short line of the error
    cell = re.search(r"<td class='failed'>FAILED<div class='failed'>(.*?)</div>", out).group(1)
    assert cell.endswith("…") and len(cell) < 200
    # the page's title links to it; a phase without a page keeps its title as text
    assert "<a href='html/02-reconfigure.html'>reconfigure</a>" in out
    assert "<td>Phase 22 · 01 — Preflight</td>" in out


def test_index_html_without_step_names_cell_and_all_passed(tmp_path):
    failure = {"phase": "install", "error": None, "cell": 4, "source": "", "page": None, "step": None}
    out = report_index.index_html(_data(tmp_path, [], failure))
    assert "Phase <b>install</b>, cell 4" in out and "unknown error" in out
    ok = report_index.index_html(_data(
        tmp_path, [{"phase": "verify", "status": "passed", "seconds": None, "page": None, "nb": None,
                    "summary": {}, "error": None}],
        outages=[{"fact": "no_cni_window", "label": "no-CNI window (install)", "opened_at": "2026-11-26T05:00:00Z",
                  "closed_at": "2026-11-26T05:00:12Z", "seconds": 12.34, "samples": 12,
                  "live_pods_min_pct": 0.0, "seconds_not_all_live": 11.0, "nodes_not_ready_max": 3}]))
    assert "ALL PHASES PASSED" in ok and "Where and why" not in ok and "12.3s" in ok
    assert "To roll this run back" not in ok


def _info(kind="twin", execute=True):
    return {"run_id": "run-1", "reports_dir": "/srv/reports", "params_file": "/srv/p22/params.yaml",
            "params_sha256": "a" * 64, "values_file": "/srv/p22/cilium-values.yaml", "values_sha256": "b" * 64,
            "target": {"name": "minicloud", "kind": kind},
            "runbook": {"version": "0.1.0", "commit": "0123456789abcdef" * 2 + "01234567", "dirty": True},
            "sessions": [{"phase": "preflight", "execute": execute, "at": "2026-11-26T05:00:00Z",
                          "user": "ops", "host": "bastion"}]}


def test_the_header_says_what_was_run_and_warns_of_a_stand_in_chart(tmp_path):
    standin = chart.ChartIdentity("twin/cilium 1.19.3 from http://127.0.0.1:8879/", "1.19.3", "ab" * 32, False,
                                  "its sha256 differs from the official 1.19.3 archive's (c8e0...)")
    out = report_index.index_html(_data(tmp_path, [], info=_info(), chart=standin))
    head = re.search(r"<h2 id='what'>What was run</h2>(.*?)<h2 id='attention'>", out, re.S).group(1)
    for text in ("minicloud", "twin: a rehearsal cluster", "EXECUTE", "twin/cilium 1.19.3", "ab" * 32,
                 "NOT THE OFFICIAL ARCHIVE", "/srv/p22/params.yaml", "a" * 64, "0.1.0", "0123456789ab",
                 "uncommitted changes", "ops@bastion", "2026-11-26T05:00:00Z"):
        assert text in head, text
    assert "class='standin'" in head and "STAND-IN CHART" in head and "helm pull cilium/cilium --version 1.19.3" in head
    official = chart.ChartIdentity("cilium/cilium 1.19.3 from https://helm.cilium.io/", "1.19.3",
                                   chart.OFFICIAL_SHA256["1.19.3"], True, "its sha256 is the official archive's")
    out = report_index.index_html(_data(tmp_path, [], info=_info("real", execute=False), chart=official))
    assert "STAND-IN" not in out and "OFFICIAL</span>" in out and "REAL cluster" in out and "DRY RUN" in out
    none = report_index.index_html(_data(tmp_path, [], info=_info()))
    assert "not installed by this run" in none and "STAND-IN" not in none


def test_needs_attention_lists_each_item_with_its_kind_colour_and_link(tmp_path):
    items = [{"phase": "preflight", "kind": "deferral-overridden", "message": "DEFER <overridden>",
              "link": "html/01-preflight.html#cell-id=c14"},
             {"phase": "verify", "kind": "no-regression-checks", "message": "no checks", "link": None}]
    out = report_index.index_html(_data(tmp_path, [], attention=items))
    box = re.search(r"<h2 id='attention'>Needs attention \(2\)</h2>(.*?)</ul>", out, re.S).group(1)
    assert "DEFER &lt;overridden&gt;" in box and "href='html/01-preflight.html#cell-id=c14'" in box
    overridden, plain_warning = report_index.KIND_WORDS["deferral-overridden"][1], \
        report_index.KIND_WORDS["no-regression-checks"][1]
    assert f"--c:{overridden}" in box and f"--c:{plain_warning}" in box and overridden != plain_warning
    assert "Nothing: no overridden verdict" in report_index.index_html(_data(tmp_path, []))


def test_an_overridden_gate_has_its_own_colour_not_the_pass_green(tmp_path):
    row = {"phase": "preflight", "status": "passed", "seconds": 1.0, "page": None, "nb": None, "error": None,
           "summary": {"gates": [{"name": "execute-or-defer", "passed": True, "overridden": True},
                                 {"name": "prerequisites", "passed": True}]}}
    out = report_index.index_html(_data(tmp_path, [row]))
    assert "<li class='overridden'>⚠ execute-or-defer (OVERRIDDEN)</li>" in out
    assert "<li class='passed'>✔ prerequisites</li>" in out


@pytest.mark.parametrize("kind, reports, want", [
    ("twin", "/srv/reports", "/venv/bin/runbook run --params /srv/p22/params.yaml --phases rollback "
                             "--run-id run-1 --execute"),
    ("real", "/srv/reports", "/venv/bin/runbook run --params /srv/p22/params.yaml --phases rollback "
                             "--run-id run-1 --execute --confirm minicloud"),
    ("twin", "/tmp/elsewhere", "/venv/bin/runbook run --params /srv/p22/params.yaml --phases rollback "
                               "--run-id run-1 --reports-dir /tmp/elsewhere --execute"),
])
def test_a_failed_run_prints_the_exact_rollback_command(tmp_path, kind, reports, want):
    info = {**_info(kind), "reports_dir": reports, "cli": "/venv/bin/runbook"}
    cmd = runinfo.rollback_command(info, default_reports_dir="/srv/reports")
    assert cmd == want
    failure = {"phase": "install", "error": "GateFailed: x", "cell": 4, "source": "", "page": None,
               "step": "Install", "status": "failed"}
    out = report_index.index_html(_data(tmp_path, [], failure, info=info, rollback_command=cmd))
    assert f"<pre class='cmd'>{want}</pre>" in out


def test_a_deliberate_stop_reads_as_stopped_not_as_a_fault(tmp_path):
    nb = executed(failed_at=3)
    err = nb.cells[3].outputs[-1]
    err.ename, err.evalue = "DeferredStop", "GATE FAILED: the verdict is DEFER"
    st = report.notebook_status(nb)
    assert st["status"] == "stopped" and st["error"].startswith("DeferredStop")
    failure = {"phase": "preflight", "error": st["error"], "cell": 3, "source": "", "page": None,
               "step": "Execute or defer?", "status": "stopped"}
    out = report_index.index_html(_data(tmp_path, [], failure))
    assert "RUN STOPPED at preflight: a deliberate stop" in out


def test_a_defer_stop_renders_as_a_message_without_a_traceback():
    e = DeferredStop("the verdict is DEFER", details=["pods: 111 < 500"],
                     hint="set proceed_despite_deferral = True in the parameters cell")
    lines = e._render_traceback_()
    assert lines[0].startswith("STOPPED: the verdict is DEFER")
    assert any("proceed_despite_deferral = True" in ln for ln in lines)
    assert not any("Traceback" in ln or "File " in ln for ln in lines)
    assert isinstance(e, GateFailed)   # a headless run still stops at it


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
    rows = [{"t": 100.0 + i, "api": i != 2, "nodes": 2, "nodes_ready": 2, "pods": 4, "pods_ready": 4,
             "pods_live": i % 5} for i in range(5)]
    wins = [outage.Window("no_cni_window", "no-CNI window", 101.5, "1970-01-01T00:01:43Z", 1.5),
            outage.Window("rollback_window", "rollback outage", "1970-01-01T00:01:43Z", None)]
    png = timeline_plot.png(rows, [{"phase": "install", "started": 101.0}], wins, [(100.5, 100.0), (102.0, 50.0)])
    import base64

    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert timeline_plot.png(rows[:1], [], []) is None   # one sample draws nothing
