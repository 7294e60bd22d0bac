"""The run's ``index.html``, written for the engineer who must approve the migration.

Top to bottom:

1. the verdict (all passed, stopped, failed);
2. **what was run**: the target and its kind, EXECUTE or DRY RUN, the Cilium chart's
   source and sha256 (with a loud STAND-IN banner when it is not the official archive,
   :mod:`runbook.chart`), the params and values files with their sha256, the runbook's
   version and git commit, who ran each phase and when (``run.json``,
   :mod:`runbook.runinfo`);
3. **needs attention**: each item a phase flagged (a DEFER verdict overridden, preflight
   warnings, a verify without regression checks, pods left for a person, a lock taken
   over, evidence lost), linked to its cell;
4. for a failed or stopped run, **where and why it stopped** and the exact command that
   rolls this run back;
5. the phases: status, duration, gates (an overridden gate in its own colour), key
   figures, links to each page and notebook;
6. the rehearsal's own checks (``rehearsal.json``), when there are any;
7. the cluster snapshot preflight took, and what a twin built from a snapshot assumed;
8. the timeline, the service availability a rehearsal's prober measured
   (:mod:`runbook.report_availability`), and a table of every outage window with its
   measured figures;
9. the raw evidence.

:func:`index_html` is pure: it only formats :class:`IndexData` (``report.render_run``
gathers it), so the unit tests give it data and read the HTML.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .presentation import plain
from .report_availability import availability_html
from .strategy_compare import comparison_html

__all__ = ["IndexData", "index_html", "KIND_WORDS"]

#: the words and colour of each "Needs attention" kind
KIND_WORDS: dict[str, tuple[str, str]] = {
    "deferral-overridden": ("DEFER overridden", "#7c3aed"),
    "preflight-warning": ("preflight warning", "#b45309"),
    "no-regression-checks": ("no regression checks", "#b45309"),
    "pods-skipped": ("follow-up: pods left for a person", "#1d4ed8"),
    "lock-takeover": ("lock taken over", "#b45309"),
    "evidence-lost": ("evidence lost", "#b00020"),
}


@dataclass
class IndexData:
    """Everything the index shows (gathered by :func:`runbook.report.render_run`)."""

    run_dir: Path
    rows: list[dict[str, Any]]
    failure: dict[str, Any] | None = None
    png: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    chart: Any = None
    attention: list[dict[str, Any]] = field(default_factory=list)
    outages: list[dict[str, Any]] = field(default_factory=list)
    rollback_command: str | None = None
    rehearsal: dict[str, Any] | None = None
    journal_facts: dict[str, Any] = field(default_factory=dict)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{border:1px solid #ddd;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} .passed{color:#116611;font-weight:600} .failed{color:#b00020;font-weight:600}
.stopped{color:#b45309;font-weight:600} .overridden{color:#7c3aed;font-weight:600} .skipped{color:#666}
.not-run,.incomplete{color:#888} .verdict{font-size:1.3rem;padding:.6rem 1rem;border-radius:6px;display:inline-block}
.ok{background:#e6f4ea;color:#116611} .bad{background:#fde7e9;color:#b00020} .halt{background:#fff7e6;color:#92400e}
.fail-box{border-left:4px solid #b00020;background:#fff5f5;padding:.6rem 1rem;white-space:pre-wrap;font-family:monospace}
.cmd{border:2px solid #1d4ed8;background:#eff6ff;padding:.6rem 1rem;font-family:monospace;white-space:pre-wrap;word-break:break-all}
.standin{border:4px solid #b45309;background:#fff7e6;color:#7c2d12;padding:.8rem 1rem;font-size:1.1rem;font-weight:600;margin:1rem 0}
table.run th{width:11rem;background:#fafafa} code{background:#f3f3f3;padding:0 .2rem;word-break:break-all}
ul.gates{margin:0;padding-left:1.1rem} ul.attention{padding-left:0;list-style:none}
ul.attention li{border-left:5px solid var(--c);background:#fafafa;margin:.4rem 0;padding:.4rem .8rem}
ul.attention .kind{color:var(--c);font-weight:700} ul.attention .msg{white-space:pre-wrap}
.none{color:#116611}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _verdict(d: IndexData) -> str:
    ran = [r for r in d.rows if r["status"] != "not-run"]
    all_ok = bool(ran) and all(r["status"] == "passed" for r in ran)
    verdicts = [r["summary"].get("verdict") for r in ran if r["summary"].get("verdict")]
    tail = f" · verdict: {_e(verdicts[-1])}" if verdicts else ""
    if all_ok:
        return f"<p class='verdict ok'>ALL PHASES PASSED{tail}</p>"
    if d.failure and d.failure.get("status") == "stopped":
        return (f"<p class='verdict halt'>RUN STOPPED at {_e(d.failure['phase'])}: a deliberate stop, "
                f"see below{tail}</p>")
    return f"<p class='verdict bad'>RUN STOPPED: see below{tail}</p>"


def _commit(rb: dict[str, Any]) -> str:
    commit = rb.get("commit")
    if not commit:
        return f"{_e(rb.get('version', 'unknown'))} (not a git checkout: no commit)"
    dirty = " <b>+ uncommitted changes</b>" if rb.get("dirty") else ""
    return f"{_e(rb.get('version', 'unknown'))} · commit <code>{_e(commit[:12])}</code>{dirty}"


def _who(info: dict[str, Any]) -> str:
    sessions = info.get("sessions") or []
    if not sessions:
        return "unknown (no run.json)"
    people = sorted({f"{s.get('user')}@{s.get('host')}" for s in sessions})
    first, last = sessions[0].get("at", "?"), sessions[-1].get("at", "?")
    when = first if first == last else f"{first} … {last}"
    lines = "".join(f"<li>{_e(s.get('phase'))}: {'EXECUTE' if s.get('execute') else 'DRY RUN'} by "
                    f"{_e(s.get('user'))}@{_e(s.get('host'))} at {_e(s.get('at'))}</li>" for s in sessions)
    return (f"{_e(', '.join(people))} · {_e(when)}"
            f"<details><summary>{len(sessions)} phase session(s)</summary><ul>{lines}</ul></details>")


def _header(d: IndexData) -> list[str]:
    from .runinfo import mode

    info = d.info
    target = info.get("target") or {}
    kind = target.get("kind")
    kind_words = {"twin": "twin: a rehearsal cluster on this machine's loopback",
                  "real": "REAL cluster"}.get(kind, str(kind or "unknown"))
    m = mode(info)
    mode_html = (f"<b style='color:#b00020'>{m}</b> (changes were applied)" if m.startswith("EXECUTE")
                 else f"<b>{m}</b> (nothing was changed)" if m == "DRY RUN" else _e(m))
    if d.chart is not None:
        chart = (f"<code>{_e(d.chart.source)}</code><br>sha256 <code>{_e(d.chart.sha256 or 'unknown')}</code><br>"
                 + (f"<span class='passed'>OFFICIAL</span>: {_e(d.chart.how)}" if d.chart.official
                    else f"<span class='stopped'>NOT THE OFFICIAL ARCHIVE</span>: {_e(d.chart.how)}"))
    elif d.journal_facts.get("cilium_installed"):
        chart = ("<span class='stopped'>installed, but not identified</span>: the install page says why; "
                 "compare the archive in the run's helm cache with the official sha256 by hand")
    else:
        chart = "not installed by this run (no helm install was recorded in the journal)"
    params = (f"<code>{_e(info.get('params_file'))}</code><br>sha256 <code>{_e(info.get('params_sha256'))}</code>"
              if info.get("params_file") else "unknown (no run.json)")
    values = (f"<code>{_e(info.get('values_file'))}</code><br>sha256 <code>{_e(info.get('values_sha256'))}</code>"
              if info.get("values_file") else "unknown")
    rows = [("target", f"<b>{_e(target.get('name', 'unknown'))}</b> ({_e(kind_words)})"),
            ("mode", mode_html), ("Cilium chart", chart), ("params file", params),
            ("Cilium values", values), ("runbook", _commit(info.get("runbook") or {})),
            ("ran by, when", _who(info)),
            ("run", f"<code>{_e(d.run_dir.name)}</code> · report rendered "
                    f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")]
    out = ["<h2 id='what'>What was run</h2><table class='run'>"]
    out += [f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows]
    out.append("</table>")
    if d.chart is not None and not d.chart.official:
        out.append(f"<div class='standin' id='stand-in'>{_e(d.chart.banner())}</div>")
    return out


def _attention(d: IndexData) -> list[str]:
    out = [f"<h2 id='attention'>Needs attention ({len(d.attention)})</h2>"]
    if not d.attention:
        out.append("<p class='none'>Nothing: no overridden verdict, no warning, no skipped pod, "
                   "no lost evidence.</p>")
        return out
    out.append("<ul class='attention'>")
    for a in d.attention:
        words, colour = KIND_WORDS.get(a.get("kind"), (a.get("kind", "note"), "#555"))
        link = f" · <a href='{_e(a['link'])}'>open the cell</a>" if a.get("link") else ""
        out.append(f"<li class='{_e(a.get('kind'))}' style='--c:{colour}'><span class='kind'>{_e(words)}</span>"
                   f" · {_e(a.get('phase'))}{link}<div class='msg'>{_e(a.get('message'))}</div></li>")
    out.append("</ul>")
    return out


def _failure(d: IndexData) -> list[str]:
    from .runinfo import mode

    f = d.failure
    if not f:
        return []
    # The pages hide cell numbers, so the step is named by its heading and the link
    # opens the page at the failing cell (nbconvert gives each cell an id anchor).
    link = ""
    if f.get("page"):
        frag = f"#cell-id={f['anchor']}" if f.get("anchor") else ""
        link = f" (<a href='html/{_e(f['page'].name + frag)}'>open the page at the failing cell</a>)"
    where = f"step <b>{_e(f['step'])}</b>" if f.get("step") else f"cell {f['cell']}"
    out = [f"<h2 id='stopped'>Where and why it stopped</h2><p>Phase <b>{_e(f['phase'])}</b>, {where}{link}</p>",
           f"<div class='fail-box'>{_e(f['error'] or 'unknown error')}</div>"]
    if f.get("source"):
        out.append(f"<p>The failing step:</p><pre class='fail-box'>{_e(f['source'])}</pre>")
    if not d.rollback_command and d.info and "EXECUTE" not in mode(d.info):
        out.append("<p>This was a dry run: nothing was changed, so there is nothing to roll back.</p>")
    if d.rollback_command:
        kind = (d.info.get("target") or {}).get("kind")
        note = (" The twin of a <code>runbook rehearse</code> is stopped when the rehearsal ends: the "
                "command applies to a twin you keep running (<code>runbook twin up</code>)." if kind == "twin" else "")
        out.append("<h3 id='rollback'>To roll this run back</h3>"
                   "<p>It undoes exactly what this run's journal records (nothing, if the run changed "
                   "nothing) and releases the migration lock. A rerun of the failed phase with the same "
                   f"<code>--run-id</code> resumes instead.{note}</p>"
                   f"<pre class='cmd'>{_e(d.rollback_command)}</pre>")
    return out


def _gate(g: dict[str, Any]) -> str:
    if g.get("overridden"):
        return f"<li class='overridden'>⚠ {_e(g.get('name'))} (OVERRIDDEN)</li>"
    if g.get("skipped"):
        return f"<li class='skipped'>– {_e(g.get('name'))} (SKIPPED: dry run)</li>"
    ok = g.get("passed")
    return f"<li class='{'passed' if ok else 'failed'}'>{'✔' if ok else '✘'} {_e(g.get('name'))}</li>"


def _phases(d: IndexData) -> list[str]:
    out = ["<h2 id='phases'>Phases</h2><table class='phases'><tr><th>phase</th><th>status</th><th>duration</th>"
           "<th>gates</th><th>key figures</th><th>evidence</th></tr>"]
    for r in d.rows:
        s = r["summary"]
        glist = "".join(_gate(g) for g in s.get("gates") or [])
        figs = "".join(f"<div>{_e(k)}: <b>{_e(plain(v))}</b></div>" for k, v in (s.get("figures") or {}).items())
        links = []
        if r.get("page"):
            links.append(f"<a href='html/{_e(r['page'].name)}'>page</a>")
        if r.get("nb"):
            links.append(f"<a href='{_e(r['nb'].name)}'>notebook</a>")
        dur = f"{r['seconds']:.1f}s" if isinstance(r.get("seconds"), (int, float)) else "–"
        # The full message is in "Where and why it stopped" above: the table keeps one line.
        err = f"<div class='{_e(r['status'])}'>{_e(_short(r['error']))}</div>" if r.get("error") else ""
        title = r.get("title") or r["phase"]
        name = f"<a href='html/{_e(r['page'].name)}'>{_e(title)}</a>" if r.get("page") else _e(title)
        out.append(f"<tr data-phase='{_e(r['phase'])}'><td>{name}</td><td class='{_e(r['status'])}'>"
                   f"{_e(r['status'].upper())}{err}</td><td>{dur}</td><td><ul class='gates'>{glist}</ul></td>"
                   f"<td>{figs}</td><td>{' · '.join(links)}</td></tr>")
    out.append("</table>")
    return out


def _rehearsal_checks(d: IndexData) -> list[str]:
    checks = (d.rehearsal or {}).get("checks") or {}
    if not checks:
        return []
    out = ["<h2 id='rehearsal'>Rehearsal: back on flannel after the rollback?</h2><table>"
           "<tr><th>check (made from the twin's side)</th><th>result</th><th>detail</th></tr>"]
    for name, c in checks.items():
        out.append(f"<tr><td>{_e(name)}</td><td class='{'passed' if c.get('ok') else 'failed'}'>"
                   f"{'OK' if c.get('ok') else 'FAILED'}</td><td>{_e(plain(c.get('detail')))}</td></tr>")
    out.append("</table>")
    return out


def _pct(v: Any) -> str:
    return f"{v:.0f}%" if isinstance(v, (int, float)) else "–"


def _timeline(d: IndexData) -> list[str]:
    out = ["<h2 id='timeline'>Timeline</h2>"]
    if d.png:
        out.append(f"<img alt='pods with a live network, nodes Ready and the outage windows over the run' "
                   f"src='data:image/png;base64,{d.png}'>")
    else:
        out.append("<p>No readiness samples were recorded for this run.</p>")
    out.append("<p>A pod counts as having a <b>live network</b> when it is Ready on a Ready node and the "
               "CNI in force there manages it: on a node whose Cilium agent is Ready, the pod has a "
               "CiliumEndpoint; on a flannel node, it has none and its sandbox is newer than the node's "
               "last NotReady period. The kubelet's Ready count (dashed) stays high through a CNI swap.</p>")
    out.append(availability_html((d.rehearsal or {}).get("availability")))
    if d.rehearsal:
        out.append(comparison_html(d.rehearsal, d.rehearsal.get("compared_with")))
    if d.outages:
        out.append("<table class='outages'><tr><th>outage window</th><th>opened</th><th>closed</th>"
                   "<th>length (journal)</th><th>lowest share of pods with a live network</th>"
                   "<th>time not every pod had a live network</th><th>most nodes NotReady</th></tr>")
        for o in d.outages:
            secs = f"{o['seconds']:.1f}s" if isinstance(o.get("seconds"), (int, float)) else "not closed"
            not_live = f"{o['seconds_not_all_live']:.1f}s" if o.get("samples") else "no samples"
            out.append(f"<tr data-window='{_e(o['fact'])}'><td>{_e(o['label'])}</td><td>{_e(o.get('opened_at'))}</td>"
                       f"<td>{_e(o.get('closed_at') or 'not closed')}</td><td>{secs}</td>"
                       f"<td>{_pct(o.get('live_pods_min_pct'))}</td><td>{not_live}</td>"
                       f"<td>{_e(plain(o.get('nodes_not_ready_max')) or '–')}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No outage window was opened in this run.</p>")
    return out


def _evidence(d: IndexData) -> list[str]:
    out = ["<h2 id='evidence'>Raw evidence</h2><ul>"]
    for name in ("run.json", "journal.json", "commands.jsonl", "phases.json", "timeline.jsonl", "rehearsal.json"):
        if (d.run_dir / name).exists():
            out.append(f"<li><a href='{name}'>{name}</a></li>")
    snaps = sorted((d.run_dir / "snapshots").rglob("*.*")) if (d.run_dir / "snapshots").exists() else []
    for sp in snaps:
        rel = sp.relative_to(d.run_dir)
        out.append(f"<li><a href='{_e(rel)}'>{_e(rel)}</a></li>")
    out.append("</ul>")
    return out


def _snapshot(d: IndexData) -> list[str]:
    """The cluster snapshot preflight took (a link) and, for a twin built from a snapshot,
    what it assumed (``assumed.json``): the section "Cluster snapshot" of the index."""
    run_dir = d.run_dir
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


def index_html(d: IndexData) -> str:
    """The whole page (see the module docstring for its order)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Phase 22 run {_e(d.run_dir.name)}</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>Phase 22: k3s Flannel → Cilium + Hubble</h1>",
           f"<p class='sub'>run <code>{_e(d.run_dir.name)}</code></p>", _verdict(d)]
    for part in (_header, _attention, _failure, _phases, _rehearsal_checks, _snapshot, _timeline,
                 _evidence):
        out += part(d)
    out.append("</body></html>")
    return "\n".join(out)
