"""Scale of the twin's API: start-up time, and the cost of one list request at 1k and 50k pods.

Run: `make benchmark` or `.venv/bin/python benchmarks/api_paging.py [--big-nodes 500 --big-pods 50000]`.

For each size it starts a generated twin (same shape as minicloud) in its own process
(`runbook twin up --scale`, so the client and the API server do not share one
interpreter), pages through every pod with the official Python client (raw JSON,
limit=500, as runbook.cluster does) until at least 50 requests were timed, and prints
the time per request. The per-request time must stay flat as the store grows: the
store indexes by resource and namespace and pages with a sorted key index.
Nothing here is asserted; this is a measurement, printed as a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, table  # noqa: E402


def page_all(kubeconfig: str, limit: int = 500) -> tuple[int, list[float]]:
    api = config.new_client_from_config(kubeconfig)
    core = client.CoreV1Api(api)
    token, total, times = None, 0, []
    while True:
        t0 = time.perf_counter()
        resp = core.list_pod_for_all_namespaces(limit=limit, _continue=token, _preload_content=False)
        doc = json.loads(resp.data)
        times.append(time.perf_counter() - t0)
        total += len(doc["items"])
        token = doc["metadata"].get("continue")
        if not token:
            return total, times


def measure(nodes: int, pods: int, min_requests: int = 50) -> dict:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as d:
        with TwinProcess(Path(d) / "twin", scale=f"nodes={nodes},pods={pods}") as twin:
            startup = twin.startup_s
            # The controllers' first status pass runs right after start: let it finish,
            # then page everything until enough requests were timed.
            time.sleep(3)
            times: list[float] = []
            while len(times) < min_requests:
                total, t = page_all(str(twin.kubeconfig))
                times += t
    return {"nodes": nodes, "pods": total, "startup_s": startup, "requests": len(times),
            "median_ms": 1000 * statistics.median(times), "p95_ms": 1000 * sorted(times)[int(0.95 * (len(times) - 1))],
            "total_s": sum(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-nodes", type=int, default=10)
    ap.add_argument("--small-pods", type=int, default=1000)
    ap.add_argument("--big-nodes", type=int, default=500)
    ap.add_argument("--big-pods", type=int, default=50000)
    a = ap.parse_args()
    rows = [measure(a.small_nodes, a.small_pods), measure(a.big_nodes, a.big_pods)]
    print(table("list pods page by page (limit 500), official client, raw JSON",
                ["nodes", "pods", "startup s", "requests", "median ms/req", "p95 ms/req", "page-all s"],
                [(r["nodes"], r["pods"], r["startup_s"], r["requests"], r["median_ms"], r["p95_ms"],
                  r["total_s"]) for r in rows]))
    ratio = rows[1]["median_ms"] / max(rows[0]["median_ms"], 1e-9)
    print(f"\nper-request cost ratio {rows[1]['pods']}/{rows[0]['pods']}: {ratio:.2f} "
          "(flat means close to 1; target <= 1.5)")


if __name__ == "__main__":
    main()
