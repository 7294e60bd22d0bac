"""Small clusters of NodeModels on a fast clock, without sockets."""
from __future__ import annotations

from pathlib import Path

import pytest

from twin.clock import Clock
from twin.node import NodeModel, build_nodes
from twin_nodes_cases import CLUSTER, SPECS


@pytest.fixture
def nodes(tmp_path: Path) -> dict[str, NodeModel]:
    # speed 0.001: a 20 s reboot takes 20 ms of wall time.
    return build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001))
