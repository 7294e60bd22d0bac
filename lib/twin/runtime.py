"""The twin's runtime: one asyncio event loop holding every component.

A component is any object with::

    name: str
    async def start(self, rt: Runtime) -> None   # bind sockets, register with the store
    async def stop(self) -> None
    def describe(self) -> str                      # one line for `runbook twin up`

Components talk to each other only through ``rt`` (store, clock, faults, pki, nodes,
endpoints) and, for the runbook's own processes, through sockets. ``Twin`` (in
``twin/__init__.py``) runs a Runtime in a background thread for tests and in the
foreground for the CLI.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .clock import Clock
from .faults import Faults

log = logging.getLogger("twin")


class Component(Protocol):
    name: str

    async def start(self, rt: "Runtime") -> None: ...
    async def stop(self) -> None: ...
    def describe(self) -> str: ...


@dataclass
class Runtime:
    """Shared context of one running twin."""

    state_dir: Path
    clock: Clock
    faults: Faults
    fixture: Any = None            # twin.fixtures.Fixture
    store: Any = None              # twin.store.Store
    pki: Any = None                # twin.pki.PKI (CA + serving certs)
    nodes: dict[str, Any] = field(default_factory=dict)      # name -> twin.node.NodeModel
    endpoints: dict[str, Any] = field(default_factory=dict)  # "api": url, "ssh": {node: port}, ...
    components: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)    # cilium_chart path, ...
    loop: asyncio.AbstractEventLoop | None = None

    def component(self, name: str) -> Any:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    async def start_all(self, components: list[Any]) -> None:
        self.loop = asyncio.get_running_loop()
        for c in components:
            log.info("starting %s", c.name)
            await c.start(self)
            self.components.append(c)

    async def stop_all(self) -> None:
        for c in reversed(self.components):
            try:
                await c.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("stopping %s failed", c.name)
        self.components.clear()
