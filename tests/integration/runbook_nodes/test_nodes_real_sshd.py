"""runbook.nodes against a real OpenSSH sshd on 127.0.0.1 (tests/helpers/real_sshd.py).

A k3s node runs OpenSSH, not paramiko's server or the twin's asyncssh: here the SSH
choke point (:meth:`runbook.nodes.Node.run`, with :mod:`runbook.ssh_exec` and
:mod:`runbook.ssh_transport` under it) talks to the real one, started once for the
module. Commands run in the login shell of the current user, on this machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from helpers.real_sshd import HOST_KEY_TYPES, NO_SESSIONS, NO_TIMEOUT, SFTP_ONLY, RealSSHD
from helpers.required_tools import require_sshd
from runbook import ssh_transport
from runbook.errors import HostKeyError, NodeError
from runbook.fleet import Fleet
from runbook.nodes import MAX_SESSIONS, Node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    binary = require_sshd()
    with RealSSHD(tmp_path_factory.mktemp("sshd"), sshd=binary) as srv:
        yield srv


@pytest.fixture(scope="module")
def kept(sshd, tmp_path_factory):
    """One node whose connection the module's tests share (as a session keeps it)."""
    n = sshd.node(tmp_path_factory.mktemp("kept"))
    yield n
    n.close()


@pytest.fixture
def node(sshd, tmp_path):
    """A node of its own (its connection is this test's to break)."""
    n = sshd.node(tmp_path / "node")
    yield n
    n.close()


# --------------------------------------------------------------------------- commands
@pytest.mark.parametrize("rc", [0, 1, 42])
def test_exit_status_stdout_and_stderr(kept, rc):
    r = kept.run("echo out; echo err >&2; exit %s", rc)
    assert (r.rc, r.stdout, r.stderr) == (rc, "out\n", "err\n")
    assert r.ok is (rc == 0)


def test_empty_output(kept):
    r = kept.run("true")
    assert (r.rc, r.stdout, r.stderr) == (0, "", "")


def test_a_command_killed_by_a_signal_has_a_shells_status(kept):
    # OpenSSH reports a command that died of a signal with exit-signal, not exit-status;
    # paramiko drops it (status -1): the node transport gives it the status a shell would.
    r = kept.run("kill -TERM $$")
    assert r.rc == 128 + 15 and not r.ok
    r = kept.run("kill -KILL $$")
    assert r.rc == 128 + 9


def test_arguments_are_quoted_never_formatted(kept):
    nasty = ["two words", "it's \"quoted\"", "$HOME `id` $(id) ; rm -rf /nonexistent", "*", ""]
    r = kept.run("printf '%%s\\n'" + " %s" * len(nasty), *nasty)
    assert r.rc == 0
    assert r.stdout.split("\n")[:-1] == nasty      # each one literal argument, unexpanded


def test_without_stdin_the_command_sees_eof_at_once(kept):
    # exec and EOF go out together: `cat` ends at once with nothing read (with a
    # missing EOF it would wait for input until the timeout)
    r = kept.run("cat; echo done", timeout=20)
    assert (r.rc, r.stdout) == (0, "done\n")


def test_stdin_reaches_the_command(kept):
    assert kept.run("cat", stdin="line one\nline two\n").stdout == "line one\nline two\n"
    blob = os.urandom(3 << 20) + bytes(range(256))      # more than the node's window
    r = kept.run("sha256sum", stdin=blob)
    assert r.stdout.split()[0] == hashlib.sha256(blob).hexdigest()


def test_large_stdout_complete_and_in_order(kept):
    n = 700_000                                             # ~4.8 MB
    r = kept.run("seq 1 %s", n)
    assert r.rc == 0 and r.stderr == ""
    assert r.stdout == "".join(f"{i}\n" for i in range(1, n + 1))


def test_large_stdout_and_stderr_together(kept):
    # both streams large at once: neither may block the other in the channel's window
    n = 400_000
    r = kept.run("seq 1 %s >&2 & seq 1 %s; wait", n, n)
    expected = "".join(f"{i}\n" for i in range(1, n + 1))
    assert r.rc == 0 and r.stdout == expected and r.stderr == expected


def test_interleaved_streams_each_in_order(kept):
    r = kept.run("i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo o$i; echo e$i >&2; done")
    assert r.stdout.split() == [f"o{i}" for i in range(1, 3001)]
    assert r.stderr.split() == [f"e{i}" for i in range(1, 3001)]


# --------------------------------------------------------------------------- failures
def test_a_timeout_is_reported_and_the_node_is_usable_again(node, tmp_path):
    # OpenSSH 9.2 does not end a command when its channel or connection closes, and
    # refuses the RFC 4254 "signal" request ("session signalling requires privilege
    # separation" in its log): the node's own timeout(1) must stop it.
    pid_file = tmp_path / "sleeper.pid"
    with pytest.raises(NodeError) as ei:
        node.run("echo $$ > %s; exec sleep 60", pid_file, timeout=1)
    assert "timed out after 1s: stopped on the node by timeout(1) (exit 124)" in str(ei.value)
    assert ei.value.command == f"echo $$ > {pid_file}; exec sleep 60"      # as meant
    # the sleeper is gone on the node: timeout reaped it before it exited itself
    assert not _running(int(pid_file.read_text()))
    # the blocking-socket reader did not hang: the next command runs
    assert node.run("echo %s", "again").stdout == "again\n"


def test_a_timed_out_commands_children_are_gone_too(node, tmp_path):
    # a child in the background (a hung helper of the command) is in timeout's process
    # group: the group's TERM ends it with its parent
    pids = tmp_path / "pids"
    with pytest.raises(NodeError, match="stopped on the node"):
        node.run("sleep 60 & echo $! > %s; echo $$ >> %s; wait", pids, pids, timeout=1)
    assert [p for p in map(int, pids.read_text().split()) if _running(p)] == []


def test_a_command_ignoring_term_is_killed_after_kill_after(sshd, tmp_path):
    n = sshd.node(tmp_path / "n", kill_after=0.5)
    pid_file = tmp_path / "stubborn.pid"
    try:
        with pytest.raises(NodeError) as ei:
            n.run("trap '' TERM; echo $$ > %s; sleep 60; sleep 60", pid_file, timeout=1)
    finally:
        n.close()
    # TERM ignored (the sleeps inherit that): KILL 0.5 s later, timeout's group with it
    assert "(exit 137: KILL 0.5s after TERM)" in str(ei.value)
    assert not _running(int(pid_file.read_text()))


def test_a_command_exiting_124_before_its_limit_is_its_own_status(kept):
    r = kept.run("exit %s", 124, timeout=30)
    assert r.rc == 124 and not r.ok


def test_a_node_without_timeout_runs_commands_unbounded_after_one_warning(sshd, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="runbook.nodes")
    n = sshd.node(tmp_path / "n", behaviour=NO_TIMEOUT, command_log=tmp_path / "cmd.log")
    try:
        # bash says `timeout: command not found` before anything ran: the command is
        # sent again, as it is, and its input reaches it once
        r = n.run("cat", stdin="through\n", timeout=30)
        assert (r.rc, r.stdout, r.command) == (0, "through\n", "cat")
        assert n.run("printf %s", "again", timeout=30).stdout == "again"
        with pytest.raises(NodeError) as ei:                 # the client's timeout remains
            n.run("sleep %s", 5, timeout=0.5)
    finally:
        n.close()
    assert "it may still be running there" in str(ei.value)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "timeout: command not found" in warnings[0]
    logged = [json.loads(line)["command"] for line in (tmp_path / "cmd.log").read_text().splitlines()]
    assert logged == ["cat", "printf again"]


def _running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stdin", [None, "input\n"], ids=["no-stdin", "stdin"])
def test_an_exec_the_node_cannot_start_fails_at_once(node, sshd, stdin):
    node.run("true")                                         # connected and logged in
    port = node.client().get_transport().sock.getsockname()[1]
    assert sshd.starve_descriptors(port), "no sshd process found for the connection"
    with pytest.raises(NodeError) as ei:
        node.run("echo %s", "never", stdin=stdin, timeout=600)
    # sshd answers the exec request with a failure: an error now, not a timeout
    assert "SSH channel failed" in str(ei.value) and "timed out" not in str(ei.value)
    assert isinstance(ei.value.__cause__, paramiko.SSHException)
    assert "Too many open files" in sshd.log_text()          # why sshd refused it
    assert node.run("echo %s", "back").stdout == "back\n"    # a new connection works


def test_a_forced_command_fails_the_exec_with_sshds_message(sshd, tmp_path):
    # ForceCommand internal-sftp: sshd accepts the exec and runs its own refusal
    n = sshd.node(tmp_path, behaviour=SFTP_ONLY)
    r = n.run("echo %s", "never", timeout=600)
    n.close()
    assert r.rc == 1 and "sftp connections only" in r.stdout + r.stderr


def test_a_node_allowing_no_session_fails_at_once(sshd, tmp_path):
    n = sshd.node(tmp_path, behaviour=NO_SESSIONS)                  # MaxSessions 0
    with pytest.raises(NodeError) as ei:
        n.run("echo %s", "never", timeout=600)
    n.close()
    assert "SSH channel failed" in str(ei.value)
    assert isinstance(ei.value.__cause__, paramiko.ChannelException)


# --------------------------------------------------------------------------- many commands
def test_many_commands_on_one_kept_connection(kept):
    # sshd's own cost of a session (fork, privilege separation, the login shell) is
    # ~0.1 s on a busy 2-core machine, OpenSSH's own multiplexed client included: 30 it is
    transport = kept.client().get_transport()
    for i in range(30):
        assert kept.run("echo %s", i).stdout == f"{i}\n"
    assert kept.client().get_transport() is transport        # never reconnected


def test_more_threads_than_sshd_allows_sessions(kept):
    # sshd allows 10 sessions per connection (MaxSessions): 20 threads on one node
    # share it, each command with its own output, none refused
    assert MAX_SESSIONS < 10
    results: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            for j in range(2):
                results[i, j] = kept.run("echo %s %s", i, j).stdout
        except BaseException as e:                            # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == {(i, j): f"{i} {j}\n" for i in range(20) for j in range(2)}


def test_fan_out_reads_every_node_at_once(sshd, tmp_path):
    nodes = [sshd.node(tmp_path / f"n{i}", f"node-{i}", "server" if i == 0 else "agent")
             for i in range(6)]
    try:
        res = Fleet(nodes, parallel_reads=6).read(lambda n: n.kernel().raw, description="kernel")
    finally:
        for n in nodes:
            n.close()
    assert res.ok, [o.error for o in res.outcomes]
    assert res.values() == {n.name: platform.release() for n in nodes}


# --------------------------------------------------------------------------- host keys
@pytest.mark.parametrize("key_type", HOST_KEY_TYPES)
def test_known_host_key_of_each_type_is_accepted(sshd, tmp_path, key_type):
    n = sshd.node(tmp_path, known_hosts=sshd.known_hosts_line(key_type))
    try:
        assert n.run("echo %s", key_type).stdout == f"{key_type}\n"
        got = n.client().get_transport().get_remote_server_key()
    finally:
        n.close()
    assert got.get_base64() == Path(f"{sshd.host_key(key_type)}.pub").read_text().split()[1]


@pytest.mark.parametrize("key_type", HOST_KEY_TYPES)
def test_a_wrong_host_key_is_refused_before_any_command(sshd, tmp_path, key_type):
    other = tmp_path / f"other_{key_type}"
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(other)],
                   check=True, capture_output=True, timeout=60)
    line = sshd.known_hosts_line(pub=Path(f"{other}.pub"))
    marker = tmp_path / "ran"
    n = sshd.node(tmp_path, known_hosts=line)
    with pytest.raises(HostKeyError) as ei:
        n.run("touch %s", marker)
    n.close()
    assert "MISMATCH" in str(ei.value) and not marker.exists()
    assert (tmp_path / "known_hosts").read_text() == line                 # nothing added


def test_an_unknown_host_is_refused_and_never_added(sshd, tmp_path):
    marker = tmp_path / "ran"
    n = sshd.node(tmp_path, known_hosts="")
    with pytest.raises(HostKeyError) as ei:
        n.run("touch %s", marker)
    n.close()
    assert "unknown SSH host key" in str(ei.value) and not marker.exists()
    assert (tmp_path / "known_hosts").read_text() == ""


# --------------------------------------------------------------------------- algorithms
def test_negotiated_algorithms_are_the_preferred_ones(sshd, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    n = sshd.node(tmp_path)
    try:
        n.run("true")
        t = n.client().get_transport()
        client = t.get_security_options()
    finally:
        n.close()
    # The client's order decides (RFC 4253 7.1): the first of ours that sshd offers.
    def first(ours, theirs):
        return next(a for a in ours if a in theirs)

    assert t.local_cipher == t.remote_cipher == ssh_transport.PREFERRED_CIPHERS[0]
    assert first(client.ciphers, sshd.effective("ciphers")) == ssh_transport.PREFERRED_CIPHERS[0]
    kex = [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.getMessage().startswith("Kex: ")]
    assert kex == [first(client.kex, sshd.effective("kexalgorithms"))]
    # AES-GCM authenticates itself: the MAC named in the negotiation is not used for it
    assert t.local_mac == first(client.digests, sshd.effective("macs"))
    # paramiko asks first for the key type known_hosts has first for the host (ed25519)
    assert t.host_key_type == "ssh-ed25519" and "ssh-ed25519" in sshd.effective("hostkeyalgorithms")
