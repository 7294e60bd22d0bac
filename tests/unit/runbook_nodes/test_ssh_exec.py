"""runbook.ssh_exec: one command per channel, its wake-ups, and the paramiko API it relies on."""
from __future__ import annotations

import threading

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe

from nodes_sshserver import REFUSED, SSHTestServer
from runbook import ssh_exec
from runbook.errors import NodeError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def node(tmp_path):
    with SSHTestServer() as srv:
        n = srv.node(tmp_path, "n1", "agent")
        n.server = srv
        yield n
        n.close()


class RecordingTransport:
    """Stands in for paramiko's Transport under a Channel: records what it is asked to
    send and answers each channel request at once, as a node that accepts it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.chan: paramiko.Channel | None = None

    def _send_user_message(self, m: paramiko.Message) -> None:
        self.sent.append(m.asbytes())
        self.chan._request_success(m)

    def get_log_channel(self) -> str:
        return "paramiko.transport"


def channel(t: RecordingTransport) -> paramiko.Channel:
    c = paramiko.Channel(7)
    c._set_transport(t)
    c.remote_chanid, c.active = 42, True    # as after the node confirmed the open
    t.chan = c
    return c


def test_exec_request_is_paramikos_own():
    # _send_exec is paramiko's Channel.exec_command without the wait for the reply: the
    # same message (reply wanted), and the same pending state for that reply. If paramiko
    # changes either, this fails before a node ever sees a different request.
    t1, t2 = RecordingTransport(), RecordingTransport()
    theirs, ours = channel(t1), channel(t2)
    theirs.exec_command("sudo -n iptables-save")
    t2._send_user_message = lambda m: t2.sent.append(m.asbytes())   # no answer yet
    ssh_exec._send_exec(ours, "sudo -n iptables-save")
    assert t2.sent == t1.sent and len(t1.sent) == 1
    m = paramiko.Message(t1.sent[0])
    assert (m.get_byte(), m.get_int(), m.get_text(), m.get_boolean(), m.get_text()) == \
        (paramiko.common.cMSG_CHANNEL_REQUEST, 42, "exec", True, "sudo -n iptables-save")
    assert ours.event_ready is False and not ours.event.is_set()    # the reply is awaited later
    ours._request_success(None)
    assert ours.event_ready is True and ours.event.is_set()


def test_buffered_pipe_wakes_the_event_and_never_clears_it():
    # exec_channel hands both of a channel's BufferedPipes one _Wake (set_event). paramiko
    # must set it on data and on close; its clear (a read that empties one stream) must
    # not reach the event, or a wake-up for the other stream would be lost.
    assert isinstance(paramiko.Channel(1).in_buffer, BufferedPipe)
    assert isinstance(paramiko.Channel(1).in_stderr_buffer, BufferedPipe)
    event = threading.Event()
    wake = ssh_exec._Wake(event)
    out, err = BufferedPipe(), BufferedPipe()
    out.set_event(wake)
    err.set_event(wake)
    assert not event.is_set()
    out.feed(b"abc")
    assert event.is_set()
    err.feed(b"x")
    assert out.read(100) == b"abc"             # empties stdout: paramiko calls clear()
    assert event.is_set() and err.read_ready()  # ... stderr's wake-up is still there
    event.clear()
    err.close()
    assert event.is_set()                      # EOF wakes too
    assert err.read(10) == b"x" and err.read(10) == b""


def test_output_stdin_and_status_arrive(node):
    r = node.run("tee %s", "/tmp/x", stdin="from stdin\n")
    assert (r.rc, r.stdout) == (0, "from stdin\n")
    r = node.run("fail")
    assert (r.rc, r.stdout, r.stderr) == (3, "partial\n", "boom token: s3cr3t-value\n")


@pytest.mark.parametrize("stdin", [None, "input\n"])
def test_a_refused_exec_is_an_immediate_error(node, stdin):
    # the exec request still asks for a reply: a node that refuses it fails the command
    # at once with the channel's error, never by waiting out the command's timeout
    with pytest.raises(NodeError) as ei:
        node.run(REFUSED, stdin=stdin, timeout=600)
    assert "SSH channel failed" in str(ei.value) and "timed out" not in str(ei.value)
    assert isinstance(ei.value.__cause__, paramiko.SSHException)
    assert node.run("uname -r").stdout == "6.1.0-18-amd64\n"   # the next command reconnects


def test_many_commands_over_one_connection_from_many_threads(node):
    # 20 threads on one connection: every command gets its own output, none is lost
    results: dict[int, str] = {}

    def one(i: int) -> None:
        for j in range(10):
            results[i * 100 + j] = node.run("echo-args %s %s", i, j).stdout

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i * 100 + j: f"{i}\n{j}\n" for i in range(20) for j in range(10)}
