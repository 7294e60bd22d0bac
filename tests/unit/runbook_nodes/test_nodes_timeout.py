"""Node.run bounds each command with timeout(1) on the node (paramiko test server, whose
FakeHost runs ``timeout`` as a node does; see nodes_sshserver).

``host.lines`` is what the node received (the wrapper included); ``host.argvs`` the
command under it; ``CommandResult.command``, errors and the command log show the command
as the runbook meant it.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import pytest

from nodes_sshserver import FakeHost, SSHTestServer
from runbook import node_timeout
from runbook.errors import NodeError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def server():
    with SSHTestServer() as srv:
        yield srv


def test_every_command_arrives_under_timeout_and_is_shown_without_it(server, tmp_path):
    log = tmp_path / "cmd.log"
    node = server.node(tmp_path, command_log=log, command_timeout=60)
    r = node.run("echo-args %s", "x", sudo=True)
    assert server.host.lines[-1] == "sudo -n timeout -k 5 60 echo-args x"   # received
    assert server.host.argvs[-1] == ["echo-args", "x"] and server.host.limits[-1] == 60
    assert r.command == "sudo -n echo-args x" and r.stdout == "x\n"           # shown
    assert json.loads(log.read_text())["command"] == "sudo -n echo-args x"    # logged
    node.run("uname -r", timeout=2.5)
    assert server.host.lines[-1] == "timeout -k 5 2.5 uname -r"
    node.close()


def test_no_timeout_means_no_wrapper(server, tmp_path):
    node = server.node(tmp_path, command_timeout=None)
    node.run("uname -r")
    node.run("uname -r", timeout=0)
    assert server.host.lines == ["uname -r", "uname -r"] and server.host.limits == [None, None]
    node.close()


def test_a_command_stopped_on_the_node_is_a_timeout_error(server, tmp_path):
    log = tmp_path / "cmd.log"
    node = server.node(tmp_path, command_log=log)
    with pytest.raises(NodeError) as ei:
        node.run("sleep %s", 5, sudo=True, timeout=0.3)
    e = ei.value
    assert "timed out after 0.3s: stopped on the node by timeout(1) (exit 124)" in str(e)
    assert e.command == "sudo -n sleep 5" and e.node == "set-hog"    # as meant, not as sent
    assert server.host.limits[-1] == 0.3
    assert not log.exists()                 # no result: nothing logged as if it had one
    assert node.run("uname -r").ok
    node.close()


def test_a_command_exiting_124_on_its_own_is_not_a_timeout(server, tmp_path):
    node = server.node(tmp_path)
    r = node.run("exit-with %s", 124, timeout=20)
    assert r.rc == 124 and not r.ok           # its status, not an error
    r = node.run("exit-with %s", 137, timeout=20)
    assert r.rc == 137
    node.close()


@pytest.mark.parametrize("sudo", [False, True])
def test_a_node_without_timeout_runs_the_command_unbounded_and_warns_once(tmp_path, caplog, sudo):
    caplog.set_level(logging.WARNING, logger="runbook.nodes")
    with SSHTestServer(FakeHost(timeout_program=None)) as srv:
        node = srv.node(tmp_path, command_timeout=30)
        host = srv.host
        r = node.run("echo-args %s", "once", sudo=sudo, stdin="ignored\n")
        prefix = "sudo -n " if sudo else ""
        # the wrapped line failed before anything ran; the command itself ran once, after
        assert host.lines == [prefix + "timeout -k 5 30 echo-args once", prefix + "echo-args once"]
        assert host.argvs == [["echo-args", "once"]]
        assert (r.rc, r.stdout, r.command) == (0, "once\n", prefix + "echo-args once")
        node.run("uname -r", sudo=sudo)
        node.run("uname -r", sudo=sudo)
        assert host.lines[2:] == [prefix + "uname -r"] * 2          # not asked again
        node.close()
    warnings = warned(caplog)
    assert len(warnings) == 1
    assert "[set-hog] the node cannot run timeout(1)" in warnings[0]
    assert "timeout: command not found" in warnings[0]


def test_the_unbounded_fallback_still_times_out_on_the_client(tmp_path):
    with SSHTestServer(FakeHost(timeout_program=None)) as srv:
        node = srv.node(tmp_path)
        with pytest.raises(NodeError) as ei:
            node.run("sleep %s", 3, timeout=0.3)
        node.close()
    assert "timed out after 0.3s (not bounded on this node: it may still be running there)" \
        in str(ei.value)


def test_a_node_that_does_not_stop_the_command_is_reported_as_hung(server, tmp_path, monkeypatch):
    # `hang` is a command the node's timeout cannot end (a process in D state, a node
    # that stopped answering): the channel gives up after the node's limit, its KILL
    # and the grace
    monkeypatch.setattr(node_timeout, "GRACE", 0.2)
    original = server.host.handle

    def handle(line, stdin):
        if "hang" in line:
            server.host.lines.append(line)
            import time
            time.sleep(3)
            return 0, b"", b""
        return original(line, stdin)

    server.host.handle = handle
    node = server.node(tmp_path, kill_after=0.1)
    with pytest.raises(NodeError) as ei:
        node.run("hang", timeout=0.3)
    assert server.host.lines[-1] == "timeout -k 0.1 0.3 hang"
    msg = str(ei.value)
    assert "timed out after 0.3s and timeout(1) on the node did not end it within 0.3s more" in msg
    assert "command: hang" in msg
    node.close()


def test_a_secret_in_a_timed_out_command_stays_redacted(server, tmp_path):
    node = server.node(tmp_path)
    with pytest.raises(NodeError) as ei:
        node.run("sleep %s %s", 5, "token: s3cr3t-value", timeout=0.3)
    assert "s3cr3t-value" not in str(ei.value) and "s3cr3t-value" not in (ei.value.command or "")
    node.close()


def warned(caplog) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]


@contextmanager
def sudo_x(tmp_path, caplog, asks: str):
    """A node whose ``sudo -n`` wants a password for ``asks``: (server, node, the result of
    ``echo-args x`` run there under sudo)."""
    caplog.set_level(logging.WARNING, logger="runbook.nodes")
    with SSHTestServer(FakeHost(sudo_asks_password=asks)) as srv:
        node = srv.node(tmp_path, command_timeout=30)
        yield srv, node, node.run("echo-args %s", "x", sudo=True)
        node.close()


def test_a_sudoers_that_wants_a_password_for_timeout_only_falls_back_once(tmp_path, caplog):
    # NOPASSWD for the runbook's commands, not for timeout: `sudo -n timeout ...` is refused
    # before anything runs; the command alone is then asked, and allowed
    with sudo_x(tmp_path, caplog, "timeout") as (srv, node, r):
        assert (r.rc, r.stdout) == (0, "x\n")
        assert srv.host.lines == ["sudo -n timeout -k 5 30 echo-args x", "sudo -n echo-args x"]
        node.run("uname -r", sudo=True)
        node.run("uname -r")                                   # the whole node runs unbounded now
        assert srv.host.lines[2:] == ["sudo -n uname -r", "uname -r"]
    warnings = warned(caplog)
    assert len(warnings) == 1 and "sudoers allows the runbook's commands but not timeout" in warnings[0]


def test_a_sudo_that_wants_a_password_for_everything_is_the_commands_failure(tmp_path, caplog):
    with sudo_x(tmp_path, caplog, "all") as (srv, node, r):
        assert (r.rc, r.stderr) == (1, "sudo: a password is required\n")
        node.run("uname -r", sudo=True)                        # still bounded: sudo was the problem
        assert srv.host.lines == ["sudo -n timeout -k 5 30 echo-args x", "sudo -n echo-args x",
                                  "sudo -n timeout -k 5 30 uname -r", "sudo -n uname -r"]
    assert warned(caplog) == []
