"""runbook.nodes against a real paramiko SSH server on 127.0.0.1 (see nodes_sshserver)."""
from __future__ import annotations

import hashlib
import json
import shlex
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from nodes_sshserver import FakeHost, SSHTestServer, iptables_fixture
from runbook.errors import HostKeyError, LoopbackViolation, NodeError
from runbook import nodes as nodes_mod
from runbook import ssh_transport
from runbook.nodes import Node, known_hosts_name

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class Journal:
    def __init__(self) -> None:
        self.entries: list[dict] = []

    def record(self, kind, action, *, node=None, data=None):
        self.entries.append({"kind": kind, "action": action, "node": node, "data": data})


@pytest.fixture
def server():
    with SSHTestServer() as srv:
        yield srv


def make_node(srv: SSHTestServer, tmp_path: Path, *, known: bool = True, **kw) -> Node:
    return srv.node(tmp_path, known=known, **kw)


def test_run_quotes_args_and_captures(server, tmp_path):
    node = make_node(server, tmp_path)
    nasty = "; rm -rf /"
    r = node.run("echo-args %s %s", nasty, "$(id) `x` a'b")
    assert r.ok and r.rc == 0
    # each argument arrives as ONE literal argv entry, unexpanded
    assert server.host.argvs[-1] == ["echo-args", nasty, "$(id) `x` a'b"]
    assert r.stdout.splitlines() == [nasty, "$(id) `x` a'b"]
    assert r.command == "echo-args '; rm -rf /' '$(id) `x` a'\"'\"'b'"
    node.close()


def test_quoted_line_is_one_argument_for_a_real_shell():
    # The same quoting, given to a real POSIX shell, prints the metacharacters literally.
    line = Node.quote("printf '%%s\\n' %s", "; rm -rf /")
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert out == "; rm -rf /\n"


def test_sudo_prefix_and_failure_redacted(server, tmp_path):
    node = make_node(server, tmp_path)
    r = node.run("fail", sudo=True)
    # what the node receives: sudo outside, so timeout(1) may stop root's command
    assert server.host.lines[-1] == "sudo -n timeout -k 5 120 fail"
    assert r.command == "sudo -n fail"          # what the runbook shows and logs
    assert r.rc == 3 and not r.ok
    assert "s3cr3t-value" in r.stderr          # raw kept for parsing
    assert "s3cr3t-value" not in repr(r)       # displays are redacted
    assert "s3cr3t-value" not in r.summary()
    with pytest.raises(NodeError) as ei:
        r.check_output()
    assert ei.value.rc == 3 and ei.value.node == "set-hog"
    assert "s3cr3t-value" not in str(ei.value)
    with pytest.raises(NodeError):
        node.run_expect([0, 1], "fail")
    assert node.run_expect([3], "fail").rc == 3
    node.sudo = False
    node.run("uname -r", sudo=True)
    assert server.host.lines[-1] == "timeout -k 5 120 uname -r"     # as received: no sudo


def test_command_log_is_written(server, tmp_path):
    log = tmp_path / "cmd.log"
    node = make_node(server, tmp_path, command_log=log)
    node.run("echo-args %s", "x")
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["node"] == "set-hog" and entry["command"] == "echo-args x" and entry["rc"] == 0
    assert (log.stat().st_mode & 0o777) == 0o600


def test_unknown_host_key_refused(server, tmp_path):
    node = make_node(server, tmp_path, known=False)
    with pytest.raises(HostKeyError) as ei:
        node.run("uname -r")
    assert "unknown SSH host key" in str(ei.value)
    assert not (tmp_path / "known_hosts").exists()
    assert server.host.lines == []


def test_trust_on_first_use_records_key(server, tmp_path):
    j = Journal()
    node = make_node(server, tmp_path, known=False, trust_on_first_use=True, journal=j)
    assert node.kernel().version == (6, 1, 0)
    kh = (tmp_path / "known_hosts").read_text()
    assert kh.startswith(known_hosts_name("127.0.0.1", server.port) + " ")
    assert server.host_key.get_base64() in kh
    (entry,) = j.entries
    assert entry["kind"] == "ssh" and entry["action"] == "trust-on-first-use"
    assert entry["node"] == "set-hog" and entry["data"]["fingerprint"].startswith("SHA256:")
    node.close()
    # the second connection is verified against the recorded key, nothing new recorded
    node2 = make_node(server, tmp_path, known=False, journal=j)
    assert node2.run("uname -r").ok and len(j.entries) == 1


def test_mismatched_host_key_always_refused(server, tmp_path):
    other = paramiko.ECDSAKey.generate()
    node = make_node(server, tmp_path, known=False, trust_on_first_use=True)
    (tmp_path / "known_hosts").write_text(server.known_hosts_line(other))
    with pytest.raises(HostKeyError) as ei:
        node.run("uname -r")
    msg = str(ei.value)
    assert "MISMATCH" in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {tmp_path / 'known_hosts'}" in msg
    assert isinstance(ei.value.__cause__, paramiko.BadHostKeyException)
    assert server.host.lines == []


def test_auth_failure_is_node_error(server, tmp_path):
    node = make_node(server, tmp_path)
    paramiko.ECDSAKey.generate().write_private_key_file(str(tmp_path / "other"))
    node.key_path = str(tmp_path / "other")
    with pytest.raises(NodeError) as ei:
        node.run("uname -r")
    assert "authentication failed" in str(ei.value)
    assert isinstance(ei.value.__cause__, paramiko.AuthenticationException)


def test_connection_refused_retries_then_lists_attempts(tmp_path):
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    (tmp_path / "kh").write_text("")
    node = Node("a1", "agent", "127.0.0.1", port, "ops", None, str(tmp_path / "kh"),
                kind="twin", connect_attempts=3, retry_backoff=0.01, connect_timeout=2)
    with pytest.raises(NodeError) as ei:
        node.run("true")
    msg = str(ei.value)
    assert "after 3 attempts" in msg
    assert "attempt 1:" in msg and "attempt 3:" in msg


def test_loopback_guard_for_twin(tmp_path):
    node = Node("a1", "agent", "10.0.0.3", 22, "ops", None, str(tmp_path / "kh"), kind="twin")
    with pytest.raises(LoopbackViolation) as ei:
        node.run("true")
    assert "SSH a1" in str(ei.value)


def test_write_file_backup_atomic_and_restore(server, tmp_path):
    host = server.host
    host.files["/etc/rancher/k3s/config.yaml"] = b"token: K10abc::server:xyz\n"
    from runbook.journal import Journal as RealJournal
    j = RealJournal.open(tmp_path / "run", params_hash="p" * 64, cluster_uid="uid-1", run_id="r1")
    node = make_node(server, tmp_path, journal=j, run_id="r1", backup_dir="/var/backups/p22")
    new = "token: K10abc::server:xyz\nflannel-backend: none\n"
    w = node.write_file("/etc/rancher/k3s/config.yaml", new)
    assert w.changed and w.backup_path == "/var/backups/p22/config.yaml.r1.bak"
    assert host.files["/etc/rancher/k3s/config.yaml"] == new.encode()
    assert host.files[w.backup_path] == b"token: K10abc::server:xyz\n"
    assert w.sha256_after == hashlib.sha256(new.encode()).hexdigest()
    assert "/etc/rancher/k3s/config.yaml.phase22.tmp" not in host.files
    # intent journalled (and then completed) around the change
    (e,) = j.entries(step="write-file")
    assert e.node == "set-hog" and e.status == "done"
    assert e.data["sha256_before"] == hashlib.sha256(b"token: K10abc::server:xyz\n").hexdigest()
    assert e.data["backup"] == w.backup_path
    cmds = [a[0] for a in host.argvs]
    assert cmds.index("cp") < cmds.index("tee") < cmds.index("mv")
    tee = next(a for a in host.argvs if a[0] == "tee")
    assert tee == ["tee", "/etc/rancher/k3s/config.yaml.phase22.tmp"]
    # same content again: a no-op
    assert not node.write_file("/etc/rancher/k3s/config.yaml", new).changed
    # a second change in the same run keeps the FIRST backup (the pre-run state)
    w2 = node.write_file("/etc/rancher/k3s/config.yaml", new + "x: 1\n")
    assert w2.backup_path == w.backup_path
    assert host.files[w.backup_path] == b"token: K10abc::server:xyz\n"
    # restore byte for byte
    r = node.restore_file("/etc/rancher/k3s/config.yaml", w.backup_path)
    assert r.changed and host.files["/etc/rancher/k3s/config.yaml"] == b"token: K10abc::server:xyz\n"
    assert [x.status for x in j.entries(step="restore-file")] == ["done"]
    with pytest.raises(NodeError):
        node.restore_file("/etc/rancher/k3s/config.yaml", "/nope.bak")


def test_read_file_and_missing(server, tmp_path):
    server.host.files["/etc/hostname"] = b"set-hog\n"
    node = make_node(server, tmp_path)
    assert node.read_file("/etc/hostname") == "set-hog\n"
    assert node.exists("/etc/hostname") and not node.exists("/etc/none")
    with pytest.raises(NodeError):
        node.read_file("/etc/none")


def test_iptables_summary_and_remove_chains(server, tmp_path):
    server.host.iptables = iptables_fixture()
    node = make_node(server, tmp_path)
    s = node.iptables_summary()
    assert s.chains["KUBE-SVC"] == 3 and s.flannel_forward_rules == 3
    res = node.remove_chains(["KUBE-SVC", "KUBE-SEP", "KUBE-SERVICES", "KUBE-ROUTER", "FLANNEL"],
                             comments=["flanneld"])
    assert res.changed and res.before.chains["KUBE-SVC"] == 3
    assert res.after.count("KUBE-SVC") == 0 and res.after.count("KUBE-ROUTER") == 0
    assert res.after.flannel_forward_rules == 0
    # restored through stdin, no shell pipe in any command line
    assert all("|" not in line for line in server.host.lines)
    assert "KUBE-FIREWALL" in server.host.iptables
    again = node.remove_chains(["KUBE-SVC"])
    assert not again.changed


def test_iptables_chains_counts_what_the_summary_counts(server, tmp_path):
    server.host.iptables = iptables_fixture()
    node = make_node(server, tmp_path)
    c, s = node.iptables_chains(), node.iptables_summary()
    assert c.chains == s.chains and c.chains["KUBE-SVC"] == 3
    assert (c.total_chains, c.tables) == (s.total_chains, s.tables)


def test_delete_interface_idempotent(server, tmp_path):
    server.host.links = {"flannel.1"}
    node = make_node(server, tmp_path)
    assert node.delete_interface("flannel.1") is True
    assert node.delete_interface("flannel.1") is False
    assert node.k3s_version().version == (1, 30, 4)


def test_from_params_orders_servers_first(tmp_path):
    params = SimpleNamespace(
        target=SimpleNamespace(kind="twin", name="minicloud"),
        ssh=SimpleNamespace(user="ops", key_path="/k", known_hosts="/kh", trust_on_first_use=False,
                            connect_timeout=5, sudo=True),
        nodes=[SimpleNamespace(name="a1", role="agent", address="127.0.0.1", port=2202, user=None),
               SimpleNamespace(name="s1", role="server", address="127.0.0.1", port=2201, user="root")],
        paths=SimpleNamespace(backup_dir="/var/backups/x"),
        limits=SimpleNamespace(timeouts=SimpleNamespace(ssh_command=33)))
    nodes = Node.from_params(params)
    assert [n.name for n in nodes] == ["s1", "a1"]
    assert nodes[0].user == "root" and nodes[1].user == "ops"
    assert nodes[1].port == 2202 and nodes[1].backup_dir == "/var/backups/x"
    assert nodes[1].command_timeout == 33 and nodes[0].kind == "twin"
    shlex.split(Node.quote("x %s", "a b"))


def test_other_key_type_known_is_refused_even_with_tofu(server, tmp_path):
    rsa = paramiko.RSAKey.generate(1024)
    node = make_node(server, tmp_path, known=False, trust_on_first_use=True)
    line = f"[127.0.0.1]:{server.port} ssh-rsa {rsa.get_base64()}\n"
    (tmp_path / "known_hosts").write_text(line)
    with pytest.raises(HostKeyError) as ei:
        node.run("uname -r")
    assert "MISMATCH" in str(ei.value) and "ssh-keygen -R" in str(ei.value)
    assert (tmp_path / "known_hosts").read_text() == line     # nothing appended
    assert server.host.lines == []


def test_client_socket_sends_small_packets_at_once(server, tmp_path):
    # TCP_NODELAY: a command's few small packets are not held for the peer's delayed ACK
    node = make_node(server, tmp_path)
    assert node.run("uname -r").ok
    sock = node.client().get_transport().sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    node.close()


def test_transport_prefers_gcm_and_takes_large_packets(server, tmp_path):
    # AES-GCM first (one pass, no separate HMAC) when the server offers it; a node may
    # send 128 KiB packets in an 8 MiB window (fewer wake-ups per iptables dump)
    node = make_node(server, tmp_path)
    r = node.run("spew %s %s", 1_000_000, 0, timeout=60)
    assert r.rc == 0 and r.stdout == "o" * 1_000_000
    t = node.client().get_transport()
    assert t.remote_cipher == t.local_cipher == "aes128-gcm@openssh.com"
    assert t.default_max_packet_size == nodes_mod.MAX_PACKET == 1 << 17
    assert t.default_window_size == nodes_mod.WINDOW
    node.close()


def test_settled_connection_blocks_and_a_close_wakes_its_reader(server, tmp_path):
    # During the handshake the reader's socket has paramiko's timeout, made 1 s by the
    # override of the private Transport._active_check_timeout (0.1 s): if paramiko renames
    # it, the override silently stops working, so this fails instead. Once connected the
    # socket blocks (one system call per recv/send, no idle wake-ups), and a close must
    # then shut it down: closing the descriptor alone leaves the reader blocked in recv
    # and the connection open on the node's side.
    assert "_active_check_timeout" in vars(paramiko.Transport)
    assert ssh_transport.NodeTransport._active_check_timeout == 1.0
    node = make_node(server, tmp_path)
    assert node.run("uname -r").ok
    t = node.client().get_transport()
    assert t.sock.gettimeout() is None
    peer = server._transports[-1]
    assert peer.is_active()
    node.close()
    t.join(10)
    assert not t.is_alive()             # the reader returned from its blocked recv
    peer.join(10)
    assert not peer.is_active()         # and the node saw the connection end


def test_large_stdout_and_stderr_are_drained_together(server, tmp_path):
    # both beyond the channel window (nodes.WINDOW): reading one to EOF first would deadlock
    node = make_node(server, tmp_path)
    out, err = nodes_mod.WINDOW + 3_000_000, nodes_mod.WINDOW + 1_500_000
    r = node.run("spew %s %s", out, err, timeout=60)
    assert r.rc == 0 and r.stdout == "o" * out and r.stderr == "e" * err
    node.close()


def test_a_command_past_its_timeout_is_a_node_error(server, tmp_path):
    node = make_node(server, tmp_path)
    with pytest.raises(NodeError, match="timed out after 0.3s"):
        node.run("sleep %s", 3, timeout=0.3)
    assert node.run("uname -r").ok       # the next command reconnects
    node.close()
