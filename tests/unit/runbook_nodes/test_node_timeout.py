"""runbook.node_timeout: the timeout(1) wrapper line and the reading of its exit status.

The lines built here are also run by this machine's own ``sh`` and GNU ``timeout`` (a
local child process, nothing over the network), so what the wrapper does to a command,
its shell syntax and its children is the real tools' behaviour, not ours.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from runbook import node_timeout as nt
from runbook.nodes import Node

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


# --------------------------------------------------------------------------- shell or argv
@pytest.mark.parametrize("template, n, shell", [
    ("systemctl is-active %s", 1, False),
    ("iptables-save", 0, False),
    ("cat %s", 1, False),
    ("printf '%%s\\n' %s %s", 2, False),            # quoted metacharacters are data
    ("echo 'a; b | c > d $(x)'", 0, False),
    ('echo "plain text"', 0, False),
    ("rm -f /var/lib/cni/networks/cbr0/*", 0, False),   # a glob: the login shell expands it
    ("test -e ~/x", 0, False),
    ("echo out; echo err >&2; exit %s", 1, True),
    ("kill -TERM $$", 0, True),
    ("seq 1 %s >&2 & seq 1 %s; wait", 2, True),
    ("cat; echo done", 0, True),
    ("iptables-save | grep KUBE", 0, True),
    ("a && b", 0, True),
    ("(cd /tmp)", 0, True),
    ('echo "$HOME"', 0, True),
    ("echo `id`", 0, True),
    ("cat a\nreboot", 0, True),
    ("exit %s", 1, True),                             # builtins need the shell
    ("cd /tmp", 0, True),
    ("FOO=1 env", 0, True),
    ("echo 'unbalanced", 0, True),
])
def test_needs_shell_is_decided_from_the_template(template, n, shell):
    assert nt.needs_shell(template, n) is shell


def test_arguments_never_make_a_line_need_a_shell():
    # the same template, with arguments full of shell syntax: still one argv
    template = "echo-args %s %s"
    assert not nt.needs_shell(template, 2)
    line = Node.quote(template, "; rm -rf /", "$(id) | x &")
    assert nt.bounded_line(template, line, 10, kill_after=5, sudo=False, n_args=2) == \
        "timeout -k 5 10 " + line


@pytest.mark.parametrize("seconds, text", [
    (60, "60"), (60.0, "60"), (1.5, "1.5"), (0.25, "0.25"), (2.0004, "2"), (0.0001, "0.001"),
    (1e-9, "0.001"), (3600, "3600"), (0.3, "0.3")])
def test_duration_is_never_zero_and_never_exponential(seconds, text):
    assert nt.duration(seconds) == text


def test_bounded_lines():
    assert nt.bounded_line("iptables-restore", "iptables-restore", 120, kill_after=5,
                           sudo=True) == "sudo -n timeout -k 5 120 iptables-restore"
    assert nt.bounded_line("kill -TERM $$", "kill -TERM $$", 0.5, kill_after=0.25,
                           sudo=False) == "timeout -k 0.25 0.5 sh -c 'kill -TERM $$'"
    assert nt.channel_timeout(60, 5) == 60 + 5 + nt.GRACE


# --------------------------------------------------------------------------- reading the exit
@pytest.mark.parametrize("rc, elapsed, stopped", [
    (124, 10.01, True),         # GNU: timed out
    (124, 2.0, False),          # the command's own 124, before the limit
    (137, 15.2, True),          # GNU's KILL after -k 5
    (137, 10.5, False),         # killed before -k could act: not by timeout
    (143, 10.2, True),          # BusyBox signals the command itself (TERM)
    (143, 1.0, False),
    (0, 30.0, False), (1, 30.0, False), (125, 30.0, False)])
def test_timed_out_needs_the_status_and_the_elapsed_time(rc, elapsed, stopped):
    assert nt.timed_out(rc, elapsed, 10, 5) is stopped


def test_stopped_message_says_how():
    assert nt.stopped_message(1, 124, 5) == \
        "command timed out after 1s: stopped on the node by timeout(1) (exit 124)"
    assert nt.stopped_message(0.3, 143, 5).endswith("(exit 143: TERM)")


@pytest.mark.parametrize("rc, stdout, stderr, missing", [
    (127, "", "bash: line 1: timeout: command not found\n", True),
    (127, "", "bash: timeout: command not found\n", True),           # bash before 5.1
    (127, "", "sh: 1: timeout: not found\n", True),                  # dash
    (127, "", "sh: timeout: not found\n", True),                     # BusyBox ash
    (127, "", "zsh:1: command not found: timeout\n", True),
    (1, "", "sudo: timeout: command not found\n", True),
    (125, "", "timeout: invalid time interval ‘0.5’\nTry 'timeout --help' for more information.\n", True),
    (125, "", "timeout: unrecognized option '--kill-after=5'\nTry 'timeout --help'\n", True),
    (1, "", "timeout: invalid option -- 'k'\nBusyBox v1.29.3 multi-call binary.\n\nUsage: timeout [-t SECS]\n", True),
    (1, "", "Sorry, user ops is not allowed to execute '/usr/bin/timeout -k 5 60 iptables-save' "
            "as root on set-hog.\n", True),
    (1, "", "Sorry, user ops is not allowed to execute '/usr/sbin/iptables-save' as root on x.\n", False),
    # the wrapped command was not found: timeout ran, so did the attempt
    (127, "", "timeout: failed to run command ‘nft’: No such file or directory\n", False),
    (126, "", "timeout: failed to run command ‘/etc/passwd’: Permission denied\n", False),
    # the command's own failures
    (127, "", "bash: line 1: kubectl: command not found\n", False),
    (1, "", "sudo: a password is required\n", False),
    (127, "partial output\n", "sh: 1: timeout: not found\n", False),
    (127, "", "./script: 3: timeout: not found\nmore\n", False),
    (127, "", "./script: 3: timeout: not found\n", False),
    # a login script's noise first, then the shell's own line
    (127, "", "/usr/bin/env: 'bash': No such file or directory\nbash: line 1: timeout: command not found\n", True),
    (125, "", "motd noise\ntimeout: invalid time interval ‘x’\nTry 'timeout --help'\n", True),
    (125, "", "", False), (0, "", "", False)])
def test_unsupported_only_when_timeout_itself_could_not_run(rc, stdout, stderr, missing):
    assert (nt.unsupported(rc, stdout, stderr) is not None) is missing


# --------------------------------------------------------------------------- the real tools
needs_tools = pytest.mark.skipif(not (shutil.which("timeout") and shutil.which("sh")),
                                 reason="GNU timeout and sh are needed")


def _sh(line: str) -> subprocess.CompletedProcess[str]:
    """``line`` as sshd runs it: the login shell's ``-c``."""
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)


def _bounded(template: str, path: object, seconds: float, *, kill_after: float
             ) -> tuple[subprocess.CompletedProcess[str], float]:
    """``template`` (one ``%s``: ``path``) run under the wrapper as sshd would; its elapsed time."""
    start = time.monotonic()
    r = _sh(nt.bounded_line(template, Node.quote(template, path), seconds, kill_after=kill_after,
                            sudo=False, n_args=1))
    return r, time.monotonic() - start


@needs_tools
def test_real_timeout_runs_argv_and_shell_lines_unchanged():
    nasty = ["two words", "it's", "$HOME `id` ; x", "*"]
    template = "printf '%%s\\n'" + " %s" * len(nasty)
    line = Node.quote(template, *nasty)
    r = _sh(nt.bounded_line(template, line, 10, kill_after=5, sudo=False, n_args=len(nasty)))
    assert (r.returncode, r.stdout.split("\n")[:-1]) == (0, nasty)
    r = _sh(nt.bounded_line("echo out; echo err >&2; exit 42", "echo out; echo err >&2; exit 42",
                            10, kill_after=5, sudo=False))
    assert (r.returncode, r.stdout, r.stderr) == (42, "out\n", "err\n")


@needs_tools
def test_real_timeout_stops_the_command_and_its_children(tmp_path):
    pids = tmp_path / "pids"
    r, elapsed = _bounded("sleep 30 & echo $! > %s; sleep 30", pids, 0.3, kill_after=5)
    assert r.returncode == 124 and nt.timed_out(r.returncode, elapsed, 0.3, 5)
    child = int(pids.read_text())
    _gone(child)


@needs_tools
def test_real_timeout_kills_a_command_that_ignores_term(tmp_path):
    pid = tmp_path / "pid"
    r, elapsed = _bounded("trap '' TERM; echo $$ > %s; sleep 30", pid, 0.2, kill_after=0.3)
    # the KILL goes to the whole group, timeout itself included: the shell's 128+9
    assert r.returncode == nt.KILLED and nt.timed_out(r.returncode, elapsed, 0.2, 0.3)
    _gone(int(pid.read_text()))


def _gone(pid: int) -> None:
    """``pid`` no longer runs (a zombie, waiting for a reaper that is gone, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return
    assert state == "Z", f"process {pid} still runs (state {state})"


def test_local_pids_are_real():
    # the helper above sees a running process as running
    with pytest.raises(AssertionError, match="still runs"):
        _gone(os.getpid())
