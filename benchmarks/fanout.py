"""Node facts on a large twin: every node one at a time, then `limits.parallel_reads` at once.

Run: `make benchmark-fanout` or
`.venv/bin/python benchmarks/fanout.py [--nodes 200 --pods 2000 --parallel 20 --latency-ms 5]`.

The twin runs in its own process (`runbook twin up --scale`). The runbook's nodes are
built from its params.yaml (host keys verified, as in a run), every node is connected
once (warm: a session keeps one connection per node), then preflight's node facts
(:func:`runbook.preflight._node_fact_row`: `k3s --version`, `uname -r`, `ip -o link
show`, `iptables-save`, `ip6tables-save`, the containerd template, `bpftool version`
and a server's k3s config) are read:

- ``serial``: one node after the other;
- ``parallel``: every node at once from a pool of ``--parallel`` threads
  (:meth:`runbook.fleet.Fleet.read`, what ``Session.read_nodes`` uses).

Twice, on the same twin:

1. **CPU only** (no latency model). On loopback a command costs nothing but CPU: the
   runbook's (parsing, SSH) and the twin's (every node's commands run in one process
   on this machine's cores, where a real node runs them on its own CPU). The serial
   cost per node (target <= 60 ms warm) is this pass's; parallel ÷ serial here is
   bounded by (runbook + twin CPU per node) ÷ (cores × serial time), printed beside it.
2. **With the latency model**: the twin's ``ssh_command_latency`` fault set to
   ``--latency-ms`` per command (wall time, no CPU; see ``twin.faults``), a stand-in
   for what loopback lacks and a real node has: about three network round trips per
   command (channel open, exec, exit status and close; 0.2-0.5 ms each on a LAN) and
   sshd starting the user's shell to run it (a fork and exec of bash), not counting
   the program's own run time (sudo's PAM and log, iptables-save walking thousands
   of rules, a Go binary starting), which is longer on a real node. Parallel ÷ serial
   (target <= 0.15) is this pass's: it says how well the fan-out overlaps node latency,
   the runbook's CPU per node being what remains on the machine that runs it.

Also printed: where one node's serial time goes (its commands vs parsing its dumps),
the CPU seconds of the runbook and of the twin during each parallel read, and, for
the latency pass, their CPU per node (serial and parallel): the runbook's is what the
parallel read is bound by (one process, one GIL), and it moves less with the machine's
load than the ratio does.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, cpu_seconds, median, table  # noqa: E402


def passes(nodes: list, row: Callable[[Any], Any], read_parallel: Callable[[list], Any],
           pid: int | None, rounds: int) -> dict[str, float]:
    """Serial then parallel reads, ``rounds`` times: medians of wall and CPU seconds."""
    got: dict[str, list[float]] = {k: [] for k in ("serial", "parallel", "serial_cpu", "serial_twin",
                                                   "parallel_cpu", "parallel_twin")}
    for _ in range(rounds):
        for kind in ("serial", "parallel"):
            c0, w0 = cpu_seconds(), cpu_seconds(pid)
            t0 = time.perf_counter()
            if kind == "serial":
                for n in nodes:
                    row(n)
            else:
                read_parallel(nodes)
            got[kind].append(time.perf_counter() - t0)
            got[f"{kind}_cpu"].append(cpu_seconds() - c0)
            got[f"{kind}_twin"].append(cpu_seconds(pid) - w0)
    return {k: median(v) for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=5.0,
                    help="the latency model's wall milliseconds per command (pass 2)")
    a = ap.parse_args()

    from runbook import facts, fleet, params
    from runbook.nodes import Node
    from runbook.preflight import _node_fact_row

    def read_parallel(nodes: list) -> list:
        return fleet.Fleet(nodes, parallel_reads=a.parallel).read(
            _node_fact_row, description="facts").raise_for_failures().outcomes

    with tempfile.TemporaryDirectory(prefix="bench-fanout-", ignore_cleanup_errors=True) as d:
        with TwinProcess(Path(d) / "twin", scale=f"nodes={a.nodes},pods={a.pods}") as twin:
            p = params.load(twin.params)
            nodes = Node.from_params(p)
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(a.parallel) as ex:
                list(ex.map(lambda n: n.run("true"), nodes))
            connect = time.perf_counter() - t0
            read_parallel(nodes)            # warm: each node's iptables programmed once
            pid = twin.proc.pid if twin.proc else None
            cpu = passes(nodes, _node_fact_row, read_parallel, pid, a.rounds)
            # one node, taken apart (CPU only)
            n = nodes[len(nodes) // 2]
            commands: list[str] = []
            real_run = n.run
            n.run = lambda *args, **kw: commands.append(args[0]) or real_run(*args, **kw)
            _node_fact_row(n)
            n.run = real_run
            cmds, chains, summary = [], [], []
            for _ in range(5):
                t0 = time.perf_counter()
                n.run("k3s --version"); n.run("uname -r"); n.run("ip -o link show")
                dump4 = n.run("iptables-save", sudo=True).stdout
                dump6 = n.run("ip6tables-save", sudo=True).stdout
                cmds.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                facts.parse_iptables_chains(dump4), facts.parse_iptables_chains(dump6)
                chains.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                facts.parse_iptables_save(dump4), facts.parse_iptables_save(dump6)
                summary.append(time.perf_counter() - t0)
            twin.set_faults(ssh_command_latency=a.latency_ms / 1000)
            lat = passes(nodes, _node_fact_row, read_parallel, pid, a.rounds)
            twin.set_faults(ssh_command_latency=0)
            for x in nodes:
                x.close()
    k = len(nodes)
    cores = os.cpu_count() or 1
    per_client, per_twin = 1000 * cpu["serial_cpu"] / k, 1000 * cpu["serial_twin"] / k
    rows = [
        ("connect all (parallel), s", connect),
        ("commands per node (fact row)", len(commands)),
        ("1. CPU only: serial, all nodes, s", cpu["serial"]),
        (f"1. CPU only: parallel ({a.parallel} at once), s", cpu["parallel"]),
        ("1. CPU only: parallel ÷ serial", cpu["parallel"] / cpu["serial"]),
        ("1. CPU only: serial per node, ms (target <= 60)", 1000 * cpu["serial"] / k),
        ("   serial CPU per node: runbook, ms", per_client),
        ("   serial CPU per node: twin, ms", per_twin),
        (f"   CPU bound of parallel ÷ serial here ({cores} cores)",
         (per_client + per_twin) * k / 1000 / cores / cpu["serial"]),
        ("   CPU in the parallel read: runbook / twin, s",
         f"{cpu['parallel_cpu']:.2f} / {cpu['parallel_twin']:.2f}"),
        (f"2. latency {a.latency_ms:g} ms/command: serial, all nodes, s", lat["serial"]),
        (f"2. latency {a.latency_ms:g} ms/command: parallel, s", lat["parallel"]),
        (f"2. latency {a.latency_ms:g} ms/command: parallel ÷ serial (target <= 0.15)",
         lat["parallel"] / lat["serial"]),
        ("   serial per node, ms", 1000 * lat["serial"] / k),
        ("   CPU in the parallel read: runbook / twin, s",
         f"{lat['parallel_cpu']:.2f} / {lat['parallel_twin']:.2f}"),
        ("   CPU per node in the parallel read: runbook / twin, ms",
         f"{1000 * lat['parallel_cpu'] / k:.2f} / {1000 * lat['parallel_twin'] / k:.2f}"),
        ("   CPU per node in the serial read: runbook / twin, ms",
         f"{1000 * lat['serial_cpu'] / k:.2f} / {1000 * lat['serial_twin'] / k:.2f}"),
        ("one node: 5 commands, ms", 1000 * median(cmds)),
        ("one node: chain counts of both dumps (the fact), ms", 1000 * median(chains)),
        ("one node: full summary of both dumps (for reference), ms", 1000 * median(summary)),
        ("iptables-save size, KB", len(dump4) / 1024),
    ]
    print(table(f"node facts, {a.nodes} nodes / {a.pods} pods, median of {a.rounds} rounds",
                ["figure", "value"], rows))


if __name__ == "__main__":
    main()
