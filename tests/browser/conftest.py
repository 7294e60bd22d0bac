"""Reports of real runs on a twin, and headless Chromium to open them.

Two reports: the session's shared rehearsal (migration + rollback, the stand-in chart:
the ``make rehearse`` path, see ``helpers.migrated_run``) and, made once per module, a run
whose preflight stops because the Velero backup ends ``PartiallyFailed`` (a twin fault).
The HTML assertions need no browser; the ``chromium`` fixture skips, with the reason,
when no Chromium is installed (and fails with ``RUNBOOK_REQUIRE_TOOLS=1``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.required_tools import missing

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass
class Chromium:
    """Headless Chromium that fetches nothing: every host name resolves to nothing."""

    binary: str
    profile: Path

    def _args(self, *extra: str) -> list[str]:
        return [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={self.profile}", *extra]

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS",)}
        env["HOME"] = str(self.profile)
        return subprocess.run(self._args(*args), capture_output=True, text=True, timeout=120, env=env)

    def dump_dom(self, page: Path) -> str:
        """The DOM after the page loaded (scripts ran), as Chromium serialises it."""
        p = self._run("--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri())
        assert p.returncode == 0, p.stderr[-2000:]
        return p.stdout

    def screenshot(self, page: Path, out: Path, *, width: int = 1200, height: int = 2400) -> Path:
        p = self._run(f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri())
        assert p.returncode == 0 and out.is_file(), p.stderr[-2000:]
        return out


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    binary = find_chromium()
    if binary is None:
        missing("no Chromium installed (Debian package `chromium`): the browser checks are skipped; "
                "the HTML checks in this folder still run")
    return Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="session")
def rehearsal(migrated_run):
    """The session's shared rehearsal with rollback (stand-in chart), rendered into a report."""
    assert migrated_run.ok, migrated_run.log_tail
    return migrated_run


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory):
    """Preflight with execute on a twin whose next Velero backup ends PartiallyFailed."""
    from runbook import runner
    from twin.api import Twin

    root = tmp_path_factory.mktemp("failed")
    twin = Twin(root / "twin", faults={"velero_partially_failed": True}).start()
    try:
        result = runner.run(twin.params_path, phases=["preflight", "reconfigure"], execute=True,
                            reports_dir=root / "reports", extra={"proceed_despite_deferral": True},
                            progress=lambda _line: None)
    finally:
        twin.stop()
    return result


@pytest.fixture(scope="module")
def deferred_run(tmp_path_factory: pytest.TempPathFactory):
    """A dry run of preflight on a fresh twin, without proceed_despite_deferral: minicloud's
    honest verdict is DEFER, so the headless run stops there."""
    from runbook import runner
    from twin.api import Twin

    root = tmp_path_factory.mktemp("deferred")
    twin = Twin(root / "twin").start()
    try:
        result = runner.run(twin.params_path, phases=["preflight", "reconfigure"], reports_dir=root / "reports",
                            progress=lambda _line: None)
    finally:
        twin.stop()
    return result
