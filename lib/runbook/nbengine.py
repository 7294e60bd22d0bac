"""The papermill engine the runner executes phases with: the notebook saved about once a second.

papermill writes the whole executed notebook to disk twice per cell (at its start and at
its end), markdown cells included: some 400 writes of 50-370 KB of JSON in a rehearsal,
each serialised in the runner between two cells (~3 s of a run, all on its critical
path). :class:`ThrottledEngine` keeps papermill's bookkeeping but writes the notebook only
when :data:`SAVE_EVERY` seconds have passed since the last write, and always:

- when the notebook starts (the file exists as soon as the phase does);
- when a cell fails (its traceback is on disk before anything else happens);
- when the notebook ends, whatever the outcome (papermill's final write).

A cell that runs long is saved while it runs exactly as papermill does (when it sends
output, every ``autosave_cell_every`` = 30 s). So while a phase runs, the file on disk
lags the kernel by at most :data:`SAVE_EVERY` seconds of cell starts and ends (a killed
runner loses at most that much of the evidence; the journal, written before every change,
is what a resume or a rollback reads), and once the phase has ended it is the same as
papermill's.

Example:
    >>> import papermill as pm                                               # doctest: +SKIP
    >>> pm.execute_notebook("in.ipynb", "out.ipynb", engine_name=ENGINE)      # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

__all__ = ["ENGINE", "SAVE_EVERY", "ThrottledEngine", "ThrottledSaves"]

#: papermill engine name under which :class:`ThrottledEngine` is registered
ENGINE = "runbook"
#: seconds between two writes of the executed notebook while its phase runs
SAVE_EVERY = 1.0


class ThrottledSaves(NotebookExecutionManager):
    """papermill's execution manager, writing the notebook at most every ``SAVE_EVERY`` s
    (plus at its start, at a failed cell and at its end). ``writes`` counts the writes."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.writes = 0
        self._written_at: float | None = None
        self._force = False

    def save(self, **kwargs: Any) -> Any:
        now = time.monotonic()
        if (self._force or self._written_at is None
                or now - self._written_at >= SAVE_EVERY):
            self._force = False
            self._written_at = now
            self.writes += 1
            return super().save(**kwargs)
        return None

    def cell_exception(self, cell: Any, cell_index: Any = None, **kwargs: Any) -> Any:
        self._force = True   # the cell_complete that follows writes the traceback
        return super().cell_exception(cell, cell_index=cell_index, **kwargs)

    def notebook_complete(self, **kwargs: Any) -> Any:
        self._force = True
        return super().notebook_complete(**kwargs)


class ThrottledEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`ThrottledSaves` as its execution manager."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: Any = None,
                         progress_bar: bool = True, log_output: bool = False,
                         autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        nb_man = ThrottledSaves(nb, output_path=output_path, progress_bar=progress_bar,
                                log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(ENGINE, ThrottledEngine)
