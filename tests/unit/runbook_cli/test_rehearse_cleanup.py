"""``runbook rehearse`` removes the temporary state folder it made, whatever happens.

In-process: ``Twin.start`` and ``runner.run`` are replaced where a test needs them to
fail; no twin runs here (tests/integration/rehearsal starts real ones).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from runbook import rehearse as rehearse_mod, runner
from runbook.errors import ParamsError
from twin import api as twin_api
from twin.errors import TwinStartError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch) -> Path:
    """tempfile.mkdtemp makes its folders here, so a test sees what is left behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def made(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_a_twin_that_fails_to_start_leaves_no_state_folder(temp_root: Path, monkeypatch) -> None:
    seen: list[Path] = []

    def start(self: twin_api.Twin, timeout: float = 120.0) -> twin_api.Twin:
        seen.append(self.state_dir)
        (self.state_dir / "kubeconfig").write_text("half-made\n")   # what a start leaves behind
        raise TwinStartError("twin failed to start: KeyError('x')", cause=KeyError("x"))

    monkeypatch.setattr(twin_api.Twin, "start", start)
    lines: list[str] = []
    with pytest.raises(TwinStartError):
        rehearse_mod.rehearse(progress=lines.append)
    assert len(seen) == 1 and seen[0].parent == temp_root and seen[0].name.startswith("phase22-twin-")
    assert made(temp_root) == []
    assert lines and "starting a twin of minicloud in" in lines[0]


def test_an_interrupt_while_starting_leaves_no_state_folder(temp_root: Path, monkeypatch) -> None:
    def start(self: twin_api.Twin, timeout: float = 120.0) -> twin_api.Twin:
        raise KeyboardInterrupt

    monkeypatch.setattr(twin_api.Twin, "start", start)
    with pytest.raises(KeyboardInterrupt):
        rehearse_mod.rehearse(progress=lambda _: None)
    assert made(temp_root) == []


def test_a_missing_chart_is_refused_before_any_folder_is_made(temp_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="chart archive not found"):
        rehearse_mod.rehearse(cilium_chart=str(tmp_path / "nope.tgz"), progress=lambda _: None)
    assert made(temp_root) == []


def test_a_run_that_raises_stops_the_twin_and_removes_its_folder(temp_root: Path, monkeypatch) -> None:
    stopped: list[Path] = []

    class FakeTwin:
        def __init__(self, state_dir, **kw) -> None:
            self.state_dir = Path(state_dir)
            self.params_path = self.state_dir / "params.yaml"
            self.startup_seconds, self.rt = 0.0, None

        def start(self) -> "FakeTwin":
            (self.state_dir / "nodes").mkdir()
            return self

        def stop(self) -> None:
            stopped.append(self.state_dir)

        def call(self, fn, *args):     # the twin's event loop, where the availability prober runs
            return None

    def run(*a, **kw):
        raise RuntimeError("papermill died")

    monkeypatch.setattr(twin_api, "Twin", FakeTwin)
    monkeypatch.setattr(runner, "run", run)
    with pytest.raises(RuntimeError, match="papermill died"):
        rehearse_mod.rehearse(progress=lambda _: None)
    assert len(stopped) == 1 and made(temp_root) == []


def test_a_given_state_dir_is_kept(tmp_path: Path, temp_root: Path, monkeypatch) -> None:
    def start(self: twin_api.Twin, timeout: float = 120.0) -> twin_api.Twin:
        raise TwinStartError("twin failed to start: KeyError('x')", cause=KeyError("x"))

    monkeypatch.setattr(twin_api.Twin, "start", start)
    state = tmp_path / "mine"
    state.mkdir()
    (state / "ready").write_text("from an earlier twin\n")
    with pytest.raises(TwinStartError):
        rehearse_mod.rehearse(state_dir=str(state), progress=lambda _: None)
    assert (state / "ready").is_file()     # the caller's folder: kept for a look
