"""``pytest -p nbval --nbval-lax notebooks/`` (``make nbval``) as part of the main suite.

It runs in a subprocess because nbval's plugin (notebooks/conftest.py) starts and
migrates a twin in ``pytest_configure`` and exports ``RUNBOOK_PARAMS`` /
``RUNBOOK_RUN_DIR`` to the kernels: that belongs to a pytest process of its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ORDER = ["01-preflight", "02-reconfigure", "03-install", "04-verify", "05-rollback"]
PHASE = dict(zip(ORDER, ["preflight", "reconfigure", "install", "verify", "rollback"]))


def _digests() -> dict[str, str]:
    return {n: hashlib.sha256((NOTEBOOKS / f"{n}.ipynb").read_bytes()).hexdigest() for n in ORDER}


@pytest.mark.notebooks
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_nbval_lax_runs_the_five_notebooks_against_one_migrated_twin(tmp_path: Path) -> None:
    before = _digests()
    state = tmp_path / "nbval"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "KUBE", "HELM_"))}
    env.update(RUNBOOK_NBVAL_STATE=str(state), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    (tmp_path / "home").mkdir()
    # -p nbval: the plugin is off by default (pyproject's addopts), on only where it runs
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "nbval", "--nbval-lax", "--nbval-current-env",
                        "-p", "no:cacheprovider", "-v", "--no-header", "-o", "addopts=",
                        "--timeout=300", "notebooks/"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=880)
    out = p.stdout + p.stderr
    (tmp_path / "nbval.log").write_text(out)
    first = out.find("___ ")  # the first failure's section, the useful part of a long log
    assert p.returncode == 0, out[first:first + 6000] if first >= 0 else out[-6000:]

    # Every code cell of every notebook ran and passed, in the canonical order.
    ran = re.findall(r"notebooks/(\d\d-[a-z]+)(?:\.ipynb|::ipynb)::Cell (\d+) PASSED", p.stdout)
    assert [n for n in dict.fromkeys(n for n, _ in ran)] == ORDER, p.stdout[-3000:]
    for name in ORDER:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        n_code = sum(1 for c in nb.cells if c.cell_type == "code")
        assert sum(1 for n, _ in ran if n == name) == n_code, name
    assert "FAILED" not in p.stdout and "ERROR" not in p.stdout

    # The dry runs really went to the migrated twin, one shared journal: each migration
    # phase has its executed attempt plus the dry one, rollback only its dry attempt, and
    # the dry rollback journaled no step (it only showed its plan).
    runs = list((state / "reports").iterdir())
    assert len(runs) == 1, runs
    journal = json.loads((runs[0] / "journal.json").read_text())
    for name in ORDER:
        ph = journal["phases"][PHASE[name]]
        assert ph["status"] == "passed", (name, ph)
        assert ph["attempts"] == (1 if name == "05-rollback" else 2), (name, ph)
    rollback_steps = {"helm-uninstall", "stop-k3s", "restore-config", "start-k3s"}
    assert not [e for e in journal["entries"] if e.get("step") in rollback_steps]
    assert journal["facts"].get("cilium_installed") is True
    assert not journal["facts"].get("rolled_back")

    # nbval writes nothing back: the source notebooks are byte-identical.
    assert _digests() == before
