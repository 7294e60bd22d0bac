"""What a run folder was made with, and by whom: ``run.json``, read by the report's header.

Every phase session adds itself here (:func:`record_session`, called by
:func:`runbook.session.start`), whether the phase runs headless through ``runbook run``
or by hand in JupyterLab. The file says which target (name and kind), which params
file and values file (path and sha256), which runbook (version and git commit), and
one line per phase session: the phase, EXECUTE or DRY RUN, the user, the host and
the time. :func:`rollback_command` writes, from it, the exact command that rolls the
run back.

Example:
    >>> info = {"run_id": "r1", "params_file": "/srv/p22/params.yaml",
    ...         "target": {"name": "minicloud", "kind": "real"}, "reports_dir": "/srv/p22/reports"}
    >>> rollback_command(info, default_reports_dir="/srv/p22/reports")
    'runbook run --params /srv/p22/params.yaml --phases rollback --run-id r1 --execute --confirm minicloud'
"""
from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["RUN_INFO", "runbook_version", "record_session", "read", "rollback_command", "mode"]

RUN_INFO = "run.json"
REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@lru_cache(maxsize=1)
def runbook_version() -> dict[str, Any]:
    """This runbook's version and, in a git checkout, its commit (``dirty`` when the
    working tree has uncommitted changes: the run used code no commit holds)."""
    from . import __version__

    out: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None}
    if not (REPO / ".git").exists():
        return out
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            st = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
            out["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _cli() -> str:
    """The ``runbook`` command of this installation (absolute when it is in the venv)."""
    path = Path(sys.executable).parent / "runbook"
    return str(path) if path.is_file() else "runbook"


def _who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    sudo = os.environ.get("SUDO_USER")
    return {"user": f"{user} (sudo by {sudo})" if sudo and sudo != user else user,
            "host": socket.gethostname()}


def read(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a run folder ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_session(run_dir: str | os.PathLike, *, phase: str, params: Any, execute: bool) -> dict[str, Any]:
    """Add one phase session to ``run.json`` (created owner-only on the first).

    Args:
        run_dir: the run folder; phase: the phase starting; params: the loaded
            :class:`runbook.params.Params` (its ``source`` is the params file);
            execute: whether this session applies changes.
    """
    run_dir = Path(run_dir)
    info = read(run_dir)
    source = Path(params.source).resolve() if getattr(params, "source", None) else None
    values = Path(params.values_path)
    info.update({
        "run_id": run_dir.name,
        "reports_dir": str(run_dir.resolve().parent),
        "target": {"name": params.target.name, "kind": params.target.kind},
        "params_file": str(source) if source else None,
        "params_sha256": _sha256(source) if source else None,
        "values_file": str(values),
        "values_sha256": _sha256(values),
        "runbook": runbook_version(),
        "cli": _cli(),
    })
    info.setdefault("started_at", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    info.setdefault("sessions", []).append({
        "phase": phase, "execute": bool(execute),
        "at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **_who()})
    path = run_dir / RUN_INFO
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, path)
    return info


def mode(info: dict[str, Any]) -> str:
    """``EXECUTE``, ``DRY RUN`` or ``EXECUTE and DRY RUN`` (phases run both ways)."""
    modes = {bool(s.get("execute")) for s in info.get("sessions") or []}
    if modes == {True}:
        return "EXECUTE"
    if modes == {False}:
        return "DRY RUN"
    return "EXECUTE and DRY RUN" if modes else "unknown"


def rollback_command(info: dict[str, Any], *, default_reports_dir: str | os.PathLike | None = None) -> str | None:
    """The exact ``runbook run`` command that rolls this run back, or None without a
    params file. ``--reports-dir`` is given when the run folder is not in the default
    ``reports/``; ``--confirm <name>`` when the target is a real cluster."""
    params_file = info.get("params_file")
    run_id = info.get("run_id")
    if not params_file or not run_id:
        return None
    args = [info.get("cli") or "runbook", "run", "--params", params_file, "--phases", "rollback",
            "--run-id", run_id]
    reports = info.get("reports_dir")
    if reports and default_reports_dir is not None and \
            Path(reports).resolve() != Path(default_reports_dir).resolve():
        args += ["--reports-dir", reports]
    args.append("--execute")
    target = info.get("target") or {}
    if target.get("kind") == "real":
        args += ["--confirm", str(target.get("name"))]
    return " ".join(shlex.quote(a) for a in args)
