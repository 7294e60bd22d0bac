"""A pod snapshot at scale: the library against the typed client, kubectl and the raw floor.

Run: `make benchmark-snapshot` or
`.venv/bin/python benchmarks/snapshot.py [--nodes 500 --pods 50000 --rounds 3 --repeat 5]`.

The twin runs in its own process (`runbook twin up --scale`), so its start time and
memory are its own. After one untimed pass of the in-process contenders (imports,
the twin's encoded-object cache), in interleaved rounds (the fast contenders
``--repeat`` times in turn, then the typed client and kubectl once; the median kept),
every pod is read page by page (limit 500) by:

- ``library``: ``runbook.cluster.Cluster.list("pods")`` (raw dicts; what snapshots keep);
- ``library snapshot``: ``Cluster.snapshot("pods")``, the DataFrame (also lists ReplicaSets);
- ``typed client``: ``CoreV1Api.list_pod_for_all_namespaces`` with model objects;
- ``kubectl``: ``kubectl get pods -A -o json`` (it pages by 500 too);
- ``raw floor (pipelined)`` / ``(read-ahead)`` / ``(serial)``: the best plain loop
  (``benchmarks/raw_floor.py``): ``http.client``, the library's decoder, the same page
  size and query, every pod kept in one list, the collector off during the loop, the
  next page requested before this one is decoded (on the same connection, or from a
  helper thread) or after. The floor ratio compares the library with the fastest.

Each row shows the wall time (median and best), the CPU the client used (this process,
helper threads included, or kubectl's) and the twin's CPU during the read, and the
1-minute load average at the end of each timed read (median). Nothing is asserted;
this is a measurement, printed as tables.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, cpu_seconds, load_average, median, table  # noqa: E402
from raw_floor import LIMIT, MODES, fast_decoder, floor_pods  # noqa: E402

#: the contenders that take seconds, not minutes: they run ``--repeat`` times a round
FAST = ("library", "library snapshot") + tuple(f"raw floor ({m})" for m in MODES)


def typed_client(kubeconfig: Path) -> int:
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    token, n = None, 0
    while True:
        page = core.list_pod_for_all_namespaces(limit=LIMIT, _continue=token)
        n += len(page.items)
        token = page.metadata._continue
        if not token:
            return n


def kubectl(kubeconfig: Path, binary: str) -> int:
    out = subprocess.run([binary, "--kubeconfig", str(kubeconfig), "get", "pods", "-A", "-o", "json",
                          f"--chunk-size={LIMIT}"], check=True, capture_output=True).stdout
    return len(json.loads(out)["items"])


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (kubectl)."""
    t = os.times()
    return t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each fast contender per round")
    ap.add_argument("--no-kubectl", action="store_true")
    a = ap.parse_args()

    from runbook import params
    from runbook.cluster import Cluster
    from runbook.tools import find_binary

    decoder = fast_decoder()
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-", ignore_cleanup_errors=True) as d:
        with TwinProcess(Path(d) / "twin", scale=f"nodes={a.nodes},pods={a.pods}") as twin:
            time.sleep(3)   # the controllers' first status pass runs right after start
            rss_ready, _ = twin.rss()
            load_ready = os.getloadavg()[0]
            p = params.load(twin.params)
            kc = twin.kubeconfig
            contenders: dict[str, Callable[[], int]] = {
                "library": lambda: len(Cluster.from_params(p).list("pods")),
                "library snapshot": lambda: len(Cluster.from_params(p).snapshot("pods")),
                "typed client": lambda: typed_client(kc),
            }
            for mode in MODES:
                contenders[f"raw floor ({mode})"] = lambda m=mode: len(floor_pods(kc, mode=m, decode=decoder[1]))
            if not a.no_kubectl:
                kbin = find_binary("kubectl")
                contenders["kubectl"] = lambda: kubectl(kc, kbin)
            print(f"twin ready in {twin.startup_s:.1f}s, RSS {rss_ready:.0f} MiB [load {load_average()}]; "
                  f"decoder {decoder[0]}", flush=True)
            for name in FAST:
                contenders[name]()   # untimed: imports, connections, the twin's caches
            samples: dict[str, list[dict]] = {k: [] for k in contenders}
            counts: dict[str, int] = {}
            order = [n for _ in range(a.repeat) for n in FAST] + [n for n in contenders if n not in FAST]
            for r in range(a.rounds):
                for name in order:
                    fn = contenders[name]
                    gc.collect()
                    c0, k0, t0 = time.process_time(), children_cpu(), cpu_seconds(twin.proc.pid)
                    w0 = time.perf_counter()
                    counts[name] = fn()
                    wall = time.perf_counter() - w0
                    samples[name].append({
                        "wall": wall,
                        "client_cpu": time.process_time() - c0 + children_cpu() - k0,
                        "twin_cpu": cpu_seconds(twin.proc.pid) - t0,
                        "load": os.getloadavg()[0]})
                    print(f"  round {r + 1}: {name} {wall:.2f}s [load {load_average()}]", flush=True)
            _, rss_peak = twin.rss()
            startup = twin.startup_s
    med = {k: {f: median([s[f] for s in v]) for f in ("wall", "client_cpu", "twin_cpu", "load")}
           for k, v in samples.items()}
    lib = med["library"]["wall"]
    rows = [(k, counts[k], len(samples[k]), m["wall"], min(s["wall"] for s in samples[k]), m["client_cpu"], m["twin_cpu"],
             m["wall"] / lib, m["load"]) for k, m in med.items()]
    print(table(f"pod snapshot, {a.nodes} nodes / {a.pods} pods, {a.rounds} interleaved rounds (median)",
                ["contender", "pods", "runs", "median s", "best s", "client CPU s", "twin CPU s", "÷ library",
                 "load 1m"], rows))
    floor_name = min((k for k in med if k.startswith("raw floor")), key=lambda k: med[k]["wall"])

    def ratio(label: str, a_: str, b_: str, target: str) -> tuple:
        return (label, med[a_]["wall"] / med[b_]["wall"], target,
                median([s["load"] for s in samples[a_] + samples[b_]]))

    ratios = [ratio("library ÷ typed client", "library", "typed client", "<= 0.15"),
              ratio(f"library ÷ {floor_name}", "library", floor_name, "<= 1.05"),
              ratio("library snapshot ÷ typed client", "library snapshot", "typed client", "-"),
              (f"library ÷ {floor_name}, client CPU", med["library"]["client_cpu"] / med[floor_name]["client_cpu"],
               "-", median([s["load"] for s in samples["library"] + samples[floor_name]]))]
    if "kubectl" in med:
        ratios.insert(1, ratio("library ÷ kubectl", "library", "kubectl", "<= 0.10"))
    ratios += [("twin start s", startup, "<= 10", load_ready), ("twin RSS ready MiB", rss_ready, "<= 1024", load_ready),
               ("twin RSS peak MiB", rss_peak, "-", med["library"]["load"])]
    print()
    print(table("ratios and twin", ["figure", "value", "target", "load 1m"], ratios))


if __name__ == "__main__":
    main()
