"""runbook.runner: run ids, phase lists, the run folder's mode, cell labels."""
from __future__ import annotations

import stat

import pytest

from runbook import runner
from runbook.errors import ParamsError, RunIdError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.mark.parametrize("run_id", ["20261126-051200-a1b2", "r1", "rehearsal_2.b", "A" * 100])
def test_check_run_id_accepts_plain_names(run_id):
    assert runner.check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "../etc", "a/b", "a..b", ".hidden", "-flag", "with space",
                                    "A" * 101, "tab\t", "x\n"])
def test_check_run_id_refuses_paths_and_odd_names(run_id):
    with pytest.raises(RunIdError) as ei:
        runner.check_run_id(run_id)
    assert ei.value.field == "--run-id"
    assert isinstance(ei.value, ValueError)  # ParamsError is a ValueError too


def test_new_run_id_is_valid_and_unique():
    ids = {runner.new_run_id() for _ in range(20)}
    assert all(runner.check_run_id(i) for i in ids) and len(ids) > 1


@pytest.mark.parametrize("text,want", [
    (None, ["preflight", "reconfigure", "install", "verify"]),
    ("install,preflight", ["preflight", "install"]),
    (" verify , , install ", ["install", "verify"]),
    (["rollback"], ["rollback"]),
    ("preflight,preflight", ["preflight"]),
])
def test_parse_phases_canonical_order(text, want):
    assert runner.parse_phases(text) == want


def test_parse_phases_unknown():
    with pytest.raises(ParamsError, match="unknown phase\\(s\\) instal; known: preflight") as ei:
        runner.parse_phases("preflight,instal")
    assert ei.value.field == "--phases"


def test_make_run_dir_is_owner_only(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        d = runner.make_run_dir("r1", tmp_path / "reports")
    finally:
        os.umask(old)
    assert d == tmp_path / "reports" / "r1"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # an existing folder made with a wider mode is tightened
    d.chmod(0o755)
    assert stat.S_IMODE(runner.make_run_dir("r1", tmp_path / "reports").stat().st_mode) == 0o700
    with pytest.raises(RunIdError):
        runner.make_run_dir("../escape", tmp_path / "reports")
    assert not (tmp_path / "escape").exists()


def test_secure_tree(tmp_path):
    root = tmp_path / "run"
    (root / "helm" / "cache").mkdir(parents=True)
    f = root / "helm" / "cache" / "index.yaml"
    f.write_text("x")
    f.chmod(0o644)
    (root / "helm").chmod(0o755)
    (root / "link").symlink_to(f)
    assert runner.secure_tree(root) >= 3
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "helm").stat().st_mode) == 0o700
    assert runner.secure_tree(root) == 0   # idempotent


@pytest.mark.parametrize("source,want", [
    ("# papermill_description=take the lock\ns = session.start()", "take the lock"),
    ("# a comment\n\nplan = k3sconfig.plan(nodes, params)\nplan", "plan = k3sconfig.plan(nodes, params)"),
    ("x = 1  " + "y" * 100, ("x = 1  " + "y" * 100)[:70]),
    ("# only comments", ""),
    ("", ""),
])
def test_cell_label(source, want):
    assert runner._cell_label({"source": source}) == want


def test_run_result_ok_and_failed(tmp_path):
    def pr(phase, status):
        return runner.PhaseResult(phase, tmp_path / f"{phase}.ipynb", status)

    ok = runner.RunResult("r", tmp_path, [pr("preflight", "passed"), pr("install", "not-run")])
    assert ok.ok and ok.failed is None
    bad = runner.RunResult("r", tmp_path, [pr("preflight", "passed"), pr("reconfigure", "failed")])
    assert not bad.ok and bad.failed.phase == "reconfigure"
    assert not runner.RunResult("r", tmp_path, [pr("preflight", "not-run")]).ok  # nothing ran
