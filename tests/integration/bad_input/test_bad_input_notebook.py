"""A phase notebook run directly (papermill, no runner) with bad parameters.

The first code cell after the parameters is ``s = session.start(...)``: it must fail
there, before anything is contacted, and its error output must carry the same message
as the CLI (the file and the field). The cells after it must not run. papermill and its
kernel run with the tripwire of ``conftest.py`` (loopback allowed: the kernel talks to
papermill over it), and ``HOME`` is empty, so minicloud's ``~/.kube/config`` is absent.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from test_bad_input_cli import MINICLOUD, _kpr_contradiction, _missing_values, _unknown_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[3]
NOTEBOOK = REPO / "notebooks" / "01-preflight.ipynb"

# (id, CLI-arguments builder, the error class the cell must show, execute)
CASES: list[tuple[str, Callable[[Path], list[str]], str, bool]] = [
    ("unknown-key", _unknown_key, "UnknownKeyError", False),
    ("missing-values-file", _missing_values, "ValuesFileError", False),
    ("kpr-contradiction", _kpr_contradiction, "ValuesMismatch", False),
    ("real-execute-without-confirm", lambda t: ["--params", str(MINICLOUD)],
     "ConfirmationRequired", True),
]


def _code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_notebook_with_bad_params_fails_in_its_first_cell_with_the_cli_message(
        case: tuple, tmp_path: Path, kernel_tripwire) -> None:
    _, build, ename, execute = case
    params_file = build(tmp_path)[1]
    run_dir = tmp_path / "reports" / "nb-bad-input"
    out = tmp_path / "out.ipynb"

    cli = subprocess.run([sys.executable, "-m", "runbook.cli", "run", "--params", params_file,
                          "--reports-dir", str(tmp_path / "cli-reports"),
                          *(["--execute"] if execute else [])],
                         env=kernel_tripwire.env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=90)
    assert cli.returncode not in (0, 1) and cli.stderr.startswith("error: "), cli.stderr
    cli_message = cli.stderr.splitlines()[0].removeprefix("error: ")

    pm = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOK), str(out), "--cwd", str(NOTEBOOK.parent),
         "-p", "params_file", params_file, "-p", "run_dir", str(run_dir),
         "-p", "execute", str(execute), "-p", "confirm", "", "--no-progress-bar"],
        env=kernel_tripwire.env, cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert pm.returncode != 0, "papermill should report the failed cell"
    nb = json.loads(out.read_text())
    cells = _code_cells(nb)
    start_i = next(i for i, c in enumerate(cells) if "session.start(" in "".join(c["source"]))
    # everything before it is the parameters (ours and papermill's injected copy)
    for c in cells[:start_i]:
        tags = c.get("metadata", {}).get("tags", [])
        assert {"parameters", "injected-parameters"} & set(tags), c["source"]
        assert not [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
    errs = [o for o in cells[start_i].get("outputs", []) if o.get("output_type") == "error"]
    assert len(errs) == 1, cells[start_i].get("outputs")
    err = errs[0]
    assert err["ename"] == ename
    first = err["evalue"].splitlines()[0]
    assert first == cli_message, (err["evalue"], cli_message)
    assert ".yaml" in first and "field '" in first, first      # names the file and the field
    # the cells after the failed one never ran
    assert all(c.get("execution_count") is None for c in cells[start_i + 1:])
    # nothing was created or contacted
    assert not run_dir.exists()
    assert kernel_tripwire.attempts() == [], kernel_tripwire.attempts()
