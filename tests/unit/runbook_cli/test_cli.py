"""The thin CLI and the runner's first steps: exit codes, one message, nothing started.

In-process and offline: ``runner.run``'s collaborators (papermill, the timeline sampler)
are replaced by recorders, so a test can show that bad input never reaches them.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook import cli, errors, runner

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[3]
MINICLOUD = REPO / "params" / "minicloud.yaml"


@pytest.mark.parametrize("exc,code", [
    (errors.ParamsError("bad", file="p.yaml", field="ssh.user"), 2),
    (errors.ValuesMismatch("contradiction", file="v.yaml", field="tunnelPort"), 3),
    (errors.RunIdError("bad id", field="--run-id"), 4),
    (errors.ConfirmationRequired("confirm", field="confirm"), 5),
    (errors.LoopbackViolation("refusing to connect to 10.0.0.4"), 6),
    (errors.ParamsFileError("not valid YAML", file="p.yaml"), 7),
    (errors.UnknownKeyError("unknown key", file="p.yaml", field="ssh.sudoo"), 8),
    (errors.ValuesFileError("missing", file="p.yaml", field="cilium.values_file"), 9),
    (errors.ClusterError("api down"), 10),
    (errors.HostKeyError("mismatch", node="set-hog"), 12),
    (errors.GateFailed("all agents Ready"), 20),
])
def test_each_error_maps_to_its_exit_code_and_one_message(exc: errors.RunbookError, code: int,
                                                          monkeypatch, capsys) -> None:
    def boom(*a: Any, **kw: Any) -> None:
        raise exc

    monkeypatch.setattr(runner, "run", boom)
    assert cli.main(["run", "--params", "p.yaml"]) == code
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and str(exc).splitlines()[0] in err.splitlines()[0]
    assert out == "" and "Traceback" not in err


def test_bad_input_exit_codes_are_distinct() -> None:
    bad_input = [errors.ParamsError, errors.ValuesMismatch, errors.RunIdError,
                 errors.ConfirmationRequired, errors.LoopbackViolation, errors.ParamsFileError,
                 errors.UnknownKeyError, errors.ValuesFileError]
    codes = [c.exit_code for c in bad_input]
    assert len(set(codes)) == len(codes) and all(2 <= c <= 9 for c in codes)
    # the run-time boundaries never reuse a bad-input code
    runtime = [errors.ClusterError, errors.NodeError, errors.HostKeyError, errors.HelmError,
               errors.VeleroError, errors.ArgoCDError, errors.JournalError, errors.LockHeld,
               errors.WaitTimeout, errors.GateFailed]
    assert not set(codes) & {c.exit_code for c in runtime}
    # the CLI's help lists every bad-input code
    for c in bad_input:
        assert f"  {c.exit_code} " in cli.__doc__ and c.__name__ in cli.__doc__


def test_interrupt_exits_130(monkeypatch, capsys) -> None:
    def interrupted(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    assert cli.main(["run", "--params", "p.yaml"]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("ok,code", [(True, 0), (False, 1)])
def test_phase_outcome_exit_codes(ok: bool, code: int, monkeypatch, tmp_path: Path) -> None:
    res = runner.RunResult("r", tmp_path, [runner.PhaseResult(
        "preflight", tmp_path / "01.ipynb", status="passed" if ok else "failed")])
    monkeypatch.setattr(runner, "run", lambda *a, **kw: res)
    assert cli.main(["run", "--params", "p.yaml"]) == code


def test_rehearse_checks_the_run_id_before_starting_anything(monkeypatch, capsys) -> None:
    import runbook.rehearse as reh

    called = []
    monkeypatch.setattr(reh, "rehearse", lambda **kw: called.append(kw))
    assert cli.main(["rehearse", "--run-id", "../x"]) == 4
    assert called == [] and "field '--run-id'" in capsys.readouterr().err


# --------------------------------------------------------------------------- runner
@pytest.fixture
def recorders(monkeypatch) -> dict[str, list]:
    """Replace the phase executor and the timeline sampler with recorders, and the
    cluster's reachability check with one that records instead of connecting."""
    seen: dict[str, list] = {"phases": [], "sampler": [], "reached": []}
    monkeypatch.setattr(runner, "reachable", lambda p: seen["reached"].append(p.target.name))

    def execute_phase(phase: str, run_dir: Path, parameters: dict, **kw: Any):
        seen["phases"].append(phase)
        return runner.PhaseResult(phase, run_dir / runner.PHASES[phase], status="passed")

    class Sampler:
        def __init__(self, *a: Any) -> None:
            seen["sampler"].append("created")

        def start(self) -> None:
            seen["sampler"].append("started")

        def stop(self) -> None:
            pass

    import runbook.report as report
    import runbook.timeline as timeline

    monkeypatch.setattr(runner, "execute_phase", execute_phase)
    monkeypatch.setattr(timeline, "Sampler", Sampler)
    monkeypatch.setattr(report, "record_phase", lambda *a, **kw: None)
    monkeypatch.setattr(report, "render_run", lambda run_dir: run_dir / "index.html")
    return seen


def _params_copy(tmp: Path, **changes: Any) -> Path:
    d = yaml.safe_load(MINICLOUD.read_text())
    d["target"]["kubeconfig"] = str(tmp / "absent-kubeconfig")
    d["cilium"]["values_file"] = str(REPO / "params" / "cilium-values.yaml")
    for dotted, value in changes.items():
        cur = d
        *head, last = dotted.split("__")
        for k in head:
            cur = cur[k]
        cur[last] = value
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("kwargs,exc", [
    ({"run_id": "../x"}, errors.RunIdError),
    ({"run_id": "a/b"}, errors.RunIdError),
    ({"execute": True}, errors.ConfirmationRequired),
    ({"execute": True, "confirm": "Minicloud"}, errors.ConfirmationRequired),
    ({"phases": "preflight,install-everything"}, errors.ParamsError),
])
def test_runner_refuses_before_creating_or_starting_anything(kwargs: dict, exc: type,
                                                             tmp_path: Path, recorders) -> None:
    reports = tmp_path / "reports"
    with pytest.raises(exc):
        runner.run(_params_copy(tmp_path), reports_dir=reports, progress=lambda m: None, **kwargs)
    assert recorders == {"phases": [], "sampler": [], "reached": []}
    assert not reports.exists()


def test_runner_refuses_bad_params_before_anything(tmp_path: Path, recorders) -> None:
    path = _params_copy(tmp_path, ssh__sudoo=True)
    with pytest.raises(errors.UnknownKeyError):
        runner.run(path, reports_dir=tmp_path / "reports", progress=lambda m: None)
    assert recorders == {"phases": [], "sampler": [], "reached": []} and not (tmp_path / "reports").exists()


def test_a_run_whose_cluster_cannot_be_reached_leaves_no_run_folder(tmp_path: Path, monkeypatch) -> None:
    """The kubeconfig of the params is absent: the run stops before it starts, with the
    hint, and creates no reports folder (the real reachability check, no stub)."""
    ran = []
    monkeypatch.setattr(runner, "execute_phase", lambda *a, **kw: ran.append(a))
    reports = tmp_path / "reports"
    with pytest.raises(errors.ClusterError) as ei:
        runner.run(_params_copy(tmp_path), reports_dir=reports, progress=lambda m: None)
    assert "kubeconfig not found" in str(ei.value) and ei.value.hint
    assert ran == [] and not reports.exists()


def test_a_twin_that_is_not_running_is_named_in_the_error(tmp_path: Path) -> None:
    """A twin's params whose kubeconfig is gone: the message says how to start one."""
    from runbook import params as params_mod

    d = yaml.safe_load((REPO / "params" / "twin.yaml").read_text())
    d["target"]["kubeconfig"] = str(tmp_path / "absent-kubeconfig")
    d["cilium"]["values_file"] = str(REPO / "params" / "cilium-values.yaml")
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(errors.ClusterError) as ei:
        runner.reachable(params_mod.load(path))
    assert "runbook twin up" in (ei.value.hint or "")


def test_runner_leaves_the_umask_alone_and_the_run_owner_only(tmp_path: Path, recorders) -> None:
    before = os.umask(0o022)
    try:
        res = runner.run(_params_copy(tmp_path), phases="preflight", run_id="ok",
                         reports_dir=tmp_path / "reports", progress=lambda m: None)
        assert os.umask(0o022) == 0o022, "the runner left the caller's umask alone"
        with pytest.raises(errors.RunIdError):
            runner.run(_params_copy(tmp_path), run_id="a/b", reports_dir=tmp_path / "reports",
                       progress=lambda m: None)
        assert os.umask(0o022) == 0o022, "restored after an error too"
    finally:
        os.umask(before)
    assert recorders["phases"] == ["preflight"] and recorders["reached"] == ["minicloud"]
    assert stat.S_IMODE(res.run_dir.stat().st_mode) == 0o700


def test_secure_tree_makes_everything_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "helm" / "cache").mkdir(parents=True)
    f = root / "helm" / "cache" / "index.yaml"
    f.write_text("x")
    os.chmod(f, 0o644)
    os.chmod(root / "helm", 0o755)
    x = root / "tool"
    x.write_text("#!/bin/sh\n")
    os.chmod(x, 0o755)
    assert runner.secure_tree(root) >= 3
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "helm").stat().st_mode) == 0o700
    assert stat.S_IMODE(x.stat().st_mode) == 0o700          # the owner keeps execute
    assert runner.secure_tree(root) == 0                     # idempotent


@pytest.mark.parametrize("run_id", ["../x", "a/b", "a\\b", "..", "x..y", "", "-x", "a b", "a;b"])
def test_check_run_id_refuses_non_folder_names(run_id: str) -> None:
    with pytest.raises(errors.RunIdError) as ei:
        runner.check_run_id(run_id)
    assert ei.value.exit_code == 4


def test_make_run_dir_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        d = runner.make_run_dir("r1", tmp_path / "reports")
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


@pytest.mark.parametrize("in_kernel", [True, False])
def test_session_start_makes_a_kernel_owner_only(in_kernel: bool, monkeypatch,
                                                 tmp_path: Path) -> None:
    """In a notebook kernel (also one opened by hand) files are owner-only; a library
    caller's process keeps its umask."""
    from runbook import session

    monkeypatch.setattr(session, "_in_kernel", lambda: in_kernel)
    old = os.umask(0o022)
    try:
        with pytest.raises(errors.ParamsFileError):
            session.start("preflight", str(tmp_path / "absent.yaml"), "")
        assert os.umask(0o022) == (0o077 if in_kernel else 0o022)
    finally:
        os.umask(old)


def test_the_command_exits_with_mains_code_after_the_exit_handlers(tmp_path: Path) -> None:
    """cli.console (the ``runbook`` script) skips the interpreter's teardown, not the
    exit handlers nor buffered output."""
    import subprocess
    import sys

    mark = tmp_path / "handler-ran"
    code = ("import atexit, sys, pathlib\n"
            f"atexit.register(pathlib.Path({str(mark)!r}).write_text, 'yes')\n"
            "print('buffered line', end='')\n"
            "sys.argv = ['runbook', 'run', '--params', '/nonexistent.yaml']\n"
            "from runbook.cli import console\n"
            "console()\n"
            "raise SystemExit('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7                      # ParamsError's code, as main() returned it
    assert proc.stdout.startswith("buffered line")   # flushed before the exit
    assert "params file does not exist" in proc.stderr
    assert mark.read_text() == "yes"
