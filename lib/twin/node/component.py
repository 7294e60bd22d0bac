"""The runtime component ``nodes``: builds ``rt.nodes`` from the fixture and keeps the API
server down while a server's k3s is down.

Example:
    >>> rt.start_all([NodesComponent(), SSHServers()])  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from .build import build_nodes, fixture_pods, fixture_services
from .containerd import CONFIG_TMPL, HARDCODED_K3S_TEMPLATE
from .model import NodeModel

log = logging.getLogger("twin.nodes")

# From this many fixture pods on (generated scale fixtures), the nodes component defers
# writing the per-pod lease files until the lease directory is reached (see NodeModel).
DEFER_LEASES_FROM_PODS = 10_000


class NodesComponent:
    """Runtime component ``nodes``: builds ``rt.nodes`` from ``rt.fixture``.

    While a server's k3s is down (stop, restart, reboot, or failing to start) the
    ``apiserver`` component refuses connections: its ``outage()`` runs from the stop and
    is cancelled when k3s is up again, but lasts at least ``faults.api_down_seconds``
    when the ``api_down_on_restart`` fault is set. With several servers (embedded etcd,
    one member each) the API stays up while a majority of them runs (one of three
    restarting), and goes down when quorum is lost until it is back
    (:meth:`servers_serving`).
    """

    name = "nodes"
    UNTIL_STARTED = 1e6   # cluster seconds: an outage that only the restart ends

    def __init__(self) -> None:
        self.rt: Any = None
        self.nodes: dict[str, NodeModel] = {}
        self._outage: asyncio.Task | None = None
        self._outage_t0 = 0.0
        self._outage_min = 0.0
        self._later: set[asyncio.Task] = set()
        self._templated: set[str] = set()

    async def start(self, rt: Any) -> None:
        self.rt = rt
        fx = rt.fixture
        objects = list(getattr(fx, "objects", None) or [])
        pods = fixture_pods(objects) if objects else None
        seeded = sum(len(v) for v in (pods or {}).values())
        self.nodes = build_nodes(fx.nodes, dict(fx.cluster), Path(rt.state_dir) / "nodes", rt.clock,
                                 pods=pods, services=fixture_services(objects) or None,
                                 defer_leases=seeded >= DEFER_LEASES_FROM_PODS)
        for n in self.nodes.values():
            n.on_server_restart = lambda secs, name=n.name: self._api_down(secs, name)
            n.on_server_started = lambda name=n.name: self._api_up(name)
        rt.nodes.update(self.nodes)
        if getattr(getattr(rt, "faults", None), "containerd_template", None):
            self.apply_containerd_template()

    def apply_containerd_template(self) -> None:
        """Fault ``containerd_template``: the listed nodes get a ``config.toml.tmpl`` that
        hard-codes k3s's CNI folder; nodes that got one this way and are no longer
        listed lose it. It counts from each node's next k3s start."""
        want = set(getattr(self.rt.faults, "containerd_template", set()) or ())
        for name in sorted(want - self._templated):
            node = self.nodes.get(name)
            if node is not None:
                node.write(CONFIG_TMPL, HARDCODED_K3S_TEMPLATE, 0o644)
                self._templated.add(name)
        for name in sorted(self._templated - want):
            node = self.nodes.get(name)
            if node is not None and node.exists(CONFIG_TMPL):
                node.remove(CONFIG_TMPL)
            self._templated.discard(name)

    def servers_serving(self, *, going_down: str = "", coming_up: str = "") -> tuple[int, int]:
        """(servers whose k3s serves, the quorum the datastore needs). With several servers
        the twin's datastore is embedded etcd (one member per server): the API answers
        while a majority of them runs, through any of them. One server: SQLite, itself."""
        servers = [n for n in self.nodes.values() if n.role == "server"]
        up = sum(1 for n in servers if n.name != going_down
                 and (n.name == coming_up or (n.up and n.unit_state == "active")))
        return up, len(servers) // 2 + 1

    def _api_down(self, seconds: float, node: str = "") -> None:
        try:
            api = self.rt.component("apiserver")
        except KeyError:
            return
        up, quorum = self.servers_serving(going_down=node)
        if up >= quorum and not getattr(getattr(self.rt, "faults", None), "api_down_on_restart", False):
            log.info("server %s restarts; %d of the servers keep etcd's quorum (%d): the API stays up",
                     node, up, quorum)
            return
        if self._outage is not None and not self._outage.done():
            return
        faults = getattr(self.rt, "faults", None)
        self._outage_min = (float(getattr(faults, "api_down_seconds", 0.0) or 0.0)
                            if getattr(faults, "api_down_on_restart", False) else 0.0)
        self._outage_t0 = self.rt.clock.cluster_now()
        self._outage = asyncio.ensure_future(api.outage(self.UNTIL_STARTED))

    def _api_up(self, node: str = "") -> None:
        task = self._outage
        if task is None or task.done():
            return
        up, quorum = self.servers_serving(coming_up=node)
        if up < quorum:
            log.info("server %s is up; %d of %d etcd members needed run: the API stays down", node, up, quorum)
            return
        remaining = self._outage_min - (self.rt.clock.cluster_now() - self._outage_t0)
        if remaining <= 0:
            task.cancel()   # the API server listens again when its outage is cancelled
            return

        async def later() -> None:
            await self.rt.clock.sleep(remaining)
            task.cancel()
        t = asyncio.ensure_future(later())
        self._later.add(t)
        t.add_done_callback(self._later.discard)

    async def stop(self) -> None:
        for t in [*self._later, *([self._outage] if self._outage else [])]:
            t.cancel()
        for n in self.nodes.values():
            await n.close()

    def describe(self) -> str:
        roles = ", ".join(f"{n.name} ({n.role}, {n.unit} {n.unit_state})" for n in self.nodes.values())
        return roles
