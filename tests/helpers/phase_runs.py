"""Phase runs as the phase and fault tests make them: a fast params copy and ``runner.run``.

A twin's own params carry production-length timeouts; a phase that cannot succeed on a
faulty twin would then outlive the test. :func:`fast_params` writes a copy next to the
twin's params with the timeouts each test module chooses, plus per-section overrides.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from runbook import runner


def fast_params(twin: Any, timeouts: dict[str, float], *, name: str = "params-fast.yaml",
                **sections: Any) -> Path:
    """The twin's params with ``limits.timeouts`` updated by ``timeouts``, then each section
    in ``sections`` updated (a dict) or replaced (anything else); written 0600 in the twin's
    state folder as ``name``.

    Example:
        >>> fast_params(twin, {"helm": 45}, argocd={"pause_parents": False})  # doctest: +SKIP
        PosixPath('.../twin/params-fast.yaml')
    """
    data = yaml.safe_load(twin.params_path.read_text())
    data.setdefault("limits", {}).setdefault("timeouts", {}).update(timeouts)
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    path = twin.state_dir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def run_phases(params: Path, phases: str, reports: Path, *, execute: bool = True,
               run_id: str | None = None, **extra: Any) -> runner.RunResult:
    """``runner.run`` quietly (no progress, no timeline sampling); ``extra`` are the
    notebooks' extra parameters (e.g. ``proceed_despite_deferral=True``)."""
    return runner.run(params, phases=phases, execute=execute, run_id=run_id, reports_dir=reports,
                      extra=extra or None, progress=lambda m: None, sample_timeline=False)


def statuses(res: runner.RunResult) -> dict[str, str]:
    """phase -> status of a run's phases (``passed``, ``failed``, ``not-run``)."""
    return {p.phase: p.status for p in res.phases}
