"""Shared fixtures: the real client binaries, the official chart, fresh twins over real
sockets, and the session's one migrated run (helpers in ``tests/helpers``).

A missing tool or chart skips its tests locally and fails them with
``RUNBOOK_REQUIRE_TOOLS=1`` (``.ci/run``): see ``helpers.required_tools``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.required_tools import REQUIRE_ENV, require_binary, require_cilium_chart, tools_required
from runbook import lean_imports

REPO = Path(__file__).resolve().parents[1]

# What every pytest process pays before its first test (each xdist worker collects the whole
# suite); measured with `python -X importtime` and cProfile on `pytest --collect-only`: 7.9-9.1
# CPU s per process before these two lines, 2.0 once the rewrite cache below is filled.
# - pytest rewrites the asserts of each test module it imports (~4.5 CPU s for the ~270
#   modules) and caches the result in __pycache__, but only where bytecode may be written;
#   PYTHONDONTWRITEBYTECODE (set in containers and CI) turns that cache off, so every
#   process rewrote every module. The rewrites are written (atomically, checked against
#   the source's mtime and size, ignored if the folder is read-only), as `make venv`
#   compiles the library's bytecode for the same reason; imports made afterwards in this
#   process write theirs too. Kernels and twins (subprocesses) keep the environment's setting.
sys.dont_write_bytecode = False
# - test modules import nbformat and papermill, which import jsonschema, which imports the
#   IRI grammars of rfc3987_syntax when installed (~0.7 CPU s): the library's own lean import
#   (runbook.lean_imports) leaves them out, as the runbook does in its kernels.
lean_imports.jsonschema()


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


def _shared_tmp(config: pytest.Config) -> Path:
    """The session's temp folder that every pytest-xdist worker shares (each worker's own
    basetemp lies inside it); without xdist, the basetemp itself."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if hasattr(config, "workerinput") else base


def _reads_the_migrated_run(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and "migrated_run" in info.names_closure


@pytest.fixture(scope="session")
def migrated_run(pytestconfig: pytest.Config):
    """The session's one ``runbook rehearse --with-rollback`` (stand-in chart), for tests that
    only read a migration's evidence (``helpers.migrated_run``). Never change what it holds."""
    from helpers import migrated_run as shared

    return shared.wait(_shared_tmp(pytestconfig))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy tests spread over the xdist workers, the shared run's readers late
    (``helpers.scheduling``); the same order in every worker."""
    from helpers.scheduling import arrange

    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = arrange(items, workers, _reads_the_migrated_run)


@pytest.hookimpl(tryfirst=True)   # before an xdist worker reports its collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell the xdist controller which tests must share a worker (``helpers.scheduling``);
    start the shared migrated run in the background once any collected test reads it
    (one process of the session claims it; see ``helpers.migrated_run``)."""
    if hasattr(session.config, "workerinput"):
        from helpers.scheduling import write_groups

        write_groups(session.items, _shared_tmp(session.config))
    if session.config.option.collectonly or not any(map(_reads_the_migrated_run, session.items)):
        return
    from helpers import migrated_run as shared

    shared.start(_shared_tmp(session.config))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` as this suite needs it (``helpers.scheduling``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from helpers.scheduling import make_scheduler

    return make_scheduler(config, log, _shared_tmp(config))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from helpers import migrated_run as shared

    shared.finish(abandon=exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop))


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
