"""Reuse the twin_charts harness (API server + chart repository on one loop)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "twin_charts"))

from twin_charts_harness import ApiAndRepo  # noqa: E402


@pytest.fixture
def api_and_repo(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    t = ApiAndRepo(state).start()
    yield t
    t.stop()
