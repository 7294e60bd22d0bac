"""Cost of one page of the twin's store at growing sizes (it must stay flat).

Fills a store with N pods spread over namespaces and nodes, then times page 1 and
page 100 (limit=500) of an all-namespaces list, a one-namespace page, a
``spec.nodeName`` selection and a page right after a write (which folds the new key
into the sorted index). Prints a table; asserts nothing.

Usage:
    .venv/bin/python benchmarks/store_paging.py [N ...]
"""
from __future__ import annotations

import sys
import time

from twin.store import Store


def _pod(i: int, namespaces: int, nodes: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{i:06d}", "namespace": f"ns-{i % namespaces:03d}",
                         "labels": {"app": f"app-{i % 50}", "tier": "web" if i % 2 else "db"}},
            "spec": {"nodeName": f"node-{i % nodes:03d}",
                     "containers": [{"name": "main", "image": "nginx:1.27",
                                     "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": f"10.42.{i // 250 % 250}.{i % 250}"}}


def _timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def measure(n: int) -> dict[str, float]:
    store = Store()
    namespaces, nodes = max(1, n // 500), max(1, n // 100)
    for k in range(namespaces):
        store.create({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": f"ns-{k:03d}"}})
    t0 = time.perf_counter()
    for i in range(n):
        store.create(_pod(i, namespaces, nodes))
    load = time.perf_counter() - t0
    pods = store.lookup("", "v1", "pods")

    store.list(pods, limit=1)   # fold the initial load into the sorted index
    token_100 = None
    for _ in range(min(99, max(0, n // 500 - 1))):
        token_100 = store.list(pods, limit=500, continue_token=token_100, copy=False).continue_token

    def after_write() -> None:
        store.mutate(pods, "ns-000", "pod-000000",
                     lambda o: o["metadata"]["labels"].__setitem__("t", str(time.time_ns())))
        store.list(pods, limit=500, continue_token=token_100)

    return {
        "N": n,
        "load s": load,
        "page 1 ms": _timed(lambda: store.list(pods, limit=500)),
        "page 100 ms": _timed(lambda: store.list(pods, limit=500, continue_token=token_100)),
        "page 100 raw ms": _timed(lambda: store.list(pods, limit=500, continue_token=token_100,
                                                     copy=False)),
        "one ns ms": _timed(lambda: store.list(pods, "ns-000", limit=500)),
        "nodeName ms": _timed(lambda: store.list(pods, field_selector="spec.nodeName=node-001")),
        "write+page ms": _timed(after_write),
    }


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1_000, 10_000, 50_000]
    rows = [measure(n) for n in sizes]
    cols = list(rows[0])
    print("  ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>15.3f}" if isinstance(r[c], float) else f"{r[c]:>15}"
                        for c in cols))


if __name__ == "__main__":
    main(sys.argv[1:])
