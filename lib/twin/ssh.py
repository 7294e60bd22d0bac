"""One real SSH server per twin node (asyncssh), on 127.0.0.1 with an ephemeral port.

- Key authentication only: user ``ubuntu`` with the client key the twin generates
  (``<state_dir>/ssh/id_ed25519``); passwords and keyboard-interactive are refused.
- Each node has its own ed25519 host key; ``<state_dir>/ssh/known_hosts`` lists them as
  ``[127.0.0.1]:PORT ssh-ed25519 ...`` (OpenSSH and paramiko read it as is).
- ``exec`` channels run :meth:`twin.node.NodeModel.exec` (no shell; see the README's
  "Node commands"). Interactive shells are refused.
- SFTP sees the node's filesystem (paths map into the node root). It acts as user
  ``ubuntu`` without sudo, so it may read what ubuntu may read and write only under
  ``/home/ubuntu`` and ``/tmp``, as on a real node where ``/etc`` needs root; symlinks
  and hard links cannot be created.
- On the wire (:mod:`twin.ssh_wire`): a command's reply packets go out together and
  without asyncssh's IGNORE padding, as from OpenSSH; asyncssh logs warnings only.
- Latency: ``rt.faults.ssh_command_latency`` wall seconds are waited before each command
  runs (0 by default), for measurements that need a real node's command latency.
- Faults: a node in ``rt.faults.ssh_down`` (or taken down with :meth:`SSHServers.set_down`)
  refuses new connections, and its open sessions are closed, so their next command
  fails. A rebooting node drops its connections and refuses new ones until it is up.
"""
from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from pathlib import Path
from typing import Any

import asyncssh

from . import ssh_wire
from .node import HOME, NodeModel
from .ticker import Ticker

log = logging.getLogger("twin.ssh")

USER = "ubuntu"
# sshd's default umask: what a real node's sftp-server leaves of the modes a client asks for.
SFTP_UMASK = 0o022


def _node_path(path: bytes) -> str:
    p = path.decode("utf-8", errors="replace") or "."
    p = p if p.startswith("/") else posixpath.join(HOME, p)   # SFTP starts in the home dir
    return posixpath.normpath("/" + p.lstrip("/"))


class _NodeSFTP(asyncssh.SFTPServer):
    """SFTP as user ubuntu, with every path mapped into the node's root."""

    def __init__(self, chan: asyncssh.SSHServerChannel, node: NodeModel) -> None:
        super().__init__(chan)
        self.node = node
        self._written: dict[int, str] = {}

    # paths ------------------------------------------------------------------
    def map_path(self, path: bytes) -> bytes:
        try:
            return os.fsencode(self.node.host_path(_node_path(path)))
        except PermissionError as e:
            raise asyncssh.SFTPPermissionDenied(str(e)) from e

    def reverse_map_path(self, path: bytes) -> bytes:
        root = os.fsencode(self.node.files.host_root)
        if path == root:
            return b"/"
        if path.startswith(root + b"/"):
            return path[len(root):]
        raise asyncssh.SFTPNoSuchFile("File not found")

    def _need_read(self, path: bytes) -> str:
        n = _node_path(path)
        if not self.node.files.can_read(n, False):
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        return n

    def _need_write(self, path: bytes) -> str:
        n = _node_path(path)
        if not self.node.can_write(n, False):
            raise asyncssh.SFTPPermissionDenied(
                f"Permission denied: {n} (SFTP runs as ubuntu without sudo; write under "
                f"{HOME} or /tmp, then `sudo cp`)")
        return n

    def _attrs(self, n: str, st: os.stat_result) -> asyncssh.SFTPAttrs:
        attrs = asyncssh.SFTPAttrs.from_local(st)
        uid = 1000 if self.node.owner(n) == "ubuntu" else 0
        attrs.uid = attrs.gid = uid
        return attrs

    def format_user(self, uid: int | None) -> str:
        return "ubuntu" if uid == 1000 else "root"

    def format_group(self, gid: int | None) -> str:
        return "ubuntu" if gid == 1000 else "root"

    # files ------------------------------------------------------------------
    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        # The servers speak SFTP version 3 (asyncssh's default), so every open comes here
        # (open56, for versions 5 and 6, would skip these checks).
        writing = pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT |
                            asyncssh.FXF_TRUNC)
        n = self._need_write(path) if writing else self._need_read(path)
        if pflags & asyncssh.FXF_READ:
            self._need_read(path)
        local = self.map_path(path)
        created = writing and not os.path.lexists(local)
        f = super().open(path, pflags, attrs)
        if created:
            # The mode a real sftp-server gives (its umask, not the twin process's).
            perms = 0o666 if attrs.permissions is None else attrs.permissions
            os.chmod(local, perms & 0o7777 & ~SFTP_UMASK)
        if writing:
            self._written[id(f)] = n
        return f

    def close(self, file_obj: object) -> None:
        super().close(file_obj)
        n = self._written.pop(id(file_obj), None)
        if n is not None:
            self.node.emit("file-changed", path=n, op="write")

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        n = _node_path(path)
        if not self.node.files.can_traverse(n, False):
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        return self._attrs(n, os.stat(self.map_path(path)))

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        n = _node_path(path)
        if not self.node.files.can_traverse(n, False):
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        return self._attrs(n, os.lstat(self.map_path(path)))

    async def scandir(self, path: bytes):  # type: ignore[override]
        n = self._need_read(path)
        local = self.map_path(path)
        for name in (b".", b".."):
            yield asyncssh.SFTPName(name, attrs=self._attrs(n, os.stat(local)))
        with os.scandir(local) as entries:
            for e in entries:
                child = posixpath.join(n, os.fsdecode(e.name))
                yield asyncssh.SFTPName(os.fsencode(e.name),
                                        attrs=self._attrs(child, e.stat(follow_symlinks=False)))

    def remove(self, path: bytes) -> None:
        n = self._need_write(path)
        super().remove(path)
        self.node.emit("file-changed", path=n, op="remove")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        o, n = self._need_write(oldpath), self._need_write(newpath)
        super().rename(oldpath, newpath)
        self.node.emit("file-changed", path=o, op="remove")
        self.node.emit("file-changed", path=n, op="write")

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        o, n = self._need_write(oldpath), self._need_write(newpath)
        super().posix_rename(oldpath, newpath)
        self.node.emit("file-changed", path=o, op="remove")
        self.node.emit("file-changed", path=n, op="write")

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._need_write(path)
        super().mkdir(path, attrs)
        perms = 0o777 if attrs.permissions is None else attrs.permissions
        os.chmod(self.map_path(path), perms & 0o7777 & ~SFTP_UMASK)

    def rmdir(self, path: bytes) -> None:
        self._need_write(path)
        super().rmdir(path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._need_write(path)
        attrs.uid = attrs.gid = None   # chown is root's business
        super().setstat(path, attrs)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def exit(self) -> None:
        # sshd reports the exit status of sftp-server (0 after a clean session); scp in
        # SFTP mode exits 1 without it.
        chan = getattr(self, "_chan", None)
        if chan is not None and not chan.is_closing():
            chan.exit(0)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("the twin does not create symbolic links")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("the twin does not create hard links")


class _NodeSSHServer(asyncssh.SSHServer):
    """Authentication and connection bookkeeping for one node."""

    def __init__(self, owner: "SSHServers", node: str) -> None:
        self.owner = owner
        self.node = node
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        if self.owner.is_down(self.node):
            # The node is unreachable: drop the connection before the handshake ends.
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        self.owner._conns.setdefault(self.node, set()).add(conn)
        ssh_wire.tune(conn)

    def auth_completed(self) -> None:
        # asyncssh's own INFO lines are off (ssh_wire): one line per login, as sshd logs.
        peer = self.conn.get_extra_info("peername") if self.conn is not None else None
        log.info("ssh: %s: accepted publickey for %s from %s", self.node, USER,
                 f"{peer[0]} port {peer[1]}" if peer else "?")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.owner._conns.get(self.node, set()).discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True   # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return (username == USER and self.owner._client_public is not None and
                key.public_data == self.owner._client_public.public_data)


class SSHServers:
    """Runtime component ``ssh``: one SSH/SFTP server per node of ``rt.nodes``.

    After ``start``, ``rt.endpoints["ssh"]`` maps node names to ports on 127.0.0.1 and
    ``<state_dir>/ssh`` holds ``id_ed25519``, ``id_ed25519.pub`` and ``known_hosts``.

    Example (a paramiko client, as the runbook connects)::

        client = paramiko.SSHClient()
        client.load_host_keys(state_dir / "ssh" / "known_hosts")
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=ports["server-1"], username="ubuntu",
                       key_filename=str(state_dir / "ssh" / "id_ed25519"),
                       look_for_keys=False, allow_agent=False)
    """

    name = "ssh"

    def __init__(self) -> None:
        self.rt: Any = None
        self.ports: dict[str, int] = {}
        self.dir: Path | None = None
        self._servers: dict[str, asyncssh.SSHAcceptor] = {}
        self._host_keys: dict[str, asyncssh.SSHKey] = {}
        self._client_public: asyncssh.SSHKey | None = None
        self._conns: dict[str, set[asyncssh.SSHServerConnection]] = {}
        self._unsubscribe: list[Any] = []
        # rt.faults.ssh_down is the source of truth (the admin endpoint sets it directly):
        # this keeps each listener and its sessions in step with it (wall seconds).
        self._watch = Ticker("ssh: reconciling ssh_down", 0.05, self._reconcile,
                             sleep=asyncio.sleep, immediate=True, logger=log)
        self._lock = asyncio.Lock()

    @property
    def known_hosts(self) -> Path:
        assert self.dir is not None
        return self.dir / "known_hosts"

    @property
    def client_key(self) -> Path:
        assert self.dir is not None
        return self.dir / "id_ed25519"

    async def start(self, rt: Any) -> None:
        self.rt = rt
        ssh_wire.quiet_channel_logging()
        self.dir = Path(rt.state_dir) / "ssh"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        client = asyncssh.generate_private_key("ssh-ed25519", comment="twin-runbook")
        self._client_public = client.convert_to_public()
        key_path = self.client_key
        # Create with 0600 from the start: the private key is never world-readable.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(client.export_private_key("openssh"))
        os.chmod(key_path, 0o600)
        (self.dir / "id_ed25519.pub").write_bytes(client.export_public_key("openssh"))
        for name, node in rt.nodes.items():
            self._host_keys[name] = asyncssh.generate_private_key("ssh-ed25519",
                                                                  comment=f"root@{name}")
            self._unsubscribe.append(node.subscribe(self._on_node_event))
        # every node's listener at once: at 500 nodes, one after the other costs seconds
        await asyncio.gather(*(self._listen(name, 0) for name in rt.nodes))
        self.ports = {name: self.ports[name] for name in rt.nodes}   # in the nodes' order
        self._write_known_hosts()
        rt.endpoints["ssh"] = dict(self.ports)
        self._watch.start()

    async def _reconcile(self) -> None:
        async with self._lock:
            down = set(getattr(self.rt.faults, "ssh_down", set()) or set())
            for name in self.ports:
                if name in down and name in self._servers:
                    server = self._servers.pop(name)
                    server.close()
                    await server.wait_closed()
                    self._drop(name)
                    log.info("ssh: %s is down (connections refused)", name)
                elif name not in down and name not in self._servers:
                    await self._listen(name, self.ports[name])
                    log.info("ssh: %s is up again on port %d", name, self.ports[name])

    def _write_known_hosts(self) -> None:
        lines = ["# twin SSH host keys: one server per node on 127.0.0.1"]
        for name, port in self.ports.items():
            pub = self._host_keys[name].export_public_key("openssh").decode().split()
            lines.append(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    async def _listen(self, name: str, port: int) -> None:
        node = self.rt.nodes[name]
        server = await asyncssh.create_server(
            lambda: _NodeSSHServer(self, name), "127.0.0.1", port,
            server_host_keys=[self._host_keys[name]],
            process_factory=lambda proc: self._handle(name, proc),
            sftp_factory=lambda chan: self._sftp(name, chan, node),
            allow_scp=True, encoding=None, line_editor=False, agent_forwarding=False,
            x11_forwarding=False, allow_pty=False, reuse_address=True,
            server_version="OpenSSH_8.9p1 Ubuntu-3ubuntu0.10")
        self._servers[name] = server
        self.ports[name] = server.sockets[0].getsockname()[1]

    def _sftp(self, name: str, chan: asyncssh.SSHServerChannel, node: NodeModel) -> _NodeSFTP:
        if self.is_down(name):
            chan.get_connection().abort()
        return _NodeSFTP(chan, node)

    def is_down(self, name: str) -> bool:
        """Whether ``name``'s SSH refuses connections (fault, set_down, or rebooting)."""
        faults = getattr(self.rt, "faults", None)
        node = self.rt.nodes.get(name) if self.rt else None
        return ((faults is not None and name in faults.ssh_down) or
                (node is not None and not node.up))

    async def _handle(self, name: str, proc: asyncssh.SSHServerProcess) -> None:
        node: NodeModel = self.rt.nodes[name]
        if self.is_down(name):
            proc.channel.get_connection().abort()
            return
        if proc.command is None:
            proc.stderr.write(b"This twin node serves exec and SFTP only: no interactive shell.\n")
            proc.exit(1)
            return

        async def read_stdin() -> bytes:
            return await proc.stdin.read()

        latency = getattr(getattr(self.rt, "faults", None), "ssh_command_latency", 0.0)
        if latency > 0:   # the latency model (twin.faults): wall time, no CPU
            await asyncio.sleep(latency)
        try:
            res = await node.exec(proc.command, stdin=read_stdin)
        except Exception as e:  # a model bug must reach the client, not kill the server
            # Only the program name: a command line may carry data that must not be logged.
            log.exception("%s: exec of %s failed", name, (proc.command.split() or ["?"])[0])
            proc.stderr.write(f"twin: internal error: {type(e).__name__}: {e}\n".encode())
            proc.exit(1)
            return
        if self.is_down(name) and node.up:
            proc.channel.get_connection().abort()
            return
        proc.stdout.write(res.stdout)
        proc.stderr.write(res.stderr)
        proc.exit(res.rc)

    def _on_node_event(self, node: NodeModel, event: str, info: dict) -> None:
        if event == "rebooting":
            self._drop(node.name)

    def _drop(self, name: str) -> None:
        for conn in list(self._conns.get(name, ())):
            conn.abort()
        self._conns.pop(name, None)

    async def set_down(self, name: str, down: bool = True) -> None:
        """Take a node's SSH down (connections refused, sessions closed) or back up.

        Sets ``rt.faults.ssh_down`` (which a watcher also follows when it is changed
        directly) and applies it now; back up, the server listens on the same port.
        """
        if name not in self.ports:
            raise KeyError(f"no SSH server for node {name!r}; known: {', '.join(self.ports)}")
        if down:
            self.rt.faults.ssh_down.add(name)
        else:
            self.rt.faults.ssh_down.discard(name)
        await self._reconcile()

    async def stop(self) -> None:
        await self._watch.stop()
        for un in self._unsubscribe:
            un()
        self._unsubscribe.clear()
        for name in list(self._conns):
            self._drop(name)
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    def describe(self) -> str:
        ports = ", ".join(f"{n}=127.0.0.1:{p}" for n, p in self.ports.items())
        return f"{ports} (known_hosts {self.known_hosts}, key {self.client_key})"
