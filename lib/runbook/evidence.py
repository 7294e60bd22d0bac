"""Evidence: named results recorded in the executed notebook, and snapshot files.

A notebook cell calls :func:`record` with a JSON-serialisable value. The value is
displayed with the custom mimetype ``application/vnd.phase22.evidence+json`` (plus a
``text/plain`` line for people), so the report index reads it back from the executed
``.ipynb`` with :func:`read_records` without executing anything. Snapshots (pods,
services ... as DataFrames) are saved under ``<run_dir>/snapshots/<phase>/`` with
owner-only permissions, because they hold cluster state. Everything written here goes
through ``redact()`` first.

Evidence that cannot be recorded is never dropped in silence: :func:`record_or_warn`
logs it (logger ``runbook.evidence``), shows a visible ``EVIDENCE LOST`` warning in the
cell (so the phase page names what was lost and why) and keeps an
:class:`EvidenceLost` in the caller's list (the session's, for its summary).

Example:
    >>> from runbook import evidence
    >>> evidence.record("pods_total", 42)                      # doctest: +SKIP
    >>> evidence.read_records("reports/r1/01-preflight.ipynb")  # doctest: +SKIP
    {'pods_total': 42}
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from . import lean_imports

log = logging.getLogger("runbook.evidence")
# a library does not print through logging's last resort: evidence_lost shows the
# warning itself (in the cell, or on stderr outside a notebook), once
log.addHandler(logging.NullHandler())

MIMETYPE = "application/vnd.phase22.evidence+json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Used only until runbook.redact lands (and if it is ever missing): masks the obvious
# shapes of secrets so a half-built tree still never writes one.
_FALLBACK_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     "***REDACTED PRIVATE KEY***"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(?im)^(\s*(?:token|agent-token|password|secret)\s*:\s*).+$"), r"\1***"),
    (re.compile(r"K10[0-9a-f]{20,}::[A-Za-z0-9.:_-]+"), "***"),
]


def redact_text(text: str) -> str:
    """Redact ``text`` with :func:`runbook.redact.redact` (imported lazily).

    The import is lazy because redact.py is owned by another module author; when it is
    absent a conservative built-in masking is applied instead of none.
    """
    if not text:
        return text
    try:
        from . import redact as _r  # noqa: PLC0415
        return _r.redact(text)
    except ImportError:
        for pat, repl in _FALLBACK_PATTERNS:
            text = pat.sub(repl, text)
        return text


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    try:
        import pandas as pd  # noqa: PLC0415
        if isinstance(value, pd.DataFrame):
            return json.loads(value.to_json(orient="records", date_format="iso"))
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _jsonable(value.to_dict())
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return _jsonable(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def redact_value(value: Any) -> Any:
    """JSON-normalise ``value`` and redact every string in it (round trip via JSON)."""
    text = json.dumps(_jsonable(value), sort_keys=False, default=str)
    return json.loads(redact_text(text))


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record(name: str, value: Any) -> Any:
    """Record a named, JSON-serialisable result in the running notebook.

    Args:
        name: a stable key the report index looks up (``pods_total``, ``gate/no-kube-svc``).
        value: any JSON-able value (dataclasses and DataFrames are converted).

    Returns:
        the redacted value that was recorded.

    Example:
        >>> record("unmanaged_pods", 0)   # doctest: +SKIP
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"evidence name {name!r} must be a plain key")
    clean = redact_value(value)
    # JupyterLab (and VS Code) show the richest type they can render: an HTML comment,
    # i.e. nothing, so the record stays out of sight there as on the report's pages. The
    # text/plain line remains for plain-text consumers (a terminal, nbconvert --to text).
    bundle = {MIMETYPE: clean, "text/html": f"<!-- phase22 evidence: {html.escape(name)} -->",
              "text/plain": f"[evidence] {name} = {_short(clean)}"}
    try:
        from IPython import get_ipython  # noqa: PLC0415
        from IPython.display import display  # noqa: PLC0415
    except ImportError:  # pragma: no cover - IPython is a dependency of ipykernel
        return clean
    # Outside IPython (CLI, plain scripts) display() would print the raw bundle: skip.
    if get_ipython() is not None:
        display(bundle, raw=True, metadata={"name": name})
    return clean


def record_gate(result: Any) -> Any:
    """Record a :class:`runbook.checks.GateResult` under ``gate/<name>``."""
    data = _jsonable(result)
    return record(f"gate/{data.get('name', 'unnamed')}", data)


@dataclasses.dataclass
class EvidenceLost:
    """A piece of evidence that could not be recorded.

    Attributes:
        name: the evidence key that is missing from the notebook (``gate/<name>`` ...).
        reason: the error, redacted (``ValueError: evidence name ... must be a plain key``).
    """

    name: str
    reason: str

    def __str__(self) -> str:
        return (f"EVIDENCE LOST: {self.name} was not recorded ({self.reason}); the report "
                "index will not show it")

    def _repr_html_(self) -> str:
        return ("<div class='evidence-lost' style='border:2px solid #b00020;background:#fff4f4;"
                "color:#b00020;padding:6px 10px;margin:4px 0'><b>&#9888; EVIDENCE LOST</b>: "
                f"<code>{html.escape(self.name)}</code> was not recorded: "
                f"{html.escape(self.reason)}. The report index will not show it.</div>")


def _safe_redact(text: str) -> str:
    # the failure being reported may be redaction itself: never let it hide the warning
    try:
        return redact_text(text)
    except Exception:  # noqa: BLE001 - fall back to the built-in masking, never to nothing
        for pat, repl in _FALLBACK_PATTERNS:
            text = pat.sub(repl, text)
        return text


def evidence_lost(name: str, error: BaseException | str, *,
                  into: list[EvidenceLost] | None = None) -> EvidenceLost:
    """Report that ``name`` could not be recorded: log it, show it in the cell, keep it.

    Args:
        name: the evidence key; error: why (an exception or a sentence).
        into: a list to append to (the session's ``evidence_lost``).

    Example:
        >>> lost = []
        >>> evidence_lost("gate/kpr", ValueError("disk full"), into=lost).reason
        'ValueError: disk full'
    """
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    item = EvidenceLost(str(name), _safe_redact(reason))
    log.warning("%s", item)
    if into is not None:
        into.append(item)
    try:
        from IPython import get_ipython  # noqa: PLC0415
        from IPython.display import display  # noqa: PLC0415

        if get_ipython() is None:
            print(item, file=sys.stderr)
        else:
            display({"text/html": item._repr_html_(), "text/plain": str(item)}, raw=True)
    except Exception as e:  # noqa: BLE001 - the warning must reach a person somehow
        print(f"{item} (and it could not be displayed: {type(e).__name__})", file=sys.stderr)
    return item


def record_or_warn(name: str, value: Any, *, lost: list[EvidenceLost] | None = None) -> Any:
    """:func:`record`, but a failure does not stop the caller: it is reported with
    :func:`evidence_lost` (logged, shown in the cell, appended to ``lost``).

    Returns:
        the recorded value, or the :class:`EvidenceLost` when recording failed.

    Example:
        >>> record_or_warn("bad name!", 1).name       # doctest: +SKIP
        'bad name!'
    """
    try:
        return record(name, value)
    except Exception as e:  # noqa: BLE001 - never silent: logged, shown and kept
        return evidence_lost(name, e, into=lost)


def record_gate_or_warn(result: Any, *, lost: list[EvidenceLost] | None = None) -> Any:
    """:func:`record_gate` through :func:`record_or_warn`."""
    try:
        data = _jsonable(result)
        name = f"gate/{data.get('name', 'unnamed')}"
    except Exception as e:  # noqa: BLE001 - as above
        return evidence_lost(f"gate/{getattr(result, 'name', 'unnamed')}", e, into=lost)
    return record_or_warn(name, data, lost=lost)


def read_records(notebook_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the evidence recorded in an executed notebook (later records win).

    Args:
        notebook_path: the ``.ipynb`` written by papermill.

    Returns:
        name -> value, in the order first recorded.
    """
    lean_imports.jsonschema()   # before nbformat imports it
    import nbformat  # noqa: PLC0415

    nb = nbformat.read(str(notebook_path), as_version=4)
    return {name: value for name, (value, _cell) in records_with_cells(nb).items()}


def records_with_cells(nb: Any) -> dict[str, tuple[Any, str | None]]:
    """name -> (value, id of the cell that recorded it), from a read notebook (later
    records win). The cell id is the anchor the report links to (``#cell-id=<id>``)."""
    out: dict[str, tuple[Any, str | None]] = {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        for o in cell.get("outputs", []):
            data = o.get("data") or {}
            if MIMETYPE not in data:
                continue
            meta = o.get("metadata") or {}
            name = meta.get("name") or (meta.get(MIMETYPE) or {}).get("name")
            if name:
                out[name] = (data[MIMETYPE], cell.get("id"))
    return out


def lost_in(nb: Any) -> list[tuple[str, str | None]]:
    """(the ``EVIDENCE LOST`` line, id of its cell) for each warning shown in a read
    notebook: evidence that could not be recorded leaves only this trace."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            text = (o.get("data") or {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else str(text)
            if text.startswith("EVIDENCE LOST:"):
                out.append((text.strip(), cell.get("id")))
    return out


def gates(records: dict[str, Any]) -> list[dict[str, Any]]:
    """The gate results among ``records`` (as returned by :func:`read_records`)."""
    return [v for k, v in records.items() if k.startswith("gate/")]


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def snapshot_dir(run_dir: str | os.PathLike[str], phase: str) -> Path:
    """``<run_dir>/snapshots/<phase>``, created owner-only."""
    if not _FILE_RE.match(phase):
        raise ValueError(f"phase {phase!r} must be a plain folder name")
    run = Path(run_dir)
    _private_dir(run / "snapshots")
    return _private_dir(run / "snapshots" / phase)


def save_snapshot(run_dir: str | os.PathLike[str], phase: str, name: str, obj: Any) -> Path:
    """Save a snapshot as JSON (and CSV for a DataFrame) under ``snapshots/<phase>/``.

    Args:
        run_dir: the run folder; phase: e.g. ``preflight``; name: e.g. ``pods``.
        obj: a pandas DataFrame or any JSON-able value.

    Returns:
        the path of the JSON file. Files are mode 0600, folders 0700.

    Example:
        >>> save_snapshot("reports/r1", "preflight", "pods", pods_df)   # doctest: +SKIP
        PosixPath('reports/r1/snapshots/preflight/pods.json')
    """
    import pandas as pd  # noqa: PLC0415

    if not _FILE_RE.match(name):
        raise ValueError(f"snapshot name {name!r} must be a plain file name")
    folder = snapshot_dir(run_dir, phase)
    path = folder / f"{name}.json"
    if isinstance(obj, pd.DataFrame):
        payload = {"type": "dataframe", "columns": [str(c) for c in obj.columns],
                   "records": json.loads(obj.to_json(orient="records", date_format="iso"))}
        _write_private(folder / f"{name}.csv", redact_text(obj.to_csv(index=False)))
    else:
        payload = {"type": "object", "data": _jsonable(obj)}
    _write_private(path, redact_text(json.dumps(payload, indent=1, default=str)) + "\n")
    return path


def load_snapshot(run_dir: str | os.PathLike[str], phase: str, name: str) -> Any:
    """Load what :func:`save_snapshot` wrote: a DataFrame, or the JSON value."""
    import pandas as pd  # noqa: PLC0415

    path = Path(run_dir) / "snapshots" / phase / f"{name}.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("type") == "dataframe":
        return pd.DataFrame(payload["records"], columns=payload["columns"])
    return payload.get("data")
