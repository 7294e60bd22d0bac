"""Node facts on a large twin: every node one at a time, then `limits.parallel_reads` at once.

Run: `make benchmark-fanout` or
`.venv/bin/python benchmarks/fanout.py [--nodes 200 --pods 2000 --parallel 20]`.

The twin runs in its own process (`runbook twin up --scale`). The runbook's nodes are
built from its params.yaml (host keys verified, as in a run), every node is connected
once (warm: a session keeps one connection per node), then preflight's node facts
(`k3s --version`, `uname -r`, `ip -o link show`, `iptables-save`, `ip6tables-save`:
five commands and their parsers) are read:

- ``serial``: one node after the other;
- ``parallel``: every node at once from a pool of ``--parallel`` threads
  (:meth:`runbook.fleet.Fleet.read`, what ``Session.read_nodes`` uses).

Printed: both times, the per-node serial cost, parallel ÷ serial, where one node's
serial time goes (the commands vs parsing its iptables dump), and the CPU seconds the
runbook's process and the twin's spent during the parallel read: every node of the
twin shares this machine's cores with the runbook, so once a node's facts cost only CPU
(no waiting left), parallel ÷ serial is bounded by that CPU, not by the pool. The CPU
per node (runbook and twin, measured in the serial pass) and the bound it sets on this
machine, (runbook + twin CPU) ÷ (cores × serial time), are printed beside the ratio:
on real nodes the twin's share runs on each node's own CPU, and only the runbook's
stays on the machine that runs it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, cpu_seconds, median, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    from runbook import facts, fleet, params
    from runbook.nodes import Node
    from runbook.preflight import _node_fact_row

    def read_parallel(nodes: list) -> list:
        if hasattr(fleet.Fleet, "read"):
            return fleet.Fleet(nodes, parallel_reads=a.parallel).read(
                _node_fact_row, description="facts").raise_for_failures().outcomes
        with cf.ThreadPoolExecutor(a.parallel) as ex:     # a library without Fleet.read
            return list(ex.map(_node_fact_row, nodes))

    with tempfile.TemporaryDirectory(prefix="bench-fanout-", ignore_cleanup_errors=True) as d:
        with TwinProcess(Path(d) / "twin", scale=f"nodes={a.nodes},pods={a.pods}") as twin:
            p = params.load(twin.params)
            nodes = Node.from_params(p)
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(a.parallel) as ex:
                list(ex.map(lambda n: n.run("true"), nodes))
            connect = time.perf_counter() - t0
            read_parallel(nodes)            # warm: each node's iptables programmed once
            serial, parallel, cpu_client, cpu_twin = [], [], [], []
            serial_cpu_client, serial_cpu_twin = [], []
            pid = twin.proc.pid if twin.proc else None
            for _ in range(a.rounds):
                c0, w0 = cpu_seconds(), cpu_seconds(pid)
                t0 = time.perf_counter()
                for n in nodes:
                    _node_fact_row(n)
                serial.append(time.perf_counter() - t0)
                serial_cpu_client.append(cpu_seconds() - c0)
                serial_cpu_twin.append(cpu_seconds(pid) - w0)
                c0, w0 = cpu_seconds(), cpu_seconds(pid)
                t0 = time.perf_counter()
                read_parallel(nodes)
                parallel.append(time.perf_counter() - t0)
                cpu_client.append(cpu_seconds() - c0)
                cpu_twin.append(cpu_seconds(pid) - w0)
            # one node, taken apart
            n = nodes[len(nodes) // 2]
            cmds, parse = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                n.run("k3s --version"); n.run("uname -r"); n.run("ip -o link show")
                dump4 = n.run("iptables-save", sudo=True).stdout
                dump6 = n.run("ip6tables-save", sudo=True).stdout
                cmds.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                facts.parse_iptables_save(dump4)
                facts.parse_iptables_save(dump6)
                parse.append(time.perf_counter() - t0)
            for x in nodes:
                x.close()
    s, pl = median(serial), median(parallel)
    per_node_client = 1000 * median(serial_cpu_client) / len(nodes)
    per_node_twin = 1000 * median(serial_cpu_twin) / len(nodes)
    cores = os.cpu_count() or 1
    rows = [("connect all (parallel)", connect), ("serial, all nodes", s),
            (f"parallel ({a.parallel} at once), all nodes", pl),
            ("parallel ÷ serial (target <= 0.15)", pl / s),
            ("serial per node, ms (target <= 60)", 1000 * s / len(nodes)),
            ("  of which 5 commands, ms", 1000 * median(cmds)),
            ("  of which parsing iptables, ms", 1000 * median(parse)),
            ("serial CPU per node: runbook, ms", per_node_client),
            ("serial CPU per node: twin, ms", per_node_twin),
            (f"CPU bound of parallel ÷ serial here ({cores} cores)",
             (per_node_client + per_node_twin) * len(nodes) / 1000 / cores / s),
            ("iptables-save size, KB", len(dump4) / 1024),
            ("CPU during the parallel read: runbook, s", median(cpu_client)),
            ("CPU during the parallel read: twin, s", median(cpu_twin))]
    print(table(f"node facts, {a.nodes} nodes / {a.pods} pods, median of {a.rounds} rounds",
                ["figure", "value"], rows))


if __name__ == "__main__":
    main()
