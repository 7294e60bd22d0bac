"""Reuse the twin_nodes harness (NodesComponent + SSHServers on a background loop)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "twin_nodes"))

from twin_nodes_harness import NodesTwin  # noqa: E402


@pytest.fixture
def nodes_twin(tmp_path: Path):
    t = NodesTwin(tmp_path / "twin")
    yield t
    t.close()
