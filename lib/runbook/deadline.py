"""The no-CNI window's deadline, and the exact command that rolls a run back.

From the moment 02-reconfigure restarts the first server without flannel (journal fact
``no_cni_window``, ``opened_at``) until 03-install sees every non-hostNetwork pod managed
by Cilium, the cluster has no working CNI. The node controller starts evicting pods
300 s after a node turns NotReady, and their replacements cannot start anywhere, so the
window may not stay open for long: ``limits.no_cni_window_max`` (600 s by default).

The deadline is watched wherever the run can be while the window is open: between the
agents' restarts and cleanups of 02-reconfigure, and around each wait of 03-install
(helm's ``--wait``, the agents, the pod restarts), whose timeouts are cut to what is left
of the window (:func:`cap`). Once it is past, the phase stops with the gate
``no-cni-deadline`` (:class:`DeadlineExceeded`), which names the deadline, how long the
window has been open, where the run was, and this run's rollback command
(:func:`session_rollback_command`). A rerun of the phase stops at the same gate: the only way on
is the rollback, which the deadline does not apply to.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import runinfo
from .errors import GateFailed

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FACT", "GATE", "DeadlineExceeded", "session_rollback_command",
           "opened_at", "remaining", "check", "cap", "watch", "reraise"]

FACT = "no_cni_window"
GATE = "no-cni-deadline"


class DeadlineExceeded(GateFailed):
    """The no-CNI window outlived ``limits.no_cni_window_max``: the phase stops; roll back."""


def session_rollback_command(s: Session) -> str:
    """The exact command that rolls the session's run back (:func:`runinfo.rollback_command`,
    the same words the report's index prints)."""
    from .runner import REPORTS_DIR

    p = s.params
    info = {**runinfo.read(s.run_dir), "run_id": s.run_id, "reports_dir": str(Path(s.run_dir).parent),
            "params_file": str(p.source) if p.source else "<params.yaml>",
            "target": {"name": p.target.name, "kind": p.target.kind}}
    return runinfo.rollback_command(info, default_reports_dir=REPORTS_DIR) or ""


def _ts(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def opened_at(s: Session) -> float | None:
    """When the window opened (epoch seconds); None when it is not open (never opened,
    or closed by 03-install)."""
    win = s.journal.get(FACT)
    if not isinstance(win, dict) or win.get("closed_at"):
        return None
    return _ts(win.get("opened_at"))


def remaining(s: Session, now: float | None = None) -> float | None:
    """Seconds left before the deadline (negative: past it); None when no window is open."""
    start = opened_at(s)
    if start is None:
        return None
    return start + s.params.limits.no_cni_window_max - (time.time() if now is None else now)


def check(s: Session, where: str) -> None:
    """Stop the phase (gate ``no-cni-deadline``) when the open window is past its deadline.

    Raises:
        DeadlineExceeded: naming the deadline, how long the window has been open, ``where``
            the run was, and the rollback command of this run.
    """
    left = remaining(s)
    if left is None or left > 0 or not s.execute:
        return
    limit = s.params.limits.no_cni_window_max
    win = s.journal.get(FACT) or {}
    cmd = session_rollback_command(s)
    s.journal.set("no_cni_deadline", {"exceeded_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "where": where, "max_seconds": limit, "rollback_command": cmd})
    details = [f"the window opened at {win.get('opened_at')} (02-reconfigure) and has been open "
               f"{limit - left:.0f}s; the deadline is limits.no_cni_window_max = {limit:.0f}s",
               f"the run stopped during: {where}",
               "pods tolerate a NotReady node for 300 s; after that the node controller evicts them, "
               "and without a CNI their replacements cannot start",
               f"roll back with: {cmd}"]
    try:
        s.gate(False, f"the no-CNI window closes within limits.no_cni_window_max ({limit:.0f}s)",
               name=GATE, details=details,
               hint=f"Roll this run back now: {cmd}  (a rerun of this phase stops here again: the "
                    "window is past its deadline)")
    except GateFailed as e:
        raise DeadlineExceeded(e.gate, details=e.details, hint=e.hint, data=e.data) from None


def cap(s: Session, timeout: float) -> float:
    """``timeout`` cut to what is left of the open window, rounded up and one second more
    (so a wait that gives up has outlived the deadline, and :func:`watch` names it);
    unchanged when no window is open."""
    left = remaining(s)
    return timeout if left is None else max(1.0, min(float(timeout), math.ceil(left) + 1.0))


@contextmanager
def watch(s: Session, where: str, *, after: bool = True) -> Iterator[None]:
    """Around a wait inside the window: the deadline first, then (``after``) once more when
    the wait is over; a failure of the wait once the deadline is past becomes the
    deadline's gate.

    Example:
        >>> with deadline.watch(s, "helm upgrade --install --wait"):   # doctest: +SKIP
        ...     h.upgrade_install(..., timeout=f"{deadline.cap(s, 600):.0f}s")
    """
    check(s, where)
    try:
        yield
    except DeadlineExceeded:
        raise
    except Exception as e:
        left = remaining(s)
        if left is not None and left <= 0:
            try:
                check(s, where)
            except DeadlineExceeded as d:
                raise d from e
        raise
    if after:
        check(s, where)


def reraise(res: Any) -> None:
    """Raise the :class:`DeadlineExceeded` behind a node operation of a fleet result, if any
    (a fleet wraps each node's exception in a NodeError)."""
    for o in getattr(res, "failed", []) or []:
        if isinstance(getattr(o, "exception", None), DeadlineExceeded):
            raise o.exception
