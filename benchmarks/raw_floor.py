"""The raw paging floor: the fastest plain loop that reads every pod, for the library to
be measured against (``benchmarks/snapshot.py``).

What the floor does is what ``runbook.cluster.Cluster.list("pods")`` does, with nothing
else: it connects (the kubeconfig's server, CA and bearer token; the library connects on
each call too), asks for the same pages (``GET /api/v1/pods?limit=500&continue=...``,
``Accept: application/json``) on one kept-alive ``http.client`` connection, decodes each
with the decoder the library uses (``msgspec.json.decode``), and keeps every pod, as
decoded, in one list. Two liberties make it the best such loop, not a straw man:

- the garbage collector is off for the whole loop (decoded JSON holds no cycle, so a
  collection during it only rescans pods already received), and at its end the pods
  join the oldest generation without a scan (``gc.freeze()`` then ``gc.unfreeze()``,
  two list splices) before the collector is turned back on: turned on with the ~1.5
  million containers of 50,000 pods still young, it scans them all at the next
  allocation (0.75 s of CPU here). No collection ever walks the pods;
- the next page is asked for as soon as this page has arrived, its token read from the
  page's head, so the server reads and encodes it while this page is decoded. Two ways
  (``mode``), and the benchmark keeps the faster:

  - ``pipelined``: the loop writes the next request on its one connection before it
    decodes, and reads the answer after (``http.client`` allows one request in flight);
  - ``read-ahead``: a helper thread asks for the next page while this one is decoded.
    The loop waits for the helper to start: the decode holds the interpreter lock
    throughout (one call into msgspec), and the helper, once running, keeps the lock
    until its request is on the wire (without that hand-over the request went out after
    the decode, and the read-ahead overlapped nothing);

  ``serial`` asks for each page once the previous one is decoded.

Example:
    >>> pods = floor_pods(Path(".twin/kubeconfig"), mode="pipelined")   # doctest: +SKIP
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import gc
import http.client
import re
import ssl
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit

import yaml

LIMIT = 500
PODS = "/api/v1/pods"
MODES = ("pipelined", "read-ahead", "serial")
_CONTINUE = re.compile(rb'"continue"\s*:\s*"([^"\\]*)"')


def fast_decoder() -> tuple[str, Callable[[bytes], object]]:
    """The decoder ``runbook.paging.loads`` uses: msgspec's, else the standard library's."""
    try:
        import msgspec
    except ImportError:
        import json
        return "json", json.loads
    return "msgspec", msgspec.json.decode


class RawClient:
    """HTTPS GETs with the kubeconfig's token and CA on one kept-alive connection,
    refused unless the server is on loopback (benchmarks run against a twin only)."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.load(Path(kubeconfig).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        cl = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        url = urlsplit(cl["server"])
        if not (url.hostname or "").startswith("127.") and url.hostname not in ("::1", "localhost"):
            raise RuntimeError(f"benchmarks read a twin on loopback only, not {cl['server']}")
        # only the cluster's CA, as the library's client does (the system's trust store
        # takes ~17 ms to load, more than the library spends connecting)
        sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if "certificate-authority-data" in cl:
            sslctx.load_verify_locations(cadata=base64.b64decode(cl["certificate-authority-data"]).decode())
        elif "certificate-authority" in cl:
            sslctx.load_verify_locations(cl["certificate-authority"])
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=sslctx)
        self.headers = {"Authorization": f"Bearer {user['token']}", "Accept": "application/json"}

    def get(self, path: str) -> bytes:
        self.send(path)
        return self.receive(path)

    def send(self, path: str) -> None:
        self.conn.request("GET", path, headers=self.headers)

    def receive(self, path: str) -> bytes:
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {data[:200]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def page_path(token: str | None) -> str:
    """The path of one page of pods, with the query the library sends."""
    return PODS + "?" + urlencode({"limit": LIMIT, **({"continue": token} if token else {})})


def floor_pods(kubeconfig: Path, *, mode: str = "pipelined",
               decode: Callable[[bytes], object] | None = None) -> list[dict]:
    """Every pod of the cluster, decoded, in one list (see the module's docstring)."""
    loop = {"pipelined": _pipelined, "read-ahead": _ahead, "serial": _serial}[mode]
    decode = decode or fast_decoder()[1]
    raw = RawClient(kubeconfig)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return loop(raw, decode)
    finally:
        raw.close()
        if gc.get_freeze_count() == 0:   # nobody else froze anything: unfreezing releases only ours
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def _serial(raw: RawClient, decode: Callable[[bytes], object]) -> list[dict]:
    pods: list[dict] = []
    token = None
    while True:
        doc = decode(raw.get(page_path(token)))
        pods += doc["items"]
        token = doc["metadata"].get("continue")
        if not token:
            return pods


def _next_path(data: bytes) -> str | None:
    m = _CONTINUE.search(data, 0, 4096)
    return page_path(m.group(1).decode()) if m and m.group(1) else None


def _last(doc: dict) -> list[dict]:
    if doc["metadata"].get("continue"):
        raise RuntimeError("a page's continue token was not in its first 4 KiB")
    return doc["items"]


def _pipelined(raw: RawClient, decode: Callable[[bytes], object]) -> list[dict]:
    pods: list[dict] = []
    data = raw.get(page_path(None))
    while True:
        path = _next_path(data)
        if path is not None:
            raw.send(path)
        doc = decode(data)
        pods += _last(doc) if path is None else doc["items"]
        if path is None:
            return pods
        data = raw.receive(path)


def _started(ex: cf.ThreadPoolExecutor, fn: Callable[[str], bytes], arg: str) -> cf.Future:
    """``fn(arg)`` submitted to ``ex``, returned once the helper thread runs it."""
    started = threading.Event()

    def run() -> bytes:
        started.set()
        return fn(arg)

    future = ex.submit(run)
    started.wait(1.0)
    return future


def _ahead(raw: RawClient, decode: Callable[[bytes], object]) -> list[dict]:
    pods: list[dict] = []
    with cf.ThreadPoolExecutor(1) as ex:
        data = raw.get(page_path(None))
        while True:
            path = _next_path(data)
            ahead = _started(ex, raw.get, path) if path is not None else None
            doc = decode(data)
            pods += _last(doc) if ahead is None else doc["items"]
            if ahead is None:
                return pods
            data = ahead.result()
