"""A node's file system: a directory of the twin's state dir standing for the node's ``/``.

Every path a command names maps into that directory and can never leave it (``..`` stops
at the node's ``/``; a symlink leading out is refused). Ownership is a rule of the model,
not the host's: ``/home/ubuntu`` and ``/tmp`` belong to ``ubuntu``, everything else to
``root``. Permissions for ``ubuntu`` follow the mode bits of the host files, so the node
sets every mode it creates itself (``DIR_MODE``, ``FILE_MODE``, as root's umask 022
gives on Ubuntu): the process umask of whoever runs the twin changes nothing.

The file commands (``cat``, ``cp``, ``chmod`` ...) are in :mod:`twin.node.cmd_files`.

Example:
    >>> files = NodeFiles(tmp_path / "server-1", lambda event, **info: None)  # doctest: +SKIP
    >>> files.write("/etc/hostname", "server-1\\n")  # doctest: +SKIP
    >>> files.can_read("/etc/hostname", root=False)  # doctest: +SKIP
    True
"""
from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable

from .memfs import DIR, FILE, MemoryTree

HOME = "/home/ubuntu"
DIR_MODE = 0o755      # directories the node creates (mkdir, parents of a written file)
FILE_MODE = 0o644     # files the node creates without an explicit mode


def norm(path: str, cwd: str = "/") -> str:
    """The absolute, normalised node path of ``path`` (relative to ``cwd``)."""
    p = path if path.startswith("/") else posixpath.join(cwd, path)
    p = posixpath.normpath("/" + p.lstrip("/"))
    return "/" if p in ("/", "//") else p


def _link_below(root: str, rel: str) -> bool:
    """Whether a component of ``rel`` (normalised, relative) under the real directory
    ``root`` is a symlink. Without one the path resolves to itself, inside ``root``: the
    realpath check of :meth:`NodeFiles.host_path` is needed only with one. A lstat per
    component below the root, where ``os.path.realpath`` walks every component from the
    host's ``/`` (a fifth of the twin's CPU in a node-by-node run: each volume's pass of
    the Longhorn model reads every node's network facts, a dozen paths each)."""
    cur = root
    for part in rel.split("/"):
        cur = f"{cur}/{part}"
        try:
            mode = os.lstat(cur).st_mode
        except OSError:
            return False          # missing (or not a directory): nothing below it either
        if stat.S_ISLNK(mode):
            return True
    return False


class NodeFiles:
    """The node's ``/`` on the host, with the model's owners and permissions.

    Args:
        root: the host directory holding the node's ``/`` (created if missing).
        emit: the node's event function; changes emit ``file-changed``.
        lazy: keep a fresh node's files in memory until something needs them on disk
            (:mod:`.memfs`); a tree a previous twin left in memory is read back either way.
    """

    def __init__(self, root: Path, emit: Callable[..., None], *, lazy: bool = False) -> None:
        self.root = Path(root)
        fresh = not self.root.is_dir()
        if fresh:
            self.root.mkdir(parents=True)
            os.chmod(self.root, DIR_MODE)   # the node's "/"
        self._host_root = os.path.realpath(self.root)   # the real path every access checks
        self._emit = emit
        # Directories whose content is written when first reached (see on_first_access).
        self._lazy: dict[str, Callable[[], None]] = {}
        # A fresh node's tree in memory until something needs the disk (see .memfs).
        self._sidecar = self.root.parent / f".{self.root.name}.files"   # beside the root
        # A tree a previous twin left in memory is this node's state, lazy or not.
        self._mem: MemoryTree | None = MemoryTree.load(self._sidecar, DIR_MODE, FILE_MODE)
        if not lazy:
            self.materialize()
        elif self._mem is None and (fresh or not os.listdir(self._host_root)):
            self._mem = MemoryTree(DIR_MODE, FILE_MODE)

    @property
    def host_root(self) -> str:
        """The real host path of the node's ``/`` (the node's files are on disk from then on)."""
        self.materialize()
        return self._host_root

    @property
    def in_memory(self) -> bool:
        """Whether the node's files are still only in memory (see :mod:`.memfs`)."""
        return self._mem is not None

    def materialize(self) -> None:
        """Write a tree held in memory to the host disk (once); then the disk is the copy."""
        mem, self._mem = self._mem, None
        if mem is not None:
            mem.materialize(self._host_root)
            self._sidecar.unlink(missing_ok=True)

    def save(self) -> None:
        """Keep a tree still in memory beside the root, for a twin started on the same state."""
        if self._mem is not None:
            self._mem.save(self._sidecar)

    def _served(self, path: str, cwd: str = "/") -> str | None:
        """The normalised path when the memory tree serves it; else None, with the tree
        written out first (a symlink on the way, a deferred directory reached)."""
        if self._mem is None:
            return None
        p = norm(path, cwd)
        if self._mem.serves(p) and not any(p == "/" or p == d or d.startswith(p + "/")
                                           or p.startswith(d + "/") for d in self._lazy):
            return p
        self.materialize()
        return None

    norm = staticmethod(norm)

    def on_first_access(self, path: str, fill: Callable[[], None]) -> None:
        """Run ``fill`` (once) before anything reaches ``path``, a directory above it or
        below it: its content then exists before anyone looks, though it is written late."""
        self._lazy[norm(path)] = fill

    def host_path(self, path: str, cwd: str = "/") -> Path:
        """The host path of a node path; ``..`` stops at the node's ``/`` and a symlink
        that leads outside the root is refused (PermissionError)."""
        self.materialize()
        p = norm(path, cwd)
        if self._lazy:
            # Every file access passes here (a listing, find, rm -r), so lazily written
            # content exists before anyone looks.
            for d in [d for d in self._lazy if p == "/" or p == d or d.startswith(p + "/")
                      or p.startswith(d + "/")]:
                fill = self._lazy.pop(d, None)
                if fill is not None:
                    fill()
        root = self._host_root
        if p == "/":
            return Path(root)
        host = os.path.join(root, p[1:])
        if _link_below(root, p[1:]):     # only then can the path lead anywhere else
            real = os.path.realpath(host)
            if real != root and not real.startswith(root + os.sep):
                raise PermissionError(f"{path}: outside the node's filesystem")
        return Path(host)

    def locate(self, path: str, cwd: str = "/") -> tuple[str, Path]:
        """A command's operand: its normalised node path and its host path."""
        n = norm(path, cwd)
        return n, self.host_path(n)

    # ------------------------------------------------------------- as root
    def exists(self, path: str) -> bool:
        p = self._served(path)
        if p is not None:
            return self._mem.kind(p) is not None
        try:
            return self.host_path(path).exists()
        except PermissionError:
            return False

    def is_dir(self, path: str) -> bool:
        p = self._served(path)
        if p is not None:
            return self._mem.kind(p) == DIR
        try:
            return self.host_path(path).is_dir()
        except PermissionError:
            return False

    def stamp(self, path: str) -> tuple[int, int]:
        """``(modification time ns, size)`` of a file, following links: what a cache of
        its parsed content compares. Raises OSError (missing) or PermissionError."""
        p = self._served(path)
        if p is not None:
            e = self._mem.entries.get(p)
            if e is not None and e[0] == FILE:
                return e[3], len(e[2])
            self.materialize()
        st = self.host_path(path).stat()
        return st.st_mtime_ns, st.st_size

    def read(self, path: str) -> bytes:
        """File content (as root). Raises FileNotFoundError/IsADirectoryError."""
        p = self._served(path)
        if p is not None:
            data = self._mem.read(p)
            if data is not None:
                return data
            self.materialize()    # the disk's own error
        return self.host_path(path).read_bytes()

    def read_text(self, path: str) -> str:
        return self.read(path).decode()

    def write(self, path: str, data: bytes | str, mode: int | None = None, *,
              append: bool = False) -> None:
        """Write a file as root, creating parent directories; emits ``file-changed``."""
        p = self._served(path)
        if p is not None:
            if self._mem.write(p, data.encode() if isinstance(data, str) else data, mode, append):
                self._emit("file-changed", path=p, op="write")
                return
            self.materialize()
        host = self.host_path(path)
        make_dirs(host.parent)
        new = not host.exists()
        raw = data.encode() if isinstance(data, str) else data
        with open(host, "ab" if append else "wb") as f:
            f.write(raw)
        if mode is not None or new:
            os.chmod(host, mode if mode is not None else FILE_MODE)
        self._emit("file-changed", path=norm(path), op="write")

    def write_many(self, directory: str, items: Iterable[tuple[str, bytes]], mode: int) -> None:
        """Write many files into a directory the node was seeded with, directly: no
        per-file path check, no event (tens of thousands of lease files at scale, which
        nobody observes being written). Nothing happens when the directory is gone or is
        a symbolic link now."""
        p = self._served(directory)
        if p is not None:
            if self._mem.kind(p) == DIR:
                for name, raw in items:
                    self._mem.write(f"{p}/{name}", raw, mode, False)
            return
        host = os.path.join(self.host_root, norm(directory).lstrip("/"))
        if not os.path.isdir(host) or os.path.islink(host):
            return
        for name, raw in items:
            fd = os.open(os.path.join(host, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.write(fd, raw)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def remove(self, path: str) -> None:
        """Remove a file or a directory tree (as root); emits ``file-changed``."""
        p = self._served(path)
        if p is not None:
            if self._mem.remove(p):
                self._emit("file-changed", path=p, op="remove")
                return
            self.materialize()
        host = self.host_path(path)
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        else:
            host.unlink()
        self._emit("file-changed", path=norm(path), op="remove")

    def listdir(self, path: str) -> list[str]:
        p = self._served(path)
        if p is not None:
            names = self._mem.listdir(p)
            if names is not None:
                return names
            self.materialize()
        return sorted(os.listdir(self.host_path(path)))

    def mkdir(self, path: str, mode: int = DIR_MODE) -> None:
        """Create a directory (and missing parents, ``DIR_MODE``) unless it exists."""
        p = self._served(path)
        if p is not None:
            if self._mem.mkdir(p, mode):
                return
            self.materialize()
        host = self.host_path(path)
        if not host.is_dir():
            make_dirs(host, mode)

    def symlink(self, path: str, target: str) -> None:
        """Create a symbolic link ``path`` -> ``target`` (as root) unless something is
        there already, creating missing parents (``DIR_MODE``); no event."""
        p = self._served(path)
        if p is not None:
            if self._mem.kind(p) is not None or self._mem.mkdir(posixpath.dirname(p), DIR_MODE) \
                    and self._mem.symlink(p, target):
                return
            self.materialize()
        host = self.host_path(path)
        if not host.exists() and not host.is_symlink():
            make_dirs(host.parent)
            os.symlink(target, host)

    def chmod(self, path: str, mode: int) -> None:
        """Set a file's permission bits (as root; no event)."""
        p = self._served(path)
        if p is not None:
            if self._mem.chmod(p, mode):
                return
            self.materialize()
        os.chmod(self.host_path(path), mode)

    def clear(self, path: str) -> None:
        """Empty a directory, keeping it (what a reboot does to ``/tmp`` and ``/run``)."""
        p = self._served(path)
        if p is not None:
            if self._mem.kind(p) == DIR and self._mem.remove(p, keep=True):
                return
            self.materialize()
        h = self.host_path(path)
        for child in list(h.iterdir()) if h.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    # ------------------------------------------------------------- as ubuntu
    def owner(self, path: str) -> str:
        """``ubuntu`` for the home directory and /tmp, ``root`` elsewhere (the model)."""
        p = norm(path)
        if p == HOME or p.startswith(HOME + "/") or p.startswith("/tmp/"):
            return "ubuntu"
        return "root"

    def can_traverse(self, path: str, root: bool) -> bool:
        """Whether every ancestor directory of ``path`` is searchable by the user."""
        if root:
            return True
        p = norm(path)
        cur = "/"
        for part in p.strip("/").split("/")[:-1] if p != "/" else []:
            cur = posixpath.join(cur, part)
            h = self.host_path(cur)
            if h.is_dir() and self.owner(cur) != "ubuntu" and not h.stat().st_mode & 0o001:
                return False
        return True

    def can_read(self, path: str, root: bool) -> bool:
        """Read permission (a missing file counts as readable: the caller reports ENOENT)."""
        if root:
            return True
        if not self.can_traverse(path, root):
            return False
        p = norm(path)
        h = self.host_path(p)
        if not h.exists() or self.owner(p) == "ubuntu":
            return True
        return bool(h.stat().st_mode & 0o004)

    def can_write(self, path: str, root: bool = False) -> bool:
        """Whether the user may create, change or remove ``path`` (root may anywhere)."""
        if root:
            return True
        p = norm(path)
        return self.owner(p) == "ubuntu" and p not in (HOME,)

    # ------------------------------------------------------------- globbing
    def glob(self, pattern: str, cwd: str) -> list[str]:
        """The paths an unquoted glob pattern matches, as bash expands them (sorted;
        hidden names only for a pattern starting with a dot). Quoted metacharacters
        come escaped as ``[*]``, ``[?]``, ``[[]`` (see :func:`twin.node.shell.tokenize`)."""
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        bases = ["/" if absolute else cwd]
        for part in parts:
            nxt: list[str] = []
            for base in bases:
                if not any(ch in part for ch in "*?["):
                    cand = posixpath.join(base, part.replace("[*]", "*").replace("[?]", "?")
                                          .replace("[[]", "["))
                    if self.exists(cand):
                        nxt.append(cand)
                    continue
                try:
                    names = self.listdir(base)
                except (OSError, PermissionError):
                    continue
                for n in names:
                    if n.startswith(".") and not part.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(n, part):
                        nxt.append(posixpath.join(base, n))
            bases = nxt
        if not absolute:
            bases = [posixpath.relpath(b, cwd) for b in bases]
        return sorted(bases)


def make_dirs(host: Path, mode: int = DIR_MODE) -> None:
    """``mkdir -p`` on the host with explicit modes: ``mode`` for ``host``, ``DIR_MODE``
    for the parents it creates (never what the process umask would leave).

    Raises:
        FileExistsError: ``host`` exists and is not a directory.
        NotADirectoryError: a parent is a file.
    """
    missing: list[Path] = []
    p = host
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if not missing:
        if host.is_dir():
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(host))
    for d in reversed(missing):
        try:
            d.mkdir()     # ENOTDIR when a parent is a file, as with mkdir -p
        except FileExistsError:
            if not d.is_dir():
                raise
            continue      # created meanwhile
        os.chmod(d, mode if d == host else DIR_MODE)
