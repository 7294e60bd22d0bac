"""Errors of the snapshot format: an archive that cannot be read, or of another version.

Both sides map them onto their own errors: the ``runbook`` CLI exits 2 (bad input, like
a params field), the twin raises a ``TwinInputError``.

Example:
    >>> print(SnapshotVersionError("x.tar.gz", "format version 2.0 is not supported",
    ...                            hint="take the snapshot again"))
    x.tar.gz: format version 2.0 is not supported
      hint: take the snapshot again
"""
from __future__ import annotations


class SnapshotFormatError(ValueError):
    """An archive that is missing, not an archive, or holds a malformed document.

    Attributes:
        path: the archive (or directory) read.
        problem: what is wrong, naming the document and field when there is one.
        hint: what to do next, or None.
    """

    def __init__(self, path: str, problem: str, *, hint: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        text = f"{self.path}: {problem}"
        super().__init__(f"{text}\n  hint: {hint}" if hint else text)


class SnapshotVersionError(SnapshotFormatError):
    """The archive's format version has a major this reader does not know."""
