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
# writing the per-pod lease files until the lease directory is reached, and keeps each
# node's files in memory until something needs them on disk (see NodeModel).
DEFER_LEASES_FROM_PODS = 10_000


class NodesComponent:
    """Runtime component ``nodes``: builds ``rt.nodes`` from ``rt.fixture``.

    While a server's k3s is down (stop, restart, reboot, or failing to start) the
    ``apiserver`` component refuses connections: the stop holds it down
    (``hold_down(API_HOLD)``) and k3s up again releases the hold, but the outage lasts at
    least ``faults.api_down_seconds`` when the ``api_down_on_restart`` fault is set. With
    several servers (embedded etcd, one member each) the API stays up while a majority of
    them runs (one of three restarting), goes down when quorum is lost, and is back once
    a majority runs again, however close together the servers come up
    (:meth:`servers_serving`).
    """

    name = "nodes"
    API_HOLD = "k3s down on the servers"   # what holds the apiserver down (APIServer.hold_down)

    def __init__(self) -> None:
        self.rt: Any = None
        self.nodes: dict[str, NodeModel] = {}
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
                                 defer_leases=seeded >= DEFER_LEASES_FROM_PODS,
                                 lazy_files=seeded >= DEFER_LEASES_FROM_PODS)
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

    def _apiserver(self) -> Any:
        try:
            return self.rt.component("apiserver")
        except KeyError:
            return None

    def _api_down(self, seconds: float, node: str = "") -> None:
        api = self._apiserver()
        if api is None:
            return
        faults = getattr(self.rt, "faults", None)
        fault = bool(getattr(faults, "api_down_on_restart", False))
        up, quorum = self.servers_serving(going_down=node)
        if up >= quorum and not fault:
            log.info("server %s restarts; %d of the servers keep etcd's quorum (%d): the API stays up",
                     node, up, quorum)
            return
        self._cancel_later()   # down again before a scheduled end: the outage goes on
        if api.held_down(self.API_HOLD):
            return
        self._outage_min = float(getattr(faults, "api_down_seconds", 0.0) or 0.0) if fault else 0.0
        self._outage_t0 = self.rt.clock.cluster_now()
        api.hold_down(self.API_HOLD)

    def _api_up(self, node: str = "") -> None:
        api = self._apiserver()
        if api is None or not api.held_down(self.API_HOLD) or self._later:
            return
        up, quorum = self.servers_serving(coming_up=node)
        if up < quorum:
            log.info("server %s is up; %d of %d etcd members needed run: the API stays down", node, up, quorum)
            return
        remaining = self._outage_min - (self.rt.clock.cluster_now() - self._outage_t0)
        if remaining <= 0:
            api.release(self.API_HOLD)
            return

        async def later() -> None:
            await self.rt.clock.sleep(remaining)
            api.release(self.API_HOLD)
        t = asyncio.ensure_future(later())
        self._later.add(t)
        t.add_done_callback(self._later.discard)

    def _cancel_later(self) -> None:
        for t in list(self._later):
            t.cancel()
        self._later.clear()

    async def stop(self) -> None:
        self._cancel_later()
        for n in self.nodes.values():
            await n.close()

    def describe(self) -> str:
        roles = ", ".join(f"{n.name} ({n.role}, {n.unit} {n.unit_state})" for n in self.nodes.values())
        return roles
