"""Shared fixtures: the real client binaries, the official chart, fresh twins over real
sockets, and the session's one migrated run (helpers in ``tests/helpers``).

A missing tool or chart skips its tests locally and fails them with
``RUNBOOK_REQUIRE_TOOLS=1`` (``.ci/run``): see ``helpers.required_tools``.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.required_tools import REQUIRE_ENV, require_binary, require_cilium_chart, tools_required

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _keep_umask():
    """The umask is process-wide: a test that changes it must not leak it into the next
    one (the twin's node model creates root-only files according to it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return require_binary("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return require_binary("kubectl")


@pytest.fixture
def tool_env(tmp_path: Path) -> dict[str, str]:
    """Environment for helm/kubectl that never touches the user's ~/.kube or ~/.config."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"),
               CLOUDSDK_CONFIG=str(home / ".gcloud"))
    return env


@pytest.fixture(scope="session")
def cilium_chart() -> Path:
    """The official chart archive (``$RUNBOOK_CILIUM_CHART``, ../shared/charts, /work/shared/charts)."""
    return require_cilium_chart()


def _start_twin(tmp_path_factory: pytest.TempPathFactory, **kw):
    from twin.api import Twin

    return Twin(tmp_path_factory.mktemp("twin"), **kw).start()


@pytest.fixture(scope="module")
def shared_twin(tmp_path_factory: pytest.TempPathFactory):
    """One minicloud twin for a module of read-only tests."""
    t = _start_twin(tmp_path_factory)
    yield t
    t.stop()


@pytest.fixture
def fresh_twin(tmp_path_factory: pytest.TempPathFactory):
    """A minicloud twin of its own, for a destructive test."""
    t = _start_twin(tmp_path_factory)
    yield t
    t.stop()


@pytest.fixture
def make_twin(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``make_twin(faults={...})`` starts a whole twin of its own (``twin.api.Twin``
    keywords); every twin it started is stopped at the end of the test."""
    started: list[Any] = []

    def make(**kw: Any) -> Any:
        t = _start_twin(tmp_path_factory, **kw)
        started.append(t)
        return t

    yield make
    for t in started:
        t.stop()


@pytest.fixture(scope="session")
def migrated_run(tmp_path_factory: pytest.TempPathFactory):
    """The session's one ``runbook rehearse --with-rollback`` (stand-in chart), for tests that
    only read a migration's evidence (``helpers.migrated_run``). Never change what it holds."""
    from helpers.migrated_run import rehearse_once

    return rehearse_once(tmp_path_factory.mktemp("migrated-run"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (the Makefile), so that a costly shared
    fixture is made once, not once per worker: every reader of the shared migrated run goes
    to one worker, and the tests of a module with a module-scoped fixture stay together.
    Every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if "migrated_run" in info.names_closure:
            item.add_marker(pytest.mark.xdist_group("migrated_run"))
        elif any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With ``RUNBOOK_REQUIRE_TOOLS=1`` no test may skip, whatever skipped it (a ``skipif``
    on a missing command, an ``importorskip``): CI runs every test or fails."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail") and tools_required():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"{reason}\n[{REQUIRE_ENV}=1: a test may not skip here; install what it "
                        "needs (see .ci/run)]")


def run_tool(args: list[str], env: dict[str, str], *, check: bool = True,
             input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run helm/kubectl with captured text output; on failure show both streams."""
    p = subprocess.run(args, env=env, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p
