"""Readers of a run folder's evidence: the journal, executed notebooks and the report."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def journal(res: Any) -> dict[str, Any]:
    """The journal of a finished run (``res.run_dir / journal.json``)."""
    return json.loads((res.run_dir / "journal.json").read_text())


def read_journal(path: Path) -> dict[str, Any]:
    """The journal at ``path`` while a run may be writing it: an empty journal when the file
    is not there yet or is caught half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"entries": [], "phases": {}}


def entries(doc: dict[str, Any], step: str, node: str | None = None,
            status: str | None = None) -> list[dict[str, Any]]:
    """The journal entries of ``step``, optionally of one node and one status."""
    return [e for e in doc["entries"] if e["step"] == step and (node is None or e.get("node") == node)
            and (status is None or e.get("status") == status)]


def steps(doc: dict[str, Any], phase: str | None = None) -> list[str]:
    """The journaled step names in order, optionally of one phase."""
    return [e["step"] for e in doc["entries"] if phase is None or e.get("phase") == phase]


def notebook_outputs(nb_path: Path, *, every_mimetype: bool = False) -> str:
    """All text of an executed notebook's outputs: streams, ``text/plain`` and errors
    (evalue and traceback without colours); with ``every_mimetype`` every data value
    (HTML, JSON, ...) as well."""
    nb = json.loads(nb_path.read_text())
    out: list[str] = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if "text" in o:
                out.append(_text(o["text"]))
            data = o.get("data") or {}
            for mime, value in data.items():
                if mime == "text/plain" or every_mimetype:
                    out.append(_text(value))
            if o.get("output_type") == "error":
                out.append(o.get("evalue", ""))
                out.append(_ANSI.sub("", "\n".join(o.get("traceback", []))))
    return "\n".join(out)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(value)
    return value if isinstance(value, str) else json.dumps(value)


def failed_cell_source(nb_path: Path) -> str:
    """The source of the executed notebook's cell that raised ("" if none did)."""
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return ""


def report_text(res: Any, *names: str) -> str:
    """The visible text of the run's ``index.html`` and the named phases' report pages.

    ``names`` are notebook names (``01-preflight.ipynb``): both the notebook's outputs
    and its rendered page ``html/01-preflight.html`` are read.
    """
    parts = []
    files = [res.run_dir / "index.html"]
    for n in names:
        files += [res.run_dir / n, res.run_dir / "html" / n.replace(".ipynb", ".html")]
    for f in files:
        if not f.exists():
            continue
        if f.suffix == ".ipynb":
            parts.append(notebook_outputs(f))
        else:
            raw = re.sub(r"<[^>]+>", " ", f.read_text(errors="replace"))
            parts.append(html.unescape(raw))
    return "\n".join(parts)
