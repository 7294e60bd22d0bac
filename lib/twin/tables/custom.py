"""Printers of custom resources: a CRD's ``additionalPrinterColumns``, evaluated by JSONPath."""
from __future__ import annotations

import re
from typing import Any

from .cells import DEFAULT_COLUMNS, Cell, CellFn, Column, _int, age, human_duration, parse_time


def eval_jsonpath(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPath of ``additionalPrinterColumns`` (``.spec.x``,
    ``.status.conditions[0].type``, ``.metadata.labels['a/b']``, ``{.spec.x}``).

    An equality filter on a list (``.status.conditions[?(@.type=='Ready')].status``)
    takes the first matching item (one cell, as the API server prints a single result).
    Returns ``None`` when any step is missing. Other filters and wildcards are not
    supported and also give ``None``.
    """
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    tokens = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]"
                        r"|\[\?\(@\.([\w-]+)\s*==\s*(?:'([^']*)'|\"([^\"]*)\")\)\]", p)
    if not tokens and p not in ("", "."):
        return None
    if "[?" in p and p.count("[?") != sum(1 for t in tokens if t[4]):
        return None     # a filter this evaluator does not understand
    cur = obj
    for key, idx, q1, q2, fkey, fv1, fv2 in tokens:
        if fkey:
            want = fv1 or fv2
            cur = next((x for x in cur if isinstance(x, dict) and str(x.get(fkey)) == want), None) \
                if isinstance(cur, list) else None
            if cur is None:
                return None
        elif idx:
            if not isinstance(cur, list) or int(idx) >= len(cur):
                return None
            cur = cur[int(idx)]
        else:
            k = key or q1 or q2
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
    return cur


def _crd_cell(col: dict) -> CellFn:
    ctype = col.get("type", "string")
    path = col.get("jsonPath", "")

    def fn(obj: dict, _now: float) -> Cell:
        v = eval_jsonpath(obj, path)
        if v is None:
            return None
        if ctype == "integer":
            return _int(v)
        if ctype == "number":
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
        if ctype == "boolean":
            return bool(v)
        if ctype == "date":
            # kubectl prints cells as they come: the server turns dates into ages.
            t = parse_time(str(v))
            return "<unknown>" if t is None else human_duration(_now - t)
        if isinstance(v, (dict, list)):
            import json
            return json.dumps(v, separators=(",", ":"))
        return str(v)
    return fn


def crd_columns(printer_columns: list[dict] | tuple[dict, ...]) -> tuple[Column, ...]:
    """Columns of a custom resource: NAME plus its additionalPrinterColumns.

    Without printer columns a custom resource shows NAME and AGE, as on a real server.
    """
    if not printer_columns:
        return (DEFAULT_COLUMNS[0], Column("Age", "date", age))
    cols = [DEFAULT_COLUMNS[0]]
    for c in printer_columns:
        cols.append(Column(c.get("name", ""), c.get("type", "string"), _crd_cell(c),
                           priority=_int(c.get("priority")), format=c.get("format", ""),
                           description=c.get("description", "")))
    return tuple(cols)
