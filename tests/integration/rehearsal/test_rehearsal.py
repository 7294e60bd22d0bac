"""The whole rehearsal: twin, four migration phases, rollback, report.

One run uses the REAL Cilium chart archive (``cilium_chart``: $RUNBOOK_CILIUM_CHART or
../shared/charts/cilium-1.19.3.tgz, served by the twin's chart repository; skipped with
the reason when absent, a failure under RUNBOOK_REQUIRE_TOOLS=1) through the library; the
other is ``make rehearse`` itself, the CLI with the stand-in chart: the session's shared
migrated run (``helpers.migrated_run``).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.run_evidence import notebook_outputs

from runbook import runner

pytestmark = pytest.mark.integration

RUNBOOK = Path(sys.executable).parent / "runbook"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(900)
def test_rehearsal_with_the_real_cilium_chart(cilium_chart: Path, tmp_path: Path) -> None:
    from runbook.rehearse import rehearse

    lines: list[str] = []
    out = rehearse(with_rollback=True, cilium_chart=str(cilium_chart), reports_dir=str(tmp_path / "reports"),
                   state_dir=str(tmp_path / "twin"), progress=lines.append)
    log = "\n".join(lines)
    assert out.ok, log[-5000:]
    assert [(p.phase, p.status) for p in out.run.phases] == [(ph, "passed") for ph in runner.MIGRATION], log
    assert [(p.phase, p.status) for p in out.rollback.phases] == [("rollback", "passed")], log
    assert set(out.checks) == {"configs byte-identical", "flannel back on every node",
                               "no cilium leftovers on nodes", "no Cilium BPF state on nodes",
                               "no Cilium files on nodes", "ClusterIP DNS answers from every node"}
    assert all(c["ok"] for c in out.checks.values()), out.checks
    assert "REHEARSAL PASSED" in lines[-1]

    run_dir = out.rollback.run_dir
    assert run_dir == out.run.run_dir and out.index_html == run_dir / "index.html"
    assert out.index_html.is_file()
    reh = json.loads((run_dir / "rehearsal.json").read_text())
    assert reh["ok"] is True and all(c["ok"] for c in reh["checks"].values())
    recorded = {p["phase"]: p["status"] for p in json.loads((run_dir / "phases.json").read_text())}
    assert recorded == {ph: "passed" for ph in [*runner.MIGRATION, "rollback"]}

    # It was the official chart that helm installed: helm's content cache in the run's
    # helm home holds the archive byte for byte, and the release notes are Cilium's own.
    cached = list((run_dir / "helm").rglob("*.chart"))
    assert _sha256(cilium_chart) in {_sha256(c) for c in cached}, cached
    install = notebook_outputs(run_dir / "03-install.ipynb", every_mimetype=True)
    assert "STAND-IN" not in install
    assert "You have successfully installed Cilium" in install
    journal = json.loads((run_dir / "journal.json").read_text())
    helm_install = [e for e in journal["entries"] if e["step"] == "helm-install"]
    assert helm_install and helm_install[0]["data"]["version"] == "1.19.3"
    assert journal["facts"]["rolled_back"] is True


@pytest.mark.timeout(900)
def test_runbook_rehearse_cli_is_make_rehearse(migrated_run) -> None:
    """``runbook rehearse --with-rollback`` (the stand-in chart): exit 0, report path printed.

    The session's shared run (``helpers.migrated_run``) is this very command, run as the
    console script in a bare environment (``PATH=/usr/bin:/bin``, its own ``HOME``).
    """
    p = migrated_run
    assert p.returncode == 0, (p.stdout[-4000:], p.stderr[-4000:])
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("report: "), last
    index = Path(last.removeprefix("report: "))
    assert index.is_file() and index.name == "index.html"
    assert index.parent.parent == p.reports_dir
    assert "REHEARSAL PASSED" in p.stdout
    for check in ("configs byte-identical", "flannel back on every node", "no cilium leftovers on nodes"):
        assert f"rollback check: {check}: OK" in p.stdout
    text = index.read_text()
    assert "ALL PHASES PASSED" in text and "Rehearsal: back on flannel" in text
    # the stand-in chart, as the twin serves it by default
    assert "STAND-IN" in notebook_outputs(index.parent / "03-install.ipynb", every_mimetype=True)


@pytest.mark.timeout(60)
def test_runbook_rehearse_refuses_a_missing_chart_archive(tmp_path: Path) -> None:
    """A person's typo in --cilium-chart: a params error (exit 2) before any twin starts."""
    missing = tmp_path / "no-such-cilium.tgz"
    p = subprocess.run([str(RUNBOOK), "rehearse", "--cilium-chart", str(missing),
                        "--reports-dir", str(tmp_path / "reports"), "--state-dir", str(tmp_path / "twin")],
                       capture_output=True, text=True, timeout=50,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert str(missing) in p.stderr and "--cilium-chart" in p.stderr
    assert not (tmp_path / "twin" / "params.yaml").exists()
