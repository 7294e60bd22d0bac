"""Sample node and pod readiness during a run, for the report's timeline plot.

The runner starts a :class:`Sampler` next to the notebooks. It polls the API once a
second (without retries, so an API outage shows as a gap rather than a stall) and
appends one JSON line per sample to ``<run_dir>/timeline.jsonl``::

    {"t": 1764133920.1, "api": true, "nodes_ready": 3, "nodes": 3,
     "pods_ready": 98, "pods": 105}

``pods`` counts non-hostNetwork pods: those are the ones a CNI swap takes down.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .cluster import Cluster, node_ready, pod_ready

log = logging.getLogger("runbook.timeline")


def sample(c: Cluster) -> dict[str, Any]:
    """One reading of the cluster (raises ClusterError when the API is away)."""
    nodes = c.list("nodes")
    pods = [p for p in c.iter_list("pods") if not (p.get("spec") or {}).get("hostNetwork")]
    return {"t": time.time(), "api": True,
            "nodes": len(nodes), "nodes_ready": sum(node_ready(n) for n in nodes),
            "pods": len(pods), "pods_ready": sum(pod_ready(p) for p in pods)}


class Sampler:
    """Background sampler writing ``timeline.jsonl`` into the run folder."""

    def __init__(self, params: Any, run_dir: Path, interval: float = 1.0) -> None:
        self.params = params
        self.path = Path(run_dir) / "timeline.jsonl"
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        try:
            c = Cluster.from_params(self.params)
        except Exception as e:  # noqa: BLE001 - bad params are reported by the notebooks themselves
            log.warning("no timeline for this run (the report has no readiness plot): "
                        "cannot build an API client from the params: %s: %s", type(e).__name__, e)
            return
        c.retry_for, c.request_timeout = 0.0, 5.0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # run folder: owner-only
        with os.fdopen(fd, "a") as f:
            while not self._stop.is_set():
                try:
                    row = sample(c)
                except Exception:  # noqa: BLE001 - recorded: an API outage is a gap in the plot
                    row = {"t": time.time(), "api": False}
                f.write(json.dumps(row) + "\n")
                f.flush()
                self._stop.wait(self.interval)


def load(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "timeline.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a killed run
    return rows
