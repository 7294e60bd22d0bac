"""The chart repository harness: ChartRepo alone on an asyncio loop in a thread, with
a minimal stand-in for twin.runtime.Runtime (state_dir, options, endpoints)."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.chartrepo import ChartRepo


@dataclass
class FakeRuntime:
    """The three things ChartRepo uses from twin.runtime.Runtime."""

    state_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, Any] = field(default_factory=dict)


class RepoHarness:
    """Runs one ChartRepo on its own event loop thread until ``stop()``."""

    def __init__(self, rt: FakeRuntime) -> None:
        self.rt = rt
        self.repo = ChartRepo()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="chartrepo", daemon=True)

    def start(self) -> "RepoHarness":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.repo.start(self.rt), self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.repo.stop(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    @property
    def url(self) -> str:
        return self.rt.endpoints["charts"]


class ApiAndRepo:
    """The twin's API server and chart repository on one loop (as in a running twin),
    for installs with the real helm. Only the kube-system namespace exists at start."""

    def __init__(self, state_dir: Path, cilium_chart: str | None = None) -> None:
        from twin.clock import Clock
        from twin.faults import Faults
        from twin.runtime import Runtime

        self.rt = Runtime(state_dir=state_dir, clock=Clock(), faults=Faults())
        if cilium_chart:
            self.rt.options["cilium_chart"] = cilium_chart
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="twin-charts", daemon=True)

    def start(self) -> "ApiAndRepo":
        from twin.apiserver import APIServer
        from twin.store import Store

        async def _start() -> None:
            self.rt.store = Store()
            self.rt.store.create({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": "kube-system"}})
            await self.rt.start_all([APIServer(), ChartRepo()])

        self.thread.start()
        asyncio.run_coroutine_threadsafe(_start(), self.loop).result(timeout=60)
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.rt.stop_all(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    @property
    def kubeconfig(self) -> Path:
        return Path(self.rt.state_dir) / "kubeconfig"
