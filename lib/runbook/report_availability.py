"""The index's "Service availability" table, from ``rehearsal.json``'s ``availability`` (pure).

:func:`availability_html` formats the section :mod:`runbook.availability` wrote: the
totals (over the whole rehearsal and per stage, migration and rollback), then one row
per target with its requests, failures, longest outage and why its longest outage
started (the reason of its first failed request). Without the section it says that
availability was not probed.

Example:
    >>> html = availability_html({"probes": 4, "failed": 1, "longest_outage_s": 2.0, "interval_s": 2.0,
    ...     "strategy": "big-bang", "per_target": {"https://a/": {"kind": "ingress", "probes": 4,
    ...     "failed": 1, "longest_outage_s": 2.0}}, "targets": []})
    >>> "<td>https://a/</td>" in html and "big-bang" in html
    True
"""
from __future__ import annotations

import html as _html
from typing import Any

from . import availability

__all__ = ["availability_html"]


def _e(v: Any) -> str:
    return _html.escape(str(v if v is not None else ""))


def _secs(v: Any) -> str:
    return f"{v:.0f}s" if isinstance(v, (int, float)) else "–"


def _why_longest(targets: list[dict[str, Any]]) -> dict[str, str]:
    """target name -> the reason its longest outage started."""
    out = {}
    for t in targets or ():
        outs = availability.outages(t.get("samples") or [])
        if outs:
            out[t.get("name", "")] = max(outs, key=lambda o: o.seconds).why
    return out


def availability_html(section: dict[str, Any] | None) -> str:
    """The section's HTML (see the module docstring)."""
    if not section or not section.get("probes"):
        return "<p>Service availability was not probed from outside during this run, so none is drawn.</p>"
    interval = section.get("interval_s")
    res = f" every {interval:g} cluster seconds" if isinstance(interval, (int, float)) else ""
    out = [f"<h3 id='availability'>Service availability ({_e(section.get('strategy') or 'big-bang')})</h3>",
           f"<p>A prober outside the runbook requested every ingress host and one ClusterIP Service"
           f"{res}, from the start of the rehearsal to its end; the twin's network model decided "
           "each answer. Times are cluster seconds (what the run would take on the real cluster); "
           "an outage runs from a target's first failed request to its next successful one, so it "
           f"is measured to within one interval. {_e(availability.line(section))}.</p>",
           "<table class='availability'><tr><th>over</th><th>requests</th><th>failed</th>"
           "<th>longest outage</th></tr>",
           f"<tr data-stage='all'><td>the whole rehearsal</td><td>{_e(section['probes'])}</td>"
           f"<td>{_e(section.get('failed'))}</td><td>{_secs(section.get('longest_outage_s'))}</td></tr>"]
    for name, st in (section.get("stages") or {}).items():
        out.append(f"<tr data-stage='{_e(name)}'><td>{_e(name)}</td><td>{_e(st.get('probes'))}</td>"
                   f"<td>{_e(st.get('failed'))}</td><td>{_secs(st.get('longest_outage_s'))}</td></tr>")
    out.append("</table>")
    why = _why_longest(section.get("targets") or [])
    out.append("<table class='availability-targets'><tr><th>target</th><th>kind</th><th>requests</th>"
               "<th>failed</th><th>longest outage</th><th>why it started</th></tr>")
    for name, f in (section.get("per_target") or {}).items():
        still = " (still failing at the end)" if f.get("open_at_end") else ""
        cls = " class='failed'" if f.get("failed") else ""
        out.append(f"<tr data-target='{_e(name)}'><td>{_e(name)}</td><td>{_e(f.get('kind'))}</td>"
                   f"<td>{_e(f.get('probes'))}</td><td{cls}>{_e(f.get('failed'))}</td>"
                   f"<td>{_secs(f.get('longest_outage_s'))}{still}</td><td>{_e(why.get(name, ''))}</td></tr>")
    out.append("</table>")
    load = section.get("load_average") or {}
    if isinstance(load.get("start"), (int, float)) and isinstance(load.get("end"), (int, float)):
        out.append(f"<p class='note'>The machine's load average was {load['start']:g} at the start and "
                   f"{load['end']:g} at the end: on a twin, the runbook's own steps take wall time that "
                   "the twin's clock counts twenty-fold, so a busier machine measures longer outages. "
                   "Compare strategies with runs made under a similar load.</p>")
    for note in section.get("notes") or ():
        out.append(f"<p class='note'>{_e(note)}</p>")
    return "\n".join(out)
