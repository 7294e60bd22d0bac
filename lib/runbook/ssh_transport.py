"""The SSH transport under :class:`runbook.nodes.Node`: paramiko's, tuned for many nodes at once.

A session keeps one connection per node and reads 20 of them at a time, in one Python
process: what costs CPU here is the number of wake-ups (system calls, thread hand-offs
under the GIL) per command rather than the bytes. So: small packets go out at once
(``TCP_NODELAY``), the node may send large packets in a large window, the reader takes
whatever has arrived in one ``recv`` (:class:`BufferedSocket`) instead of two
exact-size reads per SSH packet, and once the connection is up its socket blocks
(:func:`settle`): on a socket with a timeout Python polls before every ``send`` and
``recv``, two system calls (and two hand-offs of the GIL) where one does, and an idle
reader would wake on every timeout. A close shuts the socket down first, which wakes
its reader (:class:`NodeTransport`).

Example:
    >>> client.connect(host, port=port, transport_factory=node_transport)  # doctest: +SKIP
    >>> settle(client)                                                     # doctest: +SKIP
"""
from __future__ import annotations

import os
import signal
import socket
import struct
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

#: Ciphers tried first: AES-GCM authenticates as it decrypts (hardware AES and GHASH in
#: one pass) where AES-CTR needs a separate HMAC over every byte; OpenSSH offers both by
#: default. Only the order changes: a server without them still negotiates the rest.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: What the node may send in one SSH packet (and before waiting for a window update):
#: an ``iptables-save`` of thousands of rules is ~1 MB, and each packet costs this side
#: a wake-up of its transport thread and of the command's, contended with 20 reads at
#: once. A server sends smaller packets if it wants (RFC 4254 5.1: the receiver's maximum).
MAX_PACKET = 1 << 17
WINDOW = 8 << 20
#: What one ``recv`` of :class:`BufferedSocket` asks the kernel for: a node's reply to a
#: small command several times over, or most of a 128 KiB packet. Under glibc's 128 KiB
#: ``mmap`` threshold on purpose: Python allocates the full size for every ``recv`` and
#: then shrinks it to what arrived, and at 128 KiB or more each allocation is an
#: ``mmap``, ``mremap`` and ``munmap`` (with the GIL held: 13 us a ``recv`` instead of 2).
RECV_SIZE = 120 << 10
#: Random bytes :class:`NodePacketizer` draws from the OS at a time for packet padding
#: (4 to 19 bytes a packet with AES-GCM).
PAD_POOL = 4096


class BufferedSocket:
    """A connected socket whose reads are buffered; everything else is the socket's.

    paramiko's packetizer reads each SSH packet with two ``recv`` calls of exact sizes
    (the first block, then the rest): a node's reply to a command (channel confirmation,
    output, exit status, close) arrives as one TCP segment of several packets, which
    then costs ten system calls, each releasing and retaking the GIL that 20 parallel
    reads contend for. Here one ``recv`` takes what has arrived (up to
    :data:`RECV_SIZE`, never more, whatever is asked) and the packetizer's reads are
    served from it.

    Semantics are a socket's: ``recv(n)`` returns at most ``n`` bytes, blocks (with the
    socket's timeout, raising ``socket.timeout``) only when nothing is buffered, and
    returns ``b""`` at EOF once the buffer is drained.

    Example:
        >>> a, b = socket.socketpair()
        >>> _ = b.sendall(b"hello world")
        >>> s = BufferedSocket(a)
        >>> s.recv(5), s.recv(100)
        (b'hello', b' world')
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        pos, data = self._pos, self._data
        if pos < len(data):
            end = min(len(data), pos + n)
            self._pos = end
            return data[pos:end] if (pos or end < len(data)) else data
        data = self.sock.recv(RECV_SIZE)
        if len(data) <= n:
            self._data, self._pos = b"", 0
            return data
        self._data, self._pos = data, n
        return data[:n]

    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return len(self._data) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _raw_socket(transport: Any) -> Any:
    sock = getattr(transport, "sock", None)
    return sock.sock if isinstance(sock, BufferedSocket) else sock


def set_no_delay(client: paramiko.SSHClient) -> None:
    """Send each SSH packet at once (``TCP_NODELAY``): a command is a few small packets
    each way, and Nagle's algorithm against the peer's delayed ACK costs ~40 ms apiece."""
    sock = _raw_socket(client.get_transport())
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def settle(client: paramiko.SSHClient) -> None:
    """Tune a connected, authenticated node connection: :func:`set_no_delay`, and a
    blocking socket from now on.

    The handshake ran with paramiko's socket timeout (its banner, handshake and auth
    timeouts need it). After it nothing does: a command's timeout is kept by the
    command's own wait (:func:`runbook.ssh_exec.exec_channel`), a close wakes the reader
    (:meth:`NodeTransport.close`), and paramiko's keepalive is not used. Python's
    ``recv`` and ``send`` on a blocking socket are one system call each.
    """
    set_no_delay(client)
    sock = _raw_socket(client.get_transport())
    if isinstance(sock, socket.socket):
        sock.settimeout(None)


class NodePacketizer(paramiko.Packetizer):
    """paramiko's Packetizer whose padding bytes come from a pool of ``os.urandom``.

    paramiko asks ``os.urandom`` for every packet's padding (4 to 19 bytes), and Python
    releases the GIL around that ``getrandom`` call: four or five hand-offs of the GIL per
    command, contended by 20 parallel reads. Here the bytes come from the same source,
    :data:`PAD_POOL` at a time, each byte used once. The padding's length and layout are
    RFC 4253 section 6's, as paramiko builds them: at least four bytes, and the packet a
    multiple of the cipher block (without the length field for encrypt-then-MAC and
    AES-GCM, whose length field is not encrypted). Before the keys are agreed, and with
    CTR ciphers, the padding is zeros, as paramiko (and OpenSSH) send it.
    """

    def __init__(self, socket: Any) -> None:
        super().__init__(socket)
        self._pad_block = 8
        self._pad_length_field = True
        self._pad_random = False
        self._pool = b""
        self._pool_at = 0

    def set_outbound_cipher(self, block_engine: Any, block_size: int, mac_engine: Any,
                            mac_size: int, mac_key: Any, sdctr: bool = False, etm: bool = False,
                            aead: bool = False, iv_out: Any = None) -> None:
        super().set_outbound_cipher(block_engine, block_size, mac_engine, mac_size, mac_key,
                                    sdctr=sdctr, etm=etm, aead=aead, iv_out=iv_out)
        self._pad_block = block_size
        self._pad_length_field = not (etm or aead)
        self._pad_random = block_engine is not None and not sdctr

    def _build_packet(self, payload: bytes) -> bytes:
        # Called by send_message under the packetizer's write lock: the pool is not shared.
        block = self._pad_block
        covered = 1 + len(payload) + (4 if self._pad_length_field else 0)
        n = block - covered % block
        if n < 4:
            n += block
        if self._pad_random:
            at = self._pool_at
            if at + n > len(self._pool):
                self._pool, at = os.urandom(PAD_POOL), 0
            pad = self._pool[at:at + n]
            self._pool_at = at + n
        else:
            pad = bytes(n)
        return struct.pack(">IB", len(payload) + n + 1, n) + payload + pad


def exit_signal_status(name: str) -> int:
    """The exit status a shell gives a command killed by signal ``name`` (RFC 4254
    names: ``TERM``, ``KILL``...): 128 + its number, or 255 for a name this system does
    not know.

    Example:
        >>> exit_signal_status("KILL"), exit_signal_status("TERM"), exit_signal_status("NOPE")
        (137, 143, 255)
    """
    try:
        return 128 + int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 255


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """A channel request from the node: paramiko's handling, plus ``exit-signal``.

    A command killed by a signal ends with ``exit-signal`` instead of ``exit-status``
    (OpenSSH sends it whenever the command's shell died of a signal); paramiko drops it
    and the status would read -1. Here it becomes the status a shell reports
    (:func:`exit_signal_status`) and the signal's name is kept as ``chan.exit_signal``.
    """
    start = m.packet.tell()
    if m.get_text() != "exit-signal":
        m.packet.seek(start)
        paramiko.Channel._handle_request(chan, m)
        return
    m.get_boolean()                      # want reply: never, per RFC 4254 6.10
    name = m.get_text()
    chan.exit_signal = name
    chan.exit_status = exit_signal_status(name)
    chan.status_event.set()


class NodeTransport(paramiko.Transport):
    """paramiko's Transport for a node: its reader thread wakes once a second, not ten
    times, while the connection is set up (after that its socket blocks, see
    :func:`settle`), a close shuts the socket down before closing it, and a command
    killed by a signal gets a status (:func:`_channel_request`)."""

    _active_check_timeout = 1.0
    _channel_handler_table = {**paramiko.Transport._channel_handler_table,
                              MSG_CHANNEL_REQUEST: _channel_request}

    def close(self) -> None:
        """Close the connection: ``shutdown`` first, so a reader blocked in ``recv``
        returns at once (EOF) and the peer sees the connection end. Closing the file
        descriptor alone leaves a blocked ``recv`` waiting and the connection open."""
        sock = _raw_socket(self)
        if self.active and isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass    # already gone: the peer closed it, or it never connected
        super().close()


def node_transport(sock: Any, **kw: Any) -> paramiko.Transport:
    """paramiko's Transport (``SSHClient.connect``'s ``transport_factory``) over a
    :class:`BufferedSocket`, with the cipher order and packet size above and a
    :class:`NodePacketizer`."""
    kw.setdefault("default_max_packet_size", MAX_PACKET)
    kw.setdefault("default_window_size", WINDOW)
    kw.setdefault("packetizer_class", NodePacketizer)
    if isinstance(sock, socket.socket):
        sock = BufferedSocket(sock)
    t = NodeTransport(sock, **kw)
    opts = t.get_security_options()
    have = tuple(opts.ciphers)
    opts.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in have) + \
        tuple(c for c in have if c not in PREFERRED_CIPHERS)
    return t
