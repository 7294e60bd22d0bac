"""Nodes over SSH (paramiko): the one choke point for every command run on a node.

Every node command goes through :meth:`Node.run` (testinfra's ``Backend.run``): the
command is a format string with ``%s`` placeholders and each argument is passed through
``shlex.quote``, so a parameter can never become shell syntax. Host keys are checked
against the known_hosts file; an unknown key is refused unless trust-on-first-use is
switched on (and then the key is recorded in the journal), a mismatched key is always
refused. paramiko exceptions come out as :class:`NodeError` / :class:`HostKeyError`.

Facts (k3s version, kernel, interfaces, iptables summary) are a command here plus a pure
parser in :mod:`runbook.facts`. The node's parts live next door: host keys in
:mod:`runbook.hostkeys`, file operations in :mod:`runbook.nodefiles` (a part of
:class:`Node`), the fan-out over many nodes in :mod:`runbook.fleet` (re-exported here).

Example:
    >>> from runbook.nodes import Node, Fleet
    >>> nodes = Node.from_params(params, journal=journal)          # doctest: +SKIP
    >>> nodes[0].run("systemctl is-active %s", "k3s").stdout        # doctest: +SKIP
    'active\\n'
    >>> Fleet(nodes, 2).apply(lambda n: n.kernel(), description="kernel")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import paramiko

from . import facts, node_timeout
from .errors import HostKeyError, NodeError
from .evidence import redact_text
from .fleet import Fleet, FleetResult, NodeOutcome
from .hostkeys import HostKeyPolicy, fingerprint, known_hosts_name, update_hint
from .nodefiles import TMP_SUFFIX, NodeFiles, WriteResult
from .results import CommandResult
from .safety import require_loopback
from .ssh_exec import CommandTimeout, exec_channel
from .ssh_transport import MAX_PACKET, WINDOW, node_transport, settle  # noqa: F401 (MAX_PACKET, WINDOW: re-exported)

log = logging.getLogger("runbook.nodes")

#: Commands one node runs at once over its connection; more threads wait their turn.
#: OpenSSH's sshd allows ``MaxSessions`` (default 10) open sessions per connection and
#: refuses the next channel ("no more sessions"); a session is freed a moment after its
#: channel closes, so a new one opened right then may still be counted: two below.
MAX_SESSIONS = 8


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


# --------------------------------------------------------------------------- the node
class Node(NodeFiles):
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
        max_sessions: commands run at once on the connection (:data:`MAX_SESSIONS`).
        kill_after: seconds from the node's TERM to its KILL of a command past its timeout.

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
                 retry_backoff: float = 0.5, max_sessions: int = MAX_SESSIONS,
                 kill_after: float = node_timeout.KILL_AFTER) -> None:
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
        self._sessions = threading.BoundedSemaphore(max(1, int(max_sessions)))
        self.kill_after = kill_after
        # False once the node showed it cannot run timeout(1) (then: one warning)
        self._bounded = True

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
            client.set_missing_host_key_policy(HostKeyPolicy(self))
            try:
                client.connect(
                    hostname=self.address, port=self.port, username=self.user,
                    pkey=pkey, timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                    allow_agent=False, look_for_keys=False, transport_factory=node_transport)
                settle(client)
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
                    hint=update_hint(self.address, self.port, self.known_hosts)) from e
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

        The command runs under ``timeout`` on the node (:mod:`runbook.node_timeout`:
        ``sudo -n timeout -k 5 T <command>``, or ``... sh -c '<line>'`` for a line with
        shell syntax), so a command past its limit is stopped there, children included,
        not left running behind a closed channel. The result, the command log and errors
        show the command as given here, without that wrapper. A node without a usable
        ``timeout`` gets the command unbounded, with one warning per node.

        Args:
            cmd: a command with ``%s`` placeholders, e.g. ``"systemctl is-active %s"``.
            *args: the values for the placeholders, each shell-quoted.
            sudo: prefix ``sudo -n`` (when the node's ``sudo`` setting is on).
            stdin: bytes or text sent to the command, then EOF.
            timeout: seconds (default the node's ``command_timeout``; 0 or None: no limit).

        Raises:
            NodeError: the connection failed or the command timed out.

        Example:
            >>> node.run("iptables-save -t %s", "nat", sudo=True, timeout=60).command  # doctest: +SKIP
            'sudo -n iptables-save -t nat'
        """
        plain = self.quote(cmd, *args)
        root = sudo and self.sudo
        line = "sudo -n " + plain if root else plain
        timeout = timeout if timeout is not None else self.command_timeout
        data = stdin.encode() if isinstance(stdin, str) else stdin
        bounded = bool(timeout) and self._bounded
        why, refused = None, False
        start = time.monotonic()
        if bounded:
            assert timeout
            sent = node_timeout.bounded_line(cmd, plain, timeout, kill_after=self.kill_after,
                                             sudo=root, n_args=len(args))
            rc, out, err, elapsed = self._exec(line, sent, data, timeout)
            why = node_timeout.unsupported(rc, out, err)
            # sudo refused before anything ran: timeout(1) only (a sudoers that lists the
            # runbook's commands), or the command too? Asking for the command alone tells.
            refused = why is None and root and node_timeout.sudo_password(rc, out, err)
            if why is not None or refused:
                bounded = False           # the command never started: it runs alone below
            elif node_timeout.timed_out(rc, elapsed, timeout, self.kill_after):
                raise NodeError(node_timeout.stopped_message(timeout, rc, self.kill_after),
                                node=self.name, command=redact_text(line),
                                hint="raise the step's timeout if the node is merely slow, "
                                     "or look at what blocks the command (journalctl)")
        if not bounded:
            start = time.monotonic()
            rc, out, err, _ = self._exec(line, line, data, timeout)
            if why is not None:
                self._unbounded(why)
            elif refused and not node_timeout.sudo_password(rc, out, err):
                self._unbounded("sudo -n wants a password for timeout(1), not for the command: "
                                "the node's sudoers allows the runbook's commands but not timeout")
        result = CommandResult(self.name, line, rc, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - start)
        self._log(result)
        return result

    def _unbounded(self, why: str) -> None:
        """This node has no usable ``timeout``: its commands run unbounded from now on."""
        with self._lock:
            first, self._bounded = self._bounded, False
        if first:
            log.warning("[%s] the node cannot run timeout(1) (%s): its commands now run "
                        "without a limit on the node; a command past its timeout is only "
                        "abandoned and may keep running there (install coreutils)",
                        self.name, redact_text(why))

    def _exec(self, line: str, sent: str, data: bytes | None,
              timeout: float | None) -> tuple[int, bytes, bytes, float]:
        """Send ``sent`` (``line`` under its wrapper, or ``line`` itself) over a new
        channel: (exit status, stdout, stderr, seconds from the exec request to the exit).
        Errors name ``line``, the command as the runbook meant it."""
        client = self.client()
        transport = client.get_transport()
        wait = timeout
        if timeout and sent != line:
            wait = node_timeout.channel_timeout(timeout, self.kill_after)
        try:
            if transport is None:
                raise NodeError("SSH transport closed", node=self.name, command=redact_text(line))
            with self._sessions:
                start = time.monotonic()
                rc, out, err = exec_channel(transport, sent, data, wait, self.connect_timeout)
                return rc, out, err, time.monotonic() - start
        except CommandTimeout as e:
            self.close()
            if sent == line:
                raise NodeError(
                    f"command timed out after {timeout}s (not bounded on this node: it may "
                    "still be running there)", node=self.name, command=redact_text(line),
                    hint="check on the node (ps) before you retry") from e
            raise NodeError(
                f"command timed out after {timeout}s and timeout(1) on the node did not end "
                f"it within {wait - timeout:g}s more: the node or the connection is hung",
                node=self.name, command=redact_text(line),
                hint="check the node (ps, journalctl) before you retry") from e
        except NodeError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise NodeError(f"SSH channel failed: {type(e).__name__}: {e}", node=self.name,
                            command=redact_text(line)) from e

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

    # ------------------------------------------------------------------ journal
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

    # ------------------------------------------------------------------ services
    def systemctl(self, action: str, unit: str) -> CommandResult:
        """``sudo systemctl <action> <unit>``; raises on failure."""
        r = self.run("systemctl %s %s", action, unit, sudo=True)
        r.check_output()
        return r

    def is_active(self, unit: str) -> bool:
        """True when ``systemctl is-active unit`` says active."""
        return self.unit_state(unit).active

    def unit_state(self, unit: str) -> facts.UnitState:
        """``systemctl is-active unit``: the word (``active``, ``activating``, ``failed``...)."""
        return facts.parse_systemctl_is_active(self.run("systemctl is-active %s", unit).stdout)

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
        return self._both_tables(lambda text: facts.parse_iptables_save(text, prefixes), ipv6)

    def iptables_chains(self, *, ipv6: bool = True,
                        prefixes: Sequence[str] = facts.DEFAULT_PREFIXES) -> facts.IptablesChains:
        """Fact: chain declarations by prefix from ``iptables-save`` (+ ``ip6tables-save``),
        without reading the rules (:func:`runbook.facts.parse_iptables_chains`): what a
        fact table needs, at a fraction of :meth:`iptables_summary`'s cost on a node with
        thousands of rules."""
        return self._both_tables(lambda text: facts.parse_iptables_chains(text, prefixes), ipv6)

    def _both_tables(self, parse: Callable[[str], Any], ipv6: bool) -> Any:
        """``parse`` of ``iptables-save``, merged with that of ``ip6tables-save`` when asked
        (a node without IPv6 tables is not an error)."""
        out = parse(self._save(False))
        if ipv6:
            r = self.run("ip6tables-save", sudo=True)
            if r.ok:
                out = out.merged(parse(r.stdout))
        return out

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


__all__ = ["CommandResult", "WriteResult", "ChainRemoval", "KernelFact", "Node", "Fleet",
           "FleetResult", "NodeOutcome", "fingerprint", "known_hosts_name", "TMP_SUFFIX",
           "HostKeyPolicy"]
