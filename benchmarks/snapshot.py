"""A pod snapshot at scale: the library against the typed client, kubectl and the raw floor.

Run: `make benchmark-snapshot` or
`.venv/bin/python benchmarks/snapshot.py [--nodes 500 --pods 50000 --rounds 3]`.

The twin runs in its own process (`runbook twin up --scale`), so its start time and
memory are its own. Then, in interleaved rounds (each contender once per round, the
median kept), every pod is read page by page (limit 500) by:

- ``library``: ``runbook.cluster.Cluster.list("pods")`` (raw dicts; what snapshots use);
- ``library snapshot``: ``Cluster.snapshot("pods")``, the DataFrame (also lists ReplicaSets);
- ``typed client``: ``CoreV1Api.list_pod_for_all_namespaces`` with model objects;
- ``kubectl``: ``kubectl get pods -A -o json`` (it pages by 500 too);
- ``raw floor (json)`` / ``raw floor (msgspec)``: plain HTTPS requests on one keep-alive
  connection, the same page size, and ``json.loads`` / the fast decoder the library uses;
  nothing else, one page after the other;
- ``raw floor (msgspec, read-ahead)``: the same, with the next page requested (in a
  helper thread, on the same connection: one request at a time) while this one is
  decoded, as the library does. The floor ratio compares the library with the fastest
  floor, so the library's read-ahead is not counted as a win over a weaker baseline.

Nothing here is asserted; this is a measurement, printed as tables with the load average.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TwinProcess, load_average, median, table  # noqa: E402

LIMIT = 500


def _fast_loads() -> tuple[str, Callable[[bytes], object]] | None:
    for mod in ("msgspec", "orjson"):
        try:
            if mod == "msgspec":
                import msgspec
                return "msgspec", msgspec.json.decode
            import orjson
            return "orjson", orjson.loads
        except ImportError:
            continue
    return None


class RawClient:
    """HTTPS GETs with the kubeconfig's token and CA on one kept-alive connection."""

    def __init__(self, kubeconfig: Path) -> None:
        import http.client

        doc = yaml.safe_load(kubeconfig.read_text())
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        cl = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        url = urlsplit(cl["server"])
        sslctx = ssl.create_default_context()
        if "certificate-authority-data" in cl:
            import base64
            sslctx.load_verify_locations(cadata=base64.b64decode(cl["certificate-authority-data"]).decode())
        elif "certificate-authority" in cl:
            sslctx.load_verify_locations(cl["certificate-authority"])
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=sslctx)
        self.headers = {"Authorization": f"Bearer {user['token']}", "Accept": "application/json"}

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {data[:200]!r}")
        return data


def raw_floor(raw: RawClient, loads: Callable[[bytes], object]) -> int:
    token, n = "", 0
    while True:
        q = f"?limit={LIMIT}" + (f"&continue={token}" if token else "")
        doc = loads(raw.get("/api/v1/pods" + q))
        n += len(doc["items"])
        token = doc["metadata"].get("continue")
        if not token:
            return n


_CONTINUE = re.compile(rb'"continue"\s*:\s*"([^"\\]*)"')


def raw_floor_ahead(raw: RawClient, loads: Callable[[bytes], object]) -> int:
    """:func:`raw_floor` with the next page fetched while this one is decoded (the token
    is read from the page's metadata, which comes before its items)."""
    def path(token: str) -> str:
        return "/api/v1/pods" + f"?limit={LIMIT}" + (f"&continue={token}" if token else "")

    n = 0
    with cf.ThreadPoolExecutor(1) as ex:
        data = raw.get(path(""))
        while True:
            m = _CONTINUE.search(data, 0, 4096)
            ahead = ex.submit(raw.get, path(m.group(1).decode())) if m and m.group(1) else None
            doc = loads(data)
            n += len(doc["items"])
            if ahead is None:
                return n
            data = ahead.result()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--pods", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-kubectl", action="store_true")
    a = ap.parse_args()

    from runbook import params
    from runbook.cluster import Cluster
    from runbook.tools import find_binary

    with tempfile.TemporaryDirectory(prefix="bench-snapshot-", ignore_cleanup_errors=True) as d:
        with TwinProcess(Path(d) / "twin", scale=f"nodes={a.nodes},pods={a.pods}") as twin:
            time.sleep(3)   # the controllers' first status pass runs right after start
            rss_ready, _ = twin.rss()
            p = params.load(twin.params)
            raw = RawClient(twin.kubeconfig)
            fast = _fast_loads()
            contenders: dict[str, Callable[[], int]] = {
                "library": lambda: len(Cluster.from_params(p).list("pods")),
                "library snapshot": lambda: len(Cluster.from_params(p).snapshot("pods")),
                "typed client": lambda: typed_client(twin.kubeconfig),
                "raw floor (json)": lambda: raw_floor(raw, json.loads),
            }
            if fast:
                contenders[f"raw floor ({fast[0]})"] = lambda: raw_floor(raw, fast[1])
                contenders[f"raw floor ({fast[0]}, read-ahead)"] = lambda: raw_floor_ahead(raw, fast[1])
            if not a.no_kubectl:
                kbin = find_binary("kubectl")
                contenders["kubectl"] = lambda: kubectl(twin.kubeconfig, kbin)
            times: dict[str, list[float]] = {k: [] for k in contenders}
            counts: dict[str, int] = {}
            print(f"twin ready in {twin.startup_s:.1f}s, RSS {rss_ready:.0f} MiB [load {load_average()}]", flush=True)
            for r in range(a.rounds):
                for name, fn in contenders.items():
                    gc.collect()
                    t0 = time.perf_counter()
                    counts[name] = fn()
                    times[name].append(time.perf_counter() - t0)
                    print(f"  round {r + 1}: {name} {times[name][-1]:.1f}s [load {load_average()}]", flush=True)
            _, rss_peak = twin.rss()
            startup = twin.startup_s
    med = {k: median(v) for k, v in times.items()}
    floor_name = min((k for k in med if k.startswith("raw floor")), key=med.get)
    rows = [(k, counts[k], med[k], min(times[k]), med[k] / med["library"]) for k in med]
    print(table(f"pod snapshot, {a.nodes} nodes / {a.pods} pods, {a.rounds} interleaved rounds (median)",
                ["contender", "pods", "median s", "best s", "÷ library"], rows))
    lib = med["library"]
    ratios = [("library ÷ typed client", lib / med["typed client"], "<= 0.15"),
              ("library ÷ raw floor " + floor_name[len("raw floor "):], lib / med[floor_name], "<= 1.05"),
              ("library snapshot ÷ typed client", med["library snapshot"] / med["typed client"], "-")]
    if "kubectl" in med:
        ratios.insert(1, ("library ÷ kubectl", lib / med["kubectl"], "<= 0.10"))
    ratios += [("twin start s", startup, "<= 10"), ("twin RSS ready MiB", rss_ready, "<= 1024"),
               ("twin RSS peak MiB", rss_peak, "-")]
    print()
    print(table("ratios and twin", ["figure", "value", "target"], ratios))


if __name__ == "__main__":
    main()
