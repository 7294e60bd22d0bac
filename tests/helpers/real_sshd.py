"""A real OpenSSH ``sshd`` on 127.0.0.1, self-contained in one folder, for tests.

A real k3s node runs OpenSSH's sshd, not paramiko's server or the twin's asyncssh, so the
runbook's SSH path (:meth:`runbook.nodes.Node.run`) is also tested against the real one.
:class:`RealSSHD` writes its own ``sshd_config`` (``-f``), host keys made by
``ssh-keygen`` (ed25519, ECDSA, RSA), a client key and its ``authorized_keys``, and a
``PidFile`` under the folder; it runs ``sshd -D -e`` (foreground, log to stderr, into
``sshd.log`` in the folder), listening on 127.0.0.1 only, allowing only the current user
by public key (``UsePAM no``, ``StrictModes no``).

It listens on several free loopback ports, each a way a node can behave
(``Match LocalPort``): :data:`PLAIN` runs commands, :data:`SFTP_ONLY` forces
``internal-sftp`` (every exec fails with OpenSSH's own message), :data:`NO_SESSIONS`
allows no session (``MaxSessions 0``: the channel open is refused), :data:`NO_TIMEOUT`
runs commands with a ``PATH`` (``SetEnv``) of a few programs and no ``timeout``, as a
node without coreutils' ``timeout``.

As root (CI) sshd separates privileges and needs ``/run/sshd``, made here if missing;
as an ordinary user it runs unprivileged and logs in only as that user. It is ready when
a TCP connection to it returns OpenSSH's banner (no sleeping); if it exits or stays
silent, the error carries its log.

Example:
    >>> with RealSSHD(tmp_path / "sshd") as sshd:          # doctest: +SKIP
    ...     node = sshd.node(tmp_path / "n1")
    ...     node.run("echo %s", "hi").stdout
    'hi\\n'
"""
from __future__ import annotations

import getpass
import os
import resource
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from helpers.required_tools import SBIN, find_command

#: The ways a node behaves, each on its own port (``Match LocalPort`` in the config).
PLAIN, SFTP_ONLY, NO_SESSIONS, NO_TIMEOUT = "plain", "sftp-only", "no-sessions", "no-timeout"
BEHAVIOURS = (PLAIN, SFTP_ONLY, NO_SESSIONS, NO_TIMEOUT)
#: The programs on :data:`NO_TIMEOUT`'s ``PATH`` (linked from this machine's).
NO_TIMEOUT_PROGRAMS = ("cat", "sleep", "sh", "printf", "sha256sum")
#: Host key types made with ``ssh-keygen``: the twin's (ed25519) and the other two a
#: node's known_hosts may pin.
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
#: The privilege separation folder of Debian's sshd (compiled in), needed when run as root.
PRIVSEP_DIR = Path("/run/sshd")
READY_SECONDS = 15.0


class SSHDError(RuntimeError):
    """sshd did not start or misbehaved; the message ends with its log."""


def find_sshd() -> str | None:
    """The absolute path of ``sshd`` (PATH first, then the sbin folders), or None.

    sshd re-executes itself for every connection and refuses to run from a relative path.
    """
    return find_command("sshd", SBIN)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RealSSHD:
    """An OpenSSH sshd in ``root`` (a folder of its own); a context manager.

    Args:
        root: the folder for keys, config, pid file and log (created).
        sshd: the sshd binary (absolute); keygen: ``ssh-keygen``.
        extra_config: lines added to the global part of ``sshd_config``.
    """

    def __init__(self, root: Path, *, sshd: str | None = None, keygen: str = "ssh-keygen",
                 extra_config: str = "") -> None:
        self.root = Path(root)
        self.sshd = sshd or find_sshd()
        if self.sshd is None:
            raise SSHDError("sshd not found (Debian package openssh-server)")
        self.keygen = keygen
        self.extra_config = extra_config
        self.user = getpass.getuser()
        self.ports = dict(zip(BEHAVIOURS, free_ports(len(BEHAVIOURS))))
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.client_key = self.root / "id_ed25519"
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ files
    def host_key(self, key_type: str) -> Path:
        """The private host key file of ``key_type`` (its public half is ``.pub`` next to it)."""
        return self.root / f"ssh_host_{key_type}_key"

    def _keygen(self, path: Path, key_type: str, comment: str) -> None:
        subprocess.run([self.keygen, "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True, timeout=60)

    def _write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for t in HOST_KEY_TYPES:
            self._keygen(self.host_key(t), t, f"test-host-{t}")
        self._keygen(self.client_key, "ed25519", "test-client")
        auth = self.root / "authorized_keys"
        auth.write_bytes(self.client_key.with_suffix(".pub").read_bytes())
        listen = "".join(f"ListenAddress 127.0.0.1:{p}\n" for p in self.ports.values())
        bin_dir = self.root / "bin-without-timeout"
        bin_dir.mkdir(exist_ok=True)
        for program in NO_TIMEOUT_PROGRAMS:
            found = find_command(program, ())
            if found and not (bin_dir / program).exists():
                (bin_dir / program).symlink_to(found)
        keys = "".join(f"HostKey {self.host_key(t)}\n" for t in HOST_KEY_TYPES)
        self.config.write_text(
            f"{listen}{keys}"
            f"AuthorizedKeysFile {auth}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AllowUsers {self.user}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPrintMotd no\nPrintLastLog no\n"
            "LogLevel VERBOSE\n"
            f"{self.extra_config}"
            f"Match LocalPort {self.ports[SFTP_ONLY]}\n  ForceCommand internal-sftp\n"
            f"Match LocalPort {self.ports[NO_SESSIONS]}\n  MaxSessions 0\n"
            f"Match LocalPort {self.ports[NO_TIMEOUT]}\n  SetEnv PATH={bin_dir}\n")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "RealSSHD":
        """Write the files, check the config (``sshd -t``), start sshd and wait until every
        port answers with OpenSSH's banner."""
        self._write_files()
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        check = subprocess.run([self.sshd, "-t", "-f", str(self.config)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise SSHDError(f"sshd -t rejected {self.config}:\n{check.stderr}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + READY_SECONDS
            for port in self.ports.values():
                self._wait_banner(port, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_banner(self, port: int, deadline: float) -> None:
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SSHDError(f"sshd exited with status {self.proc.returncode} before it "
                                f"listened on 127.0.0.1:{port}\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    banner = s.recv(256)
                if banner.startswith(b"SSH-2.0-OpenSSH"):
                    return
                last = f"unexpected banner {banner[:60]!r}"
            except OSError as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.02)
        raise SSHDError(f"sshd did not answer on 127.0.0.1:{port} within {READY_SECONDS}s "
                        f"({last})\n{self.log_text()}")

    def stop(self) -> None:
        """Stop sshd (SIGTERM, then SIGKILL); its connection processes end with it."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def log_text(self) -> str:
        """sshd's log so far (for a failure message)."""
        try:
            return "--- sshd log ---\n" + self.log.read_text(errors="replace")
        except OSError as e:
            return f"--- sshd log unreadable: {e} ---"

    def __enter__(self) -> "RealSSHD":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients
    def known_hosts_line(self, key_type: str = "ed25519", behaviour: str = PLAIN,
                         pub: Path | None = None) -> str:
        """The known_hosts line for one host key (``pub``: another key's ``.pub`` instead)."""
        kind, b64 = (pub or Path(f"{self.host_key(key_type)}.pub")).read_text().split()[:2]
        return f"[127.0.0.1]:{self.ports[behaviour]} {kind} {b64}\n"

    def node(self, folder: Path, name: str = "set-hog", role: str = "server", *,
             behaviour: str = PLAIN, known_hosts: str | None = None, **kw: Any) -> Any:
        """A :class:`runbook.nodes.Node` that logs in here as the current user.

        Its known_hosts (``folder/known_hosts``) holds ``known_hosts`` if given, else every
        host key of this sshd; ``kind="twin"`` (the library refuses anything but loopback),
        no sudo, one connection attempt unless ``kw`` says otherwise.
        """
        from runbook.nodes import Node

        folder.mkdir(parents=True, exist_ok=True)
        kh = folder / "known_hosts"
        if known_hosts is None:
            known_hosts = "".join(self.known_hosts_line(t, behaviour) for t in HOST_KEY_TYPES)
        kh.write_text(known_hosts)
        kw.setdefault("kind", "twin")
        kw.setdefault("sudo", False)
        kw.setdefault("connect_attempts", 1)
        return Node(name, role, "127.0.0.1", self.ports[behaviour], self.user,
                    str(self.client_key), str(kh), **kw)

    # ------------------------------------------------------------------ inspection
    def effective(self, keyword: str, behaviour: str = PLAIN) -> list[str]:
        """A setting as sshd resolved it for a login here (``sshd -T -C``), e.g.
        ``ciphers``: its values in order."""
        spec = (f"user={self.user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,"
                f"lport={self.ports[behaviour]}")
        out = subprocess.run([self.sshd, "-T", "-f", str(self.config), "-C", spec],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == keyword.lower():
                return value.split(",")
        raise KeyError(f"sshd -T has no {keyword!r}")

    def connection_pids(self, client_port: int) -> list[int]:
        """The sshd processes holding the TCP connection from ``client_port`` (loopback),
        read from ``/proc/net/tcp`` and ``/proc/<pid>/fd``."""
        sockets = set()
        with open("/proc/net/tcp", encoding="ascii") as fh:
            for row in fh.read().splitlines()[1:]:
                f = row.split()
                local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
                if remote == client_port and local in self.ports.values():
                    sockets.add(f"socket:[{f[9]}]")
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue    # gone, or not ours to read
            if links & sockets:
                pids.append(int(pid))
        return pids

    def starve_descriptors(self, client_port: int) -> list[int]:
        """Let the sshd processes of one connection open no new file descriptor (their
        ``RLIMIT_NOFILE`` lowered to their lowest free one): sshd can then start no
        command on it, the way a node out of descriptors refuses an exec. Returns the pids."""
        pids = self.connection_pids(client_port)
        for pid in pids:
            used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
            lowest = next(i for i in range(len(used) + 1) if i not in used)
            hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest, hard))
        return pids
