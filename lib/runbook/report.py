"""Render a run folder into HTML: one standalone page per phase, plus ``index.html``.

The phase pages are the executed notebooks through nbconvert (lab template, prompts
hidden, cells tagged ``remove-input``/``hide-input`` shown without their code, cells
tagged ``remove-cell`` dropped). Each page opens with a bar linking back to the index,
its title (``Phase 22 · 01 — Preflight``, the same everywhere), its status and a table
of contents of its steps. Images are embedded and the template's CDN scripts
(require.js, MathJax, Mermaid) are left out, so each page stands alone: it opens from a
laptop or an air-gapped bastion and fetches nothing. The evidence records the index
reads back (a JSON line per gate and the summary) stay in the executed notebook but not
on the page, where they would only repeat the "GATE PASSED" line and the summary table.

``index.html`` (:mod:`runbook.report_index`) leads with what the engineer who approves
the run needs: what was rehearsed (target, mode, chart, params, runbook version, who and
when), what needs attention, where and why a failed run stopped and the command that
rolls it back, each phase's status and figures, and the timeline with every outage
window measured.

A run is rendered once, at its end (and once more when a phase fails, so a failed run
always leaves a report). A page whose notebook has not changed since it was rendered is
not rendered again.

Everything written passes through :func:`runbook.redact.redact`.

Example:
    >>> from runbook import report
    >>> report.render_run("reports/20261126-051200-a1b2")   # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from pathlib import Path
from typing import Any

from . import lean_imports, outage, phases as phases_mod
from .phases import PHASES

_EXPORTER = None

#: the error a deliberate stop raises (preflight's DEFER): the phase is "stopped", not "failed"
STOP_ERRORS = {"DeferredStop"}


def _exporter() -> Any:
    """One HTML exporter reused for every page (nbconvert start-up costs seconds)."""
    global _EXPORTER
    if _EXPORTER is None:
        from jinja2 import DictLoader
        lean_imports.jsonschema()   # before nbconvert/nbformat import it
        from nbconvert import HTMLExporter
        from nbconvert.preprocessors import TagRemovePreprocessor
        from traitlets.config import Config

        cfg = Config()
        cfg.TagRemovePreprocessor.enabled = True
        cfg.TagRemovePreprocessor.remove_cell_tags = {"remove-cell"}
        cfg.TagRemovePreprocessor.remove_input_tags = {"remove-input", "hide-input", "parameters",
                                                       "injected-parameters"}
        cfg.HTMLExporter.exclude_input_prompt = True
        cfg.HTMLExporter.exclude_output_prompt = True
        cfg.HTMLExporter.embed_images = True
        # validate the notebook once, after every preprocessor, not after each (~0.25 s a page)
        cfg.HTMLExporter.optimistic_validation = True
        exp = HTMLExporter(config=cfg, template_name="lab",
                           extra_loaders=[DictLoader({"phase22.html.j2": _TEMPLATE})])
        exp.template_file = "phase22.html.j2"
        exp.register_preprocessor(TagRemovePreprocessor(config=cfg), enabled=True)
        exp.register_preprocessor(_drop_evidence_outputs, enabled=True)
        _EXPORTER = exp
    return _EXPORTER


# The lab template with every block that loads a script from a CDN emptied (the pages
# use no widgets, LaTeX or Mermaid) and a few rules, in the last block of <head> so that
# they come after the lab CSS, so that the pages read as a report:
# monospace <pre> for configs, diffs and command logs (the lab CSS makes output <pre>
# inherit the prose font); table cells aligned left and top, where a word never breaks
# (paths get break points after each "/" from runbook.presentation instead); the
# navigation bar and the table of contents.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_css -%}
<style type="text/css">
.jp-OutputArea-output pre, .jp-OutputArea-output.jp-RenderedHTMLCommon pre {
  font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px);
  line-height: 1.35; background: #f7f7f7; border: 1px solid #e4e4e4; padding: .4rem .6rem;
  overflow-x: auto; }
.jp-OutputArea-output.jp-RenderedText pre { background: none; border: none; padding: 0; }
.jp-OutputArea-output.jp-RenderedHTMLCommon td, .jp-OutputArea-output.jp-RenderedHTMLCommon th {
  text-align: left; vertical-align: top; }
.jp-OutputArea-output.jp-RenderedHTMLCommon td { overflow-wrap: break-word; word-break: normal;
  min-width: 4em; }
.jp-OutputArea-output.jp-RenderedHTMLCommon tbody th { color: #555; font-weight: 600; }
.p22-nav { position: sticky; top: 0; z-index: 10; background: #f3f4f6; border-bottom: 1px solid #d1d5db;
  padding: .45rem 1rem; font: 14px system-ui, sans-serif; }
.p22-nav a { margin-right: 1rem; } .p22-nav .passed { color: #116611; font-weight: 600; }
.p22-nav .failed { color: #b00020; font-weight: 600; } .p22-nav .stopped { color: #b45309; font-weight: 600; }
.p22-toc { font: 14px system-ui, sans-serif; margin: .8rem 1rem 0 1.2rem; padding: .4rem .8rem;
  border-left: 3px solid #d1d5db; }
.p22-toc ol { margin: .2rem 0 .2rem 1.2rem; padding: 0; } .p22-toc li.sub { list-style: circle; margin-left: 1rem; }
</style>
{%- endblock html_head_css -%}
"""


def _drop_evidence_outputs(nb: Any, resources: Any) -> tuple[Any, Any]:
    """Remove the evidence records from the page (they stay in the .ipynb for the index)."""
    from .evidence import MIMETYPE

    for cell in nb.cells:
        if cell.get("cell_type") == "code" and cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if MIMETYPE not in (o.get("data") or {})]
    return nb, resources


def _redact(text: str) -> str:
    from .redact import redact

    return redact(text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_redact(text))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def read_phases(run_dir: Path) -> list[dict[str, Any]]:
    """``phases.json`` of a run folder ([] when absent)."""
    try:
        data = json.loads((Path(run_dir) / "phases.json").read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _journal(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / "journal.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def outages_of(run_dir: Path, phase: str | None = None) -> list[dict[str, Any]]:
    """The journaled outage windows (of ``phase``: the ones it opened or closed), each
    with the timeline's measurement (:func:`runbook.outage.measure`)."""
    from .timeline import load

    facts = _journal(run_dir).get("facts") or {}
    rows = load(run_dir)
    out = []
    for w in outage.windows(facts):
        opener, closer = outage.OPENED_BY.get(w.fact), outage.WINDOWS[w.fact][1]
        if phase is not None and phase not in (opener, closer):
            continue
        out.append({"window": w.fact, "label": w.label, "opened_at": w.opened_at,
                    "closed_at": w.closed_at, "seconds": w.seconds, **outage.measure(w, rows)})
    return out


def record_phase(run_dir: Path, result: Any) -> None:
    """Append a phase outcome to ``phases.json`` (read by the index), with the outage
    windows the phase opened or closed and their measured figures."""
    path = Path(run_dir) / "phases.json"
    data = [d for d in read_phases(run_dir) if d.get("phase") != result.phase]
    end = dt.datetime.now(dt.timezone.utc).timestamp()
    data.append({"phase": result.phase, "title": phases_mod.get(result.phase).full_title,
                 "status": result.status, "seconds": round(result.seconds, 2),
                 "error": result.error, "failed_cell": result.failed_cell,
                 "started": end - result.seconds, "ended": end,
                 "outages": outages_of(Path(run_dir), result.phase)})
    _write_json(path, data)


def notebook_status(nb: Any) -> dict[str, Any]:
    """Status, duration and failure of an executed notebook from papermill's metadata.

    ``status`` is ``passed``, ``failed``, ``stopped`` (a deliberate stop such as
    preflight's DEFER: :data:`STOP_ERRORS`) or ``incomplete``.
    """
    pm = nb.metadata.get("papermill", {})
    failed_cell = None
    error = None
    ename = None
    for i, cell in enumerate(nb.cells):
        cpm = cell.get("metadata", {}).get("papermill", {})
        if cpm.get("exception") or cpm.get("status") == "failed":
            failed_cell = i
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    ename = out.get("ename")
                    error = f"{ename}: {out.get('evalue')}"
            break
    if pm.get("exception") and failed_cell is None:
        error = "the kernel died or the run was interrupted"
    status = "failed" if (pm.get("exception") or failed_cell is not None) else "passed"
    if status == "failed" and ename in STOP_ERRORS:
        status = "stopped"
    if not pm.get("end_time") and status == "passed":
        status = "incomplete"
    return {"status": status, "seconds": pm.get("duration"), "error": error,
            "failed_cell": failed_cell, "parameters": pm.get("parameters", {}),
            "cells": [(c.get("metadata", {}).get("papermill", {}).get("duration") or 0) for c in nb.cells]}


# ------------------------------------------------------------------------ phase pages
_HEADING = re.compile(r"<h([23]) id=\"([^\"]+)\"[^>]*>(.*?)</h\1>", re.S)


def _toc(body: str) -> str:
    items = []
    for level, anchor, inner in _HEADING.findall(body):
        text = re.sub(r"<[^>]+>", "", inner).replace("¶", "").strip()
        if text:
            cls = " class='sub'" if level == "3" else ""
            items.append(f"<li{cls}><a href='#{html.escape(anchor, quote=True)}'>{html.escape(text)}</a></li>")
    return f"<nav class='p22-toc'><b>Contents</b><ol>{''.join(items)}</ol></nav>" if items else ""


def _page_chrome(body: str, *, title: str, status: dict[str, Any] | None, run_id: str) -> str:
    """The page's <title>, the bar back to the index and the table of contents."""
    body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", body, count=1, flags=re.S)
    state = ""
    if status:
        secs = f" in {status['seconds']:.1f}s" if isinstance(status.get("seconds"), (int, float)) else ""
        state = (f"<span class='{html.escape(status['status'])}'>{html.escape(status['status'].upper())}</span>"
                 f"{secs}")
    nav = (f"<nav class='p22-nav'><a href='../index.html'>&larr; run index</a>"
           f"<b>{html.escape(title)}</b> &middot; {state} &middot; run <code>{html.escape(run_id)}</code></nav>")
    chrome = nav + _toc(body)
    m = re.search(r"<main[^>]*>", body) or re.search(r"<body[^>]*>", body)
    return body[:m.end()] + chrome + body[m.end():] if m else chrome + body


def render_phase(nb_path: Path, out_dir: Path, *, nb: Any = None, status: dict[str, Any] | None = None,
                 force: bool = True) -> Path:
    """Render one executed notebook to ``out_dir/<name>.html``.

    Args:
        nb: the notebook when already read; status: :func:`notebook_status` of it.
        force: render even when the page is newer than the notebook (else it is kept).
    """
    lean_imports.jsonschema()   # before nbformat imports it
    import nbformat

    out = out_dir / (nb_path.stem + ".html")
    if not force and out.exists() and out.stat().st_mtime_ns >= nb_path.stat().st_mtime_ns:
        return out
    nb = nb if nb is not None else nbformat.read(nb_path, as_version=4)
    phase = next((p for p in phases_mod.ALL if p.notebook == nb_path.name), None)
    title = phase.full_title if phase else nb_path.stem
    body, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    run_id = nb_path.parent.name
    _write(out, _page_chrome(body, title=title, status=status, run_id=run_id))
    return out


# ------------------------------------------------------------------------ the run
def _section_of(nb: Any, index: int) -> str | None:
    """The heading of the runbook step a cell belongs to (the nearest Markdown heading above)."""
    for cell in reversed(nb.cells[:index]):
        if cell.get("cell_type") != "markdown" or "papermill-error-cell-tag" in cell.get("metadata", {}).get("tags", []):
            continue
        for line in cell.get("source", "").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or None
    return None


def _attention(phase: str, nb: Any, page: Path | None, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The phase's "Needs attention" items: attention records, overridden gates and lost
    evidence, each with the link to its cell."""
    from .evidence import lost_in, records_with_cells

    def link(cell: str | None) -> str | None:
        return f"html/{page.name}#cell-id={cell}" if page is not None and cell else \
            (f"html/{page.name}" if page is not None else None)

    items = []
    for name, (value, cell) in records_with_cells(nb).items():
        if name.startswith("attention/") and isinstance(value, dict):
            items.append({"phase": phase, "kind": value.get("kind", "note"),
                          "message": str(value.get("message", "")), "link": link(cell)})
    for text, cell in lost_in(nb):
        items.append({"phase": phase, "kind": "evidence-lost", "message": text, "link": link(cell)})
    known = {i["message"] for i in items}
    for lost in summary.get("evidence_lost") or []:   # recorded in the summary but not shown?
        text = f"EVIDENCE LOST: {lost.get('name')} was not recorded ({lost.get('reason')})"
        if not any(str(lost.get("name")) in k for k in known):
            items.append({"phase": phase, "kind": "evidence-lost", "message": text, "link": link(None)})
    return items


def render_run(run_dir: str | os.PathLike) -> Path:
    """Render every executed phase notebook and ``index.html``; returns the index path."""
    lean_imports.jsonschema()   # before nbformat imports it
    import nbformat

    from . import chart, report_index, runinfo, timeline_plot
    from .evidence import records_with_cells
    from .timeline import load

    run_dir = Path(run_dir)
    html_dir = run_dir / "html"
    html_dir.mkdir(mode=0o700, exist_ok=True)
    recorded_list = read_phases(run_dir)
    recorded = {p["phase"]: p for p in recorded_list}
    journal = _journal(run_dir)
    facts = journal.get("facts") or {}
    rows, attention = [], []
    failure = None
    for phase, fname in PHASES.items():
        nb_path = run_dir / fname
        title = phases_mod.get(phase).full_title
        if not nb_path.exists():
            if phase in recorded:
                rows.append({"phase": phase, "title": title, "status": recorded[phase]["status"],
                             "seconds": None, "page": None, "nb": None, "summary": {},
                             "error": recorded[phase].get("error")})
            continue
        nb = nbformat.read(nb_path, as_version=4)
        st = notebook_status(nb)
        if phase in recorded and recorded[phase].get("status") == "stopped":
            st["status"] = "stopped"
        try:
            page = render_phase(nb_path, html_dir, nb=nb, status=st, force=False)
        except Exception as e:  # a page that cannot render must not hide the others
            page, st["error"] = None, (st["error"] or "") + f" (page not rendered: {e})"
        records = {k: v for k, (v, _c) in records_with_cells(nb).items()}
        summary = records.get("summary") or {}
        if not summary.get("gates"):
            # A phase that stopped never reached s.finish(): its gates (the failed one
            # included) are still in the per-gate records, in the order they were met.
            summary = {**summary, "gates": [v for k, v in records.items()
                                            if k.startswith("gate/") and isinstance(v, dict)]}
        rows.append({"phase": phase, "title": title, "status": st["status"], "seconds": st["seconds"],
                     "page": page, "nb": nb_path, "summary": summary, "error": st["error"]})
        attention += _attention(phase, nb, page, summary)
        if st["status"] in ("failed", "stopped") and failure is None:
            cell_src, step, anchor = "", None, None
            if st["failed_cell"] is not None:
                cell = nb.cells[st["failed_cell"]]
                cell_src, anchor = cell.get("source", ""), cell.get("id")
                step = _section_of(nb, st["failed_cell"])
            failure = {"phase": phase, "title": title, "status": st["status"], "error": st["error"],
                       "cell": st["failed_cell"], "source": cell_src, "page": page, "step": step,
                       "anchor": anchor}
    info = runinfo.read(run_dir)
    windows = outage.windows(facts)
    samples = load(run_dir)
    rehearsal = _rehearsal(run_dir)
    png = timeline_plot.png(samples, recorded_list, windows,
                            timeline_plot.availability_series(rehearsal))
    from .runner import REPORTS_DIR

    data = report_index.IndexData(
        run_dir=run_dir, rows=rows, failure=failure, png=png, info=info,
        chart=chart.ChartIdentity.from_dict(facts.get(chart.FACT)), attention=attention,
        outages=[{"label": w.label, "fact": w.fact, "opened_at": w.opened_at, "closed_at": w.closed_at,
                  "seconds": w.seconds, **outage.measure(w, samples)} for w in windows],
        rollback_command=(runinfo.rollback_command(info, default_reports_dir=REPORTS_DIR)
                          if failure and "EXECUTE" in runinfo.mode(info) else None),
        rehearsal=rehearsal, journal_facts=facts)
    _copy_docs(run_dir)
    index = run_dir / "index.html"
    _write(index, report_index.index_html(data))
    return index


def _copy_docs(run_dir: Path) -> None:
    """The project's reference (``docs/*.md``) next to the pages, which link to it as the
    notebooks do (``../docs/...``): the run folder stays readable on its own."""
    from .runner import REPO

    src = REPO / "docs"
    if not src.is_dir():
        return
    dst = run_dir / "docs"
    dst.mkdir(mode=0o700, exist_ok=True)
    for md in src.glob("*.md"):
        _write(dst / md.name, md.read_text())


def _rehearsal(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "rehearsal.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
