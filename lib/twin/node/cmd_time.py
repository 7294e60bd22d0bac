"""The node's commands about time: ``sleep`` and ``timeout`` (GNU coreutils).

``timeout [OPTION] DURATION COMMAND [ARG]...`` runs COMMAND through the node's command
table with a real-time limit (``asyncio.timeout``): a command past it is cancelled and
``timeout`` exits 124, as GNU's does after its TERM (``-s KILL``: 137, the status of a
``timeout`` killed with its process group; ``--preserve-status``: 128 + the signal).
A cancelled twin command is gone at once, so ``-k`` (KILL after TERM) is read and never
needed. Options, durations and usage errors are GNU's (``src/timeout.c``): exit 125 with
``Try 'timeout --help' for more information.``; a COMMAND the node does not have is
``timeout: failed to run command ‘X’: No such file or directory``, exit 127. Quotes in
messages are those of a UTF-8 locale, as on an Ubuntu node.

Example:
    >>> await timeout(node, ["-k", "5", "60", "iptables-save"], ctx, run)   # doctest: +SKIP
    ExecResult(rc=0, stdout=b'*filter...', stderr=b'')
"""
from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel

Run = Callable[["NodeModel", list[str], Ctx], Awaitable[ExecResult]]

_NUMBER = re.compile(r"\s*\+?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf(?:inity)?))([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Signals by name (Linux x86 numbers), as ``timeout -s`` takes them (``TERM``, ``SIGTERM``, 15).
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "ALRM": 14,
           "TERM": 15, "CONT": 18, "STOP": 19}
TIMED_OUT = 124
CANCELED = 125
TRY = "Try '{0} --help' for more information.\n"
# getopt_long's table: the long options and whether they take an argument
_LONG = {"kill-after": "k", "signal": "s", "verbose": "v", "foreground": "foreground",
         "preserve-status": "preserve-status", "help": "help", "version": "version"}
_WITH_ARG = {"k", "s"}


def parse_duration(text: str) -> float | None:
    """GNU's DURATION: a non-negative floating point number with an optional ``s m h d``
    suffix, in seconds; None when it is not one.

    Example:
        >>> parse_duration("1.5m"), parse_duration("2"), parse_duration("-1")
        (90.0, 2.0, None)
    """
    m = _NUMBER.fullmatch(text)
    if not m:
        return None
    suffix = m.group(1)
    return float(text[:len(text) - len(suffix)]) * _UNITS[suffix]


async def sleep(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """``sleep NUMBER[SUFFIX]...``: the sum of the durations, in real time."""
    if not args:
        return result(1, err="sleep: missing operand\n" + TRY.format("sleep"))
    total = 0.0
    for a in args:
        d = parse_duration(a)
        if d is None:
            return result(1, err=f"sleep: invalid time interval ‘{a}’\n" + TRY.format("sleep"))
        total += d
    if math.isinf(total):
        await asyncio.Event().wait()
    await asyncio.sleep(total)
    return result(0)


@dataclass
class TimeoutArgs:
    """What ``timeout``'s command line asked for."""

    seconds: float
    argv: list[str]
    signal: str = "TERM"
    kill_after: float = 0.0
    verbose: bool = False
    preserve_status: bool = False


def _usage(message: str = "") -> ExecResult:
    return result(CANCELED, err=(f"timeout: {message}\n" if message else "") + TRY.format("timeout"))


def _signal(text: str) -> str | None:
    name = text.upper().removeprefix("SIG")
    if name.isdigit():
        return next((n for n, v in SIGNALS.items() if v == int(name)), None)
    return name if name in SIGNALS else None


def parse_timeout(args: list[str]) -> TimeoutArgs | ExecResult:
    """``timeout``'s options, DURATION and COMMAND (getopt ``+k:s:v``: options stop at the
    first operand); a usage error as GNU's result (exit 125)."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        a = args[i]
        i += 1
        if a == "--":
            break
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            key = _LONG.get(name)
            if key is None:
                return _usage(f"unrecognized option '{a}'")
            if key in _WITH_ARG and not eq:
                if i >= len(args):
                    return _usage(f"option '--{name}' requires an argument")
                value, i = args[i], i + 1
            elif key not in _WITH_ARG and eq:
                return _usage(f"option '--{name}' doesn't allow an argument")
            opts[key] = value
            continue
        j = 1
        while j < len(a):
            c = a[j]
            if c not in "ksv":
                return _usage(f"invalid option -- '{c}'")
            if c in _WITH_ARG:
                value = a[j + 1:]
                if not value:
                    if i >= len(args):
                        return _usage(f"option requires an argument -- '{c}'")
                    value, i = args[i], i + 1
                opts[c] = value
                break
            opts[c] = ""
            j += 1
    if "help" in opts:
        return result(0, "Usage: timeout [OPTION] DURATION COMMAND [ARG]...\n"
                         "  or:  timeout [OPTION]\n"
                         "Start COMMAND, and kill it if still running after DURATION.\n")
    if "version" in opts:
        return result(0, "timeout (GNU coreutils) 8.32\n")
    out = TimeoutArgs(0.0, [])
    if "k" in opts:
        k = parse_duration(opts["k"])
        if k is None:
            return _usage(f"invalid time interval ‘{opts['k']}’")
        out.kill_after = k
    if "s" in opts:
        sig = _signal(opts["s"])
        if sig is None:
            return _usage(f"‘{opts['s']}’: invalid signal")
        out.signal = sig
    out.verbose = "v" in opts
    out.preserve_status = "preserve-status" in opts
    if len(args) - i < 2:
        return _usage()
    seconds = parse_duration(args[i])
    if seconds is None:
        return _usage(f"invalid time interval ‘{args[i]}’")
    out.seconds, out.argv = seconds, args[i + 1:]
    return out


async def timeout(node: NodeModel, args: list[str], ctx: Ctx, run: Run,
                  known: Callable[[str], bool]) -> ExecResult:
    """``timeout [OPTION] DURATION COMMAND [ARG]...`` over the node's command table.

    Args:
        run: runs an argument vector through the table (``twin.node.commands.run``).
        known: whether the node has a program of that name (else GNU's exit 127).
    """
    parsed = parse_timeout(args)
    if isinstance(parsed, ExecResult):
        return parsed
    command = parsed.argv[0]
    if not known(command):
        return result(127, err=f"timeout: failed to run command ‘{command}’: "
                               "No such file or directory\n")
    if parsed.seconds == 0 or math.isinf(parsed.seconds):      # 0 disables the limit
        return await run(node, parsed.argv, ctx)
    try:
        async with asyncio.timeout(parsed.seconds):
            return await run(node, parsed.argv, ctx)
    except TimeoutError:
        pass
    err = f"timeout: sending signal {parsed.signal} to command ‘{command}’\n" if parsed.verbose else ""
    number = SIGNALS[parsed.signal]
    if parsed.signal == "KILL":          # the group's KILL ends timeout itself too
        return result(128 + number, err=err)
    return result(128 + number if parsed.preserve_status else TIMED_OUT, err=err)
