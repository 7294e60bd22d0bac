"""Nodes over SSH (paramiko): the one choke point for every command run on a node.

Every node command goes through :meth:`Node.run` (testinfra's ``Backend.run``): the
command is a format string with ``%s`` placeholders and each argument is passed through
``shlex.quote``, so a parameter can never become shell syntax. Host keys are checked
against the known_hosts file; an unknown key is refused unless trust-on-first-use is
switched on (and then the key is recorded in the journal), a mismatched key is always
refused. paramiko exceptions come out as :class:`NodeError` / :class:`HostKeyError`.

Facts (k3s version, kernel, interfaces, iptables summary) are a command here plus a pure
parser in :mod:`runbook.facts`.

Example:
    >>> from runbook.nodes import Node, Fleet
    >>> nodes = Node.from_params(params, journal=journal)          # doctest: +SKIP
    >>> nodes[0].run("systemctl is-active %s", "k3s").stdout        # doctest: +SKIP
    'active\\n'
    >>> Fleet(nodes, 2).apply(lambda n: n.kernel(), description="kernel")  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import html
import json
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import paramiko

from . import facts
from .errors import HostKeyError, NodeError
from .evidence import redact_text
from .safety import require_loopback

T = TypeVar("T")
log = logging.getLogger("runbook.nodes")

#: Suffix of the temporary file written next to the target before the atomic ``mv``.
TMP_SUFFIX = ".phase22.tmp"


# --------------------------------------------------------------------------- results
@dataclass
class CommandResult:
    """The outcome of one command on one node.

    ``stdout``/``stderr`` are kept raw (parsers need them); every display of the result
    (``repr``, ``_repr_html_``, :meth:`summary`) is redacted.

    Attributes:
        node: node name; command: the quoted command line as sent; rc: exit status;
        stdout, stderr: decoded output; duration: seconds.
    """

    node: str
    command: str
    rc: int
    stdout: str
    stderr: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.rc == 0

    def check_output(self) -> str:
        """Return stdout with the trailing newline removed, or raise :class:`NodeError`."""
        if self.rc != 0:
            raise NodeError("command failed", node=self.node, command=redact_text(self.command),
                            rc=self.rc, stderr=redact_text(self.stderr))
        return self.stdout.rstrip("\n")

    def summary(self, limit: int = 500) -> str:
        """One redacted paragraph: command, status, start of the output."""
        out = redact_text(self.stdout.strip())[:limit]
        err = redact_text(self.stderr.strip())[:limit]
        text = f"[{self.node}] $ {redact_text(self.command)}  -> rc={self.rc} ({self.duration:.2f}s)"
        if out:
            text += "\n" + out
        if err:
            text += "\nstderr: " + err
        return text

    def __repr__(self) -> str:
        return (f"CommandResult(node={self.node!r}, command={redact_text(self.command)!r}, "
                f"rc={self.rc}, stdout={redact_text(self.stdout)[:200]!r}, "
                f"stderr={redact_text(self.stderr)[:200]!r}, duration={self.duration:.2f})")

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.summary(2000))}</pre>"


@dataclass
class WriteResult:
    """What :meth:`Node.write_file` / :meth:`Node.restore_file` did.

    Attributes:
        node, path; backup_path: where the previous content was copied (None when the
        file did not exist or no backup was asked); sha256_before (None if absent);
        sha256_after; changed: False when the content was already the wanted one.
    """

    node: str
    path: str
    backup_path: str | None
    sha256_before: str | None
    sha256_after: str
    changed: bool


@dataclass
class ChainRemoval:
    """Result of :meth:`Node.remove_chains`: the summaries before and after."""

    node: str
    prefixes: list[str]
    before: facts.IptablesSummary
    after: facts.IptablesSummary
    removed_lines: int
    changed: bool


@dataclass
class KernelFact:
    """``kernel()``: the parsed version tuple and the raw ``uname -r``."""

    version: tuple[int, int, int]
    raw: str
    parsed: facts.KernelVersion


# --------------------------------------------------------------------------- host keys
def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """The host pattern OpenSSH and paramiko use: ``host`` or ``[host]:port``."""
    return address if port == 22 else f"[{address}]:{port}"


def _update_hint(address: str, port: int, known_hosts: str) -> str:
    name = known_hosts_name(address, port)
    return (f"if the node was really reinstalled, verify the new key out of band, then run "
            f"`ssh-keygen -R '{name}' -f {known_hosts}` and re-scan it with "
            f"`ssh-keyscan -p {port} {address} >> {known_hosts}`; otherwise treat this as "
            "a possible man-in-the-middle and stop")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or accept-and-record them when trust-on-first-use is on.

    paramiko calls this only for keys it does not know; a key that differs from a known
    one raises ``BadHostKeyException`` in ``connect`` before we get here.
    """

    def __init__(self, node: "Node") -> None:
        self.node = node

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        n = self.node
        known = client.get_host_keys().lookup(hostname)
        if known:
            # The host is known with another key type: accepting this one, even under
            # trust-on-first-use, would let a key-type switch bypass the check.
            raise HostKeyError(
                f"SSH host key MISMATCH for {hostname}: got {key.get_name()} "
                f"{fingerprint(key)}, but known_hosts ({n.known_hosts}) only has "
                f"{', '.join(sorted(known.keys()))} for it; refusing to touch this node",
                node=n.name, hint=_update_hint(n.address, n.port, n.known_hosts))
        if not n.trust_on_first_use:
            raise HostKeyError(
                f"unknown SSH host key for {hostname} ({key.get_name()} {fingerprint(key)}): "
                f"not in {n.known_hosts}; refusing to connect",
                node=n.name,
                hint=(f"add the node's key to {n.known_hosts} after checking it out of band "
                      f"(`ssh-keyscan -p {n.port} {n.address}`), or set "
                      "ssh.trust_on_first_use: true in the params to accept and record it"))
        entry = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        path = Path(n.known_hosts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(entry)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if n.journal is not None:
            entry = n.journal.record("ssh", "trust-on-first-use", node=n.name, data={
                "host": hostname, "key_type": key.get_name(), "fingerprint": fingerprint(key),
                "known_hosts": str(path)})
            n._journal_done(entry, result={"accepted": True})


# --------------------------------------------------------------------------- the node
class Node:
    """One k3s node reached over SSH.

    Args:
        name: node name (as in Kubernetes); role: ``server`` or ``agent``.
        address, port, user, key_path: SSH endpoint and identity.
        known_hosts: the known_hosts file to verify host keys against.
        kind: the target kind (``twin`` refuses non-loopback addresses).
        trust_on_first_use: accept (and journal) an unknown host key.
        journal: an object with ``record(kind, action, node=, data=)``.
        connect_timeout: seconds for TCP connect and the SSH handshake.
        sudo: prefix privileged commands with ``sudo -n`` (False when the user is root).
        backup_dir: remote folder for file backups; run_id: suffix of backup files.
        command_log: a local file each command is appended to (redacted JSON lines).
        command_timeout: default timeout of a command, seconds.
        connect_attempts: connection attempts for refused/timeouts (backoff doubles).

    Example:
        >>> n = Node("set-hog", "server", "127.0.0.1", 2201, "ops", "id_ed25519",
        ...          "known_hosts", kind="twin")                         # doctest: +SKIP
        >>> n.run("cat %s", "/etc/hostname").check_output()             # doctest: +SKIP
    """

    def __init__(self, name: str, role: str, address: str, port: int, user: str,
                 key_path: str | None, known_hosts: str, *, kind: str,
                 trust_on_first_use: bool = False, journal: Any = None,
                 connect_timeout: float = 10, sudo: bool = True,
                 backup_dir: str = "/var/backups/phase22", run_id: str | None = None,
                 command_log: str | os.PathLike[str] | None = None,
                 command_timeout: float | None = 120, connect_attempts: int = 3,
                 retry_backoff: float = 0.5) -> None:
        self.name = name
        self.role = role
        self.address = address
        self.port = int(port)
        self.user = user
        self.key_path = str(key_path) if key_path else None
        self.known_hosts = str(known_hosts)
        self.kind = kind
        self.trust_on_first_use = trust_on_first_use
        self.journal = journal
        self.connect_timeout = connect_timeout
        self.sudo = sudo
        self.backup_dir = backup_dir
        self.run_id = run_id
        self.command_log = Path(command_log) if command_log else None
        self.command_timeout = command_timeout
        self.connect_attempts = max(1, int(connect_attempts))
        self.retry_backoff = retry_backoff
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Node({self.name!r}, role={self.role!r}, {self.user}@{self.address}:{self.port})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: Any, *, journal: Any = None, run_id: str | None = None,
                    command_log: str | os.PathLike[str] | None = None) -> list["Node"]:
        """Build the nodes of a validated params object (servers first, in file order)."""
        ssh = params.ssh
        kind = params.target.kind
        timeouts = getattr(getattr(params, "limits", None), "timeouts", None)
        cmd_timeout = getattr(timeouts, "ssh_command", None) if timeouts is not None else None
        backup_dir = getattr(getattr(params, "paths", None), "backup_dir", None) or "/var/backups/phase22"
        resolve = getattr(params, "resolve_path", None) or (lambda v: os.path.expanduser(v))
        out = []
        for spec in params.nodes:
            key = getattr(spec, "key_path", None) or getattr(ssh, "key_path", None)
            out.append(cls(
                spec.name, spec.role, spec.address, getattr(spec, "port", 22) or 22,
                getattr(spec, "user", None) or ssh.user,
                str(resolve(key)) if key else None, str(resolve(ssh.known_hosts)), kind=kind,
                trust_on_first_use=bool(getattr(ssh, "trust_on_first_use", False)),
                journal=journal, connect_timeout=getattr(ssh, "connect_timeout", 10) or 10,
                sudo=bool(getattr(ssh, "sudo", True)), backup_dir=str(backup_dir),
                run_id=run_id, command_log=command_log,
                command_timeout=cmd_timeout or 120))
        out.sort(key=lambda n: 0 if n.role == "server" else 1)
        return out

    # ------------------------------------------------------------------ connection
    def _connect(self) -> paramiko.SSHClient:
        require_loopback(self.address, kind=self.kind, what=f"SSH {self.name}")
        pkey = self._load_key()
        attempts: list[str] = []
        delay = self.retry_backoff
        for attempt in range(1, self.connect_attempts + 1):
            client = paramiko.SSHClient()
            try:
                if Path(self.known_hosts).exists():
                    client.load_host_keys(self.known_hosts)
            except (OSError, paramiko.SSHException) as e:
                raise HostKeyError(f"cannot read known_hosts {self.known_hosts}: {e}",
                                   node=self.name) from e
            client.set_missing_host_key_policy(_HostKeyPolicy(self))
            try:
                client.connect(
                    hostname=self.address, port=self.port, username=self.user,
                    pkey=pkey, timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                    allow_agent=False, look_for_keys=False)
                return client
            except HostKeyError:
                client.close()
                raise
            except paramiko.BadHostKeyException as e:
                client.close()
                raise HostKeyError(
                    f"SSH host key MISMATCH for {known_hosts_name(self.address, self.port)}: "
                    f"got {e.key.get_name()} {fingerprint(e.key)}, known_hosts "
                    f"({self.known_hosts}) has {fingerprint(e.expected_key)}; refusing to "
                    "touch this node", node=self.name,
                    hint=_update_hint(self.address, self.port, self.known_hosts)) from e
            except paramiko.AuthenticationException as e:
                client.close()
                raise NodeError(f"SSH authentication failed as {self.user!r} with key "
                                f"{self.key_path}: {e}", node=self.name,
                                hint="check ssh.user / ssh.key_path in the params") from e
            except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError,
                    socket.timeout, TimeoutError, EOFError) as e:
                # Retryable: the node may be rebooting or sshd restarting.
                client.close()
                attempts.append(f"attempt {attempt}: {type(e).__name__}: {e}")
                if attempt < self.connect_attempts:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise NodeError(
                    f"cannot connect to {self.address}:{self.port} after "
                    f"{self.connect_attempts} attempts\n  " + "\n  ".join(attempts),
                    node=self.name, hint="is the node up and sshd listening?") from e
            except paramiko.SSHException as e:
                client.close()
                raise NodeError(f"SSH negotiation with {self.address}:{self.port} failed: {e}",
                                node=self.name) from e
            except OSError as e:
                client.close()
                raise NodeError(f"cannot connect to {self.address}:{self.port}: {e}",
                                node=self.name) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _load_key(self) -> paramiko.PKey | None:
        # Loading the key ourselves gives a clear error; paramiko's key_filename path
        # tries every key class and may report the last parse error instead of the
        # authentication failure.
        if not self.key_path:
            return None
        try:
            return paramiko.PKey.from_path(self.key_path)
        except paramiko.PasswordRequiredException as e:
            raise NodeError(f"SSH key {self.key_path} is passphrase-protected", node=self.name,
                            hint="use an unencrypted deploy key or an agent-less key file") from e
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise NodeError(f"cannot load SSH key {self.key_path}: {type(e).__name__}",
                            node=self.name, hint="check ssh.key_path in the params") from e

    def client(self) -> paramiko.SSHClient:
        """The connected SSH client (connects lazily, reconnects after a drop)."""
        with self._lock:
            c = self._client
            if c is not None:
                t = c.get_transport()
                if t is not None and t.is_active():
                    return c
                c.close()
            self._client = self._connect()
            return self._client

    def close(self) -> None:
        """Close the SSH connection (the next command reconnects)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the choke point
    @staticmethod
    def quote(cmd: str, *args: Any) -> str:
        """``cmd % tuple(shlex.quote(str(a)) for a in args)`` (testinfra's ``quote``)."""
        if not args:
            return cmd
        return cmd % tuple(shlex.quote(str(a)) for a in args)

    def run(self, cmd: str, *args: Any, sudo: bool = False, stdin: str | bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """Run one command on the node; never raises on a non-zero exit status.

        Args:
            cmd: a command with ``%s`` placeholders, e.g. ``"systemctl is-active %s"``.
            *args: the values for the placeholders, each shell-quoted.
            sudo: prefix ``sudo -n`` (when the node's ``sudo`` setting is on).
            stdin: bytes or text sent to the command, then EOF.
            timeout: seconds (default the node's ``command_timeout``).

        Raises:
            NodeError: the connection failed or the command timed out.
        """
        line = self.quote(cmd, *args)
        if sudo and self.sudo:
            line = "sudo -n " + line
        timeout = timeout if timeout is not None else self.command_timeout
        client = self.client()
        start = time.monotonic()
        try:
            rc, out, err = self._exec(client, line, stdin, timeout)
        except NodeError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise NodeError(f"SSH channel failed: {type(e).__name__}: {e}", node=self.name,
                            command=redact_text(line)) from e
        result = CommandResult(self.name, line, rc, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - start)
        self._log(result)
        return result

    def _exec(self, client: paramiko.SSHClient, line: str, stdin: str | bytes | None,
              timeout: float | None) -> tuple[int, bytes, bytes]:
        transport = client.get_transport()
        if transport is None:
            raise NodeError("SSH transport closed", node=self.name, command=redact_text(line))
        chan = transport.open_session(timeout=self.connect_timeout)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            chan.settimeout(timeout)
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            # Drain stdout and stderr together: reading one to EOF first can deadlock
            # when the other fills the channel window.
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    if chan.eof_received or chan.closed:
                        break
                if deadline is not None and time.monotonic() > deadline:
                    raise NodeError(f"command timed out after {timeout}s", node=self.name,
                                    command=redact_text(line))
                if not got:
                    time.sleep(0.005)
            rc = chan.recv_exit_status()
            return rc, bytes(out), bytes(err)
        except socket.timeout as e:
            raise NodeError(f"command timed out after {timeout}s", node=self.name,
                            command=redact_text(line)) from e
        finally:
            chan.close()

    def _log(self, r: CommandResult) -> None:
        log.debug("[%s] $ %s -> rc=%s (%.2fs)", r.node, redact_text(r.command), r.rc, r.duration)
        if self.command_log is None:
            return
        entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                 "node": r.node, "command": redact_text(r.command), "rc": r.rc,
                 "duration": round(r.duration, 3)}
        self.command_log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.command_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def run_expect(self, expected: Iterable[int], cmd: str, *args: Any, **kw: Any) -> CommandResult:
        """Run and raise :class:`NodeError` unless the exit status is in ``expected``."""
        r = self.run(cmd, *args, **kw)
        if r.rc not in set(expected):
            raise NodeError(f"unexpected exit status (expected {sorted(set(expected))})",
                            node=self.name, command=redact_text(r.command), rc=r.rc,
                            stderr=redact_text(r.stderr))
        return r

    def check_output(self, cmd: str, *args: Any, **kw: Any) -> str:
        """Run and return stdout (stripped of the final newline); raise on failure."""
        return self.run(cmd, *args, **kw).check_output()

    # ------------------------------------------------------------------ files
    def read_file(self, path: str) -> str:
        """Content of a remote file, read with ``sudo cat`` (the SSH user is not root).

        Raises:
            NodeError: the file is missing or unreadable.
        """
        r = self.run("cat %s", path, sudo=True)
        if not r.ok:
            raise NodeError(f"cannot read {path}", node=self.name, command=r.command,
                            rc=r.rc, stderr=redact_text(r.stderr))
        return r.stdout

    def exists(self, path: str) -> bool:
        """True when ``path`` exists on the node (``sudo test -e``)."""
        return self.run_expect([0, 1], "test -e %s", path, sudo=True).rc == 0

    def sha256(self, path: str) -> str | None:
        """Hex sha256 of a remote file, or None when it does not exist."""
        if not self.exists(path):
            return None
        out = self.run("sha256sum %s", path, sudo=True).check_output()
        digest = out.split()[0] if out.split() else ""
        if len(digest) != 64:
            raise NodeError(f"unexpected sha256sum output for {path}", node=self.name)
        return digest.lower()

    def backup_path(self, path: str) -> str:
        """``<backup_dir>/<basename>.<run-id or UTC timestamp>.bak``."""
        stamp = self.run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.backup_dir.rstrip('/')}/{Path(path).name}.{stamp}.bak"

    def write_file(self, path: str, text: str | bytes, *, backup: bool = True,
                   mode: str | None = None) -> WriteResult:
        """Replace a remote file atomically, after a backup, and verify it.

        Steps: journal the intent (node, path, backup, sha256 before/after); ``sudo cp
        -p`` the current file to :meth:`backup_path` (unless that backup already exists:
        the first backup of a run, the pre-run state, is never overwritten); ``sudo cp -p`` it to
        ``<path>.phase22.tmp`` too (so the new file keeps owner and mode), write the
        content with ``sudo tee`` from stdin, ``sudo mv`` it onto ``path``; check the
        sha256. A file that already has the content is left alone (``changed=False``).

        Args:
            path: remote path; text: the new content; backup: copy the old file first;
            mode: ``chmod`` mode for the new file (e.g. ``"0600"``), default: keep.

        Raises:
            NodeError: a step failed or the sha256 after the write is not the expected one.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        want = hashlib.sha256(data).hexdigest()
        before = self.sha256(path)
        if before == want and mode is None:
            return WriteResult(self.name, path, None, before, want, changed=False)
        bpath = self.backup_path(path) if (backup and before is not None) else None
        entry = self._journal("write-file", f"write {path}", {
            "path": path, "backup": bpath, "sha256_before": before, "sha256_after": want})
        try:
            self._write(path, data, bpath, before, mode)
            after = self.sha256(path)
            if after != want:
                raise NodeError(f"{path} has sha256 {after} after the write, expected {want}",
                                node=self.name,
                                hint=f"the previous content is in {bpath}" if bpath else None)
        except Exception as e:
            self._journal_done(entry, error=e)
            raise
        self._journal_done(entry, result={"sha256_after": want})
        return WriteResult(self.name, path, bpath, before, want, changed=True)

    def _journal(self, step: str, action: str, data: dict[str, Any]) -> Any:
        if self.journal is None:
            return None
        return self.journal.record(step, action, node=self.name, data=data)

    def _journal_done(self, entry: Any, *, result: Any = None, error: BaseException | None = None) -> None:
        # runbook.journal.Journal marks entries done/failed; a duck-typed journal may not.
        if entry is None or self.journal is None:
            return
        if error is not None and hasattr(self.journal, "fail"):
            self.journal.fail(entry, error)
        elif error is None and hasattr(self.journal, "complete"):
            self.journal.complete(entry, result)

    def _write(self, path: str, data: bytes, bpath: str | None, before: str | None,
               mode: str | None) -> None:
        # The first backup of a run is the pre-run state the rollback needs: a second
        # write in the same run must not overwrite it with an intermediate version.
        if bpath and not self.exists(bpath):
            self.run("mkdir -p %s", self.backup_dir, sudo=True).check_output()
            self.run("cp -p %s %s", path, bpath, sudo=True).check_output()
        tmp = path + TMP_SUFFIX
        if before is not None:
            self.run("cp -p %s %s", path, tmp, sudo=True).check_output()
        r = self.run("tee %s", tmp, sudo=True, stdin=data)
        # tee echoes the content (possibly a secret): never keep it around.
        r.stdout = ""
        r.check_output()
        if mode:
            self.run("chmod %s %s", mode, tmp, sudo=True).check_output()
        self.run("mv -f %s %s", tmp, path, sudo=True).check_output()

    def restore_file(self, path: str, backup_path: str) -> WriteResult:
        """Restore ``path`` byte-for-byte from ``backup_path`` (copy, then atomic ``mv``).

        Raises:
            NodeError: the backup is missing or the restored file differs from it.
        """
        want = self.sha256(backup_path)
        if want is None:
            raise NodeError(f"backup {backup_path} does not exist; cannot restore {path}",
                            node=self.name)
        before = self.sha256(path)
        if before == want:
            return WriteResult(self.name, path, backup_path, before, want, changed=False)
        entry = self._journal("restore-file", f"restore {path} from {backup_path}", {
            "path": path, "backup": backup_path, "sha256_before": before, "sha256_after": want})
        try:
            tmp = path + TMP_SUFFIX
            self.run("cp -p %s %s", backup_path, tmp, sudo=True).check_output()
            self.run("mv -f %s %s", tmp, path, sudo=True).check_output()
            after = self.sha256(path)
            if after != want:
                raise NodeError(f"{path} has sha256 {after} after restore, backup has {want}",
                                node=self.name)
        except Exception as e:
            self._journal_done(entry, error=e)
            raise
        self._journal_done(entry, result={"sha256_after": want})
        return WriteResult(self.name, path, backup_path, before, want, changed=True)

    def remove_file(self, path: str) -> bool:
        """``sudo rm -f``; returns True when the file existed (idempotent)."""
        existed = self.exists(path)
        if existed:
            self.run("rm -f %s", path, sudo=True).check_output()
        return existed

    # ------------------------------------------------------------------ services
    def systemctl(self, action: str, unit: str) -> CommandResult:
        """``sudo systemctl <action> <unit>``; raises on failure."""
        r = self.run("systemctl %s %s", action, unit, sudo=True)
        r.check_output()
        return r

    def is_active(self, unit: str) -> bool:
        """True when ``systemctl is-active unit`` says active."""
        r = self.run("systemctl is-active %s", unit)
        return facts.parse_systemctl_is_active(r.stdout).active

    def reboot(self) -> None:
        """Ask the node to reboot; the connection drops and the next command reconnects."""
        try:
            self.run("systemctl reboot", sudo=True, timeout=15)
        except NodeError:
            pass  # the channel may die with the node: that is the point
        finally:
            self.close()

    # ------------------------------------------------------------------ facts
    def k3s_version(self) -> facts.K3sVersion:
        """Fact: ``k3s --version``."""
        return facts.parse_k3s_version(self.check_output("k3s --version"))

    def kernel(self) -> KernelFact:
        """Fact: ``uname -r`` (version tuple and raw string)."""
        k = facts.parse_kernel(self.check_output("uname -r"))
        return KernelFact(k.version, k.raw, k)

    def interfaces(self) -> list[facts.Interface]:
        """Fact: ``ip -o link show``."""
        return facts.parse_ip_link(self.check_output("ip -o link show"))

    def _save(self, ipv6: bool) -> str:
        return self.run("ip6tables-save" if ipv6 else "iptables-save", sudo=True).check_output() + "\n"

    def iptables_summary(self, *, ipv6: bool = True,
                         prefixes: Sequence[str] = facts.DEFAULT_PREFIXES) -> facts.IptablesSummary:
        """Fact: chains and rules by prefix from ``iptables-save`` (+ ``ip6tables-save``)."""
        s = facts.parse_iptables_save(self._save(False), prefixes)
        if ipv6:
            r = self.run("ip6tables-save", sudo=True)
            if r.ok:  # a node without IPv6 tables is not an error
                s = s.merged(facts.parse_iptables_save(r.stdout, prefixes))
        return s

    def remove_chains(self, prefixes: Sequence[str], *, comments: Sequence[str] = (),
                      ipv6: bool = True) -> ChainRemoval:
        """Remove every chain (and jump to it) of ``prefixes``, without a shell pipe.

        Reads ``iptables-save``, filters it in Python (:func:`runbook.facts.filter_iptables`)
        and feeds the result to ``iptables-restore`` on stdin. Idempotent.

        Example:
            >>> node.remove_chains(["KUBE-SVC", "KUBE-SEP", "KUBE-ROUTER"])  # doctest: +SKIP
        """
        prefixes = list(prefixes)
        families = [False, True] if ipv6 else [False]
        before = after = None
        removed = 0
        changed = False
        for v6 in families:
            r = self.run("ip6tables-save" if v6 else "iptables-save", sudo=True)
            if not r.ok:
                if v6:
                    continue
                r.check_output()
            dump = r.stdout
            sb = facts.parse_iptables_save(dump, prefixes)
            new = facts.filter_iptables(dump, prefixes, comments=comments)
            if new != dump:
                removed += len(dump.splitlines()) - len(new.splitlines())
                self.run("ip6tables-restore" if v6 else "iptables-restore", sudo=True,
                         stdin=new).check_output()
                changed = True
                r2 = self.run("ip6tables-save" if v6 else "iptables-save", sudo=True)
                sa = facts.parse_iptables_save(r2.check_output() + "\n", prefixes)
            else:
                sa = sb
            before = sb if before is None else before.merged(sb)
            after = sa if after is None else after.merged(sa)
        assert before is not None and after is not None
        return ChainRemoval(self.name, prefixes, before, after, removed, changed)

    def delete_interface(self, name: str) -> bool:
        """``ip link delete <name>``; True if it existed, False if already absent."""
        r = self.run("ip link show %s", name)
        if not r.ok:
            return False
        self.run("ip link delete %s", name, sudo=True).check_output()
        return True


# --------------------------------------------------------------------------- fleet
@dataclass
class NodeOutcome(Generic[T]):
    """One node's outcome in a :class:`FleetResult`.

    Attributes:
        node, role; status: ``ok``, ``failed`` or ``skipped``; value: what the
        operation returned; error: the exception (failed) or reason (skipped);
        batch: 0-based batch number (None when not reached); duration: seconds.
    """

    node: str
    role: str
    status: str
    value: T | None = None
    error: str | None = None
    batch: int | None = None
    duration: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)


@dataclass
class FleetResult(Generic[T]):
    """Per-node outcomes of :meth:`Fleet.apply`, in the order nodes were planned.

    ``frame()`` columns: ``node``, ``role``, ``batch``, ``status`` (ok/failed/skipped),
    ``error``, ``duration_s``, ``value``.
    """

    description: str
    outcomes: list[NodeOutcome[T]]

    @property
    def ok(self) -> bool:
        """True when every node succeeded."""
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def failed(self) -> list[NodeOutcome[T]]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def skipped(self) -> list[NodeOutcome[T]]:
        return [o for o in self.outcomes if o.status == "skipped"]

    def values(self) -> dict[str, T | None]:
        """node -> value for the nodes that succeeded."""
        return {o.node: o.value for o in self.outcomes if o.status == "ok"}

    @property
    def df(self):  # -> pandas.DataFrame
        """Alias of :meth:`frame`."""
        return self.frame()

    def frame(self):  # -> pandas.DataFrame
        """The outcomes as a pandas DataFrame (columns documented on the class)."""
        import pandas as pd  # noqa: PLC0415
        return pd.DataFrame([{
            "node": o.node, "role": o.role, "batch": o.batch, "status": o.status,
            "error": redact_text(o.error) if o.error else None,
            "duration_s": round(o.duration, 2),
            "value": redact_text(str(o.value)) if o.value is not None else None,
        } for o in self.outcomes], columns=["node", "role", "batch", "status", "error",
                                            "duration_s", "value"])

    def raise_for_failures(self) -> "FleetResult[T]":
        """Raise :class:`NodeError` naming failed and untouched nodes, if any failed."""
        if self.failed:
            lines = [f"{o.node}: {o.error}" for o in self.failed]
            untouched = [o.node for o in self.skipped]
            msg = f"{self.description}: failed on {len(self.failed)} node(s)\n  " + "\n  ".join(lines)
            if untouched:
                msg += "\n  not reached (left untouched): " + ", ".join(untouched)
            first = self.failed[0].exception
            err = NodeError(msg, node=None)
            if first is not None:
                raise err from first
            raise err
        return self

    def _repr_html_(self) -> str:
        head = (f"<p><b>{html.escape(self.description)}</b>: "
                f"{'all ok' if self.ok else 'FAILED'}</p>")
        return head + self.frame().to_html(index=False, escape=True)


class Fleet:
    """Apply an operation to nodes: servers one at a time, then agents in batches.

    Args:
        nodes: objects with ``name`` and ``role`` (normally :class:`Node`).
        batch_size: agents handled concurrently (``limits.agent_batch_size``).

    Example:
        >>> Fleet(nodes, 2).apply(lambda n: n.systemctl("restart", "k3s-agent"),
        ...                       description="restart agents").raise_for_failures()  # doctest: +SKIP
    """

    def __init__(self, nodes: Sequence[Any], batch_size: int = 1) -> None:
        self.nodes = list(nodes)
        self.batch_size = max(1, int(batch_size))

    def batches(self) -> list[list[Any]]:
        """The plan: one batch per server (in order), then agents by ``batch_size``."""
        servers = [n for n in self.nodes if n.role == "server"]
        agents = [n for n in self.nodes if n.role != "server"]
        plan = [[s] for s in servers]
        for i in range(0, len(agents), self.batch_size):
            plan.append(agents[i:i + self.batch_size])
        return plan

    def apply(self, op: Callable[[Any], T], *, description: str) -> FleetResult[T]:
        """Run ``op(node)`` batch by batch; stop after the first batch with a failure.

        Nodes of later batches are not touched and are reported as
        ``skipped: not reached``. Exceptions are caught per node and recorded.
        """
        plan = self.batches()
        outcomes: dict[str, NodeOutcome[T]] = {}
        stopped = False
        for b, batch in enumerate(plan):
            if stopped:
                for n in batch:
                    outcomes[n.name] = NodeOutcome(n.name, n.role, "skipped",
                                                   error="skipped: not reached")
                continue
            if len(batch) == 1:
                results = [self._one(op, batch[0], b)]
            else:
                with cf.ThreadPoolExecutor(max_workers=len(batch)) as ex:
                    results = list(ex.map(lambda n: self._one(op, n, b), batch))
            for o in results:
                outcomes[o.node] = o
            if any(o.status == "failed" for o in results):
                stopped = True
        order = [n.name for batch in plan for n in batch]
        return FleetResult(description, [outcomes[name] for name in order])

    @staticmethod
    def _one(op: Callable[[Any], T], node: Any, batch: int) -> NodeOutcome[T]:
        start = time.monotonic()
        try:
            value = op(node)
        except Exception as e:  # noqa: BLE001 - recorded per node, re-raised by the caller
            return NodeOutcome(node.name, node.role, "failed", error=f"{type(e).__name__}: {e}",
                               batch=batch, duration=time.monotonic() - start, exception=e)
        return NodeOutcome(node.name, node.role, "ok", value=value, batch=batch,
                           duration=time.monotonic() - start)


__all__ = ["CommandResult", "WriteResult", "ChainRemoval", "KernelFact", "Node", "Fleet",
           "FleetResult", "NodeOutcome", "fingerprint", "known_hosts_name"]
