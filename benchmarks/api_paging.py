"""Scale of the twin's API: start-up time, and the cost of one list request at 1k and 50k pods.

Run: `make benchmark` or `.venv/bin/python benchmarks/api_paging.py [--big-nodes 500 --big-pods 50000]`.

For each size it starts a generated twin (same shape as minicloud) in its own process
(`runbook twin up --scale`, so the client and the API server do not share one
interpreter), pages through every pod with the official Python client (raw JSON
decoded with ``runbook.paging.loads``, limit=500, as runbook.cluster does), 100
requests each, and prints the time per request. Both twins run at once and take turns request by request, so the ratio of
the two sizes is measured in one run under the same load. The per-request time must
stay flat as the store grows: the store indexes by resource and namespace and pages
with a sorted key index (both sizes fill every page: 1,000 and 50,000 pods by 500).
Each row shows the 1-minute load average sampled after each of its requests (median,
and the highest). Nothing here is asserted; this is a measurement, printed as a table.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, table  # noqa: E402
from runbook.paging import loads  # noqa: E402


def requests(kubeconfig: str, limit: int = 500) -> Iterator[tuple[float, int | None]]:
    """Page through every pod again and again: per request, its time and, at the end
    of a pass, how many pods the pass read (else None)."""
    core = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    while True:
        token, total = None, 0
        while True:
            t0 = time.perf_counter()
            resp = core.list_pod_for_all_namespaces(limit=limit, _continue=token, _preload_content=False)
            doc = loads(resp.data)
            elapsed = time.perf_counter() - t0
            total += len(doc["items"])
            token = doc["metadata"].get("continue")
            yield elapsed, (None if token else total)
            if not token:
                break


def measure(sizes: list[tuple[int, int]], n_requests: int = 100) -> list[dict]:
    """Both twins run at once and take turns, one request each (a twin at the end of
    its pods starts again), so a busy neighbour weighs on both sizes alike."""
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
        twins = [stack.enter_context(TwinProcess(Path(d) / f"twin-{i}", scale=f"nodes={n},pods={p}"))
                 for i, (n, p) in enumerate(sizes)]
        # The controllers' first status pass runs right after start: let it finish.
        time.sleep(3)
        streams = [requests(str(t.kubeconfig)) for t in twins]
        times: list[list[float]] = [[] for _ in twins]
        loads_1m: list[list[float]] = [[] for _ in twins]
        totals = [0] * len(twins)
        for _ in range(n_requests):
            for i, stream in enumerate(streams):
                elapsed, total = next(stream)
                times[i].append(elapsed)
                loads_1m[i].append(os.getloadavg()[0])
                totals[i] = total or totals[i]
        for i, stream in enumerate(streams):   # the pod count of a whole pass
            while not totals[i]:
                totals[i] = next(stream)[1] or 0
        startups = [t.startup_s for t in twins]
    return [{"nodes": n, "pods": totals[i], "startup_s": startups[i], "requests": len(times[i]),
             "median_ms": 1000 * statistics.median(times[i]),
             "p95_ms": 1000 * sorted(times[i])[int(0.95 * (len(times[i]) - 1))],
             "total_s": sum(times[i]), "load": statistics.median(loads_1m[i]),
             "load_max": max(loads_1m[i])} for i, (n, _p) in enumerate(sizes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-nodes", type=int, default=10)
    ap.add_argument("--small-pods", type=int, default=1000)
    ap.add_argument("--big-nodes", type=int, default=500)
    ap.add_argument("--big-pods", type=int, default=50000)
    a = ap.parse_args()
    rows = measure([(a.small_nodes, a.small_pods), (a.big_nodes, a.big_pods)])
    print(table("list pods page by page (limit 500), official client, raw JSON",
                ["nodes", "pods", "startup s", "requests", "median ms/req", "p95 ms/req", "timed s",
                 "load 1m", "load max"],
                [(r["nodes"], r["pods"], r["startup_s"], r["requests"], r["median_ms"], r["p95_ms"],
                  r["total_s"], r["load"], r["load_max"]) for r in rows]))
    ratio = rows[1]["median_ms"] / max(rows[0]["median_ms"], 1e-9)
    print()
    print(table("per-request cost as the store grows (flat means close to 1)", ["figure", "value", "target", "load 1m"],
                [(f"median ms/req {rows[1]['pods']} ÷ {rows[0]['pods']} pods", ratio, "<= 1.5",
                  statistics.median([rows[0]["load"], rows[1]["load"]]))]))


if __name__ == "__main__":
    main()
