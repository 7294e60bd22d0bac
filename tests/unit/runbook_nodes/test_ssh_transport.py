"""runbook.ssh_transport.BufferedSocket reads as a socket reads, with fewer system calls."""
from __future__ import annotations

import socket
import threading

import pytest

from nodes_sshserver import SSHTestServer
from runbook import ssh_transport
from runbook.ssh_transport import BufferedSocket

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


class CountingSocket:
    """A socket that counts its recv calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0
        self.asked: list[int] = []

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        self.asked.append(n)
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


def test_kernel_reads_stay_under_the_mmap_threshold(pair):
    # Python allocates a recv's full size before shrinking it: at glibc's 128 KiB mmap
    # threshold or more, that is an mmap, mremap and munmap per recv, with the GIL held.
    # A packet larger than RECV_SIZE is read in more than one recv instead.
    assert ssh_transport.RECV_SIZE < 128 << 10
    a, b = pair
    counted = CountingSocket(a)
    s = BufferedSocket(counted)
    payload = bytes(range(256)) * 1024            # 256 KiB
    sender = threading.Thread(target=b.sendall, args=(payload,), daemon=True)
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        got += s.recv(len(payload) - len(got))
    sender.join(10)
    assert bytes(got) == payload
    assert counted.recvs >= 3 and set(counted.asked) == {ssh_transport.RECV_SIZE}


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
        node = srv.node(tmp_path, "n1")
        assert node.run("uname -r").ok
        t = node.client().get_transport()
        assert isinstance(t.sock, BufferedSocket) and isinstance(t.sock.sock, socket.socket)
        assert t.sock.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert t.default_max_packet_size == ssh_transport.MAX_PACKET
        big = 3 * ssh_transport.RECV_SIZE + 17
        r = node.run("spew %s %s", big, 5, timeout=60)
        assert r.rc == 0 and r.stdout == "o" * big and r.stderr == "e" * 5
        node.close()


@pytest.mark.parametrize("block,sdctr,etm,aead", [
    (8, False, False, False),       # before the keys: paramiko's initial state
    (16, False, False, True),       # aes128-gcm@openssh.com
    (16, True, False, False),       # aes128-ctr
    (16, True, True, False),        # aes128-ctr with an -etm MAC
    (16, False, False, False),      # a CBC cipher
])
def test_padding_is_paramikos_but_from_a_pool(pair, block, sdctr, etm, aead):
    # NodePacketizer builds a packet as paramiko's Packetizer does (same length, header,
    # payload and padding length for every payload size; zeros where paramiko sends
    # zeros), only its random padding comes from a pool. It learns the cipher from
    # set_outbound_cipher: if paramiko changes that call or its padding, this fails.
    import inspect

    import paramiko

    theirs = paramiko.Packetizer(pair[0])
    ours = ssh_transport.NodePacketizer(pair[0])
    def params(f):
        return [(p.name, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(ours.set_outbound_cipher) == params(theirs.set_outbound_cipher)
    engine = object()
    if block != 8:
        for p in (theirs, ours):
            p.set_outbound_cipher(engine, block, None, 16, b"k", sdctr=sdctr, etm=etm, aead=aead)
    random = block != 8 and not sdctr
    pads = set()
    for size in range(0, 70):
        payload = bytes(range(size))
        a, b = theirs._build_packet(payload), ours._build_packet(payload)
        assert len(a) == len(b) and a[:5 + size] == b[:5 + size]
        pad = b[5 + size:]
        assert len(pad) >= 4 and (len(b) - (4 if etm or aead else 0)) % block == 0
        if not random:
            assert a == b and pad == bytes(len(pad))
        pads.add(pad)
    if random:
        assert len(pads) == 70          # drawn afresh for every packet, never repeated


def test_node_transport_uses_the_pooled_packetizer(pair):
    t = ssh_transport.node_transport(pair[0])
    assert isinstance(t.packetizer, ssh_transport.NodePacketizer)
