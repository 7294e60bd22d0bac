"""What a run checks and records before it starts: the run id, ``--confirm``, the params hash.

Example:
    >>> validate_run_id("2026-11-26")
    '2026-11-26'
    >>> len(values_hash({"kubeProxyReplacement": True}))
    64
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from ..errors import ConfirmationRequired, RunIdError
from .schema import Params

__all__ = ["params_hash", "values_hash", "validate_run_id", "require_confirmation"]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode()


def values_hash(values: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the values."""
    return hashlib.sha256(_canonical(values)).hexdigest()


def params_hash(params: Params, values: dict[str, Any] | None = None) -> str:
    """sha256 over the canonical JSON of the params and of the values (provenance).

    Formatting, comments and key order do not change it; any value does.
    """
    if values is None:
        values = params.values()
    doc = {"params": params.model_dump(mode="json"), "values": values}
    return hashlib.sha256(_canonical(doc)).hexdigest()


_RUN_ID = re.compile(r"[A-Za-z0-9._-]+")


def validate_run_id(run_id: str) -> str:
    """Accept a run id that is a plain folder name; return it.

    Raises:
        RunIdError: empty, ``.``/``..``, a path separator, or a character outside
            ``[A-Za-z0-9._-]``.
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunIdError("the run id is empty", field="run_id")
    if "/" in run_id or "\\" in run_id or os.sep in run_id:
        raise RunIdError(f"run id {run_id!r} contains a path separator", field="run_id",
                         hint="use letters, digits, '.', '_' and '-' only")
    if run_id in (".", "..") or ".." in run_id:
        raise RunIdError(f"run id {run_id!r} contains '..'", field="run_id",
                         hint="use letters, digits, '.', '_' and '-' only")
    if not _RUN_ID.fullmatch(run_id):
        bad = sorted({c for c in run_id if not _RUN_ID.fullmatch(c)})
        raise RunIdError(f"run id {run_id!r} has characters outside [A-Za-z0-9._-]: "
                         f"{' '.join(repr(c) for c in bad)}", field="run_id")
    return run_id


def require_confirmation(params: Params, execute: bool, confirm: str | None) -> None:
    """Refuse ``execute`` on a real target unless ``confirm`` equals the cluster name.

    Raises:
        ConfirmationRequired: kind real, execute set, and confirm != target.name.
    """
    if params.target.kind == "real" and execute and (confirm or "") != params.target.name:
        given = f" (got {confirm!r})" if confirm else ""
        src = f" (target.name in {params.source})" if params.source else ""
        raise ConfirmationRequired(
            f"--execute on the real cluster {params.target.name!r}{src} needs --confirm "
            f"{params.target.name}{given}", field="confirm",
            hint=f"re-run with --confirm {params.target.name} once the dry run looks right")
