"""What every benchmark here shares: the load average, process memory, a twin in a
subprocess, and printing a table.

A benchmark prints the machine's load average beside its figures: on a shared
machine a ratio measured in one run still means something, an absolute time less so.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def load_average() -> str:
    """``1.23 0.98 0.80 (2 cpus)``: the 1, 5 and 15 minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB, from /proc."""
    cur = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when ``pid`` is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with the load average in its title line."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    out = [f"{title}   [load average {load_average()}]",
           "  ".join(h.rjust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


class TwinProcess:
    """``runbook twin up`` in its own process (so its memory and CPU are its own).

    Example:
        >>> with TwinProcess(state_dir, scale="nodes=500,pods=50000") as t:   # doctest: +SKIP
        ...     print(t.startup_s, t.rss())
    """

    def __init__(self, state_dir: Path, *, scale: str | None = None, timeout: float = 600) -> None:
        self.state_dir = Path(state_dir)
        self.scale = scale
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def __enter__(self) -> "TwinProcess":
        cmd = [str(BIN / "runbook"), "twin", "up", "--state-dir", str(self.state_dir)]
        if self.scale:
            cmd += ["--scale", self.scale]
        log = open(self.state_dir.parent / f"{self.state_dir.name}.log", "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        ready = self.state_dir / "ready"
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"twin exited with {self.proc.returncode}; see {log.name}")
            if time.perf_counter() - t0 > self.timeout:
                self.__exit__()
                raise TimeoutError(f"twin not ready after {self.timeout}s")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - t0
        return self

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def params(self) -> Path:
        return self.state_dir / "params.yaml"

    def set_faults(self, **faults: Any) -> dict:
        """Set fault switches through the twin's admin endpoint (loopback, bearer token),
        e.g. ``set_faults(ssh_command_latency=0.005)``; returns every switch's value."""
        import json
        import urllib.request

        import yaml

        url = yaml.safe_load(self.params.read_text())["twin"]["admin_url"]
        if not url.startswith(("http://127.", "http://[::1]")):
            raise RuntimeError(f"the twin's admin endpoint is not on loopback: {url}")
        token = (self.state_dir / "admin-token").read_text().strip()
        req = urllib.request.Request(url + "/faults", data=json.dumps(faults).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def rss(self) -> tuple[float, float]:
        assert self.proc is not None
        return rss_mib(self.proc.pid)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
