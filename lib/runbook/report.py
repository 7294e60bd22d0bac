"""Render a run folder into HTML: one standalone page per phase, plus ``index.html``.

The phase pages are the executed notebooks through nbconvert (lab template, prompts
hidden, cells tagged ``remove-input``/``hide-input`` shown without their code, cells
tagged ``remove-cell`` dropped). Images are embedded and the template's CDN scripts
(require.js, MathJax, Mermaid) are left out, so each page stands alone: it opens from a
laptop or an air-gapped bastion and fetches nothing. The evidence records the index
reads back (a JSON line per gate and the summary) stay in the executed notebook but not
on the page, where they would only repeat the "GATE PASSED" line and the summary table.

``index.html`` leads with what an on-call engineer needs: each phase's status and
duration, its gates and key figures (read back from the evidence the notebooks
recorded), where and why a failed run stopped, a timeline of node and pod readiness
across the whole run with the no-CNI window shaded, and links to every page and to the
raw evidence (journal, snapshots, executed notebooks).

Everything written passes through :func:`runbook.redact.redact`.

Example:
    >>> from runbook import report
    >>> report.render_run("reports/20261126-051200-a1b2")   # doctest: +SKIP
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from .phases import PHASES

_EXPORTER = None


def _exporter() -> Any:
    """One HTML exporter reused for every page (nbconvert start-up costs seconds)."""
    global _EXPORTER
    if _EXPORTER is None:
        from jinja2 import DictLoader
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
# inherit the prose font), and table cells aligned left and top, long paths allowed to break
# (else one wide column squeezes the explanation column to a word per line).
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
.jp-OutputArea-output.jp-RenderedHTMLCommon td { overflow-wrap: anywhere; min-width: 4em; }
.jp-OutputArea-output.jp-RenderedHTMLCommon tbody th { color: #888; font-weight: normal; }
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


def record_phase(run_dir: Path, result: Any) -> None:
    """Append a phase outcome to ``phases.json`` (read by the index)."""
    path = Path(run_dir) / "phases.json"
    data = json.loads(path.read_text()) if path.exists() else []
    data = [d for d in data if d.get("phase") != result.phase]
    end = dt.datetime.now(dt.timezone.utc).timestamp()
    data.append({"phase": result.phase, "status": result.status, "seconds": round(result.seconds, 2),
                 "error": result.error, "failed_cell": result.failed_cell,
                 "started": end - result.seconds, "ended": end})
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)


def notebook_status(nb: Any) -> dict[str, Any]:
    """Status, duration and failure of an executed notebook from papermill's metadata."""
    pm = nb.metadata.get("papermill", {})
    failed_cell = None
    error = None
    for i, cell in enumerate(nb.cells):
        cpm = cell.get("metadata", {}).get("papermill", {})
        if cpm.get("exception") or cpm.get("status") == "failed":
            failed_cell = i
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    error = f"{out.get('ename')}: {out.get('evalue')}"
            break
    if pm.get("exception") and failed_cell is None:
        error = "the kernel died or the run was interrupted"
    status = "failed" if (pm.get("exception") or failed_cell is not None) else "passed"
    if not pm.get("end_time") and status == "passed":
        status = "incomplete"
    return {"status": status, "seconds": pm.get("duration"), "error": error,
            "failed_cell": failed_cell, "parameters": pm.get("parameters", {}),
            "cells": [(c.get("metadata", {}).get("papermill", {}).get("duration") or 0) for c in nb.cells]}


def render_phase(nb_path: Path, out_dir: Path) -> Path:
    """Render one executed notebook to ``out_dir/<name>.html``."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    body, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
    out = out_dir / (nb_path.stem + ".html")
    _write(out, body)
    return out


def _timeline_png(run_dir: Path, phases: list[dict[str, Any]], window: dict[str, Any]) -> str | None:
    from .timeline import load

    rows = load(run_dir)
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = rows[0]["t"]
    fig, ax = plt.subplots(figsize=(10, 3.8), dpi=100)
    ok = [r for r in rows if r.get("api")]
    xs = [r["t"] - t0 for r in ok]
    if ok:
        # Pods drawn wide underneath, nodes narrow on top: at 100% both stay visible.
        ax.step(xs, [100.0 * r["pods_ready"] / max(r["pods"], 1) for r in ok], where="post",
                label="pods Ready % (non-hostNetwork)", color="#2ca02c", lw=3, alpha=0.8)
        ax.step(xs, [100.0 * r["nodes_ready"] / max(r["nodes"], 1) for r in ok], where="post",
                label="nodes Ready %", color="#1f77b4", lw=1.3)
    down = [r["t"] - t0 for r in rows if not r.get("api")]
    if down:
        ax.scatter(down, [2] * len(down), marker="|", color="#d62728", label="API unreachable")
    opened, closed = _ts(window.get("opened_at")), _ts(window.get("closed_at"))
    if opened:
        ax.axvspan(opened - t0, (closed or rows[-1]["t"]) - t0, color="#ff7f0e", alpha=0.15,
                   label="no-CNI window")
    for ph in phases:
        if ph.get("started"):
            ax.axvline(ph["started"] - t0, color="#999", lw=0.8, ls="--")
            ax.text(ph["started"] - t0, 103, ph["phase"], fontsize=8, color="#555")
    ax.set_ylim(0, 110)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("% ready")
    # Below the axes: inside them the legend hid the API-unreachable marks near 0%.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _ts(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _journal(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "journal.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, (list, dict)):
        return html.escape(json.dumps(v)[:200])
    return html.escape(str(v))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{border:1px solid #ddd;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} .passed{color:#116611;font-weight:600} .failed{color:#b00020;font-weight:600}
.not-run,.incomplete{color:#888} .verdict{font-size:1.3rem;padding:.6rem 1rem;border-radius:6px;display:inline-block}
.ok{background:#e6f4ea;color:#116611} .bad{background:#fde7e9;color:#b00020}
.fail-box{border-left:4px solid #b00020;background:#fff5f5;padding:.6rem 1rem;white-space:pre-wrap;font-family:monospace}
ul.gates{margin:0;padding-left:1.1rem} code{background:#f3f3f3;padding:0 .2rem}
"""


def render_run(run_dir: str | os.PathLike) -> Path:
    """Render every executed phase notebook and ``index.html``; returns the index path."""
    import nbformat

    from .evidence import read_records

    run_dir = Path(run_dir)
    html_dir = run_dir / "html"
    html_dir.mkdir(mode=0o700, exist_ok=True)
    recorded = {p["phase"]: p for p in (json.loads((run_dir / "phases.json").read_text())
                                         if (run_dir / "phases.json").exists() else [])}
    journal = _journal(run_dir)
    rows = []
    failure = None
    for phase, fname in PHASES.items():
        nb_path = run_dir / fname
        if not nb_path.exists():
            if phase in recorded:
                rows.append({"phase": phase, "status": recorded[phase]["status"], "seconds": None,
                             "page": None, "nb": None, "summary": {}, "error": recorded[phase].get("error")})
            continue
        nb = nbformat.read(nb_path, as_version=4)
        st = notebook_status(nb)
        try:
            page = render_phase(nb_path, html_dir)
        except Exception as e:  # a page that cannot render must not hide the others
            page, st["error"] = None, (st["error"] or "") + f" (page not rendered: {e})"
        records = read_records(nb_path)
        summary = records.get("summary") or {}
        if not summary.get("gates"):
            # A phase that stopped never reached s.finish(): its gates (the failed one
            # included) are still in the per-gate records, in the order they were met.
            summary = {**summary, "gates": [v for k, v in records.items()
                                            if k.startswith("gate/") and isinstance(v, dict)]}
        row = {"phase": phase, "status": st["status"], "seconds": st["seconds"], "page": page,
               "nb": nb_path, "summary": summary, "error": st["error"]}
        rows.append(row)
        if st["status"] == "failed" and failure is None:
            cell_src, step, anchor = "", None, None
            if st["failed_cell"] is not None:
                cell = nb.cells[st["failed_cell"]]
                cell_src, anchor = cell.get("source", ""), cell.get("id")
                step = _section_of(nb, st["failed_cell"])
            failure = {"phase": phase, "error": st["error"], "cell": st["failed_cell"], "source": cell_src,
                       "page": page, "step": step, "anchor": anchor}
    window = journal.get("facts", journal).get("no_cni_window", {}) if isinstance(journal, dict) else {}
    png = _timeline_png(run_dir, list(recorded.values()), window or {})
    index = run_dir / "index.html"
    _write(index, _index_html(run_dir, rows, failure, png, window or {}))
    return index


def _section_of(nb: Any, index: int) -> str | None:
    """The heading of the runbook step a cell belongs to (the nearest Markdown heading above)."""
    for cell in reversed(nb.cells[:index]):
        if cell.get("cell_type") != "markdown" or "papermill-error-cell-tag" in cell.get("metadata", {}).get("tags", []):
            continue
        for line in cell.get("source", "").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or None
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _index_html(run_dir: Path, rows: list[dict], failure: dict | None, png: str | None,
                window: dict[str, Any]) -> str:
    ran = [r for r in rows if r["status"] != "not-run"]
    all_ok = bool(ran) and all(r["status"] == "passed" for r in ran)
    verdicts = [r["summary"].get("verdict") for r in ran if r["summary"].get("verdict")]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Phase 22 run {html.escape(run_dir.name)}</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>Phase 22: k3s Flannel → Cilium + Hubble</h1>",
           f"<p class='sub'>run <code>{html.escape(run_dir.name)}</code> · rendered "
           f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}</p>",
           f"<p class='verdict {'ok' if all_ok else 'bad'}'>"
           f"{'ALL PHASES PASSED' if all_ok else 'RUN STOPPED: see below'}"
           + (f" · verdict: {html.escape(verdicts[-1])}" if verdicts else "") + "</p>"]
    if failure:
        # The pages hide cell numbers, so the step is named by its heading and the link
        # opens the page at the failing cell (nbconvert gives each cell an id anchor).
        link = ""
        if failure.get("page"):
            frag = f"#cell-id={failure['anchor']}" if failure.get("anchor") else ""
            link = (f" (<a href='html/{html.escape(failure['page'].name + frag)}'>open the page at the "
                    f"failing cell</a>)")
        where = (f"step <b>{html.escape(failure['step'])}</b>" if failure.get("step")
                 else f"cell {failure['cell']}")
        out.append(f"<h2>Where and why it stopped</h2><p>Phase <b>{html.escape(failure['phase'])}</b>, "
                   f"{where}{link}</p>")
        out.append(f"<div class='fail-box'>{html.escape(failure['error'] or 'unknown error')}</div>")
        if failure.get("source"):
            out.append(f"<p>The failing step:</p><pre class='fail-box'>{html.escape(failure['source'])}</pre>")
    out.append("<h2>Phases</h2><table><tr><th>phase</th><th>status</th><th>duration</th>"
               "<th>gates</th><th>key figures</th><th>evidence</th></tr>")
    for r in rows:
        s = r["summary"]
        gates = s.get("gates") or []
        glist = "".join(f"<li class='{'passed' if g.get('passed') else 'failed'}'>"
                        f"{'✔' if g.get('passed') else '✘'} {html.escape(str(g.get('name')))}</li>" for g in gates)
        figs = "".join(f"<div>{html.escape(str(k))}: <b>{_fmt(v)}</b></div>"
                       for k, v in (s.get("figures") or {}).items())
        links = []
        if r.get("page"):
            links.append(f"<a href='html/{r['page'].name}'>page</a>")
        if r.get("nb"):
            links.append(f"<a href='{r['nb'].name}'>notebook</a>")
        dur = f"{r['seconds']:.1f}s" if isinstance(r.get("seconds"), (int, float)) else "–"
        # The full message is in "Where and why it stopped" above: the table keeps one line.
        err = f"<div class='failed'>{html.escape(_short(r['error']))}</div>" if r.get("error") else ""
        out.append(f"<tr><td>{html.escape(r['phase'])}</td><td class='{r['status']}'>{r['status'].upper()}{err}</td>"
                   f"<td>{dur}</td><td><ul class='gates'>{glist}</ul></td><td>{figs}</td>"
                   f"<td>{' · '.join(links)}</td></tr>")
    out.append("</table>")
    reh = run_dir / "rehearsal.json"
    if reh.exists():
        data = json.loads(reh.read_text())
        out.append("<h2>Rehearsal: back on flannel after the rollback?</h2><table>"
                   "<tr><th>check (made from the twin's side)</th><th>result</th><th>detail</th></tr>")
        for name, c in data.get("checks", {}).items():
            out.append(f"<tr><td>{html.escape(name)}</td><td class='{'passed' if c['ok'] else 'failed'}'>"
                       f"{'OK' if c['ok'] else 'FAILED'}</td><td>{_fmt(c['detail'])}</td></tr>")
        out.append("</table>")
    out += _snapshot_html(run_dir)
    out.append("<h2>Timeline</h2>")
    if png:
        out.append(f"<img alt='node and pod readiness over the run' src='data:image/png;base64,{png}'>")
    else:
        out.append("<p>No readiness samples were recorded for this run.</p>")
    if window.get("opened_at"):
        out.append(f"<p>No-CNI window: opened {html.escape(str(window.get('opened_at')))}, "
                   f"closed {html.escape(str(window.get('closed_at') or 'not closed'))}"
                   + (f" ({window['seconds']:.1f}s)" if isinstance(window.get("seconds"), (int, float)) else "")
                   + "</p>")
    out.append("<h2>Raw evidence</h2><ul>")
    for name in ("journal.json", "commands.jsonl", "phases.json", "timeline.jsonl", "rehearsal.json"):
        if (run_dir / name).exists():
            out.append(f"<li><a href='{name}'>{name}</a></li>")
    snaps = sorted((run_dir / "snapshots").rglob("*.*")) if (run_dir / "snapshots").exists() else []
    for sp in snaps:
        rel = sp.relative_to(run_dir)
        out.append(f"<li><a href='{html.escape(str(rel))}'>{html.escape(str(rel))}</a></li>")
    out.append("</ul></body></html>")
    return "\n".join(out)


def _snapshot_html(run_dir: Path) -> list[str]:
    """The cluster snapshot preflight took (a link) and, for a twin built from a snapshot,
    what it assumed (``assumed.json``): the section "Cluster snapshot" of the index."""
    out: list[str] = []
    arch, assumed = run_dir / "cluster-snapshot.tar.gz", run_dir / "assumed.json"
    if arch.exists():
        out.append("<h2>Cluster snapshot</h2><p>Taken by preflight, secrets masked: "
                   "<a href='cluster-snapshot.tar.gz'>cluster-snapshot.tar.gz</a> "
                   f"({arch.stat().st_size // 1024} KiB). Rehearse this cluster: <code>runbook "
                   "rehearse --from-snapshot cluster-snapshot.tar.gz --with-rollback</code></p>")
    if assumed.exists():
        data = json.loads(assumed.read_text())
        out.append("<h2>Assumed</h2><p>This run's cluster is a twin built from the snapshot "
                   f"<code>{html.escape(str(data.get('snapshot') or ''))}</code>; where the archive "
                   "could not tell, it assumed:</p><ul class='assumed'>"
                   + "".join(f"<li>{html.escape(str(a))}</li>" for a in data.get("assumptions") or [])
                   + "</ul>")
    return out
