"""What stands in for bash on a twin node: word splitting, globbing and the refusals, and
what a command gets (:class:`Ctx`) and gives back (:class:`ExecResult`).

The twin runs no shell. A command line is split into words as bash splits them (quotes,
backslashes, ``~``); unquoted ``* ? [`` are expanded against the node's files; anything
that needs a shell (pipes, redirections, ``;``, ``&&``, substitution, variables) is
refused with exit 2 and a message that says to filter in Python.

Example:
    >>> [w.text for w in tokenize("sudo cat '/etc/rancher/k3s/config.yaml'")]
    ['sudo', 'cat', '/etc/rancher/k3s/config.yaml']
    >>> tokenize("iptables-save | grep KUBE")
    Traceback (most recent call last):
    ...
    twin.node.shell.ShellRefused: the twin does not run a shell: pipes and redirections are not supported; filter in Python
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable, NamedTuple

from .files import HOME

SHELL_REFUSED = ("the twin does not run a shell: pipes and redirections are not supported; "
                 "filter in Python")
# Programs that would run a shell, or run a command line they are given.
SHELLS = frozenset(("sh", "bash", "dash", "zsh", "env", "xargs", "eval", "exec", "source"))


class ExecResult(NamedTuple):
    """What a command returns: unpacks as ``rc, stdout, stderr`` (bytes)."""

    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.rc == 0


def result(rc: int = 0, out: str | bytes = b"", err: str | bytes = b"") -> ExecResult:
    """An :class:`ExecResult` from text or bytes."""
    return ExecResult(rc, out.encode() if isinstance(out, str) else out,
                      err.encode() if isinstance(err, str) else err)


class Errors:
    """The error lines of a command that carries on with its other operands, and the exit
    code they leave (as ``cat a b`` reports a missing ``a`` and still prints ``b``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.rc = 0

    def add(self, message: str, rc: int = 1) -> None:
        self.lines.append(message)
        self.rc = rc

    def result(self, out: str | bytes = b"") -> ExecResult:
        """The command's result: ``out``, the error lines, the exit code."""
        return result(self.rc, out, "".join(self.lines))


@dataclass
class Ctx:
    """What one command runs with: as root (under sudo) or not, stdin and the directory.

    ``stdin`` is bytes, or an async callable read only when a command consumes standard
    input (so a client that never closes stdin does not block ``cat FILE``).
    """

    root: bool
    stdin: bytes | Callable[[], Awaitable[bytes]]
    cwd: str = HOME

    async def read_stdin(self) -> bytes:
        if callable(self.stdin):
            self.stdin = await self.stdin()
        return self.stdin


def parse_flags(args: list[str], allowed: str, long: dict[str, str] | None = None
                ) -> tuple[set[str], list[str], str | None]:
    """Split ``-abc`` style flags from operands; returns (flags, operands, bad flag).

    ``long`` maps accepted ``--long`` options to their one-letter flag.
    """
    flags: set[str] = set()
    ops: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--":
            ops += list(it)
            break
        if a.startswith("--") and long is not None:
            if a not in long:
                return flags, ops, a
            flags.add(long[a])
        elif a.startswith("-") and len(a) > 1:
            for ch in a[1:]:
                if ch not in allowed:
                    return flags, ops, "-" + ch
                flags.add(ch)
        else:
            ops.append(a)
    return flags, ops, None


# A line of only these characters is plain words split at blanks (no quote, escape, glob,
# expansion, comment or shell syntax): most command lines, split without the loop below.
_PLAIN = re.compile(r"[A-Za-z0-9 \t_./:=,@%+-]*")


class ShellRefused(ValueError):
    """A command line that needs a shell (pipes, redirections, substitution)."""


@dataclass
class Word:
    """One word of a command line: its text, and its glob pattern if unquoted metacharacters mark it."""

    text: str
    pattern: str      # glob pattern with quoted metacharacters escaped
    glob: bool        # has an unquoted * ? [


def tokenize(line: str) -> list[Word]:
    """Split a command line like bash would, refusing anything that needs a shell.

    Quotes and backslashes work as in bash. Unquoted ``| & ; < > ( )``, newlines,
    backticks and ``$`` expansions raise :class:`ShellRefused`. Unquoted ``* ? [`` mark
    the word for glob expansion (done by the node against its own files).
    """
    if _PLAIN.fullmatch(line):
        return [Word(t, t, False) for t in line.split()]
    words: list[Word] = []
    text: list[str] = []
    pat: list[str] = []
    glob = False
    in_word = False
    quote: str | None = None
    i = 0

    def lit(c: str) -> None:
        text.append(c)
        pat.append(f"[{c}]" if c in "*?[" else c)

    while i < len(line):
        c = line[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                lit(c)
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == "\\" and i + 1 < len(line) and line[i + 1] in '$`"\\\n':
                i += 1
                lit(line[i])
            elif c in "`$":
                raise ShellRefused("the twin does not run a shell: variables and command "
                                   "substitution are not supported; build the value in Python")
            else:
                lit(c)
        else:
            if c in " \t":
                if in_word:
                    words.append(Word("".join(text), "".join(pat), glob))
                    text, pat, glob, in_word = [], [], False, False
                i += 1
                continue
            if c == "#" and not in_word:
                break
            if c in "|&;<>()\n":
                raise ShellRefused(SHELL_REFUSED)
            if c == "`" or (c == "$" and i + 1 < len(line) and
                            (line[i + 1] in "({_?@*#!$-" or line[i + 1].isalnum())):
                raise ShellRefused("the twin does not run a shell: variables and command "
                                   "substitution are not supported; build the value in Python")
            in_word = True
            if c == "'":
                quote = "'"
            elif c == '"':
                quote = '"'
            elif c == "\\":
                if i + 1 < len(line):
                    i += 1
                    lit(line[i])
            elif c in "*?[":
                text.append(c)
                pat.append(c)
                glob = True
            elif c == "~" and not text and (i + 1 == len(line) or line[i + 1] in "/ \t"):
                for ch in HOME:
                    lit(ch)
            else:
                lit(c)
        in_word = in_word or quote is not None
        i += 1
    if quote:
        raise ShellRefused(f"bash: -c: line 1: unexpected EOF while looking for matching `{quote}'")
    if in_word:
        words.append(Word("".join(text), "".join(pat), glob))
    return words


def expand(words: list[Word], glob: Callable[[str, str], list[str]], cwd: str) -> list[str]:
    """The argument vector: each glob word replaced by its matches (``glob(pattern,
    cwd)``); an unmatched pattern stays literal, as in bash."""
    argv: list[str] = []
    for w in words:
        if w.glob:
            matches = glob(w.pattern, cwd)
            argv += matches if matches else [w.text]
        else:
            argv.append(w.text)
    return argv
