"""One error root for the runbook, one subclass per boundary.

Every third-party exception is translated at its boundary with ``raise ... from e`` so
that a notebook (and the CLI) only ever sees these types. ``str()`` of each error is
written for a person reading a failed report at 3 a.m.: what failed, where, and what to
do next.

Example:
    >>> from runbook.errors import GateFailed
    >>> str(GateFailed("all agents Ready", details=["cilium-abc on set-hog: CrashLoopBackOff"]))
    'GATE FAILED: all agents Ready\\n  - cilium-abc on set-hog: CrashLoopBackOff'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RunbookError(Exception):
    """Root of every error raised by :mod:`runbook`.

    Attributes:
        hint: what an operator should do next (printed after the message).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ParamsError(RunbookError, ValueError):
    """A parameter file, values file or CLI argument is invalid.

    Raised before anything is contacted. Names the file and the field.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 hint: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ""
        if file and field:
            where = f"{file}: field '{field}': "
        elif file:
            where = f"{file}: "
        elif field:
            where = f"field '{field}': "
        super().__init__(where + message, hint=hint)


class ParamsFileError(ParamsError):
    """The params file itself cannot be used: missing, unreadable, not YAML, not a mapping."""

    exit_code = 7


class UnknownKeyError(ParamsError):
    """The params file has a key the schema does not know (often a typo of a real one)."""

    exit_code = 8


class ValuesFileError(ParamsError):
    """The Cilium values file named by ``cilium.values_file`` is missing or malformed."""

    exit_code = 9


class ValuesMismatch(ParamsError):
    """The Cilium values contradict the params (e.g. KPR on without disable-kube-proxy)."""

    exit_code = 3


class RunIdError(ParamsError):
    """A run id that is not a plain folder name (path separators, '..')."""

    exit_code = 4


class ConfirmationRequired(ParamsError):
    """``--execute`` against a real target without ``--confirm <cluster name>``."""

    exit_code = 5


class LoopbackViolation(RunbookError):
    """A twin-kind target points at an address that is not loopback.

    The library refuses the connection before it is opened.
    """

    exit_code = 6


class ClusterError(RunbookError):
    """The Kubernetes API failed or answered something unexpected."""

    exit_code = 10

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None,
                 hint: str | None = None) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message, hint=hint)


class NodeError(RunbookError):
    """An SSH connection or a command on a node failed.

    Attributes:
        node: node name; command: the quoted command line; rc: exit status; stderr.
    """

    exit_code = 11

    def __init__(self, message: str, *, node: str | None = None, command: str | None = None,
                 rc: int | None = None, stderr: str | None = None,
                 hint: str | None = None) -> None:
        self.node = node
        self.command = command
        self.rc = rc
        self.stderr = stderr
        parts = [f"[{node}] {message}" if node else message]
        if command is not None:
            parts.append(f"  command: {command}")
        if rc is not None:
            parts.append(f"  exit status: {rc}")
        if stderr:
            parts.append("  stderr: " + stderr.strip()[:2000])
        super().__init__("\n".join(parts), hint=hint)


class HostKeyError(NodeError):
    """A node's SSH host key is unknown or does not match known_hosts."""

    exit_code = 12


class HelmError(RunbookError):
    """A helm command failed; carries the command and its stderr."""

    exit_code = 13

    def __init__(self, message: str, *, command: list[str] | None = None, rc: int | None = None,
                 stderr: str | None = None, hint: str | None = None) -> None:
        self.command = command
        self.rc = rc
        self.stderr = stderr
        text = message
        if rc is not None:
            text += f" (exit status {rc})"
        if stderr:
            text += "\n  stderr: " + stderr.strip()[:2000]
        super().__init__(text, hint=hint)


class VeleroError(RunbookError):
    """A Velero backup or restore ended in a phase other than Completed."""

    exit_code = 14

    def __init__(self, message: str, *, name: str | None = None, phase: str | None = None,
                 failure_reason: str | None = None, errors: int | None = None,
                 warnings: int | None = None, hint: str | None = None) -> None:
        self.name = name
        self.phase = phase
        self.failure_reason = failure_reason
        self.errors = errors
        self.warnings = warnings
        super().__init__(message, hint=hint)


class ArgoCDError(RunbookError):
    """Pausing or resuming Argo CD failed, or a risk blocks it."""

    exit_code = 15


class JournalError(RunbookError):
    """The run journal is missing, corrupt, or belongs to another cluster/params."""

    exit_code = 16


class LockHeld(RunbookError):
    """Another run holds the migration lock on this cluster."""

    exit_code = 17


class WaitTimeout(RunbookError):
    """A wait gave up; ``pending`` lists what it was still waiting for."""

    exit_code = 18

    def __init__(self, message: str, *, pending: list[str] | None = None,
                 hint: str | None = None) -> None:
        self.pending = list(pending or [])
        text = message
        if self.pending:
            shown = self.pending[:20]
            text += "\n  still waiting for:\n" + "\n".join(f"  - {p}" for p in shown)
            if len(self.pending) > len(shown):
                text += f"\n  ... and {len(self.pending) - len(shown)} more"
        super().__init__(text, hint=hint)


@dataclass
class _Details:
    items: list[str] = field(default_factory=list)


class GateFailed(RunbookError):
    """A gate of the runbook did not hold: the phase must stop here.

    Args:
        gate: the condition that was required, in words.
        details: one line per offending item (pods, nodes, services ...).
        hint: what to do next.
    """

    exit_code = 20

    def __init__(self, gate: str, *, details: list[str] | None = None,
                 hint: str | None = None, data: Any = None) -> None:
        self.gate = gate
        self.details = list(details or [])
        self.data = data
        text = f"GATE FAILED: {gate}"
        if self.details:
            shown = self.details[:30]
            text += "\n" + "\n".join(f"  - {d}" for d in shown)
            if len(self.details) > len(shown):
                text += f"\n  ... and {len(self.details) - len(shown)} more"
        super().__init__(text, hint=hint)

    def _render_traceback_(self) -> list[str]:
        """What a notebook (IPython) shows for a failed gate: the requirement, what broke
        it and the hint. A gate is the runbook's own verdict, not a crash: no Python stack."""
        return _gate_lines("GATE FAILED", self)


def _gate_lines(kind: str, e: GateFailed) -> list[str]:
    lines = [f"{kind}: {e.gate}"]
    lines += [f"  - {d}" for d in e.details[:30]]
    if len(e.details) > 30:
        lines.append(f"  ... and {len(e.details) - 30} more")
    if e.hint:
        lines.append(f"  hint: {e.hint}")
    return lines


class DeferredStop(GateFailed):
    """A deliberate stop: preflight's verdict is DEFER and nobody chose to go on.

    Not a fault, so a notebook shows it as a short stop message naming the parameter
    that goes on anyway, not as a traceback (IPython calls ``_render_traceback_``). A
    headless run still stops here and is marked stopped, with exit code 1.
    """

    def _render_traceback_(self) -> list[str]:
        return _gate_lines("STOPPED", self)
