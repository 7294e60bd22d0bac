"""The CLI maps the twin's own errors (twin.errors) onto the runbook's exit codes.

In-process: ``Twin.start`` is replaced where a test needs a start to fail, so no twin
runs here (tests/integration/bad_input/test_bad_input_twin.py starts a real one).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook import cli, errors
from twin import api as twin_api
from twin.chartrepo import ChartArchiveError
from twin.errors import TwinError, TwinInputError, TwinStartError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def test_twin_input_errors_share_the_bad_params_exit_code() -> None:
    assert cli.TWIN_EXIT_CODES == ((TwinInputError, errors.ParamsError.exit_code),)
    assert errors.ParamsError.exit_code == 2
    assert issubclass(ChartArchiveError, TwinInputError) and issubclass(TwinInputError, ValueError)
    assert not issubclass(TwinError, errors.RunbookError), "the twin has its own error root"


def test_a_malformed_scale_exits_2_before_a_twin_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    started: list[object] = []
    monkeypatch.setattr(twin_api.Twin, "start", lambda self, *a, **kw: started.append(self))
    state = tmp_path / "twin"

    code = cli.main(["twin", "up", "--scale", "nodes=three", "--state-dir", str(state)])

    out, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == ["error: --scale must look like nodes=N,pods=M, got 'nodes=three'"]
    assert out == "" and started == [] and not state.exists()


@pytest.mark.parametrize("argv", [["twin", "up"], ["rehearse"]], ids=["twin-up", "rehearse"])
def test_a_twin_stopped_by_a_bad_chart_exits_2_naming_the_archive(argv: list[str], tmp_path: Path,
                                                                 monkeypatch, capsys) -> None:
    archive = tmp_path / "cilium.tgz"
    bad = ChartArchiveError(f"{archive}: not a gzip file, so not a Helm chart archive (.tgz)")

    def start(self: twin_api.Twin, timeout: float = 120.0) -> twin_api.Twin:
        raise TwinStartError(f"twin failed to start: {bad!r}", cause=bad) from bad

    monkeypatch.setattr(twin_api.Twin, "start", start)
    # `twin up` installs SIGINT/SIGTERM handlers: keep pytest's own in this process
    monkeypatch.setattr(twin_api.signal, "signal", lambda *a: None)

    code = cli.main([*argv, "--state-dir", str(tmp_path / "twin")])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [f"error: {bad}"] and "Traceback" not in err


def test_a_twin_that_crashed_while_starting_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    crash = KeyError("workloads")

    def start(self: twin_api.Twin, timeout: float = 120.0) -> twin_api.Twin:
        raise TwinStartError(f"twin failed to start: {crash!r}", cause=crash) from crash

    monkeypatch.setattr(twin_api.Twin, "start", start)
    monkeypatch.setattr(twin_api.signal, "signal", lambda *a: None)
    with pytest.raises(TwinStartError) as ei:
        cli.main(["twin", "up", "--state-dir", str(tmp_path / "twin")])
    assert ei.value.cause is crash and ei.value.input_error is None
    assert cli.twin_exit_code(ei.value) is None


@pytest.mark.parametrize("text,says", [
    ("cluster: {name: x}\n", "cluster.k3s_version: missing or not a non-empty string"),
    ("cluster: [unclosed\n", "not valid YAML"),
], ids=["missing-field", "not-yaml"])
def test_a_bad_fixture_file_exits_2_naming_the_file_and_field(text: str, says: str, tmp_path: Path,
                                                              monkeypatch, capsys) -> None:
    # The real Twin.start: it fails while loading the fixture, before serving anything.
    from twin.fixtures import FixtureError

    assert issubclass(FixtureError, TwinInputError)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    monkeypatch.setattr(twin_api.signal, "signal", lambda *a: None)

    code = cli.main(["twin", "up", "--fixture", str(bad), "--state-dir", str(tmp_path / "twin")])

    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: {bad}: ") and says in err and "Traceback" not in err
    assert not (tmp_path / "twin" / "kubeconfig").exists()
