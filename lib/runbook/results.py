"""The one base of every result of a command a runbook step ran: on a node over SSH
(:class:`runbook.nodes.CommandResult`) or a local binary such as helm
(:class:`runbook.helm.HelmResult`).

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
from typing import ClassVar

from .evidence import redact_text

__all__ = ["ProcessResult"]


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
