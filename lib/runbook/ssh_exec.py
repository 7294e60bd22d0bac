"""One command over one SSH channel (paramiko), with as few wake-ups as the protocol allows.

:meth:`runbook.nodes.Node.run` (the choke point) calls :func:`exec_channel` once per
command. A session reads 20 nodes at once in one Python process, where what a command
costs is mostly the thread hand-offs under the GIL, so the command's thread waits as
little as it can:

- the ``exec`` request asks for a reply (a node that refuses it is an immediate error,
  not a timeout), but when there is no stdin to send the thread does not stop for that
  reply: the request and the EOF go out together and the reply is checked when the
  channel is done (RFC 4254 5.4 lets a client send on after a request; OpenSSH's
  ``ssh host cmd </dev/null`` does the same);
- stdout and stderr wake the thread through one :class:`threading.Event` handed to
  paramiko's buffers (``BufferedPipe.set_event``) instead of ``Channel.fileno()``,
  which makes an OS pipe per channel, writes a byte to it on every packet and needs a
  ``select``; the event is cleared here, before the buffers are drained, never by
  paramiko (a read of one stream must not swallow the other stream's wake-up).

Example:
    >>> rc, out, err = exec_channel(transport, "uname -r", None, 120, 10)  # doctest: +SKIP
    >>> rc, out
    (0, b'6.8.0-45-generic\\n')
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

#: What one drain of a stream asks paramiko for (it returns what is buffered).
READ_SIZE = 1 << 24


class CommandTimeout(Exception):
    """The command did not finish within its timeout (the caller names node and command)."""


class _Wake:
    """What paramiko's ``BufferedPipe`` sets when data or EOF arrives; its ``clear`` (on
    a read that empties one stream) is ignored: :func:`exec_channel` clears the event
    itself before it drains both streams, so no wake-up is lost between them."""

    __slots__ = ("event",)

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        pass


def _send_exec(chan: paramiko.Channel, line: str) -> None:
    """paramiko's ``Channel.exec_command`` without its wait for the reply: the request
    (reply wanted) is sent and ``chan.event`` / ``chan.event_ready`` say, later, whether
    the node accepted it."""
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)
    m.add_string(line)
    chan._event_pending()
    chan.transport._send_user_message(m)


def _refused(chan: paramiko.Channel) -> Exception:
    """Why the node did not run the command: the transport's error, or the refusal."""
    e = chan.transport.get_exception() if chan.transport is not None else None
    return e if e is not None else paramiko.SSHException("Channel closed.")


def exec_channel(transport: paramiko.Transport, line: str, stdin: bytes | None,
                 timeout: float | None, open_timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``line`` on a new session channel; return (exit status, stdout, stderr).

    Args:
        transport: the node's connected, authenticated transport.
        line: the command line (already quoted by the caller).
        stdin: bytes sent to the command before EOF, or None (EOF at once).
        timeout: seconds for the whole command (None: no limit). Closing the channel does
            not stop the command on the node: :meth:`runbook.nodes.Node.run` bounds it
            there with ``timeout(1)`` and gives this wait that limit plus its KILL delay
            and a grace (:func:`runbook.node_timeout.channel_timeout`).
        open_timeout: seconds to wait for the channel to open.

    Raises:
        CommandTimeout: the command did not finish in time (the channel is closed).
        paramiko.SSHException, EOFError, OSError: the channel or the connection failed,
            or the node refused the ``exec`` request.

    Example:
        >>> exec_channel(transport, "sudo -n iptables-save", None, 120, 10)  # doctest: +SKIP
        (0, b'*filter\\n...', b'')
    """
    chan = transport.open_session(timeout=open_timeout)
    deadline = time.monotonic() + timeout if timeout else None

    def left() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    try:
        chan.settimeout(timeout)    # what a send of stdin may wait for the node's window
        wake = threading.Event()
        pipe_wake = _Wake(wake)
        chan.in_buffer.set_event(pipe_wake)
        chan.in_stderr_buffer.set_event(pipe_wake)
        _send_exec(chan, line)
        if stdin is not None:
            # Input goes only to a command the node accepted.
            wait = left()
            if not chan.event.wait(None if wait is None else max(0.0, wait)):
                raise CommandTimeout()
            if not chan.event_ready:
                raise _refused(chan)
            chan.sendall(stdin)
        chan.shutdown_write()
        out: list[bytes] = []
        err: list[bytes] = []
        # Drain stdout and stderr together: reading one to EOF first can deadlock when
        # the other fills the channel window.
        while True:
            wake.clear()
            while chan.in_buffer.read_ready():
                out.append(chan.recv(READ_SIZE))
            while chan.in_stderr_buffer.read_ready():
                err.append(chan.recv_stderr(READ_SIZE))
            if chan.eof_received or chan.closed:
                if not (chan.in_buffer.read_ready() or chan.in_stderr_buffer.read_ready()):
                    break
                continue
            wait = left()
            if wait is not None and wait <= 0:
                raise CommandTimeout()
            wake.wait(wait)
        # The node answers the exec request before the command's output: a channel at
        # its end without that answer means the request was refused or the connection died.
        if not chan.event_ready:
            if not chan.event.is_set():
                wait = left()
                chan.event.wait(None if wait is None else max(0.0, wait))
            if not chan.event_ready:
                raise _refused(chan)
        # The exit status may follow the EOF (OpenSSH sends EOF, exit-status, close).
        wait = left()
        if not chan.status_event.wait(None if wait is None else max(0.0, wait)):
            raise CommandTimeout()
        return chan.exit_status, b"".join(out), b"".join(err)
    except socket.timeout as e:
        raise CommandTimeout() from e
    finally:
        chan.close()

