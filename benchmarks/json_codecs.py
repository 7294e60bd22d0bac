"""JSON codecs on the API's own payload: one list page of 500 pods, encoded and decoded.

Run: `make benchmark-json` or `.venv/bin/python benchmarks/json_codecs.py`.

The page is a generated twin's first 500 pods (minicloud's shapes), as the twin's API
server serialises a list response and as `runbook.cluster` decodes it. Measured: the
standard library (`json.dumps` with compact separators, `json.loads`) against the fast
codecs installed (msgspec, which the twin and the library use, and orjson if present), each the median of interleaved repetitions, with
a check that every codec round-trips the page to the same data. The twin and the
library use the fastest only where this says it wins. Nothing is asserted.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import median, table  # noqa: E402


def codecs() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    out: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "json (stdlib)": (lambda o: json.dumps(o, separators=(",", ":")).encode(), json.loads)}
    try:
        import orjson
        out["orjson"] = (orjson.dumps, orjson.loads)
    except ImportError:
        pass
    try:
        import msgspec
        enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
        out["msgspec"] = (enc.encode, dec.decode)
    except ImportError:
        pass
    return out


def page(n_pods: int = 500) -> dict:
    from twin import fixtures

    fx = fixtures.generate(10, 1000)
    pods = [o for o in fx.objects if o.get("kind") == "Pod"][:n_pods]
    return {"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "12345", "continue": "eyJ2IjoxfQ"}, "items": pods}


def main() -> None:
    doc = page()
    cs = codecs()
    ref = json.dumps(doc, separators=(",", ":")).encode()
    enc_t: dict[str, list[float]] = {k: [] for k in cs}
    dec_t: dict[str, list[float]] = {k: [] for k in cs}
    for _ in range(15):
        for name, (enc, dec) in cs.items():
            t0 = time.perf_counter()
            data = enc(doc)
            enc_t[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = dec(ref)
            dec_t[name].append(time.perf_counter() - t0)
            assert back == doc and json.loads(data) == doc, name
    base_e, base_d = median(enc_t["json (stdlib)"]), median(dec_t["json (stdlib)"])
    rows = [(n, 1000 * median(enc_t[n]), base_e / median(enc_t[n]), 1000 * median(dec_t[n]),
             base_d / median(dec_t[n])) for n in cs]
    print(table(f"one page of {len(doc['items'])} pods ({len(ref) / 1024:.0f} KB), median of 15",
                ["codec", "encode ms", "× stdlib", "decode ms", "× stdlib"], rows))


if __name__ == "__main__":
    main()
