"""The pytest session's one migrated run: ``runbook rehearse --with-rollback``, once.

A whole migration plus rollback takes minutes. The tests that only READ what such a run
leaves behind (the report in a browser, the CLI's output, the no-secrets search) share
one. It runs the console script exactly as ``make rehearse`` does (stand-in chart, a
bare environment: ``PATH=/usr/bin:/bin``, its own ``HOME``) into a private folder.

Once per session, whatever the number of pytest-xdist workers, and in the background:

* when collection finds a test that uses the fixture ``migrated_run``, the first process
  to claim the folder ``<session temp>/migrated-run`` (an atomic ``mkdir``) starts the
  rehearsal and goes on with its tests; the readers are ordered last (tests/conftest.py),
  so the run is usually finished before the first of them asks for it;
* the readers, in any worker, wait for ``result.json`` in that folder and get a
  :class:`MigratedRun`; the process that started the run waits for it before it exits.

While the rehearsal runs, a watcher reads the cluster's Secrets through the twin's API
(the admin kubeconfig the twin wrote) from the moment the journal says ``helm-install``
is done until the rollback starts: the helm release payloads and the generated TLS keys
exist only then, and the no-secrets search needs them. They are throwaway credentials of
this run's twin, kept in ``result.json`` (0600) next to the twin's own state.

Tests that change a cluster, need a fault, the official chart or a failed run start
their own twin: they must never be handed this run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.run_evidence import entries, read_journal

RUNBOOK = Path(sys.executable).parent / "runbook"
FOLDER = "migrated-run"
RESULT = "result.json"
TIMEOUT = 880.0        # seconds the rehearsal may take before it is killed


@dataclass
class MigratedRun:
    """What one ``runbook rehearse --with-rollback`` left behind (read it, never change it)."""

    root: Path                    #: private folder holding everything below
    returncode: int
    stdout: str
    stderr: str
    #: every Secret the API served between helm install and the rollback, by namespace/name/uid
    live_secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    watch_errors: list[str] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        """The twin's state: kubeconfig, SSH key, node roots (the twin has stopped)."""
        return self.root / "twin"

    @property
    def reports_dir(self) -> Path:
        """``--reports-dir``: holds the one run folder."""
        return self.root / "reports"

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


class _SecretWatcher(threading.Thread):
    """Reads every Secret through the twin's API while the migration's helm release exists."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True, name="migrated-run secrets")
        self.root = root
        self.done = threading.Event()           #: set when the rehearsal process ended
        self.secrets: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self._cluster: Any = None

    def _sample(self) -> None:
        if self._cluster is None:
            from runbook import params as params_mod
            from runbook.cluster import Cluster

            self._cluster = Cluster.from_params(params_mod.load(self.root / "twin" / "params.yaml"))
        for s in self._cluster.list("secrets"):
            md = s.get("metadata") or {}
            self.secrets[f"{md.get('namespace')}/{md.get('name')}/{md.get('uid')}"] = s

    def run(self) -> None:
        reports = self.root / "reports"
        while not self.done.is_set():
            journals = sorted(reports.glob("*/journal.json")) if reports.is_dir() else []
            doc = read_journal(journals[0]) if journals else {"entries": [], "phases": {}}
            if "rollback" in (doc.get("phases") or {}):
                return                              # helm-uninstall is next: the window closed
            if entries(doc, "helm-install", status="done"):
                try:
                    self._sample()
                except Exception as e:  # an API restart or a half-written params file: next time
                    self.errors.append(repr(e))
            self.done.wait(0.25)


class _Rehearsal:
    """The background rehearsal this process started (at most one per process)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        home = root / "home"
        home.mkdir(mode=0o700)
        self.proc = subprocess.Popen(
            [str(RUNBOOK), "rehearse", "--with-rollback", "--reports-dir", str(root / "reports"),
             "--state-dir", str(root / "twin")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"})
        self.watcher = _SecretWatcher(root)
        self.watcher.start()
        self.finisher = threading.Thread(target=self._finish, daemon=True, name="migrated-run")
        self.finisher.start()

    def _finish(self) -> None:
        try:
            stdout, stderr = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            stdout, stderr = self.proc.communicate()
            stderr += f"\n[tests] runbook rehearse killed after {TIMEOUT:.0f} s"
        self.watcher.done.set()
        self.watcher.join(10)
        doc = {"returncode": self.proc.returncode, "stdout": stdout, "stderr": stderr,
               "live_secrets": self.watcher.secrets, "watch_errors": self.watcher.errors}
        tmp = self.root / (RESULT + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.root / RESULT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the CLI, its twin and its kernels
            except ProcessLookupError:
                pass


_started: _Rehearsal | None = None


def start(shared: Path) -> bool:
    """Start the session's rehearsal under ``shared`` unless a process already claimed it.
    Returns True when this process started it."""
    global _started
    root = shared / FOLDER
    try:
        root.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        return False
    _started = _Rehearsal(root)
    return True


def wait(shared: Path, *, timeout: float = TIMEOUT + 60) -> MigratedRun:
    """The session's rehearsal, once it finished (started here if nobody did)."""
    root = shared / FOLDER
    if not root.exists():
        start(shared)
    deadline = time.monotonic() + timeout
    result = root / RESULT
    while not result.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shared rehearsal in {root} did not finish in {timeout:.0f} s")
        time.sleep(0.5)
    doc = json.loads(result.read_text())
    return MigratedRun(root=root, **doc)


def finish(*, abandon: bool) -> None:
    """At the end of this process's session: wait for the rehearsal it started (other
    workers may be waiting for it), or kill it when the session was interrupted."""
    if _started is None:
        return
    if abandon:
        _started.kill()
    _started.finisher.join(TIMEOUT + 30)
