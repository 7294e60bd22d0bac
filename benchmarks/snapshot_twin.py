"""A twin built from a snapshot against a generated (``--scale``) twin of the same size.

Run: ``.venv/bin/python benchmarks/snapshot_twin.py [--nodes 500 --pods 50000] [--repeat 2]``.

One run measures, at one size:

1. ``scale``: a twin generated at that size (``runbook twin up --scale nodes=N,pods=M``),
   from nothing until it serves (``Twin.start``);
2. the snapshot of that running twin (``runbook.snapshot.take``: every object through
   the API, every node over SSH), and the archive's size;
3. ``snapshot``: a twin built from that archive (``runbook twin up --from-snapshot``),
   from nothing until it serves.

Builds 1 and 3 alternate ``--repeat`` times, so a busy neighbour on the machine weighs
on both. Each row shows the 1-minute load average before and after it: the machine is
shared, and a figure taken under load says so. Nothing is asserted: the issue's target
(the snapshot build takes no longer than the generated one) is read from the table.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runbook import params, snapshot
from twin.api import Twin


def _load() -> float:
    return os.getloadavg()[0]


def build(label: str, state: Path, **kw) -> dict:
    """Start a twin, note how long it took to serve, stop it."""
    gc.collect()
    before = _load()
    t0 = time.perf_counter()
    twin = Twin(state, **kw).start(timeout=1800)
    seconds = time.perf_counter() - t0
    counts = dict(twin.rt.options.get("load_counts") or {}) if twin.rt else {}
    twin.stop()
    return {"what": label, "seconds": seconds, "pods": counts.get("Pod", 0),
            "nodes": counts.get("Node", 0), "load_before": before, "load_after": _load()}


def take_snapshot(nodes: int, pods: int, work: Path) -> tuple[Path, dict]:
    """A generated twin's snapshot (the archive every snapshot build reads)."""
    archive = work / f"scale-{nodes}-{pods}.tar.gz"
    twin = Twin(work / "source", scale=(nodes, pods)).start(timeout=1800)
    try:
        before = _load()
        t0 = time.perf_counter()
        res = snapshot.take(params.load(twin.params_path), archive, progress=lambda m: None)
        row = {"what": "snapshot of it", "seconds": time.perf_counter() - t0, "pods": res.counts.get("Pod", 0),
               "nodes": res.counts.get("Node", 0), "load_before": before, "load_after": _load(),
               "note": f"archive {archive.stat().st_size / 2**20:.1f} MiB, {res.nodes_read} nodes over SSH"}
    finally:
        twin.stop()
    return archive, row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-", ignore_cleanup_errors=True) as d:
        work = Path(d)
        print(f"taking a snapshot of a generated twin ({a.nodes} nodes, {a.pods} pods) ...", flush=True)
        archive, row = take_snapshot(a.nodes, a.pods, work)
        rows.append(row)
        for i in range(a.repeat):
            for label, kw in (("scale", {"scale": (a.nodes, a.pods)}), ("from snapshot", {"snapshot": archive})):
                print(f"  build {i + 1}/{a.repeat}: {label} ...", flush=True)
                rows.append(build(label, work / f"{label.replace(' ', '-')}-{i}", **kw))
    print(f"\n{'what':<16} {'nodes':>6} {'pods':>7} {'seconds':>8} {'load 1m before':>15} "
          f"{'after':>6}  note")
    for r in rows:
        print(f"{r['what']:<16} {r['nodes']:>6} {r['pods']:>7} {r['seconds']:>8.1f} "
              f"{r['load_before']:>15.2f} {r['load_after']:>6.2f}  {r.get('note', '')}")
    scale = [r["seconds"] for r in rows if r["what"] == "scale"]
    snap = [r["seconds"] for r in rows if r["what"] == "from snapshot"]
    ratio = statistics.median(snap) / statistics.median(scale)
    print(f"\nmedian build: from snapshot {statistics.median(snap):.1f}s, --scale {statistics.median(scale):.1f}s "
          f"(ratio {ratio:.2f}; the target is <= 1) on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
