"""What every printer is made of: ``Column``, time formatting, and cell helpers.

A cell function takes ``(obj, now)`` and returns the cell. The helpers with a leading
underscore are shared by the printer modules of this package only.
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from typing import Any, Callable

Cell = Any
CellFn = Callable[[dict, float], Cell]


@dataclass(frozen=True)
class Column:
    """One Table column: its definition and how to compute its cell."""

    name: str
    type: str
    fn: CellFn
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description or self.name, "priority": self.priority}


def parse_time(ts: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC timestamp (``None`` if absent/bad)."""
    if not ts:
        return None
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$", ts)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    tz = m.group(7)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return float(secs)


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: ``42s``, ``3m5s``, ``5h``, ``12d``, ``2y3d``."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(obj: dict, now: float) -> str:
    """AGE cell: time since ``metadata.creationTimestamp`` (``<unknown>`` if absent)."""
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(now - t)


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(p)
        if obj is None:
            return default
    return obj


def _name(obj: dict, _now: float) -> str:
    return _get(obj, "metadata", "name", default="")


def _none(s: str) -> str:
    return s if s else "<none>"


def _selector_str(sel: dict | None) -> str:
    """A label selector as kubectl prints it (``<none>`` when empty)."""
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator", "")
        vals = ",".join(e.get("values") or [])
        if op == "In":
            parts.append(f"{e.get('key')} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{e.get('key')} notin ({vals})")
        elif op == "Exists":
            parts.append(str(e.get("key")))
        elif op == "DoesNotExist":
            parts.append(f"!{e.get('key')}")
    return ",".join(parts) or "<none>"


def _map_selector(sel: dict | None) -> str:
    if not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _containers(obj: dict, _now: float) -> str:
    cs = _get(obj, "spec", "template", "spec", "containers", default=[]) or []
    return _none(",".join(c.get("name", "") for c in cs))


def _images(obj: dict, _now: float) -> str:
    cs = _get(obj, "spec", "template", "spec", "containers", default=[]) or []
    return _none(",".join(c.get("image", "") for c in cs))


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def _status_int(*path: str) -> CellFn:
    return lambda o, n: _int(_get(o, "status", *path))


def _spec_replicas(o: dict) -> int:
    r = _get(o, "spec", "replicas")
    return 1 if r is None else _int(r)


#: NAME and AGE: what a resource without a printer shows.
DEFAULT_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Age", "string", age),
)
