"""runbook.nbengine: the executed notebook written about once a second, always at the
start, at a failed cell and at the end (a fake clock: no timing in the test)."""
from __future__ import annotations

import nbformat
import pytest
from papermill.engines import papermill_engines

from runbook import nbengine

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(nbengine.time, "monotonic", c)
    return c


def _nb(n: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x = {i}") for i in range(n)]
    nb.metadata["papermill"] = {}
    return nb


def _on_disk(path) -> list[str | None]:
    return [c.metadata["papermill"]["status"] for c in nbformat.read(path, as_version=4).cells]


def test_registered_under_its_name() -> None:
    assert papermill_engines.get_engine(nbengine.ENGINE) is nbengine.ThrottledEngine


def test_quick_cells_share_a_write_and_the_end_is_always_written(tmp_path, clock: Clock) -> None:
    out = tmp_path / "out.ipynb"
    man = nbengine.ThrottledSaves(_nb(11), output_path=str(out), progress_bar=False)
    man.notebook_start()
    assert out.exists() and man.writes == 1        # the file exists as soon as the phase does
    cells = man.nb.cells
    for i, cell in enumerate(cells[:10]):
        man.cell_start(cell, i)
        clock.t += 0.01
        man.cell_complete(cell, i)
    assert man.writes == 1                         # 20 papermill saves within 0.2 s: none written
    assert _on_disk(out) == ["pending"] * 11       # the file is behind ...
    clock.t += nbengine.SAVE_EVERY
    man.cell_start(cells[10], 10)                  # ... by at most SAVE_EVERY
    assert man.writes == 2
    assert _on_disk(out) == ["completed"] * 10 + ["running"]
    man.cell_complete(cells[10], 10)
    man.notebook_complete()
    assert man.writes == 3
    assert _on_disk(out) == ["completed"] * 11     # the end is always written


def test_a_failed_cell_is_written_at_once(tmp_path, clock: Clock) -> None:
    out = tmp_path / "out.ipynb"
    man = nbengine.ThrottledSaves(_nb(3), output_path=str(out), progress_bar=False)
    man.notebook_start()
    cells = man.nb.cells
    man.cell_start(cells[0], 0)
    man.cell_complete(cells[0], 0)
    man.cell_start(cells[1], 1)
    man.cell_exception(cells[1], 1)
    man.cell_complete(cells[1], 1)
    assert man.writes == 2
    assert _on_disk(out) == ["completed", "failed", "pending"]


def test_slow_cells_are_written_as_papermill_would(tmp_path, clock: Clock) -> None:
    out = tmp_path / "out.ipynb"
    man = nbengine.ThrottledSaves(_nb(3), output_path=str(out), progress_bar=False)
    man.notebook_start()
    for i, cell in enumerate(man.nb.cells):
        clock.t += nbengine.SAVE_EVERY
        man.cell_start(cell, i)
        assert _on_disk(out)[i] == "running"
        clock.t += nbengine.SAVE_EVERY
        man.cell_complete(cell, i)
        assert _on_disk(out)[i] == "completed"
    assert man.writes == 1 + 2 * 3
