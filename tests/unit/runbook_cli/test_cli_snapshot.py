"""The CLI's snapshot commands: ``snapshot``, ``twin up --from-snapshot``, ``rehearse --from-snapshot``.

In-process and offline: a twin never starts here (``Twin.start`` is replaced by a
recorder), so a test can show that a bad archive is refused before anything starts.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import snapshot_format
from runbook import cli
from twin import api as twin_api

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[3]


def _archive(tmp: Path, version: str) -> Path:
    d = tmp / f"v{version}"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": snapshot_format.FORMAT, "version": version}))
    out = tmp / f"snap-{version}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(d / "manifest.json", arcname="manifest.json")
    return out


@pytest.fixture
def started(monkeypatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr(twin_api.Twin, "start", lambda self, *a, **kw: calls.append(self))
    monkeypatch.setattr(twin_api.signal, "signal", lambda *a: None)
    return calls


@pytest.mark.parametrize("command", [["twin", "up"], ["rehearse"]], ids=["twin-up", "rehearse"])
def test_a_missing_archive_exits_2_before_a_twin_starts(command, tmp_path: Path, started, capsys) -> None:
    missing = tmp_path / "gone.tar.gz"
    code = cli.main([*command, "--from-snapshot", str(missing), "--state-dir", str(tmp_path / "twin")])
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and started == [] and not (tmp_path / "twin").exists()
    assert lines[0] == f"error: {missing}: field '--from-snapshot': snapshot archive not found"
    assert len(lines) == 2 and lines[1].startswith("  hint: ")


@pytest.mark.parametrize("command", [["twin", "up"], ["rehearse"]], ids=["twin-up", "rehearse"])
def test_another_major_version_exits_2_naming_the_version(command, tmp_path: Path, started, capsys) -> None:
    archive = _archive(tmp_path, "2.0")
    code = cli.main([*command, "--from-snapshot", str(archive), "--state-dir", str(tmp_path / "twin")])
    _, err = capsys.readouterr()
    assert code == 2 and started == []
    assert err.splitlines()[0] == (f"error: {archive}: field '--from-snapshot': snapshot format version 2.0 "
                                   "is not supported: this runbook reads version 1.x (docs/snapshot-format.md)")


def test_a_good_archive_goes_to_the_twin(tmp_path: Path, started, monkeypatch) -> None:
    archive = _archive(tmp_path, "1.3")           # a newer minor of the same major is read

    def start(self: twin_api.Twin, *a, **kw) -> None:
        started.append(self)
        raise KeyboardInterrupt    # stop where the twin would start: the CLI exits 130

    monkeypatch.setattr(twin_api.Twin, "start", start)
    assert cli.main(["twin", "up", "--from-snapshot", str(archive), "--state-dir", str(tmp_path / "t")]) == 130
    (twin,) = started
    assert twin.snapshot == archive.resolve() and twin.scale is None


def test_the_snapshot_sources_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["twin", "up", "--scale", "nodes=3,pods=10", "--from-snapshot", "x.tar.gz"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["snapshot"])                       # --params or --of-twin is required
    with pytest.raises(SystemExit):
        cli.main(["snapshot", "--params", "p.yaml", "--of-twin", "minicloud"])


def test_snapshot_refuses_to_overwrite_before_connecting(tmp_path: Path, capsys) -> None:
    out = tmp_path / "exists.tar.gz"
    out.write_text("keep me")
    code = cli.main(["snapshot", "--params", str(REPO / "params" / "twin.yaml"), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and out.read_text() == "keep me"
    assert err.splitlines()[0] == (f"error: field '--out': {out} exists; choose another --out or "
                                   "remove it first")
