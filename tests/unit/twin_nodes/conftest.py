"""Small clusters of NodeModels on a fast clock, without sockets."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from twin.clock import Clock
from twin.node import NodeModel, build_nodes
from twin_nodes_cases import CLUSTER, SERVICES, SPECS, run


@pytest.fixture(params=["files-on-disk", "files-in-memory"])
def nodes(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, NodeModel]:
    # speed 0.001: a 20 s reboot takes 20 ms of wall time. Every test runs twice: with
    # the node's files on disk from the start, and held in memory until something needs
    # them there (what a twin at scale does): nothing seen through the node may differ.
    return build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001),
                       lazy_files=request.param == "files-in-memory")


@pytest.fixture
def service_nodes(tmp_path: Path) -> Iterator[dict[str, NodeModel]]:
    """Nodes whose kube-proxy programs :data:`twin_nodes_cases.SERVICES` (files on disk),
    closed after the test."""
    ns = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), services=list(SERVICES))
    yield ns
    for n in ns.values():
        run(n.close())
