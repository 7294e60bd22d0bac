"""A full rehearsal with rollback (`runbook rehearse --with-rollback`), timed and broken down.

Run: `make benchmark-rehearse` or `.venv/bin/python benchmarks/rehearse.py [--runs 3]`.

Each run is a fresh `runbook rehearse --with-rollback` process (warm venv, the twin's
delays at their normal speed factor). From its timestamped progress lines, the executed
notebooks' papermill metadata and the run's ``waits.jsonl`` it reports:

- ``twin``: the twin's start (its own "twin ready in" line);
- ``kernel``: per phase, from papermill's notebook start to its first cell's start
  (kernel start and connection);
- ``cells``: the sum of every cell's papermill duration, of which ``waits`` is the time
  spent in the library's waits (``waits.jsonl``: one line per wait, written by
  ``runbook.cluster.Cluster.wait_for``; "n/a" for a library without it);
- ``render``: the report renders (from the line before each "report:" line, and the
  rehearsal's own render after the rollback checks);
- ``other``: the rest (imports, papermill's own bookkeeping, the rollback checks);
- ``cpu``: the CPU seconds (user + system) of the rehearsal's whole process tree (the
  runbook with its twin, the kernels, the renders), from ``getrusage(RUSAGE_CHILDREN)``.
  On a shared machine the wall time follows the load; the CPU seconds do not, so a
  change is judged by both.

The median over runs is printed as a table with the load average, then per phase, then
the longest waits, each marked ``watched`` (woken by watch events) or ``polled`` (on the
clock: no watch was given). ``--keep DIR`` keeps each run's reports and a progress log
with the second each line arrived (``DIR/run-N/progress.log``). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import BIN, REPO, load_average, median, table  # noqa: E402


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def notebook_times(path: Path) -> dict[str, float]:
    nb = json.loads(path.read_text())
    start = _ts(nb["metadata"].get("papermill", {}).get("start_time"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    durations = [c["metadata"].get("papermill", {}).get("duration") or 0.0 for c in cells]
    first = next((_ts(c["metadata"].get("papermill", {}).get("start_time")) for c in cells
                  if c["metadata"].get("papermill", {}).get("start_time")), None)
    return {"kernel": (first - start) if (first and start) else 0.0, "cells": sum(durations),
            "slowest": max(durations or [0.0])}


def one_run(reports: Path, keep: Path | None = None) -> dict:
    cmd = [str(BIN / "runbook"), "rehearse", "--with-rollback", "--reports-dir", str(reports)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip()))
    rc = proc.wait()
    total = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out: dict = {"rc": rc, "total": total, "twin": 0.0, "render": 0.0, "cpu": cpu}
    for i, (t, text) in enumerate(lines):
        m = re.search(r"twin ready in ([\d.]+)s", text)
        if m:
            out["twin"] = float(m.group(1))
        if text.startswith("report: ") or text.startswith("REHEARSAL "):
            out["render"] += t - lines[i - 1][0] if i else 0.0
    run_dirs = [d for d in reports.iterdir() if d.is_dir()]
    kernel = cells = slowest = 0.0
    phases = {}
    waits: float | None = None
    for run_dir in run_dirs:
        for nb in sorted(run_dir.glob("0*.ipynb")):
            t = notebook_times(nb)
            phases[nb.stem] = t
            kernel += t["kernel"]
            cells += t["cells"]
            slowest = max(slowest, t["slowest"])
        wl = run_dir / "waits.jsonl"
        if wl.exists():
            entries = [json.loads(x) for x in wl.read_text().splitlines() if x.strip()]
            waits = (waits or 0.0) + sum(e["seconds"] for e in entries)
            for e in entries:
                # "watched": woken by watch events; "polled": on the clock (no watch given)
                how = "polled" if e.get("events") is None else "watched"
                out.setdefault("wait_kinds", {}).setdefault((how, e["what"]), []).append(e["seconds"])
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "progress.log").write_text("".join(f"{t:8.2f} {text}\n" for t, text in lines))
    out.update(kernel=kernel, cells=cells, waits=waits, phases=phases,
               other=total - out["twin"] - kernel - cells - out["render"],
               tail="\n".join(t for _, t in lines[-6:]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep each run's reports and its timestamped progress log in KEEP/run-N")
    a = ap.parse_args()
    runs = []
    load_before = load_average()
    for i in range(a.runs):
        if a.keep is not None:
            r = one_run((a.keep / f"run-{i + 1}").resolve(), keep=(a.keep / f"run-{i + 1}").resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="bench-rehearse-") as d:
                r = one_run(Path(d))
        print(f"run {i + 1}: {'PASSED' if r['rc'] == 0 else 'FAILED rc=%s' % r['rc']} in {r['total']:.1f}s "
              f"({r['cpu']:.1f} CPU s) "
              f"[load {load_average()}]", flush=True)
        if r["rc"] != 0:
            print(r["tail"])
        runs.append(r)
    keys = ["total", "twin", "kernel", "cells", "waits", "render", "other", "cpu"]
    rows = []
    for k in keys:
        vals = [r[k] for r in runs if r[k] is not None]
        rows.append((k, median(vals) if vals else "n/a", min(vals) if vals else "n/a",
                     max(vals) if vals else "n/a"))
    print()
    print(f"load average before the first run: {load_before}")
    print(table(f"rehearse --with-rollback, {a.runs} runs (seconds)", ["part", "median", "min", "max"], rows))
    phase_rows = []
    for ph in sorted({p for r in runs for p in r["phases"]}):
        ks = [r["phases"][ph]["kernel"] for r in runs if ph in r["phases"]]
        cs = [r["phases"][ph]["cells"] for r in runs if ph in r["phases"]]
        sl = [r["phases"][ph]["slowest"] for r in runs if ph in r["phases"]]
        phase_rows.append((ph, median(ks), median(cs), median(sl)))
    print()
    print(table("per phase (median seconds)", ["notebook", "kernel", "cells", "slowest cell"], phase_rows))
    kinds: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        for k, secs in (r.get("wait_kinds") or {}).items():
            kinds.setdefault(k, []).append(sum(secs))
    wait_rows = sorted(((how, what[:60], median(v)) for (how, what), v in kinds.items()),
                       key=lambda row: -row[2])[:12]
    if wait_rows:
        print()
        print(table("longest waits (median seconds per run, all occurrences)", ["how", "what", "seconds"],
                    wait_rows))


if __name__ == "__main__":
    main()
