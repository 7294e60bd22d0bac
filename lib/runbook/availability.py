"""Service availability during a rehearsal: the figures, from the prober's samples (pure).

A prober outside the runbook (:mod:`runbook.rehearse_probe`) asks the twin, at a fixed
interval of cluster seconds, whether each target answers: every ingress host, and one
ClusterIP Service from every node. Each answer is a sample::

    {"t": 1764133920.1, "ct": 1234.0, "ok": false, "why": "503 ..."}

``t`` is the wall clock (epoch seconds, the timeline's time base), ``ct`` the twin's
clock in cluster seconds (what the same step would take on a real cluster); ``why`` is
kept on the first failed sample of an outage and whenever the reason changes.

The figures (:func:`summarize`) are what ``rehearsal.json`` keeps under
``availability``: ``probes`` (requests made), ``failed`` (requests that did not
succeed), ``longest_outage_s`` (cluster seconds, the longest run of failed requests of
one target, from its first failed request to the next request that succeeded, or to
the last request when none did) and ``per_target`` (the same per target). The
resolution of an outage is the probing interval: a failure shorter than it may go
unseen, and a measured outage is at most one interval longer than the real one.

Example:
    >>> s = [{"t": 0, "ct": 0, "ok": True}, {"t": 1, "ct": 2, "ok": False},
    ...      {"t": 2, "ct": 4, "ok": False}, {"t": 3, "ct": 6, "ok": True}]
    >>> figures(s)
    {'probes': 4, 'failed': 2, 'longest_outage_s': 4.0, 'outages': 1, 'open_at_end': False}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["Outage", "outages", "figures", "summarize", "in_window", "line"]


@dataclass(frozen=True)
class Outage:
    """One run of failed requests to one target, in cluster seconds.

    Attributes:
        start_ct: the first failed request.
        end_ct: the next request that succeeded (or the last request, when ``closed`` is False).
        closed: whether a request succeeded again before the probing ended.
        failed: how many requests failed in it.
        why: the reason of its first failed request.
    """

    start_ct: float
    end_ct: float
    closed: bool
    failed: int
    why: str = ""

    @property
    def seconds(self) -> float:
        return round(self.end_ct - self.start_ct, 3)


def outages(samples: Iterable[dict[str, Any]]) -> list[Outage]:
    """The outages of one target, in order (samples sorted by ``ct`` first).

    Example:
        >>> [o.seconds for o in outages([{"ct": 0, "ok": False}, {"ct": 3, "ok": True},
        ...                              {"ct": 5, "ok": False}])]
        [3.0, 0.0]
    """
    out: list[Outage] = []
    start: dict[str, Any] | None = None
    n = 0
    last: dict[str, Any] | None = None
    for s in sorted(samples, key=lambda s: float(s["ct"])):
        if not s.get("ok"):
            if start is None:
                start, n = s, 0
            n += 1
        elif start is not None:
            out.append(Outage(float(start["ct"]), float(s["ct"]), True, n, str(start.get("why") or "")))
            start = None
        last = s
    if start is not None and last is not None:
        out.append(Outage(float(start["ct"]), float(last["ct"]), False, n, str(start.get("why") or "")))
    return out


def figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``probes``, ``failed``, ``longest_outage_s`` (cluster seconds), ``outages`` (how
    many) and ``open_at_end`` (the target was still failing at the last request) of one
    target's samples."""
    outs = outages(samples)
    return {"probes": len(samples), "failed": sum(1 for s in samples if not s.get("ok")),
            "longest_outage_s": max((o.seconds for o in outs), default=0.0),
            "outages": len(outs), "open_at_end": bool(outs and not outs[-1].closed)}


def in_window(samples: list[dict[str, Any]], start_ct: float | None, end_ct: float | None) -> list[dict[str, Any]]:
    """The samples with ``start_ct <= ct < end_ct`` (an open bound takes everything)."""
    return [s for s in samples if (start_ct is None or float(s["ct"]) >= start_ct)
            and (end_ct is None or float(s["ct"]) < end_ct)]


def ct_at(targets: list[dict[str, Any]], wall: float) -> float | None:
    """The cluster time of the first request made at or after wall time ``wall`` (the
    samples carry both clocks), None when none was.

    Example:
        >>> ct_at([{"samples": [{"t": 10.0, "ct": 0.0}, {"t": 11.0, "ct": 20.0}]}], 10.5)
        20.0
    """
    after = [s for t in targets for s in t.get("samples") or () if float(s["t"]) >= wall]
    return float(min(after, key=lambda s: float(s["t"]))["ct"]) if after else None


def _totals(per_target: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"probes": sum(f["probes"] for f in per_target.values()),
            "failed": sum(f["failed"] for f in per_target.values()),
            "longest_outage_s": max((f["longest_outage_s"] for f in per_target.values()), default=0.0)}


def summarize(targets: list[dict[str, Any]], *, stages: list[dict[str, Any]] | None = None,
              interval_s: float | None = None, strategy: str | None = None) -> dict[str, Any]:
    """The ``availability`` section of ``rehearsal.json``.

    Args:
        targets: ``[{"name", "kind", "samples": [...]}]`` as the prober recorded them.
        stages: ``[{"name": "migration", "from_ct": 0.0}, {"name": "rollback", "from_ct": 812.0}]``:
            each stage runs until the next one starts; the same figures are given per stage.
        interval_s: the probing interval in cluster seconds (recorded, and the resolution).
        strategy: the migration strategy that was rehearsed (``big-bang``).

    Returns:
        ``probes``, ``failed``, ``longest_outage_s``, ``per_target`` (name -> figures and
        ``kind``), ``stages`` (name -> totals and ``per_target``), ``interval_s``,
        ``strategy`` and the raw ``targets`` (for the timeline).

    Example:
        >>> a = summarize([{"name": "h", "kind": "ingress", "samples": [
        ...     {"t": 0, "ct": 0, "ok": True}, {"t": 1, "ct": 2, "ok": False}, {"t": 2, "ct": 4, "ok": True}]}],
        ...     stages=[{"name": "migration", "from_ct": 0}, {"name": "rollback", "from_ct": 3}])
        >>> a["failed"], a["longest_outage_s"], a["stages"]["rollback"]["probes"]
        (1, 2.0, 1)
    """
    per_target = {t["name"]: {"kind": t.get("kind", ""), **figures(t.get("samples") or [])} for t in targets}
    out: dict[str, Any] = {**_totals(per_target), "per_target": per_target}
    if stages:
        ordered = sorted(stages, key=lambda s: float(s["from_ct"]))
        out["stages"] = {}
        for i, st in enumerate(ordered):
            end = float(ordered[i + 1]["from_ct"]) if i + 1 < len(ordered) else None
            pt = {t["name"]: figures(in_window(t.get("samples") or [], float(st["from_ct"]), end))
                  for t in targets}
            out["stages"][st["name"]] = {**_totals(pt), "from_ct": float(st["from_ct"]), "to_ct": end,
                                         "per_target": pt}
    if interval_s is not None:
        out["interval_s"] = interval_s
    if strategy is not None:
        out["strategy"] = strategy
    out["targets"] = targets
    return out


def line(section: dict[str, Any]) -> str:
    """One line for a person: the totals and the worst target.

    Example:
        >>> line({"probes": 10, "failed": 3, "longest_outage_s": 4.0, "interval_s": 2.0,
        ...       "per_target": {"a": {"failed": 3, "longest_outage_s": 4.0}, "b": {"failed": 0, "longest_outage_s": 0.0}}})
        '3 of 10 requests failed; longest outage 4 s (cluster seconds, ±2 s), of a; 1 of 2 targets had an outage'
    """
    if not section or not section.get("probes"):
        return "nothing was probed"
    per = section.get("per_target") or {}
    hit = [n for n, f in per.items() if f.get("failed")]
    worst = max(per, key=lambda n: per[n].get("longest_outage_s") or 0.0) if hit else None
    res = f" (cluster seconds, ±{section['interval_s']:g} s)" if section.get("interval_s") else " (cluster seconds)"
    text = f"{section['failed']} of {section['probes']} requests failed"
    if worst is None:
        return text + "; no outage"
    return (f"{text}; longest outage {section['longest_outage_s']:.0f} s{res}, of {worst}; "
            f"{len(hit)} of {len(per)} targets had an outage")
