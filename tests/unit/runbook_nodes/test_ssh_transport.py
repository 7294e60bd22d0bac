"""runbook.ssh_transport.BufferedSocket reads as a socket reads, with fewer system calls."""
from __future__ import annotations

import socket
import threading

import pytest

from nodes_sshserver import SSHTestServer
from runbook import ssh_transport
from runbook.nodes import Node
from runbook.ssh_transport import BufferedSocket

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


class CountingSocket:
    """A socket that counts its recv calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name):
        return getattr(self.sock, name)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_exact_reads_are_served_from_one_recv(pair):
    a, b = pair
    counted = CountingSocket(a)
    s = BufferedSocket(counted)
    b.sendall(b"0123456789" * 3)
    assert [s.recv(4), s.recv(16), s.recv(100)] == [b"0123", b"4567890123456789", b"0123456789"]
    assert counted.recvs == 1 and s.buffered() == 0


def test_never_more_than_asked_and_order_kept(pair):
    a, b = pair
    s = BufferedSocket(a)
    payload = bytes(range(256)) * 4000            # > RECV_SIZE: several kernel reads
    sender = threading.Thread(target=b.sendall, args=(payload,), daemon=True)
    sender.start()
    got = bytearray()
    sizes = (1, 16, 4096, 131_072, 7)
    i = 0
    while len(got) < len(payload):
        chunk = s.recv(sizes[i % len(sizes)])
        assert 0 < len(chunk) <= sizes[i % len(sizes)]
        got += chunk
        i += 1
    sender.join(10)
    assert bytes(got) == payload


def test_timeout_and_eof_as_a_socket(pair):
    a, b = pair
    a.settimeout(0.05)                            # delegated to the socket
    s = BufferedSocket(a)
    with pytest.raises(socket.timeout):
        s.recv(10)
    b.sendall(b"tail")
    b.close()
    assert s.recv(2) == b"ta" and s.recv(10) == b"il"   # buffered data first ...
    assert s.recv(10) == b""                             # ... then EOF
    assert s.gettimeout() == 0.05 and s.fileno() == a.fileno()


def test_node_reads_replies_through_the_buffer(tmp_path):
    """A node's connection: paramiko over a BufferedSocket, TCP_NODELAY on the real
    socket, and replies (small and beyond one packet) read intact."""
    with SSHTestServer() as srv:
        kh = tmp_path / "known_hosts"
        kh.write_text(srv.known_hosts_line())
        node = Node("n1", "server", "127.0.0.1", srv.port, "ops",
                    srv.write_client_key(tmp_path / "id_ecdsa"), str(kh), kind="twin",
                    connect_attempts=1)
        assert node.run("uname -r").ok
        t = node.client().get_transport()
        assert isinstance(t.sock, BufferedSocket) and isinstance(t.sock.sock, socket.socket)
        assert t.sock.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert t.default_max_packet_size == ssh_transport.MAX_PACKET
        big = 3 * ssh_transport.RECV_SIZE + 17
        r = node.run("spew %s %s", big, 5, timeout=60)
        assert r.rc == 0 and r.stdout == "o" * big and r.stderr == "e" * 5
        node.close()
