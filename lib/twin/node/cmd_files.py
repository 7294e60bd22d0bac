"""The file commands of a twin node: ``cat tee cp mv rm mkdir chmod test ls sha256sum stat``.

Each behaves as GNU coreutils does for the options the runbook uses, with its messages
and exit codes, and with the permissions of the node's model (:mod:`twin.node.files`):
as ``ubuntu``, reads follow the file's mode and writes work only under ``/home/ubuntu``
and ``/tmp``; under ``sudo`` anything goes.

Example:
    >>> await cat(node, ["/etc/hostname"], Ctx(root=False, stdin=b""))  # doctest: +SKIP
    ExecResult(rc=0, stdout=b'server-1\\n', stderr=b'')
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat as statmod
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .files import make_dirs
from .shell import Ctx, Errors, ExecResult, parse_flags, result

if TYPE_CHECKING:
    from .model import NodeModel


async def cat(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "")
    if bad:
        return result(1, err=f"cat: invalid option -- '{bad[1:]}'\n")
    if not ops:
        return result(0, await ctx.read_stdin())
    out, errs = [], Errors()
    for p in ops:
        if p == "-":
            out.append(await ctx.read_stdin())
            continue
        n, h = node.files.locate(p, ctx.cwd)
        if not node.files.can_read(n, ctx.root):
            errs.add(f"cat: {p}: Permission denied\n")
        elif not h.exists():
            errs.add(f"cat: {p}: No such file or directory\n")
        elif h.is_dir():
            errs.add(f"cat: {p}: Is a directory\n")
        else:
            out.append(h.read_bytes())
    return errs.result(b"".join(out))


async def tee(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "a", {"--append": "a"})
    if bad:
        return result(1, err=f"tee: invalid option -- '{bad.lstrip('-')}'\n")
    data = await ctx.read_stdin()
    errs = Errors()
    for p in ops:
        n, h = node.files.locate(p, ctx.cwd)
        if not node.files.can_write(n, ctx.root):
            errs.add(f"tee: {p}: Permission denied\n")
            continue
        if not h.parent.is_dir():
            errs.add(f"tee: {p}: No such file or directory\n")
            continue
        if h.is_dir():
            errs.add(f"tee: {p}: Is a directory\n")
            continue
        node.files.write(n, data, append="a" in flags)
    return errs.result(data)


async def mkdir(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "pv", {"--parents": "p"})
    if bad or not ops:
        return result(1, err="mkdir: missing operand\n" if not bad else
                      f"mkdir: invalid option -- '{bad.lstrip('-')}'\n")
    errs = Errors()
    for p in ops:
        n, h = node.files.locate(p, ctx.cwd)
        if h.is_dir() and "p" in flags:
            continue
        if not node.files.can_write(n, ctx.root):
            errs.add(f"mkdir: cannot create directory '{p}': Permission denied\n")
        elif h.exists():
            errs.add(f"mkdir: cannot create directory '{p}': File exists\n")
        elif not h.parent.is_dir() and "p" not in flags:
            errs.add(f"mkdir: cannot create directory '{p}': No such file or directory\n")
        else:
            make_dirs(h)
            node.emit("file-changed", path=n, op="mkdir")
    return errs.result()


async def test(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if len(args) != 2 or args[0] not in ("-e", "-f", "-d", "-s", "-r", "-w"):
        return result(2, err="test: the twin supports test -e|-f|-d|-s|-r|-w PATH\n")
    n = node.files.norm(args[1], ctx.cwd)
    if not node.files.can_traverse(n, ctx.root):
        return result(1)
    h = node.files.host_path(n)
    ok = {"-e": h.exists(), "-f": h.is_file(), "-d": h.is_dir(),
          "-s": h.is_file() and h.stat().st_size > 0,
          "-r": h.exists() and node.files.can_read(n, ctx.root),
          "-w": h.exists() and node.files.can_write(n, ctx.root)}[args[0]]
    return result(0 if ok else 1)


def _ls_long(node: NodeModel, n: str, h: Path, label: str) -> str:
    st = h.lstat()
    owner = node.files.owner(n)
    when = time.strftime("%b %d %H:%M", time.gmtime(st.st_mtime))
    return (f"{statmod.filemode(st.st_mode)} 1 {owner} {owner} {st.st_size:>5} {when} {label}")


async def ls(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "1laAdh")
    if bad:
        return result(2, err=f"ls: invalid option -- '{bad.lstrip('-')}'\n")
    ops = ops or ["."]
    out: list[str] = []
    errs = Errors()
    files = []
    dirs = []
    for p in ops:
        n, h = node.files.locate(p, ctx.cwd)
        if not h.exists() or not node.files.can_traverse(n, ctx.root):
            errs.add(f"ls: cannot access '{p}': No such file or directory\n" if not h.exists()
                     else f"ls: cannot access '{p}': Permission denied\n", 2)
        elif h.is_dir() and "d" not in flags:
            dirs.append((p, n, h))
        else:
            files.append((p, n, h))
    for p, n, h in files:
        out.append(_ls_long(node, n, h, p) if "l" in flags else p)
    for p, n, h in dirs:
        if len(ops) > 1:
            out.append(("\n" if out else "") + f"{p}:")
        if not node.files.can_read(n, ctx.root):
            errs.add(f"ls: cannot open directory '{p}': Permission denied\n", 2)
            continue
        names = sorted(os.listdir(h))
        if "a" in flags:
            names = [".", ".."] + names
        elif "A" not in flags:
            names = [x for x in names if not x.startswith(".")]
        if "l" in flags:
            out.append(f"total {len(names) * 4}")
            for x in names:
                cn = posixpath.normpath(posixpath.join(n, x))
                out.append(_ls_long(node, cn, node.files.host_path(cn), x))
        else:
            out += names
    return errs.result("".join(f"{line}\n" for line in out))


async def sha256sum(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "b")
    out, errs = [], Errors()
    if not ops:
        return result(0, hashlib.sha256(await ctx.read_stdin()).hexdigest() + "  -\n")
    for p in ops:
        n, h = node.files.locate(p, ctx.cwd)
        if not h.exists():
            errs.add(f"sha256sum: {p}: No such file or directory\n")
        elif not node.files.can_read(n, ctx.root):
            errs.add(f"sha256sum: {p}: Permission denied\n")
        elif h.is_dir():
            errs.add(f"sha256sum: {p}: Is a directory\n")
        else:
            out.append(f"{hashlib.sha256(h.read_bytes()).hexdigest()}  {p}\n")
    return errs.result("".join(out))


async def stat(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if len(args) < 3 or args[0] not in ("-c", "--format", "--printf"):
        return result(1, err="stat: the twin supports stat -c FORMAT FILE...\n")
    fmt, out, errs = args[1], [], Errors()
    for p in args[2:]:
        n, h = node.files.locate(p, ctx.cwd)
        if not h.exists():
            errs.add(f"stat: cannot statx '{p}': No such file or directory\n")
            continue
        st = h.stat()
        owner = node.files.owner(n)
        kind = "directory" if h.is_dir() else ("regular empty file" if st.st_size == 0
                                              else "regular file")
        vals = {"a": f"{st.st_mode & 0o7777:o}", "A": statmod.filemode(st.st_mode),
                "s": str(st.st_size), "n": p, "U": owner, "G": owner,
                "u": "1000" if owner == "ubuntu" else "0", "g": "1000" if owner == "ubuntu" else "0",
                "F": kind, "Y": str(int(st.st_mtime)),
                "y": time.strftime("%Y-%m-%d %H:%M:%S.000000000 +0000", time.gmtime(st.st_mtime)),
                "%": "%"}
        res, i = [], 0
        while i < len(fmt):
            if fmt[i] == "%" and i + 1 < len(fmt):
                res.append(vals.get(fmt[i + 1], "?"))
                i += 2
            else:
                res.append(fmt[i])
                i += 1
        out.append("".join(res) + ("\n" if args[0] != "--printf" else ""))
    return errs.result("".join(out))


async def rm(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "frRv", {"--force": "f", "--recursive": "r"})
    if bad:
        return result(1, err=f"rm: invalid option -- '{bad.lstrip('-')}'\n")
    recursive = bool({"r", "R"} & flags)
    if not ops:
        return result(0 if "f" in flags else 1, err="" if "f" in flags else "rm: missing operand\n")
    errs = Errors()
    for p in ops:
        n = node.files.norm(p, ctx.cwd)
        if n == "/":
            errs.add("rm: it is dangerous to operate recursively on '/'\n"
                     "rm: use --no-preserve-root to override this failsafe\n")
            continue
        h = node.files.host_path(n)
        if not h.exists() and not h.is_symlink():
            if "f" not in flags:
                errs.add(f"rm: cannot remove '{p}': No such file or directory\n")
            continue
        if h.is_dir() and not recursive:
            errs.add(f"rm: cannot remove '{p}': Is a directory\n")
            continue
        if not node.files.can_write(n, ctx.root):
            errs.add(f"rm: cannot remove '{p}': Permission denied\n")
            continue
        node.files.remove(n)
    return errs.result()


def _copy(src: Path, dst: Path, preserve: bool) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=shutil.copy2 if preserve else shutil.copy,
                        dirs_exist_ok=True)
    elif preserve:
        shutil.copy2(src, dst)
    else:
        if dst.exists():   # cp keeps an existing destination's mode
            dst.write_bytes(src.read_bytes())
        else:
            shutil.copy(src, dst)


async def cp(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "prRaf", {"--preserve": "p", "--archive": "a",
                                                   "--recursive": "r"})
    if bad:
        return result(1, err=f"cp: invalid option -- '{bad.lstrip('-')}'\n")
    return _copy_or_move(node, "cp", flags, ops, ctx)


async def mv(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    flags, ops, bad = parse_flags(args, "f", {"--force": "f"})
    if bad:
        return result(1, err=f"mv: invalid option -- '{bad.lstrip('-')}'\n")
    return _copy_or_move(node, "mv", flags, ops, ctx)


def _copy_or_move(node: NodeModel, tool: str, flags: set[str], ops: list[str], ctx: Ctx) -> ExecResult:
    if len(ops) < 2:
        return result(1, err=f"{tool}: missing destination file operand after '{ops[0] if ops else ''}'\n")
    dest, dh = node.files.locate(ops[-1], ctx.cwd)
    if len(ops) > 2 and not dh.is_dir():
        return result(1, err=f"{tool}: target '{ops[-1]}' is not a directory\n")
    errs = Errors()
    preserve = bool({"p", "a"} & flags)
    recursive = bool({"r", "R", "a"} & flags)
    for p in ops[:-1]:
        src, sh = node.files.locate(p, ctx.cwd)
        target = posixpath.join(dest, posixpath.basename(src)) if dh.is_dir() else dest
        th = node.files.host_path(target)
        if not sh.exists():
            errs.add(f"{tool}: cannot stat '{p}': No such file or directory\n")
            continue
        if not node.files.can_read(src, ctx.root):
            errs.add(f"{tool}: cannot open '{p}' for reading: Permission denied\n")
            continue
        if tool == "cp" and sh.is_dir() and not recursive:
            errs.add(f"cp: -r not specified; omitting directory '{p}'\n")
            continue
        if not node.files.can_write(target, ctx.root) or (tool == "mv" and not node.files.can_write(src, ctx.root)):
            what = ("cannot create regular file" if tool == "cp" else "cannot move")
            errs.add(f"{tool}: {what} '{ops[-1] if tool == 'cp' else p}'"
                     f"{'' if tool == 'cp' else ' to ' + repr(ops[-1])}: Permission denied\n")
            continue
        if not th.parent.is_dir():
            errs.add(f"{tool}: cannot create regular file '{ops[-1]}': No such file or directory\n")
            continue
        if tool == "cp":
            _copy(sh, th, preserve)
        else:
            os.replace(sh, th)
            node.emit("file-changed", path=src, op="remove")
        node.emit("file-changed", path=target, op="write")
    return errs.result()


async def chmod(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    recursive = "-R" in args
    ops = [a for a in args if a != "-R"]
    if len(ops) < 2:
        return result(1, err="chmod: missing operand\n")
    mode_s, errs = ops[0], Errors()
    for p in ops[1:]:
        n, h = node.files.locate(p, ctx.cwd)
        if not h.exists() or not node.files.can_write(n, ctx.root):
            errs.add(f"chmod: cannot access '{p}': No such file or directory\n" if not h.exists()
                     else f"chmod: changing permissions of '{p}': Operation not permitted\n")
            continue
        targets = [h] + (sorted(h.rglob("*")) if recursive and h.is_dir() else [])
        for t in targets:
            new = chmod_mode(mode_s, t.stat().st_mode, t.is_dir())
            if new is None:
                return result(1, err=f"chmod: invalid mode: '{mode_s}'\n")
            os.chmod(t, new)
        node.emit("file-changed", path=n, op="chmod")
    return errs.result()


def chmod_mode(spec: str, current: int, is_dir: bool) -> int | None:
    """The new permission bits for ``chmod SPEC`` (octal, or ``[ugoa]*[+-=][rwxX]*,...``)."""
    if spec.isdigit():
        try:
            return int(spec, 8) & 0o7777
        except ValueError:
            return None
    mode = statmod.S_IMODE(current)
    for clause in spec.split(","):
        who = ""
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            who += clause[i]
            i += 1
        if i >= len(clause) or clause[i] not in "+-=":
            return None
        op, perms = clause[i], clause[i + 1:]
        if any(c not in "rwxX" for c in perms):
            return None
        who = who or "a"
        bits = 0
        for w in ("u", "g", "o"):
            if w in who or "a" in who:
                shift = {"u": 6, "g": 3, "o": 0}[w]
                for c in perms:
                    if c == "r":
                        bits |= 4 << shift
                    elif c == "w":
                        bits |= 2 << shift
                    elif c == "x" or (c == "X" and (is_dir or current & 0o111)):
                        bits |= 1 << shift
        mask = sum(7 << {"u": 6, "g": 3, "o": 0}[w] for w in "ugo" if w in who or "a" in who)
        mode = mode | bits if op == "+" else mode & ~bits if op == "-" else (mode & ~mask) | bits
    return mode
