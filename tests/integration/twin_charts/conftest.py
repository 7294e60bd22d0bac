"""Fixtures of the chart repository integration tests (harness in twin_charts_harness)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from twin_charts_harness import FakeRuntime, RepoHarness


@pytest.fixture
def start_repo(tmp_path: Path):
    """Factory: ``start_repo(cilium_chart=None)`` -> a running RepoHarness (stopped after)."""
    started: list[RepoHarness] = []

    def _start(cilium_chart: str | os.PathLike | None = None) -> RepoHarness:
        rt = FakeRuntime(state_dir=tmp_path / f"state{len(started)}")
        rt.state_dir.mkdir()
        if cilium_chart is not None:
            rt.options["cilium_chart"] = str(cilium_chart)
        h = RepoHarness(rt).start()
        started.append(h)
        return h

    yield _start
    for h in started:
        h.stop()
