"""Fixtures of the fault scenarios; the helpers are in faults_helpers.py."""
from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def make_twin(tmp_path_factory: pytest.TempPathFactory):
    """Start a whole twin with the given faults; stopped at the end of the test."""
    from twin.api import Twin

    started: list[Any] = []

    def make(**kw: Any) -> Any:
        t = Twin(tmp_path_factory.mktemp("twin"), **kw).start()
        started.append(t)
        return t

    yield make
    for t in started:
        t.stop()
