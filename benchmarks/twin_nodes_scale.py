"""Scale of the twin's node models: building every node, and iptables at cluster size.

Run: `.venv/bin/python benchmarks/twin_nodes_scale.py [--sizes 20x2000,100x10000,500x50000]`.

For each size (nodes x pods) it generates a fixture and measures:

- ``build s``: ``build_nodes`` for every node (files, interfaces, k3s start), as the
  twin's nodes component calls it. kube-proxy's service chains are deferred, so this
  grows with the node's own files, not with the cluster's endpoints; from
  ``DEFER_LEASES_FROM_PODS`` pods on the per-pod lease files are deferred too
  (``leases`` column), otherwise creating them is most of it (disk-bound);
- ``1st save s``: the first ``iptables-save`` of one node, which programs its
  kube-proxy chains for every Service endpoint of the cluster;
- ``save s``: a second ``iptables-save`` (rendering only, linear in the rules);
- ``restore s``: ``iptables-restore`` of that dump (parse and index every rule).

Nothing here is asserted; this is a measurement, printed as a table.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time

from twin import fixtures
from twin.clock import Clock
from twin.node import DEFER_LEASES_FROM_PODS, build_nodes, fixture_pods, fixture_services


def measure(n_nodes: int, n_pods: int) -> dict:
    fx = fixtures.generate(n_nodes, n_pods)
    objects = list(fx.objects)
    # As the twin does after loading: the fixture's objects live on, keep the GC off them.
    gc.collect()
    gc.freeze()
    pods, services = fixture_pods(objects), fixture_services(objects)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as d:
        t0 = time.perf_counter()
        defer = sum(len(v) for v in pods.values()) >= DEFER_LEASES_FROM_PODS
        nodes = build_nodes(fx.nodes, fx.cluster, f"{d}/nodes", Clock(0.05), pods=pods, services=services,
                            defer_leases=defer)
        build = time.perf_counter() - t0
        node = nodes[sorted(nodes)[-1]]
        t0 = time.perf_counter()
        dump = node.iptables_save()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        node.iptables_save()
        again = time.perf_counter() - t0
        t0 = time.perf_counter()
        node.iptables.restore(dump)
        restore = time.perf_counter() - t0
    gc.unfreeze()
    return {"nodes": n_nodes, "pods": n_pods, "endpoints": sum(len(s.endpoints) for s in services),
            "rules": sum(1 for line in dump.splitlines() if line.startswith("-A ")),
            "leases": "deferred" if defer else "written", "build": build, "first": first, "again": again, "restore": restore}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20x2000,100x10000,500x50000",
                    help="comma-separated NODESxPODS")
    a = ap.parse_args()
    rows = [measure(*map(int, s.split("x"))) for s in a.sizes.split(",")]
    print(f"{'nodes':>6} {'pods':>7} {'endpoints':>10} {'rules/node':>11} {'leases':>9} {'build s':>8} "
          f"{'build ms/node':>14} {'1st save s':>11} {'save s':>7} {'restore s':>10}")
    for r in rows:
        print(f"{r['nodes']:>6} {r['pods']:>7} {r['endpoints']:>10} {r['rules']:>11} {r['leases']:>9} {r['build']:>8.2f} "
              f"{1000 * r['build'] / r['nodes']:>14.1f} {r['first']:>11.2f} {r['again']:>7.2f} "
              f"{r['restore']:>10.2f}")


if __name__ == "__main__":
    main()
