"""The outage windows a run journals: when the pods lose their network, and for how long.

A CNI swap has no zero-downtime path on k3s (see ``docs/cilium-on-k3s.md``): every
non-hostNetwork pod is cut off for a while, once on the way to Cilium and once more if
the run is rolled back. Each window is a journal fact written by the phase that opens
it and closed by the phase that ends it, so the length is measured from the cluster,
not estimated:

======================  ===========================================  ==========================================
fact                    opened                                       closed
======================  ===========================================  ==========================================
``no_cni_window``       02-reconfigure, when the first server        03-install, once every non-hostNetwork pod
                        restarts without flannel                     is managed by Cilium
``rollback_window``     05-rollback, when it takes Cilium away        05-rollback, once every node is Ready and
                        (helm uninstall; or the first k3s stop when  every non-hostNetwork pod is Ready again on
                        no install was recorded)                     flannel
======================  ===========================================  ==========================================

A window is ``{"opened_at": ISO time, "closed_at": ISO time or None, "seconds": float or
None}``. The report shades each one on the timeline and measures, from the samples of
:mod:`runbook.timeline`, how low the pods with a live network went inside it
(:func:`measure`).

Example:
    >>> w = Window.from_fact("no_cni_window", {"opened_at": "2026-11-26T05:12:00Z",
    ...                                         "closed_at": "2026-11-26T05:12:18Z", "seconds": 18.0})
    >>> str(w)
    'no-CNI window (install): opened 2026-11-26T05:12:00Z, closed 2026-11-26T05:12:18Z (18.0s)'
"""
from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["WINDOWS", "OPENED_BY", "Window", "now", "open_window", "close_window", "windows", "measure", "ts"]

#: fact -> (label, the phase that closes it)
WINDOWS: dict[str, tuple[str, str]] = {
    "no_cni_window": ("no-CNI window (install)", "install"),
    "rollback_window": ("rollback outage", "rollback"),
}
#: fact -> the phase that opens it
OPENED_BY: dict[str, str] = {"no_cni_window": "reconfigure", "rollback_window": "rollback"}


def now() -> str:
    """The current time as the journal writes it (UTC, seconds, ``Z``)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts(value: Any) -> float | None:
    """An ISO time (or epoch seconds) as epoch seconds; None when absent or unreadable.

    >>> ts("1970-01-01T00:01:40Z")
    100.0
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Window:
    """One outage window as the journal holds it.

    Attributes:
        fact: the journal fact (``no_cni_window`` or ``rollback_window``); label: words
        for it; opened_at / closed_at: ISO times (closed_at None while open); seconds.
    """

    fact: str
    label: str
    opened_at: str | None
    closed_at: str | None = None
    seconds: float | None = None

    @classmethod
    def from_fact(cls, fact: str, value: Any) -> "Window":
        value = value if isinstance(value, dict) else {}
        label = WINDOWS.get(fact, (fact, ""))[0]
        return cls(fact, label, value.get("opened_at"), value.get("closed_at"), value.get("seconds"))

    @property
    def is_open(self) -> bool:
        return bool(self.opened_at) and not self.closed_at

    def __str__(self) -> str:
        if not self.opened_at:
            return f"{self.label}: not opened in this run"
        if self.is_open:
            closer = WINDOWS.get(self.fact, ("", "the next phase"))[1]
            return f"{self.label}: opened {self.opened_at}, still open (closed by {closer})"
        secs = f" ({self.seconds:.1f}s)" if isinstance(self.seconds, (int, float)) else ""
        return f"{self.label}: opened {self.opened_at}, closed {self.closed_at}{secs}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#b45309" if self.is_open else "#333"
        return f"<p style='color:{colour}'><b>{html.escape(self.label)}</b>: " \
               f"{html.escape(str(self).split(': ', 1)[1])}</p>"


def open_window(journal: Any, fact: str) -> dict[str, Any]:
    """Open ``fact`` now unless this run opened it already (a rerun keeps the first time)."""
    return journal.setdefault(fact, {"opened_at": now(), "closed_at": None, "seconds": None})


def close_window(journal: Any, fact: str) -> dict[str, Any] | None:
    """Close ``fact`` now and record its length; a closed window keeps its first closing.

    Returns the window, or None when it was never opened.
    """
    win = journal.get(fact) or None
    if not win or win.get("closed_at"):
        return win
    closed = now()
    opened = ts(win.get("opened_at"))
    seconds = round(ts(closed) - opened, 1) if opened is not None else None
    win = {**win, "closed_at": closed, "seconds": seconds}
    journal.set(fact, win)
    return win


def windows(facts: dict[str, Any]) -> list[Window]:
    """The windows recorded in a journal's facts, in the order a run opens them."""
    return [Window.from_fact(f, facts[f]) for f in WINDOWS if isinstance(facts.get(f), dict)
            and facts[f].get("opened_at")]


def measure(window: Window, samples: Iterable[dict[str, Any]], *, end: float | None = None) -> dict[str, Any]:
    """What the timeline samples say about one window (see :mod:`runbook.timeline`).

    Args:
        window: the journaled window; an open one runs to ``end`` (default: the last sample).
        samples: the rows of ``timeline.jsonl``.

    Returns:
        ``samples`` (how many fell inside), ``live_pods_min_pct`` (the lowest share of
        non-hostNetwork pods with a live network, None without samples),
        ``seconds_not_all_live`` (how long, inside the window, not every pod had a live
        network) and ``nodes_not_ready_max``.

    Example:
        >>> w = Window("no_cni_window", "x", "1970-01-01T00:01:40Z", "1970-01-01T00:01:43Z", 3.0)
        >>> rows = [{"t": 100.0 + i, "api": True, "pods": 4, "pods_live": [4, 0, 2, 4][i],
        ...          "nodes": 2, "nodes_ready": 2 - (i in (1, 2))} for i in range(4)]
        >>> measure(w, rows)
        {'samples': 4, 'live_pods_min_pct': 0.0, 'seconds_not_all_live': 2.0, 'nodes_not_ready_max': 1}
    """
    rows = sorted((r for r in samples if isinstance(r.get("t"), (int, float))), key=lambda r: r["t"])
    start = ts(window.opened_at)
    stop = ts(window.closed_at) or end or (rows[-1]["t"] if rows else None)
    out: dict[str, Any] = {"samples": 0, "live_pods_min_pct": None, "seconds_not_all_live": 0.0,
                           "nodes_not_ready_max": None}
    if start is None or stop is None:
        return out
    inside = [r for r in rows if start <= r["t"] <= stop]
    out["samples"] = len(inside)
    ok = [r for r in inside if r.get("api") and "pods_live" in r]
    if ok:
        out["live_pods_min_pct"] = round(min(100.0 * r["pods_live"] / max(r.get("pods") or 0, 1)
                                             for r in ok), 1)
        out["nodes_not_ready_max"] = max((r.get("nodes") or 0) - (r.get("nodes_ready") or 0) for r in ok)
    # time not all live: each sample holds until the next one (a step plot)
    not_live = 0.0
    for a, b in zip(inside, inside[1:] + [None]):
        t_next = b["t"] if b is not None else stop
        down = (not a.get("api")) or ("pods_live" in a and a["pods_live"] < (a.get("pods") or 0))
        if down:
            not_live += max(0.0, min(t_next, stop) - a["t"])
    out["seconds_not_all_live"] = round(not_live, 1)
    return out
