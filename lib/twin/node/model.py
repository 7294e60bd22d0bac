"""One twin k3s node, composed of a part per concern, with events for its observers.

A :class:`NodeModel` is an Ubuntu k3s node. Its parts:

- ``files`` (:mod:`.files`): the node's ``/``, a directory of the twin's state dir;
- ``lease_files`` (:mod:`.leases`): flannel's host-local IPAM leases;
- ``links`` (:mod:`.links`): the interfaces ``ip link`` shows;
- ``iptables`` / ``ip6tables`` (:mod:`.iptables`): the rules of each family;
- ``kube_proxy`` (:mod:`.kube_proxy`): the Service chains the embedded kube-proxy keeps;
- ``k3s`` (:mod:`.k3s_service`): the k3s unit, its config and what it runs (it writes
  containerd's config, :mod:`.containerd`, and a server's admin kubeconfig);
- ``bpf`` (:mod:`.bpf`): BPF programs on the NICs and the cgroup root, pinned maps;
- ``ipsets`` (:mod:`.ipsets`): kube-router's sets; routes are derived (:mod:`.routes`).

Commands reach the parts through the command table (:mod:`.commands`). Other twin
components read the node through the methods below (documented in ``lib/twin/README.md``,
"For other twin components") and subscribe to its events (``EVENTS``). The model is not
thread-safe: call it on the twin's loop.

Example:
    >>> nodes = build_nodes(specs, cluster, state_dir / "nodes", Clock())  # doctest: +SKIP
    >>> rc, out, err = await nodes["server-1"].exec("sudo cat /etc/rancher/k3s/config.yaml")  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from .bpf import BpfState
from .commands import exec_line
from .files import NodeFiles
from .iptables import Iptables
from .ipsets import IpSets
from .k3s_service import SERVER_RESTART_SECONDS, K3sService
from .kube_proxy import KubeProxy, KubeService, default_services
from .leases import LeaseFiles
from .links import Interface, Links
from .seed import seed_files, token_from_files
from .shell import ExecResult

log = logging.getLogger("twin.node")

EVENTS = ("k3s-started", "k3s-stopped", "rebooting", "rebooted", "interfaces-changed",
          "iptables-changed", "file-changed")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
REBOOT_SECONDS = 20.0           # cluster seconds: shutdown + firmware + boot until systemd starts k3s


class NodeModel:
    """One k3s node: filesystem root, systemd units, interfaces, iptables, commands.

    Args:
        spec: the fixture's NodeSpec (name, role, ip, pod_cidr, kernel, os_image, ...).
        cluster: the fixture's cluster dict (k3s_version, cluster_cidr, service_cidr,
            server_url).
        root: directory holding the node's ``/``.
        peers: every node of the cluster by name (this one included); agents read the
            server's settings there, as they fetch them from the server.
        clock: the twin's clock; every delay goes through it.
        join_token: the cluster's join token (agents' config, server's token file).
        pod_ips: the (pod IP, sandbox id) holding flannel leases; None for a few.
        defer_leases: write the lease files when the lease directory (or a directory
            above it) is first reached through the node, not now. Through the node
            nothing differs; on the host disk the files appear late (used at scale).
        lazy_files: keep a fresh node's files in memory until something needs them on
            disk (see :mod:`.memfs`); through the node nothing differs (used at scale).

    Attributes:
        on_server_restart: called when this server's k3s goes down (stop, restart,
            reboot) with the cluster seconds it expects to stay down (``math.inf`` for a
            stop). May return an awaitable, which is scheduled, not awaited.
        on_server_started: called (no argument) when this server's k3s is up again.
            The nodes component uses both to keep the API server down in between.
        cluster_view: what the node's tools see of the cluster beyond the machine
            (its pods' sandboxes for ``crictl``, reachability for ``curl``/``nslookup``,
            NetworkPolicies for kube-router's ipsets); set by the network model, None
            when the twin runs without one.
    """

    def __init__(self, spec: Any, cluster: dict, root: Path, peers: dict[str, "NodeModel"],
                 clock: Any, *, join_token: str | None = None,
                 pod_ips: list[tuple[str, str]] | None = None, defer_leases: bool = False,
                 lazy_files: bool = False) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.role: str = spec.role
        self.cluster = dict(cluster)
        self.root = Path(root)
        self.peers = peers
        self.clock = clock
        self.join_token = join_token
        self.on_server_restart: Callable[[float], Any] | None = None
        self.on_server_started: Callable[[], Any] | None = None
        self.cluster_view: Any = None
        self.up = True
        self.boot_count = 1
        self._subscribers: list[Callable[["NodeModel", str, dict], None]] = []
        self._tasks: set[asyncio.Task] = set()
        # The parts; each gets what it needs of the others.
        self.files = NodeFiles(self.root, self.emit, lazy=lazy_files)
        self.lease_files = LeaseFiles(self.files, self.root.parent / f".{self.root.name}.pending-leases.json")
        self.links = Links(self.name, self.emit)
        self.iptables = Iptables(4)
        self.ip6tables = Iptables(6)
        self.kube_proxy = KubeProxy(self.iptables, self.ip6tables,
                                    default_services(self.cluster, spec.pod_cidr, peers))
        self.k3s = K3sService(self)
        self.bpf = BpfState(self)
        self.ipsets = IpSets(self)
        if not self.files.exists("/etc/hostname"):
            seed_files(self, pod_ips, defer_leases)
        else:
            self.lease_files.load_pending()
            if self.join_token is None:
                self.join_token = token_from_files(self)
        self.links.reset(self.boot_count)
        self.bpf.reset()    # a fresh boot: nothing in the kernel yet
        self._new_boot_id()
        # A node of the fixture is running when the twin starts: k3s is up.
        err = self.k3s.start_now(emit=False)
        if err:
            log.warning("%s: k3s did not start: %s", self.name, err)
        elif "cni0" in self.interfaces:
            # The pods holding the seeded leases have their veth on cni0.
            for ip in self.lease_files.initial_ips():
                h = hashlib.sha256(f"{self.name}/{ip}".encode()).hexdigest()
                netns = f"cni-{h[8:16]}-{h[16:20]}-{h[20:24]}-{h[24:28]}-{h[28:40]}"
                self.links.create(f"veth{h[:8]}", "veth", self.interfaces["cni0"].mtu, master="cni0",
                                  peer="if2", netns=netns)

    # ----------------------------------------------------------------- observers
    def subscribe(self, fn: Callable[["NodeModel", str, dict], None]) -> Callable[[], None]:
        """Call ``fn(node, event, info)`` synchronously on each event (see ``EVENTS``).

        Returns a function that unsubscribes.
        """
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, event: str, **info: Any) -> None:
        """Tell every subscriber about ``event`` (one of ``EVENTS``)."""
        for fn in list(self._subscribers):
            try:
                fn(self, event, info)
            except Exception:  # an observer's bug must not break the node
                log.exception("%s: observer failed on %s", self.name, event)

    # ----------------------------------------------------------------- background work
    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        """Run ``coro`` in the background until it ends or :meth:`close` cancels it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel background work (unit retries, scheduled reboots, resyncs); files
        still held in memory are kept beside the root for the next twin."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self.lease_files.save()
        self.files.save()

    # ----------------------------------------------------------------- commands
    async def exec(self, command_line: str,
                   stdin: bytes | Callable[[], Awaitable[bytes]] = b"") -> ExecResult:
        """Run one command line as user ``ubuntu``, without a shell.

        ``stdin`` is bytes, or an async callable read only by commands that consume
        standard input (so a client that never closes stdin does not block ``cat FILE``).
        """
        return await exec_line(self, command_line, stdin)

    async def reboot(self) -> None:
        """Reboot: down for ``REBOOT_SECONDS``; interfaces, iptables, BPF state, ipsets,
        /tmp and /run are cleared; k3s starts again from its config, as ``systemctl
        start`` does (activating; a server of several waits for etcd's quorum)."""
        self.up = False
        self.emit("rebooting")
        self.k3s.notify_down(REBOOT_SECONDS + SERVER_RESTART_SECONDS)
        self.k3s.stop_now()
        self.k3s.cni_dirs = None    # containerd goes down with the machine
        await self.clock.sleep(REBOOT_SECONDS)
        removed = [n for n in self.interfaces if n not in ("lo", "eth0")]
        self.boot_count += 1
        self._new_boot_id()
        self.links.reset(self.boot_count)
        self.iptables.reset()
        self.ip6tables.reset()
        self.bpf.reset()
        self.ipsets.reset()
        for d in ("/tmp", "/run"):
            self.files.clear(d)
        self.k3s.journal_lines.append(f"-- Boot {secrets.token_hex(16)} --")
        self.up = True
        if removed:
            self.emit("interfaces-changed", added=[], removed=removed)
        self.emit("iptables-changed", family=4, tables=[])
        self.emit("rebooted", boot=self.boot_count)
        await self.k3s.start()   # the enabled unit starts at boot (a server of several waits for quorum)

    def _new_boot_id(self) -> None:
        """``/proc/sys/kernel/random/boot_id``: a new random id at every boot (what the
        kubelet reports as ``nodeInfo.bootID``, and how a client tells a reboot happened)."""
        self.files.write(BOOT_ID, str(uuid.uuid4()) + "\n", 0o644)

    # ----------------------------------------------------------------- facts
    @property
    def kernel(self) -> str:
        return str(getattr(self.spec, "kernel", "5.15.0-105-generic"))

    @property
    def k3s_version(self) -> str:
        return str(self.cluster.get("k3s_version", "v1.30.6+k3s1"))

    # k3s: the unit and what it runs
    @property
    def unit(self) -> str:
        return self.k3s.unit

    @property
    def unit_state(self) -> str:
        return self.k3s.unit_state

    @property
    def running(self) -> dict[str, Any]:
        """The settings of the running k3s ({} while it is stopped)."""
        return self.k3s.running

    def effective_settings(self) -> dict[str, Any]:
        """What k3s would run with if its unit started now (see :class:`K3sService`)."""
        return self.k3s.effective_settings()

    def service_active(self, name: str) -> bool:
        return self.k3s.is_active(name)

    def journal(self, unit: str | None = None) -> list[str]:
        """The k3s unit's log lines (what ``journalctl -u k3s`` shows)."""
        return list(self.k3s.journal_lines)

    async def k3s_stop(self, expected_down: float = math.inf) -> None:
        """``systemctl stop``: processes end; interfaces, chains and files stay."""
        await self.k3s.stop(expected_down)

    async def k3s_start(self) -> bool:
        """``systemctl start``: True once active; False if it keeps failing (retries run)."""
        return await self.k3s.start()

    async def k3s_restart(self) -> bool:
        """``systemctl restart``: stop, then start with the config as it is now."""
        return await self.k3s.restart()

    def cni_running(self) -> str | None:
        """``flannel`` when this node's k3s runs flannel now, else None."""
        return "flannel" if self.running.get("flannel") else None

    def cni_config(self) -> str | None:
        """The CNI config file containerd uses now, or None (see :class:`K3sService`)."""
        return self.k3s.cni_config()

    # kube-proxy
    @property
    def kube_services(self) -> list[KubeService]:
        return self.kube_proxy.services

    def set_kube_services(self, services: list[KubeService]) -> None:
        """The Service ports kube-proxy programs; re-synced now if kube-proxy runs here."""
        self.kube_proxy.services = list(services)
        if self.running.get("kube_proxy"):
            self.k3s.sync_kube_proxy(full=True)

    def kube_proxy_running(self) -> bool:
        """Whether k3s runs its embedded kube-proxy on this node now (the machine is up,
        the unit active, no ``disable-kube-proxy``)."""
        return bool(self.up and self.unit_state == "active" and self.running.get("kube_proxy"))

    def resync_kube_services(self, services: list[KubeService]) -> bool:
        """kube-proxy's sync after a Service or EndpointSlice change (see
        :meth:`KubeProxy.resync`): only while it runs here. Returns whether it synced;
        a stopped k3s or ``disable-kube-proxy`` keeps the rules of the last sync."""
        if not self.kube_proxy_running():
            return False
        self.kube_proxy.resync(services, self.k3s.kube_proxy_cidr())
        return True

    # links
    @property
    def interfaces(self) -> dict[str, Interface]:
        return self.links.interfaces

    def add_interface(self, name: str, kind: str = "veth", mtu: int = 1500, **kw: Any) -> Interface:
        """Create an interface (e.g. ``cilium_vxlan`` with ``info={"vxlan_port": 8472}``)."""
        return self.links.add(name, kind, mtu, **kw)

    def remove_interface(self, name: str) -> bool:
        """Delete an interface; a bridge's ports are released. False if absent."""
        return self.links.remove(name)

    # iptables
    def add_chain(self, table: str, chain: str, rules: Iterable[str] = (), *, v6: bool = False) -> None:
        """Create a chain (and ``-A ...`` rules, which may create their chains too)."""
        t = self.ip6tables if v6 else self.iptables
        changed = t.ensure_chain(table, chain)
        for r in rules:
            changed = t.ensure_rule(table, r) or changed
        if changed:
            self.emit("iptables-changed", family=6 if v6 else 4, tables=[table])

    def iptables_save(self, v6: bool = False) -> str:
        return (self.ip6tables if v6 else self.iptables).save()

    # files (as root)
    def leases(self) -> dict[str, str]:
        """host-local IPAM leases of flannel's cbr0 network: pod IP -> container id."""
        return self.lease_files.read()

    def host_path(self, path: str, cwd: str = "/") -> Path:
        return self.files.host_path(path, cwd)

    def exists(self, path: str) -> bool:
        return self.files.exists(path)

    def is_dir(self, path: str) -> bool:
        return self.files.is_dir(path)

    def read(self, path: str) -> bytes:
        return self.files.read(path)

    def read_text(self, path: str) -> str:
        return self.files.read_text(path)

    def write(self, path: str, data: bytes | str, mode: int | None = None, *,
              append: bool = False) -> None:
        self.files.write(path, data, mode, append=append)

    def remove(self, path: str) -> None:
        self.files.remove(path)

    def listdir(self, path: str) -> list[str]:
        return self.files.listdir(path)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self.files.mkdir(path, mode)

    def owner(self, path: str) -> str:
        return self.files.owner(path)

    def can_write(self, path: str, root: bool = False) -> bool:
        return self.files.can_write(path, root)
