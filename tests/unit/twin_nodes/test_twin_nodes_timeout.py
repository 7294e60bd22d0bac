"""A twin node's ``timeout`` and ``sleep`` (GNU coreutils behaviour, real time), and the
lines the runbook sends under them (no sockets)."""
from __future__ import annotations

import pytest

from twin.node.cmd_time import parse_duration
from twin_nodes_cases import sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

TRY = b"Try 'timeout --help' for more information.\n"


def test_the_runbooks_lines_run_as_without_the_wrapper(nodes):
    a = nodes["agent-1"]
    plain = sh(a, "sudo -n cat /etc/hostname")
    assert sh(a, "sudo -n timeout -k 5 60 cat /etc/hostname") == plain == (0, b"agent-1\n", b"")
    assert sh(a, "timeout -k 5 2.5 uname -r") == sh(a, "uname -r")
    assert sh(a, "/usr/bin/timeout 60 /bin/hostname") == (0, b"agent-1\n", b"")
    # stdin reaches the command under timeout (iptables-restore, tee)
    assert sh(a, "sudo -n timeout -k 5 60 tee /etc/motd", b"hello\n") == (0, b"hello\n", b"")
    assert a.read("/etc/motd") == b"hello\n"
    dump = sh(a, "sudo -n timeout -k 5 60 iptables-save").stdout
    assert sh(a, "sudo -n timeout -k 5 60 iptables-restore", dump).rc == 0


def test_the_commands_own_status_and_output_come_through(nodes):
    a = nodes["agent-1"]
    assert sh(a, "timeout 10 false").rc == 1
    rc, out, err = sh(a, "timeout 10 cat /nonexistent")
    assert (rc, out) == (1, b"") and b"No such file or directory" in err
    # as without timeout: iptables-save wants root
    assert sh(a, "timeout 10 iptables-save").rc == sh(a, "iptables-save").rc != 0


def test_a_command_past_its_limit_is_stopped_with_124(nodes):
    a = nodes["agent-1"]
    assert sh(a, "timeout 0.05 sleep 10") == (124, b"", b"")
    assert sh(a, "sudo -n timeout -k 5 0.05 sleep 10") == (124, b"", b"")
    assert sh(a, "timeout --preserve-status 0.05 sleep 10").rc == 128 + 15
    # -s KILL: the group's KILL ends timeout itself, so the status is the shell's 128+9
    assert sh(a, "timeout -s KILL 0.05 sleep 10").rc == 128 + 9
    assert sh(a, "timeout --signal=SIGINT --preserve-status 0.05 sleep 10").rc == 128 + 2
    assert sh(a, "timeout -v 0.05 sleep 10") == \
        (124, b"", "timeout: sending signal TERM to command ‘sleep’\n".encode())


def test_a_command_within_its_limit_or_without_one_finishes(nodes):
    a = nodes["agent-1"]
    assert sh(a, "timeout 10 sleep 0.01") == (0, b"", b"")
    assert sh(a, "timeout 0 sleep 0.01") == (0, b"", b"")        # 0 disables the limit
    assert sh(a, "timeout -- 10 true") == (0, b"", b"")


@pytest.mark.parametrize("line, err", [
    ("timeout", TRY),
    ("timeout 10", TRY),
    ("timeout x true", "timeout: invalid time interval ‘x’\n".encode() + TRY),
    ("timeout -1 true", b"timeout: invalid option -- '1'\n" + TRY),
    ("timeout 1x true", "timeout: invalid time interval ‘1x’\n".encode() + TRY),
    ("timeout -k x 1 true", "timeout: invalid time interval ‘x’\n".encode() + TRY),
    ("timeout -z 1 true", b"timeout: invalid option -- 'z'\n" + TRY),
    ("timeout -k", b"timeout: option requires an argument -- 'k'\n" + TRY),
    ("timeout --kill-after", b"timeout: option '--kill-after' requires an argument\n" + TRY),
    ("timeout --nope 1 true", b"timeout: unrecognized option '--nope'\n" + TRY),
    ("timeout -s NOPE 1 true", "timeout: ‘NOPE’: invalid signal\n".encode() + TRY),
])
def test_usage_errors_are_gnus_with_125(nodes, line, err):
    assert sh(nodes["agent-1"], line) == (125, b"", err)


def test_a_command_the_node_lacks_is_127_as_gnu_says_it(nodes):
    a = nodes["agent-1"]
    assert sh(a, "timeout 10 nft list ruleset") == \
        (127, b"", "timeout: failed to run command ‘nft’: No such file or directory\n".encode())
    assert sh(a, "sudo -n timeout 10 nft").rc == 127
    # a shell under timeout is refused as everywhere on the twin
    rc, _, err = sh(a, "timeout 10 sh -c 'true'")
    assert rc == 2 and b"does not run a shell" in err


def test_sleep(nodes):
    a = nodes["agent-1"]
    assert sh(a, "sleep 0.01 0.01s") == (0, b"", b"")
    assert sh(a, "sleep") == (1, b"", b"sleep: missing operand\nTry 'sleep --help' for more information.\n")
    assert sh(a, "sleep 1y") == \
        (1, b"", "sleep: invalid time interval ‘1y’\nTry 'sleep --help' for more information.\n".encode())


@pytest.mark.parametrize("text, seconds", [
    ("2", 2.0), ("1.5", 1.5), (".5", 0.5), ("1.", 1.0), ("1.5m", 90.0), ("2h", 7200.0),
    ("1d", 86400.0), ("3s", 3.0), ("1e1", 10.0), ("0", 0.0), ("+4", 4.0),
    ("-1", None), ("1S", None), ("1ms", None), ("", None), ("x", None), ("1_0", None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
