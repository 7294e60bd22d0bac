"""A phase kernel started ahead (runbook.kernels.WarmKernel, runner.warm_up): the notebook
runs in it as in a fresh one (execution counts from 1, no name bound by the warm-up), its
imports already done, and the kernel is stopped after the phase."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from runbook import kernels, runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CELLS = [
    "import sys\nwarmed = 'email.mime.text' in sys.modules",
    "from email.mime import text   # the line the warm-up ran ahead",
    "assert 'text' in dir() and 'warmed' in dir()\n"
    "assert not [n for n in dir() if 'p22' in n or n == 'mods'], 'the warm-up bound a name'",
    "print(json.dumps({'warmed': warmed}))",
]


def _notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in ["import json"] + CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "01-preflight.ipynb"   # runner.PHASES' name for the first phase
    nbformat.write(nb, path)
    return path


def test_modules_imported_lists_the_top_level_imports(tmp_path: Path) -> None:
    assert kernels.modules_imported(_notebook(tmp_path)) == ["json", "sys", "email.mime", "email.mime.text"]


def test_a_phase_runs_in_the_kernel_started_ahead(tmp_path: Path, monkeypatch) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stopped: list = []
    real_shutdown = kernels.shutdown
    monkeypatch.setattr(kernels, "shutdown", lambda km, **kw: (stopped.append(km), real_shutdown(km, **kw))[1])
    runner.warm_up("preflight", nbdir)
    warm = runner._WARM[(nbdir / "01-preflight.ipynb").resolve()]
    lines: list[str] = []
    res = runner.execute_phase("preflight", run_dir, {}, progress=lines.append, notebooks_dir=nbdir)
    assert res.status == "passed", (res.error, lines)
    assert not runner._WARM                        # taken by the phase
    assert warm.error is None
    out = nbformat.read(run_dir / "01-preflight.ipynb", as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))   # as in a fresh kernel
    printed = json.loads("".join(o.get("text", "") for o in code[-1].outputs))
    assert printed == {"warmed": True}             # its imports were done before the first cell
    assert len(stopped) == 1 and isinstance(stopped[0], kernels.PrestartedKernelManager)
    runner.discard_warm()                          # joins the background shutdown
    assert not stopped[0].has_kernel               # the phase's kernel is gone


def test_a_kernel_nobody_takes_is_stopped(tmp_path: Path) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir)
    w = kernels.WarmKernel(nbdir / "01-preflight.ipynb").start()
    w._thread.join(120)
    km = w._km
    assert km is not None and km.has_kernel
    w.discard()
    assert not km.has_kernel
