"""How long a twin takes to start, and what a converged large cluster costs its controllers.

Run: `make benchmark-twin-start` or
`.venv/bin/python benchmarks/twin_start.py [--runs 3] [--nodes 100 --pods 5000]`.

1. ``runbook twin up`` as a user meets it: each run is a fresh Python process that
   imports the twin, starts ``Twin(state_dir)`` on minicloud and stops it. Printed per
   case: the process's wall time until the twin was ready, ``Twin.start`` alone
   (``startup_seconds``), and the process's CPU seconds until then (on a shared machine
   the CPU figure is the steadier one). Cases:

   - ``no lib bytecode, fixture parsed``: how every start ran before: a copy of lib/
     without ``__pycache__`` under ``PYTHONDONTWRITEBYTECODE=1`` (set in containers and CI:
     Python then compiles the editable package in every process) and the fixture YAML
     parsed in every process (``PHASE22_TWIN_CACHE=off``);
   - ``lib bytecode, fixture parsed``: lib/ compiled (``make venv`` does it now);
   - ``parse cache cold``: an empty cache folder (the first start on a machine);
   - ``parse cache warm``: the parsed fixture read from the cache folder.

2. A twin at scale as a user meets it (``runbook twin up --scale``): fresh processes
   starting ``Twin(state_dir, scale=(--scale-nodes, --scale-pods))``, default 500 nodes /
   50,000 pods (issue 16: start <= 10 s, RSS <= 1 GiB). Printed per case: spawn -> ready
   and ``Twin.start`` (wall), the process's CPU seconds until ready and until the
   controllers' first pass is done (idle), its resident memory at ready and its peak
   until idle, spawn -> exit (after stopping the twin and removing its state folder),
   and the load average. Cases: the generated cluster's cache folder empty
   (the first start of that size on a machine) and warm (every later one; see
   ``twin.fixtures.generated_cache``). ``--scale-runs 0`` skips this part.

3. Workload controllers on a generated cluster of ``--nodes`` x ``--pods`` (in this
   process): the twin's start, the controllers' own start, the time until their first
   pass over the converged cluster is done (idle), and one Deployment scaled by one
   replica until the new pod exists (one event, whatever the cluster's size).

Nothing is asserted; tests count the work instead (reconciles per controller,
``tests/integration/twin_controllers/test_twin_controllers_scale.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import BIN, REPO, load_average, median, table  # noqa: E402

# argv: nothing (minicloud) or NODES PODS (a generated cluster, waited on until idle)
CHILD = """
import json, os, shutil, sys, tempfile, time
t0 = time.perf_counter()
from twin.api import Twin
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("VmRSS", "VmHWM")))
    return int(f["VmRSS"].split()[0]) / 1024, int(f["VmHWM"].split()[0]) / 1024
scale = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else None
d = tempfile.mkdtemp(prefix="bench-twin-start-")
t = Twin(os.path.join(d, "twin"), scale=scale).start(timeout=600)
ready = time.perf_counter() - t0
c = os.times()
out = {"ready_at": time.time(), "process_s": ready, "start_s": t.startup_seconds, "cpu_s": c.user + c.system,
       "rss_ready": rss()[0], "load": os.getloadavg()[0]}
if scale:
    wc = t.rt.component("workloads")
    out["idle"] = bool(t.call(wc.wait_idle, 300, timeout=320))
    c = os.times()
    out["cpu_idle_s"] = c.user + c.system
    out["rss_peak"] = rss()[1]
print(json.dumps(out), flush=True)
t.stop()
shutil.rmtree(d, ignore_errors=True)
"""


def one_start(env: dict[str, str], scale: tuple[int, int] | None = None) -> dict[str, float]:
    t0 = time.time()
    argv = [str(n) for n in scale] if scale else []
    p = subprocess.run([str(BIN / "python"), "-c", CHILD, *argv], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"twin start failed:\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["spawn_s"] = out["ready_at"] - t0          # until the child was ready, not until it exited
    out["exit_s"] = time.time() - t0                # + stopping the twin and removing its state
    return out


def fresh_starts(runs: int) -> list[list]:
    """The four cases, each ``runs`` fresh processes; the first is how every start ran
    before (no bytecode for lib/ where PYTHONDONTWRITEBYTECODE is set, the fixture parsed)."""
    subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", str(REPO / "lib")],
                   check=True, capture_output=True)   # as `make venv` does
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-twin-cache-") as tmp:
        # lib/ without bytecode: a copy, first on the path, that nothing compiles for good
        bare = Path(tmp) / "bare"
        shutil.copytree(REPO / "lib", bare / "lib", ignore=shutil.ignore_patterns("__pycache__"))
        xdg = Path(tmp) / "xdg"
        cases = [("no lib bytecode, fixture parsed (before)",
                  {"PHASE22_TWIN_CACHE": "off", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONPATH": str(bare / "lib")}, False),
                 ("lib bytecode, fixture parsed", {"PHASE22_TWIN_CACHE": "off"}, False),
                 ("lib bytecode, parse cache cold", {}, True),
                 ("lib bytecode, parse cache warm (after)", {}, False)]
        for name, extra, empty_first in cases:
            results = []
            for _ in range(runs):
                if empty_first and xdg.exists():
                    shutil.rmtree(xdg)
                env = dict(os.environ, XDG_CACHE_HOME=str(xdg), **extra)
                results.append(one_start(env))
            rows.append([name, median([r["spawn_s"] for r in results]),
                         median([r["process_s"] for r in results]),
                         median([r["start_s"] for r in results]),
                         median([r["cpu_s"] for r in results])])
            print(f"  {name}: done", flush=True)
    return rows


def scale_starts(nodes: int, pods: int, runs: int) -> list[list]:
    """Fresh processes starting a generated cluster: the cache folder empty, then warm."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-twin-scale-cache-") as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "xdg"))
        env.pop("PHASE22_TWIN_CACHE", None)
        for name, empty_first in (("generated cluster cache cold", True),
                                  ("generated cluster cache warm (after)", False)):
            results = []
            for i in range(runs):
                if empty_first:
                    shutil.rmtree(Path(tmp) / "xdg", ignore_errors=True)
                results.append(one_start(env, (nodes, pods)))
                r = results[-1]
                print(f"  {name} run {i + 1}: ready {r['spawn_s']:.1f}s, CPU {r['cpu_s']:.1f}s, "
                      f"RSS {r['rss_ready']:.0f} MiB [load {load_average()}]", flush=True)
            rows.append([name, median([r["spawn_s"] for r in results]),
                         median([r["start_s"] for r in results]),
                         median([r["cpu_s"] for r in results]),
                         median([r["cpu_idle_s"] for r in results]),
                         median([r["rss_ready"] for r in results]),
                         max(r["rss_peak"] for r in results),
                         "yes" if all(r["idle"] for r in results) else "NO",
                         median([r["exit_s"] for r in results]),
                         median([r["load"] for r in results])])
    return rows


def converged_cluster(nodes: int, pods: int) -> list[list]:
    from twin.api import Twin

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-twin-scale-") as d:
        twin = Twin(Path(d) / "twin", scale=(nodes, pods)).start()
        try:
            wc = twin.rt.component("workloads")
            rows.append(["twin start (generate + load + components)", twin.startup_seconds])
            rows.append(["workload controllers' start", wc.start_seconds])
            t0 = time.perf_counter()
            idle = twin.call(wc.wait_idle, 300, timeout=320)
            rows.append([f"first pass until idle ({'idle' if idle else 'NOT idle'})", time.perf_counter() - t0])

            def scale_one() -> tuple[str, str, int]:
                rt = twin.rt
                dt = rt.store.lookup("apps", "v1", "deployments")
                dep = max(rt.store.iter_objects(dt), key=lambda o: o["spec"].get("replicas") or 0)
                ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
                want = (dep["spec"].get("replicas") or 0) + 1
                rt.store.mutate(dt, ns, name, lambda o: o["spec"].__setitem__("replicas", want))
                return ns, name, want

            ns, name, want = twin.call(scale_one)

            def replicas() -> int:
                dt = twin.rt.store.lookup("apps", "v1", "deployments")
                return (twin.rt.store.get(dt, ns, name).get("status") or {}).get("replicas") or 0

            t0 = time.perf_counter()
            while twin.call(replicas) < want and time.perf_counter() - t0 < 120:
                time.sleep(0.005)
            rows.append([f"one Deployment scaled +1 ({ns}/{name}) until its status counts the pod",
                         time.perf_counter() - t0])
        finally:
            twin.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--scale-nodes", type=int, default=500)
    ap.add_argument("--scale-pods", type=int, default=50000)
    ap.add_argument("--scale-runs", type=int, default=3, help="fresh processes per case (0: skip)")
    ap.add_argument("--no-minicloud", action="store_true", help="skip the minicloud cases")
    a = ap.parse_args()
    if not a.no_minicloud:
        print(f"minicloud twin, {a.runs} fresh processes per case ...", flush=True)
        rows = fresh_starts(a.runs)
        print(table(f"twin start, minicloud, median of {a.runs} (seconds)",
                    ["case", "spawn->ready", "import->ready", "Twin.start", "CPU"], rows))
    if a.scale_runs:
        print(f"\ntwin at {a.scale_nodes} nodes / {a.scale_pods} pods, {a.scale_runs} fresh processes "
              "per case ...", flush=True)
        rows = scale_starts(a.scale_nodes, a.scale_pods, a.scale_runs)
        print(table(f"twin start, {a.scale_nodes} nodes / {a.scale_pods} pods, median of "
                    f"{a.scale_runs} (seconds, MiB; targets: spawn->ready <= 10 s, RSS <= 1024 MiB)",
                    ["case", "spawn->ready", "Twin.start", "CPU ready", "CPU idle", "RSS ready",
                     "RSS peak", "idle", "spawn->exit", "load 1m"], rows))
    print(f"\nconverged cluster nodes={a.nodes},pods={a.pods} ...", flush=True)
    print(table("workload controllers on a converged cluster (seconds)", ["step", "s"],
                converged_cluster(a.nodes, a.pods)))


if __name__ == "__main__":
    main()
