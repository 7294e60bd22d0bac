"""A fresh node's files held in memory until something needs them on the host disk.

A twin of 500 nodes writes some 30,000 files and directories at start (configs, the
systemd unit, containerd's config, flannel's files, CNI plugins), and most nodes are
never logged into. With ``lazy`` set, :class:`~twin.node.files.NodeFiles` keeps a fresh
node's tree here: the node's own parts (seeding, k3s starting, BPF state) read and write
it in memory, and the first access that needs the disk (a command's path, SFTP, a
listing through a deferred-lease directory, any error case) writes the whole tree out
first (:meth:`MemoryTree.materialize`), with the modes and modification times it had.
From then on the disk is the only copy. Nothing seen through the node differs; on the
host disk the files appear late.

Only the plain cases are served from memory: a path that meets a symbolic link, a file
where a directory is expected (or the reverse), or anything missing makes the caller
materialize and repeat the operation on disk, so every error is the disk's own.

A twin stopped before the tree was written leaves it in a file beside the node's root
(:meth:`MemoryTree.save`), read back by the next twin on the same state directory.

Example:
    >>> t = MemoryTree()
    >>> t.mkdir("/etc", 0o755)
    True
    >>> t.write("/etc/hostname", b"n1\\n", None, False)
    True
    >>> t.read("/etc/hostname"), oct(t.mode("/etc/hostname")), t.listdir("/etc")
    (b'n1\\n', '0o644', ['hostname'])
"""
from __future__ import annotations

import marshal
import os
import posixpath
import time
from pathlib import Path

DIR, FILE, LINK = 0, 1, 2
_FORMAT = 1          # version of the saved form (see save/load)


class MemoryTree:
    """A node's ``/`` as a dict of entries: ``path -> [kind, mode, data, mtime_ns]``.

    ``data`` is the content of a file, the target of a link, the set of child names
    of a directory. Methods return ``None``/``False`` for anything they do not serve
    (the caller then materializes and uses the disk).
    """

    def __init__(self, dir_mode: int = 0o755, file_mode: int = 0o644) -> None:
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.entries: dict[str, list] = {"/": [DIR, dir_mode, set(), time.time_ns()]}
        self.links: set[str] = set()

    # ----------------------------------------------------------------- lookups
    def serves(self, path: str) -> bool:
        """Whether ``path`` (normalised) reaches no symbolic link of the tree."""
        for link in self.links:
            if path == link or path.startswith(link + "/"):
                return False
        return True

    def kind(self, path: str) -> int | None:
        e = self.entries.get(path)
        return None if e is None else e[0]

    def mode(self, path: str) -> int | None:
        e = self.entries.get(path)
        return None if e is None else e[1]

    def read(self, path: str) -> bytes | None:
        e = self.entries.get(path)
        return e[2] if e is not None and e[0] == FILE else None

    def listdir(self, path: str) -> list[str] | None:
        e = self.entries.get(path)
        return sorted(e[2]) if e is not None and e[0] == DIR else None

    # ----------------------------------------------------------------- changes
    def _touch(self, path: str, now: int) -> None:
        self.entries[path][3] = now

    def _add(self, path: str, entry: list) -> None:
        parent, name = posixpath.split(path)
        self.entries[path] = entry
        pe = self.entries[parent]
        pe[2].add(name)
        pe[3] = entry[3]

    def _missing_dirs(self, path: str) -> list[str] | None:
        """The directories to create for ``path`` to be one (outermost first), or None
        when a file or link is in the way."""
        missing: list[str] = []
        p = path
        while True:
            e = self.entries.get(p)
            if e is not None:
                if e[0] != DIR:
                    return None
                break
            missing.append(p)
            p = posixpath.dirname(p)
        return missing[::-1]

    def mkdir(self, path: str, mode: int) -> bool:
        """``mkdir -p`` with ``mode`` for ``path`` and the default for new parents (an
        existing directory is left as it is). False when a file is in the way."""
        missing = self._missing_dirs(path)
        if missing is None:
            return False
        now = time.time_ns()
        for d in missing:
            self._add(d, [DIR, mode if d == path else self.dir_mode, set(), now])
        return True

    def write(self, path: str, raw: bytes, mode: int | None, append: bool) -> bool:
        """Write a file, creating missing parents; a new file gets ``mode`` or the
        default, an existing one keeps its mode unless ``mode`` is given. False when
        ``path`` is a directory or a file is in the way."""
        e = self.entries.get(path)
        if e is not None and e[0] != FILE:
            return False
        if e is None and not self.mkdir(posixpath.dirname(path), self.dir_mode):
            return False
        now = time.time_ns()
        if e is None:
            self._add(path, [FILE, self.file_mode if mode is None else mode, raw, now])
            return True
        e[2] = e[2] + raw if append else raw
        e[3] = now
        if mode is not None:
            e[1] = mode
        return True

    def symlink(self, path: str, target: str) -> bool:
        """A symbolic link at ``path`` (its parent must be a directory; nothing there)."""
        parent = posixpath.dirname(path)
        if path in self.entries or self.kind(parent) != DIR:
            return False
        self._add(path, [LINK, 0o777, target, time.time_ns()])
        self.links.add(path)
        return True

    def chmod(self, path: str, mode: int) -> bool:
        e = self.entries.get(path)
        if e is None or e[0] == LINK:
            return False
        e[1] = mode
        return True

    def remove(self, path: str, *, keep: bool = False) -> bool:
        """Remove a file or a directory tree (``keep``: only what the directory holds)."""
        e = self.entries.get(path)
        if e is None or e[0] == LINK or path == "/":
            return False
        if any(link == path or link.startswith(path + "/") for link in self.links):
            return False
        now = time.time_ns()
        if e[0] == DIR:
            prefix = path + "/"
            for p in [p for p in self.entries if p.startswith(prefix)]:
                del self.entries[p]
            e[2].clear()
            e[3] = now
        if not keep:
            del self.entries[path]
            parent, name = posixpath.split(path)
            self.entries[parent][2].discard(name)
            self._touch(parent, now)
        return True

    # ----------------------------------------------------------------- the disk
    def materialize(self, host_root: str) -> int:
        """Write the tree under ``host_root`` (an empty directory), with modes and
        modification times; returns how many entries were written."""
        paths = sorted(self.entries)            # every parent sorts before its children
        for p in paths:
            kind, mode, data, _ = self.entries[p]
            host = host_root if p == "/" else os.path.join(host_root, p[1:])
            if kind == DIR:
                if p != "/":
                    os.mkdir(host)
                os.chmod(host, mode)
            elif kind == FILE:
                fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, data)
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
            else:
                os.symlink(data, host)
        for p in reversed(paths):                # children first: a directory's time sticks
            mtime = self.entries[p][3]
            host = host_root if p == "/" else os.path.join(host_root, p[1:])
            os.utime(host, ns=(mtime, mtime), follow_symlinks=False)
        return len(paths)

    def save(self, sidecar: Path) -> None:
        """Keep the tree in ``sidecar`` (a file beside the node's root)."""
        entries = {p: [k, m, sorted(d) if k == DIR else d, t] for p, (k, m, d, t) in self.entries.items()}
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_bytes(marshal.dumps((_FORMAT, entries)))
        os.replace(tmp, sidecar)

    @classmethod
    def load(cls, sidecar: Path, dir_mode: int = 0o755, file_mode: int = 0o644) -> "MemoryTree | None":
        """The tree a previous twin saved, or None (no file, another format)."""
        try:
            version, entries = marshal.loads(sidecar.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        if version != _FORMAT:
            return None
        tree = cls(dir_mode, file_mode)
        tree.entries = {p: [k, m, set(d) if k == DIR else d, t] for p, (k, m, d, t) in entries.items()}
        tree.links = {p for p, e in tree.entries.items() if e[0] == LINK}
        return tree
