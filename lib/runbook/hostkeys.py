"""SSH host keys: verified against known_hosts, never added silently.

paramiko consults :class:`HostKeyPolicy` only for a key it does not know; a key that
differs from the known one raises ``BadHostKeyException`` in ``connect`` (translated in
:mod:`runbook.nodes`). An unknown key is refused unless trust-on-first-use is switched
on; then it is appended to known_hosts and journaled.

Example:
    >>> known_hosts_name("127.0.0.1", 2201)
    '[127.0.0.1]:2201'
    >>> known_hosts_name("10.0.0.5", 22)
    '10.0.0.5'
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Protocol

import paramiko

from .errors import HostKeyError

__all__ = ["HostKeyPolicy", "SSHTarget", "fingerprint", "known_hosts_name", "update_hint"]


class SSHTarget(Protocol):
    """What the policy needs of a node (:class:`runbook.nodes.Node` is one)."""

    name: str
    address: str
    port: int
    known_hosts: str
    trust_on_first_use: bool
    journal: Any

    def _journal_done(self, entry: Any, *, result: Any = None,
                      error: BaseException | None = None) -> None: ...


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """The host pattern OpenSSH and paramiko use: ``host`` or ``[host]:port``."""
    return address if port == 22 else f"[{address}]:{port}"


def update_hint(address: str, port: int, known_hosts: str) -> str:
    """What to do about a changed host key, in commands a person can run."""
    name = known_hosts_name(address, port)
    return (f"if the node was really reinstalled, verify the new key out of band, then run "
            f"`ssh-keygen -R '{name}' -f {known_hosts}` and re-scan it with "
            f"`ssh-keyscan -p {port} {address} >> {known_hosts}`; otherwise treat this as "
            "a possible man-in-the-middle and stop")


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or accept-and-record them when trust-on-first-use is on.

    paramiko calls this only for keys it does not know; a key that differs from a known
    one raises ``BadHostKeyException`` in ``connect`` before we get here.
    """

    def __init__(self, node: SSHTarget) -> None:
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
                node=n.name, hint=update_hint(n.address, n.port, n.known_hosts))
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

