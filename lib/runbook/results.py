"""The one base of every result of a command a runbook step ran: on a node over SSH
(:class:`CommandResult`, here because :mod:`runbook.nodes` and :mod:`runbook.nodefiles`
both return it) or a local binary such as helm (:class:`runbook.helm.HelmResult`).

A subclass is a dataclass with ``rc``, ``stdout``, ``stderr`` and ``duration`` fields
(kept raw: parsers need them) and says how its command reads (:meth:`shown_command`,
already redacted). Every display of a result (:meth:`summary`, ``_repr_html_``) is
redacted here, once, for both.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Echo(ProcessResult):
    ...     rc: int
    ...     stdout: str
    ...     stderr: str
    ...     duration: float
    ...     def shown_command(self) -> str:
    ...         return "echo hi"
    >>> print(Echo(0, "hi\\n", "", 0.01).summary())
    $ echo hi  -> rc=0 (0.01s)
    hi
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import ClassVar

from .errors import NodeError
from .evidence import redact_text

__all__ = ["ProcessResult", "CommandResult"]


class ProcessResult:
    """Behaviour shared by command results; the subclass holds the fields.

    Class attributes tune the display: ``summary_limit`` (characters of stdout and of
    stderr in :meth:`summary`), ``html_limit`` (the same in the notebook) and
    ``duration_digits``.
    """

    rc: int
    stdout: str
    stderr: str
    duration: float
    summary_limit: ClassVar[int] = 500
    html_limit: ClassVar[int] = 2000
    duration_digits: ClassVar[int] = 2

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.rc == 0

    def shown_command(self) -> str:
        """The command as a person would type it, redacted."""
        raise NotImplementedError

    def label(self) -> str:
        """What the summary line starts with before ``$`` (e.g. ``[node] ``)."""
        return ""

    def summary(self, limit: int | None = None) -> str:
        """One redacted paragraph: command, status, start of stdout and stderr."""
        limit = self.summary_limit if limit is None else limit
        text = (f"{self.label()}$ {self.shown_command()}  -> rc={self.rc} "
                f"({self.duration:.{self.duration_digits}f}s)")
        out = redact_text(self.stdout.strip())[:limit]
        err = redact_text(self.stderr.strip())[:limit]
        if out:
            text += "\n" + out
        if err:
            text += "\nstderr: " + err
        return text

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.summary(self.html_limit))}</pre>"


@dataclass
class CommandResult(ProcessResult):
    """The outcome of one command on one node.

    ``stdout``/``stderr`` are kept raw (parsers need them); every display of the result
    (``repr``, ``_repr_html_``, :meth:`summary` from :class:`runbook.results.ProcessResult`)
    is redacted.

    Attributes:
        node: node name; command: the quoted command line as sent; rc: exit status;
        stdout, stderr: decoded output; duration: seconds.
    """

    node: str
    command: str
    rc: int
    stdout: str
    stderr: str
    duration: float = 0.0

    def check_output(self) -> str:
        """Return stdout with the trailing newline removed, or raise :class:`NodeError`."""
        if self.rc != 0:
            raise NodeError("command failed", node=self.node, command=redact_text(self.command),
                            rc=self.rc, stderr=redact_text(self.stderr))
        return self.stdout.rstrip("\n")

    def shown_command(self) -> str:
        return redact_text(self.command)

    def label(self) -> str:
        return f"[{self.node}] "

    def __repr__(self) -> str:
        return (f"CommandResult(node={self.node!r}, command={redact_text(self.command)!r}, "
                f"rc={self.rc}, stdout={redact_text(self.stdout)[:200]!r}, "
                f"stderr={redact_text(self.stderr)[:200]!r}, duration={self.duration:.2f})")
