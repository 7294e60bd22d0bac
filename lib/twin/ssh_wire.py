"""How the twin's SSH servers put packets on the wire: closer to OpenSSH's sshd, and cheap.

asyncssh, as it comes, costs the twin and its client more per command than a real node's
sshd costs them, for reasons that have nothing to do with the node:

- it writes every SSH packet to the socket on its own (one ``send`` system call, one TCP
  segment, one wake-up of the client's reader each), where a command's reply is a burst
  of packets (channel open confirmation, data, exit status, EOF, close) that OpenSSH
  hands to the kernel together;
- before every packet it sends an empty ``SSH_MSG_IGNORE`` (a countermeasure for the
  predictable IVs of CBC ciphers, RFC 4251 9.3.1), which OpenSSH does not do; the client
  decrypts and discards each one, so each command's packets are twice as many;
- it logs every channel at INFO (opened, the command line, exit status, closed): six
  lines per command, and the command line may carry what should not be in a log.

:func:`tune` changes the first two for one connection, :func:`quiet_channel_logging`
the third for the process. The bytes of each packet, their order and the protocol are
unchanged; a client sees the same replies sooner and with fewer packets.

Example:
    >>> class Server(asyncssh.SSHServer):                      # doctest: +SKIP
    ...     def connection_made(self, conn):
    ...         tune(conn)
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncssh.constants import MSG_IGNORE

log = logging.getLogger("twin.ssh")

#: The padding packet asyncssh inserts: ``SSH_MSG_IGNORE`` with an empty string.
_EMPTY_STRING = b"\0\0\0\0"


class CoalescedWrites:
    """A transport whose writes made in one turn of the event loop go out as one.

    Wraps the asyncio transport of an SSH connection: ``write`` appends to a list and
    schedules one flush (``call_soon``) that joins and writes everything appended until
    then; everything else is the wrapped transport's. ``close`` flushes first, ``abort``
    drops what is pending (as the transport itself drops its buffer).
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.write(bytes(c))

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self._transport.write(data)
        except ConnectionError:   # as asyncssh's own send: a lost peer shows up on read
            pass

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def tune(conn: Any) -> bool:
    """Coalesce ``conn``'s socket writes and drop asyncssh's IGNORE padding (see the
    module docstring). Call from ``SSHServer.connection_made``.

    Returns False, changing nothing, when the connection lacks what this relies on
    (asyncssh's transport attribute and ``send_packet``): the server then works as
    asyncssh made it, only slower.
    """
    transport = getattr(conn, "_transport", None)
    send_packet = getattr(conn, "send_packet", None)
    if not isinstance(transport, asyncio.Transport) or send_packet is None:
        log.warning("ssh: asyncssh's connection has changed shape; packets are not coalesced")
        return False
    conn._transport = CoalescedWrites(transport, asyncio.get_running_loop())

    def send_without_padding(pkttype: int, *args: bytes, **kw: Any) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,) and not _cbc(conn):
            return
        send_packet(pkttype, *args, **kw)

    conn.send_packet = send_without_padding
    return True


def _cbc(conn: Any) -> bool:
    """Whether the connection sends with a CBC cipher (where the padding is a defence)."""
    cipher = conn.get_extra_info("send_cipher") or ""
    return cipher.endswith("-cbc")


def quiet_channel_logging() -> None:
    """asyncssh's logger at WARNING, unless someone set its level already (to debug the
    twin's SSH, set ``logging.getLogger("asyncssh")`` to INFO or DEBUG before starting)."""
    lg = logging.getLogger("asyncssh")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)
