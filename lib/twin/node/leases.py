"""flannel's host-local IPAM leases: one file per pod IP under ``/var/lib/cni/networks/cbr0``.

Each file holds the pod sandbox's id and ``eth0``, as the host-local plugin writes it. A
cluster fixture has tens of thousands of pods at scale, and creating that many files is
slow on some disks: with ``defer`` the files are written when something first reaches
the lease directory through the node (see :meth:`NodeFiles.on_first_access`), so nothing
seen through the node differs. The list waits in a file beside the node's root, outside
what any node command can see, so a twin restarted on the same state still writes them
(written at once; for a node whose files are held in memory, when the twin stops, with
them: see :mod:`.memfs`).

Example:
    >>> node.lease_files.read()  # doctest: +SKIP
    {'10.42.1.7': '4f0c...'}
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import secrets
from pathlib import Path

from .files import NodeFiles

CNI_LEASES = "/var/lib/cni/networks/cbr0"


class LeaseFiles:
    """The lease files of one node.

    Args:
        files: the node's file system.
        sidecar: where the list of lease files not written yet waits (beside the root).
    """

    def __init__(self, files: NodeFiles, sidecar: Path) -> None:
        self.files = files
        self.sidecar = sidecar
        self.pending: list[tuple[str, str]] | None = None   # (pod IP, sandbox id) not written yet

    def seed(self, pod_cidr: str, pods: list[tuple[str, str]] | None, defer: bool) -> None:
        """A fresh node's leases: ``pods`` (pod IP, sandbox id), or a few made-up pods."""
        if pods is None:   # .1 is cni0's gateway
            net = ipaddress.ip_network(pod_cidr, strict=False)
            pods = [(str(ip), secrets.token_hex(32)) for ip in itertools.islice(net.hosts(), 1, 4)]
        if pods:
            last = max(ipaddress.ip_address(ip) for ip, _ in pods)
            self.files.write(f"{CNI_LEASES}/last_reserved_ip.0", str(last))
        self.files.write(f"{CNI_LEASES}/lock", "")
        if pods and defer:
            self.pending = list(pods)
            if not self.files.in_memory:   # else kept with the node's files (see save)
                self.save()
            self.files.on_first_access(CNI_LEASES, self.write_pending)
        elif pods:
            self._write(pods)

    def save(self) -> None:
        """Keep the list of lease files not written yet beside the node's root (a twin
        started on the same state writes them); nothing when all are written."""
        if self.pending is not None:
            self.sidecar.write_text(json.dumps(self.pending))

    def load_pending(self) -> None:
        """On a node built from existing files: the leases a previous twin deferred."""
        if self.sidecar.exists():
            self.pending = [tuple(x) for x in json.loads(self.sidecar.read_text())]
            self.files.on_first_access(CNI_LEASES, self.write_pending)

    def write_pending(self) -> None:
        """Write the deferred lease files (once)."""
        pods, self.pending = self.pending, None
        if pods:
            self._write(pods)
        self.sidecar.unlink(missing_ok=True)

    def _write(self, pods: list[tuple[str, str]]) -> None:
        """One lease file per (pod IP, sandbox id), into the lease directory the node was
        seeded with (see :meth:`NodeFiles.write_many`)."""
        self.files.write_many(CNI_LEASES, ((ip, f"{sandbox}\r\neth0".encode()) for ip, sandbox in pods),
                              0o644)

    def initial_ips(self) -> list[str]:
        """The pod IPs holding leases when the node is built, without writing deferred
        lease files (they are the only IP-named files of the directory until written)."""
        if self.pending is None:
            return sorted(self.ips())
        out = set()
        for ip, _ in self.pending:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                continue
            out.add(ip)
        return sorted(out)

    def ips(self) -> list[str]:
        """Names of the lease files (pod IPs), without reading them."""
        if not self.files.is_dir(CNI_LEASES):
            return []
        out = []
        for n in self.files.listdir(CNI_LEASES):
            try:
                ipaddress.ip_address(n)
            except ValueError:
                continue
            out.append(n)
        return out

    def read(self) -> dict[str, str]:
        """Pod IP -> container (sandbox) id of every lease."""
        out: dict[str, str] = {}
        base = self.files.host_path(CNI_LEASES) if self.files.is_dir(CNI_LEASES) else None
        for n in self.ips():
            host = os.path.join(base, n)
            # A plain file in the checked directory stays inside the root; a symlink
            # goes through the full path check.
            raw = self.files.read(f"{CNI_LEASES}/{n}") if os.path.islink(host) else Path(host).read_bytes()
            out[n] = raw.decode().split("\r\n")[0]
        return out
