"""File operations on a node: read, test, hash, and replace atomically after a backup.

:class:`NodeFiles` is a part of :class:`runbook.nodes.Node`: every operation goes
through the node's one choke point (``run``, arguments shell-quoted) and every change
is journaled before it is made (``write-file``, ``restore-file``). The first backup of
a run is the pre-run state the rollback needs and is never overwritten.

Example:
    >>> n.write_file("/etc/rancher/k3s/config.yaml", text)   # doctest: +SKIP
    WriteResult(node='set-hog', path='/etc/rancher/k3s/config.yaml', ...)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NodeError
from .evidence import redact_text
from .results import CommandResult

__all__ = ["NodeFiles", "WriteResult", "TMP_SUFFIX"]

#: Suffix of the temporary file written next to the target before the atomic ``mv``.
TMP_SUFFIX = ".phase22.tmp"


@dataclass
class WriteResult:
    """What :meth:`Node.write_file` / :meth:`Node.restore_file` did.

    Attributes:
        node, path; backup_path: where the previous content was copied (None when the
        file did not exist or no backup was asked); sha256_before (None if absent);
        sha256_after; changed: False when the content was already the wanted one.
    """

    node: str
    path: str
    backup_path: str | None
    sha256_before: str | None
    sha256_after: str
    changed: bool



class NodeFiles:
    """The file operations of a :class:`runbook.nodes.Node` (a part of it, not used alone).

    Relies on the node's ``name``, ``backup_dir``, ``run_id``, ``run``, ``run_expect``,
    ``_journal`` and ``_journal_done``.
    """

    name: str
    backup_dir: str
    run_id: str | None

    if TYPE_CHECKING:
        def run(self, cmd: str, *args: Any, sudo: bool = False, stdin: str | bytes | None = None,
                timeout: float | None = None) -> CommandResult: ...

        def run_expect(self, expected: Any, cmd: str, *args: Any, **kw: Any) -> CommandResult: ...

        def _journal(self, step: str, action: str, data: dict[str, Any]) -> Any: ...

        def _journal_done(self, entry: Any, *, result: Any = None,
                          error: BaseException | None = None) -> None: ...

    def read_file(self, path: str) -> str:
        """Content of a remote file, read with ``sudo cat`` (the SSH user is not root).

        Raises:
            NodeError: the file is missing or unreadable.
        """
        r = self.run("cat %s", path, sudo=True)
        if not r.ok:
            raise NodeError(f"cannot read {path}", node=self.name, command=r.command,
                            rc=r.rc, stderr=redact_text(r.stderr))
        return r.stdout

    def exists(self, path: str) -> bool:
        """True when ``path`` exists on the node (``sudo test -e``)."""
        return self.run_expect([0, 1], "test -e %s", path, sudo=True).rc == 0

    def sha256(self, path: str) -> str | None:
        """Hex sha256 of a remote file, or None when it does not exist."""
        if not self.exists(path):
            return None
        out = self.run("sha256sum %s", path, sudo=True).check_output()
        digest = out.split()[0] if out.split() else ""
        if len(digest) != 64:
            raise NodeError(f"unexpected sha256sum output for {path}", node=self.name)
        return digest.lower()

    def backup_path(self, path: str) -> str:
        """``<backup_dir>/<basename>.<run-id or UTC timestamp>.bak``."""
        stamp = self.run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.backup_dir.rstrip('/')}/{Path(path).name}.{stamp}.bak"

    def write_file(self, path: str, text: str | bytes, *, backup: bool = True,
                   mode: str | None = None) -> WriteResult:
        """Replace a remote file atomically, after a backup, and verify it.

        Steps: journal the intent (node, path, backup, sha256 before/after); ``sudo cp
        -p`` the current file to :meth:`backup_path` (unless that backup already exists:
        the first backup of a run, the pre-run state, is never overwritten); ``sudo cp -p`` it to
        ``<path>.phase22.tmp`` too (so the new file keeps owner and mode), write the
        content with ``sudo tee`` from stdin, ``sudo mv`` it onto ``path``; check the
        sha256. A file that already has the content is left alone (``changed=False``).

        Args:
            path: remote path; text: the new content; backup: copy the old file first;
            mode: ``chmod`` mode for the new file (e.g. ``"0600"``), default: keep.

        Raises:
            NodeError: a step failed or the sha256 after the write is not the expected one.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        want = hashlib.sha256(data).hexdigest()
        before = self.sha256(path)
        if before == want and mode is None:
            return WriteResult(self.name, path, None, before, want, changed=False)
        bpath = self.backup_path(path) if (backup and before is not None) else None
        entry = self._journal("write-file", f"write {path}", {
            "path": path, "backup": bpath, "sha256_before": before, "sha256_after": want})
        try:
            self._write(path, data, bpath, before, mode)
            after = self.sha256(path)
            if after != want:
                raise NodeError(f"{path} has sha256 {after} after the write, expected {want}",
                                node=self.name,
                                hint=f"the previous content is in {bpath}" if bpath else None)
        except Exception as e:
            self._journal_done(entry, error=e)
            raise
        self._journal_done(entry, result={"sha256_after": want})
        return WriteResult(self.name, path, bpath, before, want, changed=True)

    def _write(self, path: str, data: bytes, bpath: str | None, before: str | None,
               mode: str | None) -> None:
        # The first backup of a run is the pre-run state the rollback needs: a second
        # write in the same run must not overwrite it with an intermediate version.
        if bpath and not self.exists(bpath):
            self.run("mkdir -p %s", self.backup_dir, sudo=True).check_output()
            self.run("cp -p %s %s", path, bpath, sudo=True).check_output()
        tmp = path + TMP_SUFFIX
        if before is not None:
            self.run("cp -p %s %s", path, tmp, sudo=True).check_output()
        r = self.run("tee %s", tmp, sudo=True, stdin=data)
        # tee echoes the content (possibly a secret): never keep it around.
        r.stdout = ""
        r.check_output()
        if mode:
            self.run("chmod %s %s", mode, tmp, sudo=True).check_output()
        self.run("mv -f %s %s", tmp, path, sudo=True).check_output()

    def restore_file(self, path: str, backup_path: str) -> WriteResult:
        """Restore ``path`` byte-for-byte from ``backup_path`` (copy, then atomic ``mv``).

        Raises:
            NodeError: the backup is missing or the restored file differs from it.
        """
        want = self.sha256(backup_path)
        if want is None:
            raise NodeError(f"backup {backup_path} does not exist; cannot restore {path}",
                            node=self.name)
        before = self.sha256(path)
        if before == want:
            return WriteResult(self.name, path, backup_path, before, want, changed=False)
        entry = self._journal("restore-file", f"restore {path} from {backup_path}", {
            "path": path, "backup": backup_path, "sha256_before": before, "sha256_after": want})
        try:
            tmp = path + TMP_SUFFIX
            self.run("cp -p %s %s", backup_path, tmp, sudo=True).check_output()
            self.run("mv -f %s %s", tmp, path, sudo=True).check_output()
            after = self.sha256(path)
            if after != want:
                raise NodeError(f"{path} has sha256 {after} after restore, backup has {want}",
                                node=self.name)
        except Exception as e:
            self._journal_done(entry, error=e)
            raise
        self._journal_done(entry, result={"sha256_after": want})
        return WriteResult(self.name, path, backup_path, before, want, changed=True)

    def remove_file(self, path: str) -> bool:
        """``sudo rm -f``; returns True when the file existed (idempotent)."""
        existed = self.exists(path)
        if existed:
            self.run("rm -f %s", path, sudo=True).check_output()
        return existed

