"""A bad snapshot archive stops ``runbook twin up`` / ``rehearse`` before anything starts.

The real CLI runs as a child process whose sockets are wired to the tripwire (any
connection, even to loopback, is recorded and refused). A missing archive, a file that
is not one, and an archive of another major format version each exit 2 (bad input, as a
params field: README "Exit codes") with one message naming the archive and
``--from-snapshot``, no traceback, no twin state, no run folder, no connection.
``runbook snapshot`` refuses to overwrite an archive the same way.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

import pytest

import snapshot_format

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]


def _tar(path: Path, manifest: dict) -> Path:
    data = json.dumps(manifest).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda t: t / "nope.tar.gz", "snapshot archive not found"),
    "not-an-archive": (lambda t: (t / "notes.tar.gz").write_text("hello\n") and t / "notes.tar.gz",
                       "not a snapshot archive (a .tar.gz)"),
    "major-2": (lambda t: _tar(t / "future.tar.gz", {"format": snapshot_format.FORMAT, "version": "2.0"}),
                "snapshot format version 2.0 is not supported: this runbook reads version 1.x"),
}


@pytest.mark.parametrize("command", ["twin-up", "rehearse"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_archive_exits_2_with_one_message_and_starts_nothing(case: str, command: str, tmp_path: Path,
                                                                   tripwire) -> None:
    make, words = CASES[case]
    archive = make(tmp_path)
    state, reports = tmp_path / "twin", tmp_path / "reports"
    argv = (["twin", "up", "--state-dir", str(state)] if command == "twin-up" else
            ["rehearse", "--state-dir", str(state), "--reports-dir", str(reports)])
    p = subprocess.run([sys.executable, "-m", "runbook.cli", *argv, "--from-snapshot", str(archive)],
                       env=tripwire.env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith(f"error: {archive}: field '--from-snapshot': ") and words in lines[0], lines
    assert len(lines) == 2 and lines[1].startswith("  hint: "), lines
    assert not state.exists() and not reports.exists()
    assert tripwire.attempts() == []


def test_snapshot_will_not_overwrite_an_archive(tmp_path: Path, tripwire) -> None:
    out = tmp_path / "kept.tar.gz"
    out.write_bytes(b"an earlier snapshot")
    p = subprocess.run([sys.executable, "-m", "runbook.cli", "snapshot", "--params",
                        str(REPO / "params" / "twin.yaml"), "--out", str(out)],
                       env=tripwire.env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert p.returncode == 2 and out.read_bytes() == b"an earlier snapshot"
    assert p.stderr.splitlines()[0] == f"error: field '--out': {out} exists; choose another --out or remove it first"
    assert tripwire.attempts() == []
