"""Shared fixtures: the real client binaries, and fresh twins over real sockets."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CHART = (REPO.parent / "shared" / "charts" / "cilium-1.19.3.tgz").resolve()


def _binary(name: str) -> str:
    from runbook.errors import RunbookError
    from runbook.tools import find_binary

    try:
        return find_binary(name)
    except RunbookError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"{name} unavailable: {e}")


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
    return _binary("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return _binary("kubectl")


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
    """The official chart archive from ../shared/charts, or skip with the reason."""
    if not SHARED_CHART.is_file():
        pytest.skip(f"official Cilium chart archive not present at {SHARED_CHART}")
    return SHARED_CHART


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


def run_tool(args: list[str], env: dict[str, str], *, check: bool = True,
             input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run helm/kubectl with captured text output; on failure show both streams."""
    p = subprocess.run(args, env=env, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p
