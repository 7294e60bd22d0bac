"""How a result reads on a phase page: tables and sentences, never a Python ``repr``.

A cell that ends with a dict, a list, a string or a DataFrame would otherwise show
``{'interfaces': [...]}``, ``'uninstalled'`` or a column of pandas row numbers. The
engineer who approves the run reads those pages, so this module turns values into
words once, in one place:

* :func:`plain` writes any value as text for one table cell (``interfaces: cilium_host,
  cilium_net; chains_removed: 10``; ``None`` becomes an empty cell);
* :func:`frame_html` is ``DataFrame.to_html`` without the row numbers of a default
  index, with every cell through :func:`plain`, and with break points after ``/`` so a
  long path wraps at a path separator and never inside a word;
* :func:`install` registers these with IPython, so every DataFrame, dict, list and
  string a cell returns is shown this way. :func:`runbook.session.start` calls it inside
  a kernel.

Example:
    >>> plain({"interfaces": ["cilium_host", "cilium_net"], "chains_removed": 10})
    'interfaces: cilium_host, cilium_net; chains_removed: 10'
    >>> plain({"config": {"changed": True, "sha256": "ab12"}, "skipped": []})
    'config: changed: yes, sha256: ab12; skipped: none'
    >>> plain(None), plain(0.5), plain("already done")
    ('', '0.5', 'already done')
"""
from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["plain", "cell_html", "frame_html", "mapping_html", "sequence_html", "install"]

#: the most list items a cell shows before "... and N more"
MAX_ITEMS = 12


def _scalar(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value) or value == int(value):
            return str(value) if math.isinf(value) else str(int(value))
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, (int, str)):
        return str(value)
    return None


def plain(value: Any, *, _depth: int = 0) -> str:
    """``value`` as words for one table cell or sentence.

    Dicts become ``key: value`` pairs (``;`` between them at the top level, ``,`` inside),
    lists and tuples comma-separated items (``none`` when empty), booleans ``yes``/``no``,
    ``None`` and NaN an empty string. Objects with their own ``__str__`` keep it.
    """
    s = _scalar(value)
    if s is not None:
        return s
    if isinstance(value, dict):
        if not value:
            return "none"
        sep = "; " if _depth == 0 else ", "
        return sep.join(f"{k}: {plain(v, _depth=_depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v, _depth=_depth + 1) for v in (sorted(value, key=str) if isinstance(value, (set, frozenset))
                                                       else value)]
        if not items:
            return "none"
        more = len(items) - MAX_ITEMS
        text = ", ".join(items[:MAX_ITEMS])
        return text + (f" ... and {more} more" if more > 0 else "")
    try:
        import pandas as pd  # noqa: PLC0415

        if value is pd.NaT:
            return ""
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return str(value)


def cell_html(value: Any) -> str:
    """One table cell: :func:`plain`, escaped, with a break point after each ``/`` so
    paths wrap between their parts (a narrow column never splits a word)."""
    return html.escape(plain(value)).replace("/", "/<wbr>")


def frame_html(df: Any, *, max_rows: int | None = 60, min_rows: int = 20) -> str:
    """A DataFrame as an HTML table for a phase page.

    The default index (0, 1, 2 ...) is left out: it numbers nothing a person needs. A
    named or non-default index is kept as the first column. A table longer than
    ``max_rows`` shows its first and last ``min_rows / 2`` rows with a line saying how
    many were left out (as pandas does).
    """
    import pandas as pd  # noqa: PLC0415

    frame = df
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()
    total = len(frame)
    cut = max_rows is not None and total > max_rows
    half = max(1, min(min_rows, max_rows or min_rows) // 2)
    if cut:
        frame = pd.concat([frame.head(half), frame.tail(half)])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, rec in enumerate(frame.itertuples(index=False, name=None)):
        if cut and i == half:
            rows.append(f"<tr><td colspan='{len(frame.columns)}'>... {total - 2 * half} more rows "
                        "(the full table is in the run folder's snapshots or the notebook)</td></tr>")
        rows.append("<tr>" + "".join(f"<td>{cell_html(v)}</td>" for v in rec) + "</tr>")
    foot = f"<p class='p22-rows'>{total} rows</p>" if cut else ""
    return (f"<table class='dataframe p22-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{foot}")


def mapping_html(d: dict) -> str:
    """A dict as a two-column table (``item``, ``value``)."""
    if not d:
        return "<p>(nothing)</p>"
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{cell_html(v)}</td></tr>" for k, v in d.items())
    return f"<table class='p22-table'><tbody>{rows}</tbody></table>"


def sequence_html(items: list | tuple) -> str:
    """A list: each item shown as it would be on its own (a table, a sentence), one
    after the other, rather than a list ``repr`` wrapped around them."""
    parts = []
    for item in items:
        rich = _rich_html(item)
        parts.append(rich if rich is not None else f"<p>{html.escape(plain(item))}</p>")
    return "".join(parts) if parts else "<p>(nothing)</p>"


def _rich_html(value: Any) -> str | None:
    method = getattr(value, "_repr_html_", None)
    if callable(method) and not isinstance(value, type):
        try:
            out = method()
        except Exception:  # noqa: BLE001 - fall back to words
            return None
        if out:
            return str(out)
    try:
        import pandas as pd  # noqa: PLC0415

        if isinstance(value, pd.DataFrame):
            return frame_html(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        return mapping_html(value)
    return None


def _text(p: Any, value: str) -> None:
    p.text(value)


def install(shell: Any = None) -> bool:
    """Show DataFrames, dicts, lists and strings the way this module writes them, in the
    running IPython kernel. Returns False outside IPython.

    Example:
        >>> install()      # doctest: +SKIP
        True
    """
    if shell is None:
        try:
            from IPython import get_ipython  # noqa: PLC0415
        except ImportError:  # pragma: no cover
            return False
        shell = get_ipython()
    if shell is None:
        return False
    import pandas as pd  # noqa: PLC0415

    fmt = shell.display_formatter.formatters
    fmt["text/html"].for_type(pd.DataFrame, frame_html)
    fmt["text/html"].for_type(dict, mapping_html)
    fmt["text/html"].for_type(list, sequence_html)
    fmt["text/html"].for_type(tuple, sequence_html)
    # a string a cell returns is a sentence: shown without repr's quotes
    fmt["text/plain"].for_type(str, lambda s, p, cycle: _text(p, s))
    return True
