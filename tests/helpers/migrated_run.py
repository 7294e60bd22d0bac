"""The pytest session's one migrated run: ``runbook rehearse --with-rollback``, once.

A whole migration plus rollback takes minutes. The tests that only READ what such a run
leaves behind (the report in a browser, the CLI's output, the no-secrets search) share
one: :func:`rehearse_once` runs the console script exactly as ``make rehearse`` does
(stand-in chart, a bare environment: ``PATH=/usr/bin:/bin``, its own ``HOME``) into a
private folder, and returns a :class:`MigratedRun` describing it. ``tests/conftest.py``
serves it as the session fixture ``migrated_run``; its readers carry
``pytest.mark.xdist_group("migrated_run")`` so that under pytest-xdist one worker runs
it once (see the Makefile).

While the rehearsal runs, a watcher in this process reads the cluster's Secrets through
the twin's API (the admin kubeconfig the twin wrote) from the moment the journal says
``helm-install`` is done until the rollback starts: the helm release payloads and the
generated TLS keys exist only then, and the no-secrets search needs them. Those are
throwaway credentials of this run's twin; they stay in memory.

Tests that change a cluster, need a fault, the official chart or a failed run start
their own twin: they must never be handed this run.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.run_evidence import entries, read_journal

RUNBOOK = Path(sys.executable).parent / "runbook"
#: the rollback checks ``runbook rehearse --with-rollback`` prints and writes to rehearsal.json
ROLLBACK_CHECKS = ("configs byte-identical", "flannel back on every node", "no cilium leftovers on nodes")


@dataclass
class MigratedRun:
    """What one ``runbook rehearse --with-rollback`` left behind (read it, never change it)."""

    root: Path                    #: private folder holding everything below
    state_dir: Path               #: the twin's state: kubeconfig, ssh key, node roots (twin stopped)
    reports_dir: Path             #: ``--reports-dir``: holds the one run folder
    returncode: int
    stdout: str
    stderr: str
    #: every Secret the API served between helm install and the rollback, by namespace/name
    live_secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    watch_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "REHEARSAL PASSED" in self.stdout

    @property
    def log_tail(self) -> str:
        """The end of the CLI's output, for an assertion message."""
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"

    @property
    def index_html(self) -> Path:
        """The report the CLI printed on its last line (``report: <index.html>``)."""
        lines = self.stdout.strip().splitlines()
        last = lines[-1] if lines else ""
        assert last.startswith("report: "), self.log_tail
        return Path(last.removeprefix("report: "))

    @property
    def run_dir(self) -> Path:
        return self.index_html.parent

    @property
    def checks(self) -> dict[str, Any]:
        """The rollback checks as the run recorded them in ``rehearsal.json``."""
        return json.loads((self.run_dir / "rehearsal.json").read_text())["checks"]


def _run_dirs(reports: Path) -> list[Path]:
    return sorted(p.parent for p in reports.glob("*/journal.json")) if reports.is_dir() else []


class _SecretWatcher(threading.Thread):
    """Reads every Secret through the twin's API while the migration's helm release exists."""

    def __init__(self, state_dir: Path, reports: Path) -> None:
        super().__init__(daemon=True)
        self.state_dir, self.reports = state_dir, reports
        self.done = threading.Event()           #: set when the rehearsal process ended
        self.secrets: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self._cluster: Any = None

    def _sample(self) -> None:
        if self._cluster is None:
            from runbook import params as params_mod
            from runbook.cluster import Cluster

            self._cluster = Cluster.from_params(params_mod.load(self.state_dir / "params.yaml"))
        for s in self._cluster.list("secrets"):
            md = s.get("metadata") or {}
            self.secrets[f"{md.get('namespace')}/{md.get('name')}/{md.get('uid')}"] = s

    def run(self) -> None:
        while not self.done.is_set():
            dirs = _run_dirs(self.reports)
            doc = read_journal(dirs[0] / "journal.json") if dirs else {"entries": [], "phases": {}}
            if "rollback" in (doc.get("phases") or {}):
                return                              # helm-uninstall is next: the window closed
            if entries(doc, "helm-install", status="done"):
                try:
                    self._sample()
                except Exception as e:  # an API restart or a half-written params file: next time
                    self.errors.append(repr(e))
            self.done.wait(0.25)


def rehearse_once(root: Path, *, timeout: float = 880) -> MigratedRun:
    """Run ``runbook rehearse --with-rollback`` (stand-in chart) into ``root``; never raises
    for a failed rehearsal (its readers assert on :attr:`MigratedRun.ok` with the log)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    home, state, reports = root / "home", root / "twin", root / "reports"
    home.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.Popen(
        [str(RUNBOOK), "rehearse", "--with-rollback", "--reports-dir", str(reports), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"})
    watcher = _SecretWatcher(state, reports)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n[tests] runbook rehearse killed after {timeout:.0f} s"
    finally:
        watcher.done.set()
        watcher.join(10)
    return MigratedRun(root=root, state_dir=state, reports_dir=reports, returncode=proc.returncode,
                       stdout=stdout, stderr=stderr, live_secrets=watcher.secrets,
                       watch_errors=watcher.errors)
