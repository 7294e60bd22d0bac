"""A tiny paramiko SSH server on 127.0.0.1 for the nodes unit tests.

It is the transport boundary made real: host keys, public-key auth, exec channels with
stdin, stdout, stderr and exit status go over a real socket. Commands are NOT given to a
shell: the line is split with ``shlex`` (as a POSIX shell would split it), ``sudo -n`` is
stripped, and a few commands are interpreted over an in-memory file system, so tests can
see exactly which argv arrived.

Like a node, it runs ``timeout [-k D] [-s SIG] DURATION CMD...`` (GNU coreutils): the
wrapper is taken off before the command is interpreted (``argvs`` holds the command's
argv; ``lines`` what arrived, wrapper included) and ``sleep`` past DURATION is cut
there with exit 124. ``FakeHost(timeout_program=None)`` is a node without ``timeout``:
the shell (127) or sudo (1) says it is not found, as they do.
"""
from __future__ import annotations

import hashlib
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field

import paramiko

from runbook import facts


@dataclass
class FakeHost:
    files: dict[str, bytes] = field(default_factory=dict)
    iptables: str = ""
    links: set[str] = field(default_factory=set)
    argvs: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    #: "gnu": GNU coreutils' timeout; None: the node has none
    timeout_program: str | None = "gnu"
    #: the DURATION of each command that came under timeout (None: unbounded)
    limits: list[float | None] = field(default_factory=list)
    #: what ``sudo -n`` wants a password for: nothing (None), "timeout" only (a sudoers
    #: listing the runbook's commands with NOPASSWD, not timeout), or "all"
    sudo_asks_password: str | None = None

    def handle(self, line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        self.lines.append(line)
        argv = shlex.split(line)
        sudo = argv[:2] == ["sudo", "-n"]
        if sudo:
            argv = argv[2:]
            if self.sudo_asks_password == "all" or (
                    self.sudo_asks_password == "timeout" and argv[:1] == ["timeout"]):
                return 1, b"", b"sudo: a password is required\n"
        limit = None
        if argv[:1] == ["timeout"]:
            if self.timeout_program is None:
                if sudo:
                    return 1, b"", b"sudo: timeout: command not found\n"
                return 127, b"", b"bash: line 1: timeout: command not found\n"
            limit, argv = _gnu_timeout(argv[1:])
        self.limits.append(limit)
        self.argvs.append(argv)
        cmd, args = argv[0], argv[1:]
        f = self.files
        if cmd == "echo-args":
            return 0, ("\n".join(args) + "\n").encode(), b""
        if cmd == "cat":
            if args[0] not in f:
                return 1, b"", f"cat: {args[0]}: No such file or directory\n".encode()
            return 0, f[args[0]], b""
        if cmd == "test" and args[0] == "-e":
            return (0 if args[1] in f else 1), b"", b""
        if cmd == "sha256sum":
            return 0, f"{hashlib.sha256(f[args[0]]).hexdigest()}  {args[0]}\n".encode(), b""
        if cmd == "mkdir":
            return 0, b"", b""
        if cmd == "cp" and args[0] == "-p":
            f[args[2]] = f[args[1]]
            return 0, b"", b""
        if cmd == "mv" and args[0] == "-f":
            f[args[2]] = f.pop(args[1])
            return 0, b"", b""
        if cmd == "tee":
            f[args[0]] = stdin
            return 0, stdin, b""
        if cmd == "iptables-save":
            return 0, self.iptables.encode(), b""
        if cmd == "ip6tables-save":
            return 1, b"", b"ip6tables-save: not available\n"
        if cmd == "iptables-restore":
            self.iptables = stdin.decode()
            return 0, b"", b""
        if cmd == "uname":
            return 0, b"6.1.0-18-amd64\n", b""
        if cmd == "fail":
            return 3, b"partial\n", b"boom token: s3cr3t-value\n"
        if cmd == "spew":          # spew OUT ERR: that many bytes on stdout and stderr
            return 0, b"o" * int(args[0]), b"e" * int(args[1])
        if cmd == "sleep":
            if limit is not None and float(args[0]) > limit:
                time.sleep(limit)
                return 124, b"", b""       # GNU timeout: the command timed out
            time.sleep(float(args[0]))
            return 0, b"", b""
        if cmd == "exit-with":     # exit-with RC: ends at once with that status
            return int(args[0]), b"", b""
        if cmd == "ip" and args[:2] == ["link", "show"]:
            return (0, b"", b"") if args[2] in self.links else (1, b"", b"does not exist\n")
        if cmd == "ip" and args[:2] == ["link", "delete"]:
            self.links.discard(args[2])
            return 0, b"", b""
        if cmd == "k3s":
            return 0, b"k3s version v1.30.4+k3s1 (98262b5d)\n", b""
        return 127, b"", f"{cmd}: command not found\n".encode()


def _gnu_timeout(args: list[str]) -> tuple[float, list[str]]:
    """``timeout``'s options and DURATION taken off: (seconds, the command's argv)."""
    i = 0
    while args[i].startswith("-"):
        i += 2 if args[i] in ("-k", "-s") else 1
    return float(args[i]), args[i + 1:]


#: A command line holding this (under timeout's wrapper or not) is refused by the server
#: (a CHANNEL_FAILURE reply).
REFUSED = "refuse-this-exec"


class _Iface(paramiko.ServerInterface):
    def __init__(self, srv: "SSHTestServer") -> None:
        self.srv = srv

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.srv.user and key == self.srv.client_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if REFUSED in command.decode():   # as sshd refuses (ForceCommand, a policy)
            return False
        threading.Thread(target=self.srv._exec, args=(channel, command.decode()), daemon=True).start()
        return True


class SSHTestServer:
    """Start with ``with SSHTestServer() as srv:``; ``srv.port``, ``srv.host_key``."""

    def __init__(self, host: FakeHost | None = None, user: str = "ops") -> None:
        self.host = host or FakeHost()
        self.user = user
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "SSHTestServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # unblocks accept() in the thread
        except OSError:
            pass
        self.sock.close()
        for t in self._transports:
            t.close()
        self._thread.join(2)

    def write_client_key(self, path) -> str:
        self.client_key.write_private_key_file(str(path))
        return str(path)

    def node(self, tmp_path, name: str = "set-hog", role: str = "server", *, known: bool = True,
             **kw):
        """A :class:`runbook.nodes.Node` that logs in here (its key and known_hosts written
        under ``tmp_path``; ``known=False``: an empty known_hosts), one connection attempt."""
        from runbook.nodes import Node

        key = self.write_client_key(tmp_path / "id_ecdsa")
        kh = tmp_path / "known_hosts"
        if known:
            kh.write_text(self.known_hosts_line())
        kw.setdefault("kind", "twin")
        kw.setdefault("connect_attempts", 1)
        return Node(name, role, "127.0.0.1", self.port, self.user, key, str(kh), **kw)

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        k = key or self.host_key
        return f"[127.0.0.1]:{self.port} {k.get_name()} {k.get_base64()}\n"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self._transports.append(t)
            try:
                t.start_server(server=_Iface(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def _exec(self, chan: paramiko.Channel, line: str) -> None:
        data = bytearray()
        while True:
            chunk = chan.recv(65536)
            if not chunk:
                break
            data += chunk
        rc, out, err = self.host.handle(line, bytes(data))
        if out:
            chan.sendall(out)
        if err:
            chan.sendall_stderr(err)
        chan.send_exit_status(rc)
        chan.shutdown_write()
        chan.close()


def iptables_fixture() -> str:
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "fixtures" / "facts" / "iptables_save"
    return (root / "flannel-kube-proxy" / "output.txt").read_text()


__all__ = ["FakeHost", "REFUSED", "SSHTestServer", "iptables_fixture", "facts"]
