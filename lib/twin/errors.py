"""The twin's own errors: what whoever starts a twin (the CLI, a test) may have to handle.

The twin never imports the runbook. The ``runbook`` CLI, which starts twins, maps these
onto its exit codes (``runbook.cli``): bad input given to a twin exits 2, like a bad
params field, with one message and no traceback.

Errors that the Kubernetes API answers are another family,
:class:`twin.store.StoreError` (one ``Status`` code each); they never leave the twin.

Example:
    >>> from twin.errors import TwinInputError, TwinStartError
    >>> bad = TwinInputError("cilium.tgz: not a gzip file", hint="pass the chart archive (.tgz)")
    >>> print(bad)
    cilium.tgz: not a gzip file
      hint: pass the chart archive (.tgz)
    >>> TwinStartError("twin failed to start", cause=bad).input_error is bad
    True
"""
from __future__ import annotations


class TwinError(Exception):
    """Root of every error the twin raises to whoever starts it.

    Attributes:
        message: what went wrong, naming the file or option involved.
        hint: what to do next (printed after the message), or None.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # The hint goes on its own line of str(): the CLI prints str() as its one message.
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)
        self.message = message
        self.hint = hint


class TwinInputError(TwinError, ValueError):
    """Something the twin was given cannot be used (a chart archive, ``--scale``, a fixture).

    Raised before the twin serves anything; a ``ValueError`` too, for callers that
    validate input generically.
    """


class TwinStartError(TwinError, RuntimeError):
    """The twin did not start: one of its components failed while starting.

    Every component started so far has been stopped again.

    Attributes:
        cause: the component's exception (also the ``__cause__``).
    """

    def __init__(self, message: str, *, cause: BaseException | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.cause = cause

    @property
    def input_error(self) -> TwinInputError | None:
        """The bad input that stopped the start, if that is what did."""
        return self.cause if isinstance(self.cause, TwinInputError) else None
