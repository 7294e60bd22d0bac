"""A twin built from a snapshot against a generated (``--scale``) twin of the same size.

Run: ``.venv/bin/python benchmarks/snapshot_twin.py [--nodes 500 --pods 50000] [--repeat 2]``.

One run, at one size:

1. ``snapshot``: ``runbook snapshot --of-twin nodes=N,pods=M`` (a generated twin is started,
   snapshotted through its API, stopped); the archive's size is noted. At the default
   size it is ``--api-only``: read over SSH, every one of 500 twin nodes programs its
   kube-proxy chains for every Service endpoint of the cluster in memory (O(nodes x
   endpoints)), which this machine cannot hold; ``--ssh-below`` sets the node count from
   which SSH is skipped. A twin built from an API-only archive differs only in the nodes'
   k3s config files (the defaults), which costs nothing to build.
2. ``scale``: a twin generated at that size (``runbook twin up --scale``), from nothing
   until it serves (``Twin.start``), in a fresh process;
3. ``from snapshot``: a twin built from that archive (``runbook twin up --from-snapshot``),
   the same way.

Builds 2 and 3 alternate ``--repeat`` times, each in its own process, so a busy
neighbour on the shared machine weighs on both. Each row shows the 1-minute load average
before and after it and the process's peak memory. Nothing is asserted: the issue's
target (building from a snapshot takes no longer than ``--scale``) is read from the table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNBOOK = Path(sys.executable).parent / "runbook"


def child_build(kind: str, arg: str, state: str) -> None:
    """In a fresh process: start one twin, print what it took as JSON, stop it."""
    from twin.api import Twin, parse_scale

    kw = {"scale": parse_scale(arg)} if kind == "scale" else {"snapshot": arg}
    t0 = time.perf_counter()
    twin = Twin(state, **kw).start(timeout=3600)
    seconds = time.perf_counter() - t0
    counts = dict(twin.rt.options.get("load_counts") or {}) if twin.rt else {}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    twin.stop()
    print(json.dumps({"seconds": seconds, "nodes": counts.get("Node", 0), "pods": counts.get("Pod", 0),
                      "peak_mib": peak}))


def _measured(label: str, cmd: list[str]) -> dict:
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{label} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return {"what": label, "wall": wall, "load_before": before, "load_after": os.getloadavg()[0],
            "stdout": p.stdout}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--ssh-below", type=int, default=200,
                    help="read the nodes over SSH when there are fewer than this many")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "ARG", "STATE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child_build(*a.child)
        return 0
    scale = f"nodes={a.nodes},pods={a.pods}"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-", ignore_cleanup_errors=True) as d:
        work = Path(d)
        archive = work / "scale.tar.gz"
        api_only = a.nodes >= a.ssh_below
        print(f"snapshot of a generated twin ({scale}{', API only' if api_only else ''}) ...", flush=True)
        r = _measured("snapshot", [str(RUNBOOK), "snapshot", "--of-twin", scale, "--out", str(archive)]
                      + (["--api-only"] if api_only else []))
        r.update(seconds=r["wall"], nodes=a.nodes, pods=a.pods, peak_mib=None,
                 note=f"archive {archive.stat().st_size / 2**20:.1f} MiB"
                      + (", API only" if api_only else ", nodes over SSH") + "; includes the twin's start")
        rows.append(r)
        for i in range(a.repeat):
            for label, kind, arg in (("scale", "scale", scale), ("from snapshot", "snapshot", str(archive))):
                print(f"  build {i + 1}/{a.repeat}: {label} ...", flush=True)
                state = work / f"{kind}-{i}"
                r = _measured(label, [sys.executable, __file__, "--child", kind, arg, str(state)])
                r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
                r["note"] = f"process wall {r['wall']:.1f}s"
                rows.append(r)
    print(f"\n{'what':<14} {'nodes':>6} {'pods':>7} {'seconds':>8} {'peak MiB':>9} "
          f"{'load 1m before':>15} {'after':>6}  note")
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "-"
        print(f"{r['what']:<14} {r['nodes']:>6} {r['pods']:>7} {r['seconds']:>8.1f} {peak:>9} "
              f"{r['load_before']:>15.2f} {r['load_after']:>6.2f}  {r['note']}")
    built = {k: statistics.median(r["seconds"] for r in rows if r["what"] == k) for k in ("scale", "from snapshot")}
    print(f"\nmedian start until serving: from snapshot {built['from snapshot']:.1f}s, --scale "
          f"{built['scale']:.1f}s (ratio {built['from snapshot'] / built['scale']:.2f}; target <= 1), "
          f"{os.cpu_count()} CPUs shared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
