"""Fixtures of the twin_nodes integration tests (helpers live in twin_nodes_harness)."""
from __future__ import annotations

from pathlib import Path

import pytest

from twin_nodes_harness import NodesTwin


@pytest.fixture
def nodes_twin(tmp_path: Path):
    t = NodesTwin(tmp_path / "twin")
    yield t
    t.close()
