"""The report's timeline: one PNG of a whole run, and the availability samples it may show.

What is drawn, from ``timeline.jsonl`` (:mod:`runbook.timeline`) and the journal:

* **pods with a live network** (% of non-hostNetwork pods), the honest line: it drops
  to zero when the CNI goes, however many pods the kubelet still calls Ready;
* pods Ready as the kubelet reports them, thin and dashed, to show the difference;
* nodes Ready (%), and red ticks where the API did not answer;
* each outage window (:mod:`runbook.outage`) shaded in its own colour and labelled
  with its measured length;
* service availability, when the run was probed from outside (the ``availability``
  section of ``rehearsal.json``, :func:`availability_series`): the share of probed
  targets (every ingress host, one ClusterIP Service from each node) that answered.
  Nothing is drawn when no probing happened.

Example:
    >>> availability_series({"availability": {"targets": [
    ...     {"name": "a", "samples": [{"t": 1.0, "ok": True}, {"t": 2.0, "ok": False}]},
    ...     {"name": "b", "samples": [{"t": 1.2, "ok": True}, {"t": 2.1, "ok": True}]}]}})
    [(1.0, 100.0), (2.0, 50.0)]
"""
from __future__ import annotations

import base64
import io
from typing import Any

from .outage import Window, ts

__all__ = ["availability_series", "png", "WINDOW_COLOURS"]

#: shading per outage window fact
WINDOW_COLOURS = {"no_cni_window": "#ff7f0e", "rollback_window": "#9467bd"}


def _targets(availability: Any) -> list[list[dict]]:
    """The per-target sample lists of an ``availability`` section, in either accepted shape:
    ``{"targets": [{"name", "samples": [...]}]}`` or ``{"<name>": [...]}``."""
    if not isinstance(availability, dict):
        return []
    targets = availability.get("targets")
    if isinstance(targets, list):
        return [t.get("samples") or [] for t in targets if isinstance(t, dict)]
    if isinstance(targets, dict):
        return [v for v in targets.values() if isinstance(v, list)]
    return [v for v in availability.values() if isinstance(v, list)]


def availability_series(rehearsal: dict[str, Any] | None, *, bucket: float = 1.0) -> list[tuple[float, float]]:
    """(time, % of probed targets that answered) from ``rehearsal.json``'s ``availability``.

    Each sample is ``{"t": epoch seconds, "ok": bool}`` (other keys are kept by the
    prober and ignored here). Samples of all targets are grouped by ``bucket`` seconds,
    from the first sample's time. Returns [] when nothing was probed.
    """
    samples = [(float(s["t"]), bool(s.get("ok"))) for t in _targets((rehearsal or {}).get("availability"))
               for s in t if isinstance(s, dict) and isinstance(s.get("t"), (int, float))]
    if not samples:
        return []
    samples.sort()
    t0 = samples[0][0]
    groups: dict[int, list[tuple[float, bool]]] = {}
    for t, ok in samples:
        groups.setdefault(int((t - t0) // bucket), []).append((t, ok))
    return [(g[0][0], round(100.0 * sum(ok for _, ok in g) / len(g), 1)) for _, g in sorted(groups.items())]


def png(rows: list[dict[str, Any]], phases: list[dict[str, Any]], windows: list[Window],
        availability: list[tuple[float, float]] | None = None) -> str | None:
    """The timeline as a base64 PNG, or None with fewer than two samples."""
    if len(rows) < 2:
        return None
    # matplotlib's object API with the Agg canvas: no pyplot (its import, backend
    # selection and figure registry cost ~1 s of the report render), nothing global
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = rows[0]["t"]
    end = rows[-1]["t"]
    fig = Figure(figsize=(10, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ok = [r for r in rows if r.get("api")]
    xs = [r["t"] - t0 for r in ok]
    for w in windows:
        opened = ts(w.opened_at)
        if opened is None:
            continue
        closed = ts(w.closed_at) or end
        secs = f"{w.seconds:.0f}s" if isinstance(w.seconds, (int, float)) else "not closed"
        ax.axvspan(opened - t0, closed - t0, color=WINDOW_COLOURS.get(w.fact, "#999"), alpha=0.18,
                   label=f"{w.label} ({secs})")
    if ok:
        pct = lambda a, b: 100.0 * a / max(b, 1)  # noqa: E731
        if any("pods_live" in r for r in ok):
            ax.step(xs, [pct(r.get("pods_live", 0), r["pods"]) for r in ok], where="post",
                    label="pods with a live network %", color="#2ca02c", lw=3, alpha=0.85)
        ax.step(xs, [pct(r["pods_ready"], r["pods"]) for r in ok], where="post",
                label="pods Ready % (kubelet's view)", color="#7f7f7f", lw=1, ls="--")
        ax.step(xs, [pct(r["nodes_ready"], r["nodes"]) for r in ok], where="post",
                label="nodes Ready %", color="#1f77b4", lw=1.3)
    if availability:
        ax.step([t - t0 for t, _ in availability], [v for _, v in availability], where="post",
                label="probed targets answering % (ingress hosts, a ClusterIP Service)", color="#d4a017", lw=1.6)
    down = [r["t"] - t0 for r in rows if not r.get("api")]
    if down:
        ax.scatter(down, [2] * len(down), marker="|", color="#d62728", label="API unreachable")
    for ph in phases:
        if ph.get("started"):
            ax.axvline(ph["started"] - t0, color="#999", lw=0.8, ls=":")
            ax.text(ph["started"] - t0, 103, ph["phase"], fontsize=8, color="#555")
    ax.set_ylim(0, 110)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("%")
    # Below the axes: inside them the legend hid the API-unreachable marks near 0%.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()
