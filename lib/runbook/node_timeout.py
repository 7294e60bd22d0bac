"""A command bounded on the node itself: the ``timeout(1)`` wrapper and how to read its exit.

Closing an SSH channel does not stop the command behind it: OpenSSH's sshd leaves a
command without a terminal running when its channel or connection closes, and refuses
the RFC 4254 ``signal`` request. So :meth:`runbook.nodes.Node.run` sends every command
with a timeout through coreutils' ``timeout`` on the node, inside ``sudo`` (so it may
signal root's processes)::

    sudo -n timeout -k 5 60 iptables-restore

What GNU ``timeout`` does (coreutils ``src/timeout.c``), and what follows from it here:

- it puts itself in a new process group and, at DURATION, signals the command and the
  whole group (TERM), so a command's children go with it; with ``-k K`` it sends KILL to
  the group K seconds later, which kills ``timeout`` itself too: exit 137 (128+9, the
  status sshd's ``exit-signal`` becomes in :mod:`runbook.ssh_transport`);
- a timed-out command exits 124 whatever it did on TERM; 125 is ``timeout``'s own
  failure (a refused option or duration), 126/127 a command it could not run;
- DURATION is a floating point number with an optional ``s m h d`` suffix; 0 disables
  the limit, so a positive limit is never written as ``0``;
- BusyBox's ``timeout`` (``[-s SIG] [-k SECS] SECS PROG``, 1.30 and later) execs the
  command in its own process and signals it alone: a timed-out command there dies of
  TERM (143) or KILL (137) instead of exiting 124. Before 1.30 BusyBox wanted ``-t SECS``
  and refuses this line with its usage text: :func:`unsupported` reads that as "no
  usable timeout".

A command line that needs a shell (``;``, pipes, redirections, ``$`` expansions, a
builtin such as ``exit``) is bounded as a whole, ``timeout ... sh -c '<line>'``, decided
from the command template (the quoted arguments are single words and never change it).
The runbook's own commands are simple argument vectors (the twin refuses shell syntax),
so they are wrapped as they are and the twin's ``timeout`` runs them.

Example:
    >>> bounded_line("iptables-save -t %s", "iptables-save -t nat", 60, kill_after=5, sudo=True)
    'sudo -n timeout -k 5 60 iptables-save -t nat'
    >>> bounded_line("echo hi; exit %s", "echo hi; exit 3", 1.5, kill_after=5, sudo=False)
    "timeout -k 5 1.5 sh -c 'echo hi; exit 3'"
"""
from __future__ import annotations

import functools
import re
import shlex

#: Seconds between TERM and KILL on the node (``timeout -k``).
KILL_AFTER = 5.0
#: Seconds the channel waits beyond the node's own limit (and its KILL) before it gives
#: up on the node: sshd's fork, the login shell and sudo start before ``timeout`` does.
GRACE = 5.0
#: The exit of ``timeout`` when it stopped the command (GNU).
TIMED_OUT = 124
KILLED = 128 + 9
TERMINATED = 128 + 15

# Words a shell must run itself (builtins, keywords): ``timeout exit 3`` cannot work.
_SHELL_WORDS = frozenset((
    ":", ".", "[[", "{", "}", "!", "alias", "bg", "break", "builtin", "case", "cd",
    "command", "continue", "declare", "eval", "exec", "exit", "export", "fg", "for",
    "function", "getopts", "hash", "if", "jobs", "let", "local", "read", "readonly",
    "return", "select", "set", "shift", "source", "times", "trap", "type", "typeset",
    "ulimit", "umask", "unalias", "unset", "until", "wait", "while"))
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# What a shell or sudo prints when the program ``timeout`` is not there: bash ("bash:
# line 1: timeout: command not found"; before 5.1 "bash: timeout: ..."), dash ("sh: 1:
# timeout: not found"), BusyBox ash ("sh: timeout: not found"), sudo ("sudo: timeout:
# command not found"), zsh ("zsh:1: command not found: timeout"). Not a script's own
# line ("./x: 3: timeout: not found"): that one ran.
_NOT_FOUND = re.compile(r"(?:-?\w+: (?:line )?1: |\w+: )?timeout: (?:command )?not found|"
                        r"\w+:1: command not found: timeout")
# GNU timeout refusing its own arguments (exit 125), BusyBox's usage text (exit 1), or
# a sudoers that lists the runbook's commands but not timeout (exit 1).
_REFUSED = re.compile(r"timeout: (?:invalid|unrecognized option|option requires)|"
                      r"Usage: timeout|BusyBox v|"
                      r"Sorry, user \S+ is not allowed to execute '(?:\S*/)?timeout ")


@functools.lru_cache(maxsize=1024)
def needs_shell(template: str, n_args: int = 0) -> bool:
    """True when the command template is shell syntax rather than one argument vector.

    Args:
        template: the command with ``%s`` placeholders (as :meth:`Node.run` takes it).
        n_args: how many placeholders it has (each becomes one quoted word).

    Templates are the runbook's constants: the answer is cached.

    Example:
        >>> needs_shell("systemctl is-active %s", 1), needs_shell("kill -TERM $$")
        (False, True)
    """
    probe = template % tuple("ARG" for _ in range(n_args)) if n_args else template
    quote: str | None = None
    i = 0
    while i < len(probe):
        c = probe[i]
        nxt = probe[i + 1] if i + 1 < len(probe) else ""
        if quote == "'":
            if c == "'":
                quote = None
        elif quote == '"':
            if c == '"':
                quote = None
            elif c == "\\":
                i += 1
            elif c == "`" or (c == "$" and nxt and (nxt in "({_?@*#!$-" or nxt.isalnum())):
                return True
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif c in "|&;<>()\n`":
            return True
        elif c == "$" and nxt and (nxt in "({_?@*#!$-" or nxt.isalnum()):
            return True
        i += 1
    try:
        words = shlex.split(probe, comments=True)
    except ValueError:          # an unbalanced quote: let a shell report it
        return True
    if not words:
        return False
    return words[0] in _SHELL_WORDS or bool(_ASSIGNMENT.match(words[0]))


def duration(seconds: float) -> str:
    """``seconds`` as a DURATION operand: whole seconds as an integer, else up to
    milliseconds; never ``0`` (which would disable the limit).

    Example:
        >>> duration(60), duration(1.5), duration(0.0001)
        ('60', '1.5', '0.001')
    """
    s = max(float(seconds), 0.001)
    if s.is_integer():
        return str(int(s))
    return f"{s:.3f}".rstrip("0").rstrip(".")


def bounded_line(template: str, line: str, seconds: float, *, kill_after: float,
                 sudo: bool, n_args: int = 0) -> str:
    """The line the node receives: ``[sudo -n] timeout -k K T <line>`` (or ``... sh -c
    '<line>'`` when the template needs a shell).

    Args:
        template: the command template (decides whether a shell is needed).
        line: the command as the runbook means it, arguments quoted, without ``sudo``.
        seconds: the limit; kill_after: seconds from TERM to KILL.
        sudo: run ``timeout`` (and so the command) under ``sudo -n``.
        n_args: the number of ``%s`` placeholders in ``template``.
    """
    inner = "sh -c " + shlex.quote(line) if needs_shell(template, n_args) else line
    wrapped = f"timeout -k {duration(kill_after)} {duration(seconds)} {inner}"
    return "sudo -n " + wrapped if sudo else wrapped


def channel_timeout(seconds: float, kill_after: float) -> float:
    """How long the channel waits: the node's limit, its KILL and :data:`GRACE`, so the
    node acts first."""
    return seconds + kill_after + GRACE


def timed_out(rc: int, elapsed: float, seconds: float, kill_after: float) -> bool:
    """True when ``timeout`` on the node stopped the command.

    124 is GNU's "timed out", 137 its KILL after ``-k`` (and BusyBox's), 143 BusyBox's
    TERM. A command may exit with these itself: the elapsed time (measured by the
    client, so never shorter than the node's) tells a command that ended before the
    limit from one that was stopped at it.

    Example:
        >>> timed_out(124, 60.2, 60, 5), timed_out(124, 0.1, 60, 5), timed_out(137, 61, 60, 5)
        (True, False, False)
    """
    if rc in (TIMED_OUT, TERMINATED):
        return elapsed >= seconds
    if rc == KILLED:
        return elapsed >= seconds + kill_after
    return False


def stopped_message(seconds: float, rc: int, kill_after: float) -> str:
    """The error of a command ``timeout`` stopped on the node.

    Example:
        >>> stopped_message(60, 137, 5)
        'command timed out after 60s: stopped on the node by timeout(1) (exit 137: KILL 5s after TERM)'
    """
    how = {TIMED_OUT: "", TERMINATED: ": TERM",
           KILLED: f": KILL {kill_after:g}s after TERM"}.get(rc, "")
    return f"command timed out after {seconds}s: stopped on the node by timeout(1) (exit {rc}{how})"


def unsupported(rc: int, stdout: bytes | str, stderr: bytes | str) -> str | None:
    """Why the node could not run ``timeout`` itself (the command never started), or None.

    ``timeout`` missing (127 from a shell, 1 from sudo, each with its "not found" line),
    refusing the options or the duration (GNU 125; an old BusyBox's usage text), or not
    allowed by the node's sudoers.

    Example:
        >>> unsupported(127, "", "bash: line 1: timeout: command not found\\n")
        'bash: line 1: timeout: command not found'
        >>> unsupported(127, "", "timeout: failed to run command 'x': No such file or directory\\n")
    """
    if stdout or rc not in (1, 125, 127):      # (cheap first: every command comes here)
        return None
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    # A login script may print before the shell runs the line: the shell's own
    # "not found" is the last line; timeout's usage error is a line of its own.
    lines = [line.strip() for line in stderr.strip().splitlines()]
    if not lines:
        return None
    if rc in (1, 127) and _NOT_FOUND.fullmatch(lines[-1]):
        return lines[-1]
    if rc in (1, 125):
        return next((line for line in lines if _REFUSED.match(line)), None)
    return None


_PASSWORD = re.compile(r"sudo: (?:a password is required|a terminal is required.*)")


def sudo_password(rc: int, stdout: bytes | str, stderr: bytes | str) -> bool:
    """Whether ``sudo -n`` refused to run anything without a password (exit 1, its line
    last on stderr): the command did not start.

    Example:
        >>> sudo_password(1, b"", b"sudo: a password is required\\n"), sudo_password(1, b"", b"no\\n")
        (True, False)
    """
    if stdout or rc != 1:
        return False
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    return bool(lines) and _PASSWORD.fullmatch(lines[-1].strip()) is not None


__all__ = ["KILL_AFTER", "GRACE", "needs_shell", "duration", "bounded_line", "channel_timeout",
           "timed_out", "stopped_message", "unsupported", "sudo_password"]
