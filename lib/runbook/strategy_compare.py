"""The two strategies' availability side by side, when both were rehearsed for the same params.

``runbook rehearse`` writes ``rehearsal.json`` with the strategy and a ``compare_key``: a
sha256 of what makes two rehearsals comparable (the params file the twin was built from,
the values, the snapshot and the chart), not of what differs by design (the strategy
and its own settings, the twin's ports and folders). :func:`find_other` picks, among the
run folders next to this one, the newest rehearsal of the other strategy with the same
key; :func:`summary` keeps its figures (never its samples), and :func:`comparison_html`
draws the table the index shows (pure).

Example:
    >>> a = {"strategy": "big-bang", "availability": {"probes": 10, "failed": 6, "longest_outage_s": 40.0,
    ...      "per_target": {"h": {"kind": "ingress", "probes": 10, "failed": 6, "longest_outage_s": 40.0}}}}
    >>> b = {"strategy": "node-by-node", "availability": {"probes": 12, "failed": 0, "longest_outage_s": 0.0,
    ...      "per_target": {"h": {"kind": "ingress", "probes": 12, "failed": 0, "longest_outage_s": 0.0}}}}
    >>> "<td>h</td>" in comparison_html(b, summary(a, run_id="r0"))
    True
"""
from __future__ import annotations

import hashlib
import html as _html
import json
from pathlib import Path
from typing import Any, Iterable

__all__ = ["compare_key", "find_other", "summary", "comparison_html"]


def compare_key(parts: Iterable[tuple[str, bytes | str | None]]) -> str:
    """sha256 of named parts (``("params", text)``, ``("values", text)`` ...), order-free.

    Example:
        >>> compare_key([("a", "x"), ("b", None)]) == compare_key([("b", None), ("a", "x")])
        True
    """
    h = hashlib.sha256()
    for name, value in sorted(parts, key=lambda p: p[0]):
        data = value.encode() if isinstance(value, str) else (value or b"")
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def summary(doc: dict[str, Any], *, run_id: str) -> dict[str, Any]:
    """A rehearsal's figures for the comparison (totals, stages, per target; no samples)."""
    a = doc.get("availability") or {}
    return {"run_id": run_id, "strategy": doc.get("strategy") or a.get("strategy") or "big-bang",
            "ok": doc.get("ok"), "probes": a.get("probes"), "failed": a.get("failed"),
            "longest_outage_s": a.get("longest_outage_s"),
            "stages": {k: {f: v.get(f) for f in ("probes", "failed", "longest_outage_s")}
                       for k, v in (a.get("stages") or {}).items()},
            "per_target": {k: {f: v.get(f) for f in ("kind", "probes", "failed", "longest_outage_s")}
                           for k, v in (a.get("per_target") or {}).items()}}


def find_other(reports_dir: Path, *, key: str, strategy: str, exclude: Path | None = None) -> dict[str, Any] | None:
    """The newest rehearsal under ``reports_dir`` with ``key`` and a strategy other than
    ``strategy``, as :func:`summary`; None when there is none."""
    found: list[tuple[float, Path, dict[str, Any]]] = []
    for f in Path(reports_dir).glob("*/rehearsal.json"):
        if exclude is not None and f.parent.resolve() == Path(exclude).resolve():
            continue
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        other = doc.get("strategy") or (doc.get("availability") or {}).get("strategy") or "big-bang"
        if doc.get("compare_key") == key and other != strategy and (doc.get("availability") or {}).get("probes"):
            found.append((f.stat().st_mtime, f, doc))
    if not found:
        return None
    _, f, doc = max(found, key=lambda t: t[0])
    return summary(doc, run_id=f.parent.name)


def _e(v: Any) -> str:
    return _html.escape(str(v if v is not None else "–"))


def _secs(v: Any) -> str:
    return f"{v:.0f}s" if isinstance(v, (int, float)) else "–"


def comparison_html(this: dict[str, Any], other: dict[str, Any] | None) -> str:
    """The comparison table: one column per strategy, rows for the whole rehearsal, each
    stage and each target (requests failed / longest outage). Empty without ``other``."""
    if not other:
        return ""
    mine = summary(this, run_id="this run")
    cols = [mine, other]
    head = "".join(f"<th>{_e(c['strategy'])}<br><small>{_e(c['run_id'])}</small></th>" for c in cols)

    def cell(f: dict[str, Any] | None) -> str:
        if not f:
            return "<td>–</td>"
        cls = " class='failed'" if f.get("failed") else ""
        return f"<td{cls}>{_e(f.get('failed'))} of {_e(f.get('probes'))} failed, longest {_secs(f.get('longest_outage_s'))}</td>"

    rows = [f"<tr data-row='all'><td>the whole rehearsal</td>{''.join(cell(c) for c in cols)}</tr>"]
    for st in sorted(set(mine["stages"]) | set(other["stages"])):
        rows.append(f"<tr data-row='stage-{_e(st)}'><td>stage: {_e(st)}</td>"
                    f"{''.join(cell(c['stages'].get(st)) for c in cols)}</tr>")
    for t in sorted(set(mine["per_target"]) | set(other["per_target"])):
        rows.append(f"<tr data-row='target'><td>{_e(t)}</td>{''.join(cell(c['per_target'].get(t)) for c in cols)}</tr>")
    return ("<h3 id='strategy-comparison'>Availability: the two strategies compared</h3>"
            "<p>The other strategy was rehearsed for the same params, values, snapshot and chart "
            f"(run {_e(other['run_id'])}). Both were measured by the same prober; the twin's cluster "
            "seconds stretch with the machine's load, so compare runs made under a similar load. A target's row "
            "counts the whole rehearsal, rollback included.</p>"
            f"<table class='strategy-comparison'><tr><th>over</th>{head}</tr>{''.join(rows)}</table>")
