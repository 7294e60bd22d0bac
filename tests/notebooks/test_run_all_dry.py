"""A plain "Run All" of each notebook, as a person does it in ``make lab``: a fresh twin,
no parameters injected (the defaults: a dry run, the params from ``RUNBOOK_PARAMS``, one
run folder shared through ``RUNBOOK_RUN_DIR``).

Every notebook must end without a Python traceback:

* minicloud's honest preflight verdict is DEFER, so 01-preflight ends with a short stop
  message that names the parameter to set;
* nothing was migrated, so 04-verify's gate fails, and says so as a message (what failed,
  and that 01 to 03 come first), not as a stack;
* 02-reconfigure, 03-install and 05-rollback show their plans and run to their last cell.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ORDER = ["01-preflight", "02-reconfigure", "03-install", "04-verify", "05-rollback"]


def _errors(nb) -> list[tuple[int, dict]]:
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.fixture(scope="module")
def lab_twin(tmp_path_factory):
    from twin.api import Twin

    root = tmp_path_factory.mktemp("runall")
    twin = Twin(root / "twin").start()
    try:
        yield twin, root / "reports" / "lab-run"
    finally:
        twin.stop()


def _run_all(name: str, twin, run_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    from runbook import kernels

    monkeypatch.setenv("RUNBOOK_PARAMS", str(twin.params_path))
    monkeypatch.setenv("RUNBOOK_RUN_DIR", str(run_dir))
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    # like JupyterLab's Run All: cells run in order and the run stops at the first error
    client = NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(REPO / "notebooks")}},
                            kernel_manager_class=kernels.LocalKernelManager)
    try:
        client.execute()
    except Exception as e:  # noqa: BLE001 - the stop is read from the outputs below
        if type(e).__name__ != "CellExecutionError":
            raise
    return nb


def test_run_all_of_preflight_ends_with_a_stop_message_naming_the_parameter(lab_twin, monkeypatch):
    twin, run_dir = lab_twin
    nb = _run_all("01-preflight", twin, run_dir, monkeypatch)
    errors = _errors(nb)
    assert len(errors) == 1, errors
    index, err = errors[0]
    assert err["ename"] == "DeferredStop"
    text = _no_stack(err)
    assert text.startswith("STOPPED: the verdict is DEFER")
    assert "proceed_despite_deferral = True" in text
    assert "execute_or_defer" in nb.cells[index].source        # it stopped at the gate, nothing after
    assert not any(c.get("outputs") for c in nb.cells[index + 1:] if c.cell_type == "code")


def _no_stack(err: dict) -> str:
    text = "\n".join(err["traceback"])
    assert "Traceback" not in text and "File " not in text and ".py" not in text, text
    return text


def test_run_all_of_verify_before_any_migration_ends_with_the_gate_as_a_message(lab_twin, monkeypatch):
    twin, run_dir = lab_twin
    nb = _run_all("04-verify", twin, run_dir, monkeypatch)
    errors = _errors(nb)
    assert len(errors) == 1 and errors[0][1]["ename"] == "GateFailed", errors
    text = _no_stack(errors[0][1])
    assert text.startswith("GATE FAILED: every verification check passed")
    assert "records no migration yet" in text and "03-install" in text


@pytest.mark.parametrize("name", ["02-reconfigure", "03-install", "05-rollback"])
def test_run_all_of_each_planning_notebook_ends_without_an_error(name, lab_twin, monkeypatch):
    twin, run_dir = lab_twin
    nb = _run_all(name, twin, run_dir, monkeypatch)
    assert _errors(nb) == []
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last.get("outputs"), f"{name}: the last cell (the summary) did not run"
    assert os.environ.get("RUNBOOK_RUN_DIR") == str(run_dir)
