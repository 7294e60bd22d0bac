"""Act on a running phase at a precise point: when its journal reaches a step.

The runbook journals each step before and after it acts, so the journal is the clock
the fault tests inject faults by: "the agent's SSH goes down once the server's k3s
restart is done", "the runner is killed once any restart is done".
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from helpers.run_evidence import entries, read_journal

Predicate = Callable[[dict[str, Any]], bool]


@contextmanager
def when_journal(path: Path, predicate: Predicate, action: Callable[[], None], *,
                 poll: float = 0.01) -> Iterator[threading.Event]:
    """Within the ``with`` block, run ``action()`` once, as soon as the journal at ``path``
    satisfies ``predicate``; the yielded event is set once it ran.

    Example:
        >>> with when_journal(jpath, lambda d: bool(d["entries"]), stop_it):   # doctest: +SKIP
        ...     runner.run(...)
    """
    stop, fired = threading.Event(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if predicate(read_journal(path)):
                action()
                fired.set()
                return
            time.sleep(poll)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        yield fired
    finally:
        stop.set()
        th.join(5)


def restarted(node: str | None = None) -> Predicate:
    """A journal predicate: k3s was restarted (``restart-k3s`` done) on ``node`` or on any node."""
    return lambda doc: bool(entries(doc, "restart-k3s", node, "done"))


@contextmanager
def ssh_down_after_restart(twin: Any, path: Path, server: str, victim: str) -> Iterator[threading.Event]:
    """Scenario 2's fault: ``victim``'s SSH goes down as soon as ``server``'s k3s restart is
    journaled done, i.e. in the middle of the agent restarts."""
    with when_journal(path, restarted(server), lambda: twin.set_fault("ssh_down", [victim])) as fired:
        yield fired


def wait_for_journal(path: Path, predicate: Predicate, *, timeout: float,
                     alive: Callable[[], bool] = lambda: True, poll: float = 0.01) -> bool:
    """Poll the journal until ``predicate`` holds (True), ``alive()`` turns False or
    ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if predicate(read_journal(path)):
            return True
        time.sleep(poll)
    return False


def kill_phase_when(params: Path, phase: str, run_id: str, reports: Path, predicate: Predicate, *,
                    timeout: float) -> tuple[bool, dict[str, Any]]:
    """Run ``phase`` with ``runner.run`` in a child process and SIGKILL it (runner and its
    kernel: the whole process group) once its journal satisfies ``predicate``; returns
    ``(killed, journal as the kill left it)``. ``killed`` is False when the run ended or
    ``timeout`` passed first (the child is killed then too)."""
    jpath = reports / run_id / "journal.json"
    code = ("import sys; from runbook import runner; "
            "runner.run(sys.argv[1], phases=sys.argv[4], execute=True, run_id=sys.argv[2], "
            "reports_dir=sys.argv[3], progress=lambda m: None, sample_timeline=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(params), run_id, str(reports), phase],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    try:
        if wait_for_journal(jpath, predicate, timeout=timeout, alive=lambda: proc.poll() is None):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return killed, read_journal(jpath)
