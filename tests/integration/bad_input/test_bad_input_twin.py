"""Bad input given to a twin: the CLI exits 2 with the twin's message, not a traceback.

The twin raises its own errors (twin.errors); ``runbook.cli`` maps them onto the
runbook's exit codes. A real ``runbook twin up`` runs here, as a child process.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_twin_up_with_a_chart_that_is_not_one_exits_2_naming_it(tmp_path: Path,
                                                                kernel_tripwire) -> None:
    bogus = tmp_path / "cilium-1.19.3.tgz"
    bogus.write_text("apiVersion: v2\nname: cilium\nversion: 1.19.3\n")   # YAML, not a gzip
    state = tmp_path / "twin"

    p = subprocess.run([sys.executable, "-m", "runbook.cli", "twin", "up", "--cilium-chart",
                        str(bogus), "--state-dir", str(state)], env=kernel_tripwire.env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=150)

    assert p.returncode == 2, (p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: {bogus}: not a gzip file, so not a Helm chart archive (.tgz)"]
    assert p.stderr.rstrip().endswith(errors[0]), "the message is the last word"
    assert not (state / "ready").exists(), "a twin that failed to start must not look ready"
    assert kernel_tripwire.attempts() == [], "a twin connects to nothing but loopback"


def test_twin_up_with_a_bad_fixture_file_exits_2_naming_file_and_field(tmp_path: Path,
                                                                       kernel_tripwire) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: {name: lab}\nnodes: []\nobjects: []\n")   # no k3s_version, no nodes
    state = tmp_path / "twin"

    p = subprocess.run([sys.executable, "-m", "runbook.cli", "twin", "up", "--fixture", str(bad),
                        "--state-dir", str(state)], env=kernel_tripwire.env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=150)

    assert p.returncode == 2, (p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: {bad}: cluster.k3s_version: missing or not a non-empty string"]
    assert not (state / "ready").exists() and not (state / "kubeconfig").exists()
    assert kernel_tripwire.attempts() == []
