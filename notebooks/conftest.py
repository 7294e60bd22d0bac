"""``pytest -p nbval --nbval-lax notebooks/`` (``make nbval``): the five phase notebooks, in
order, against ONE twin.

nbval runs every cell of every notebook in a kernel but injects no parameters, so each
notebook runs with its defaults: ``params_file=""`` (read from ``$RUNBOOK_PARAMS``),
``run_dir=""`` (read from ``$RUNBOOK_RUN_DIR``) and ``execute=False``, a dry run. This
plugin gives those defaults something worth checking before the first kernel starts:

1. it starts a twin of minicloud in a temporary folder;
2. it migrates it with the runner (``execute``), exactly as ``runbook rehearse`` does, so
   the dry runs meet the state they are written for: preflight sees Cilium installed
   (a warning), the reconfigure and install plans are no-ops, verify's gates pass
   against a real migration, and rollback shows the plan the journal gives it;
3. it points ``RUNBOOK_PARAMS`` at the twin's params and ``RUNBOOK_RUN_DIR`` at that
   migration's run folder, so the five dry runs share its journal and snapshots.

The params differ from the twin's own in one documented way: ``decision.
multi_service_traffic: true``. Minicloud's honest verdict is DEFER, and a notebook run
without parameters cannot say ``proceed_despite_deferral=True``; with this criterion
holding, the verdict is EXECUTE and preflight's gate passes on its merits.

Nothing happens unless ``--nbval`` or ``--nbval-lax`` is given, and nbval never writes
outputs back into the notebooks (``tests/notebooks`` checks they are unchanged).
Environment: ``RUNBOOK_NBVAL_STATE=<dir>`` puts the twin and the run folder there and
keeps them (the test in ``tests/notebooks`` reads the journal afterwards); by default a
temporary folder is used and removed. ``RUNBOOK_NBVAL_NO_TWIN=1`` starts nothing: the
notebooks then dry-run against whatever ``RUNBOOK_PARAMS``/``RUNBOOK_RUN_DIR`` name.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

_STATE: dict[str, Any] = {}


def _nbval_active(config: pytest.Config) -> bool:
    return bool(config.getoption("nbval", False) or config.getoption("nbval_lax", False))


def _write_params(twin: Any) -> Path:
    """The twin's params with one criterion set so that minicloud's verdict is EXECUTE."""
    import yaml

    data = yaml.safe_load(twin.params_path.read_text())
    data.setdefault("decision", {})["multi_service_traffic"] = True
    path = twin.state_dir / "params-nbval.yaml"
    path.write_text("# params.yaml of this twin, with decision.multi_service_traffic: true "
                    "(notebooks/conftest.py)\n" + yaml.safe_dump(data, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def pytest_configure(config: pytest.Config) -> None:
    if not _nbval_active(config) or os.environ.get("RUNBOOK_NBVAL_NO_TWIN"):
        return
    from runbook import runner
    from twin.api import Twin

    keep = os.environ.get("RUNBOOK_NBVAL_STATE")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="phase22-nbval-"))
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not keep:
        _STATE["tmp"] = tmp
    twin = Twin(tmp / "twin").start()
    _STATE["twin"] = twin
    params = _write_params(twin)
    lines: list[str] = []
    result = runner.run(params, phases=runner.MIGRATION, execute=True, reports_dir=tmp / "reports",
                        progress=lines.append)
    if not result.ok:
        failed = result.failed
        _stop()
        pytest.exit(f"nbval fixture: migrating the twin failed in {failed.phase if failed else '?'}: "
                    f"{failed.error if failed else ''}; see {result.index_html}", returncode=3)
    _STATE["run_dir"] = result.run_dir
    os.environ["RUNBOOK_PARAMS"] = str(params)
    os.environ["RUNBOOK_RUN_DIR"] = str(result.run_dir)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if "run_dir" not in _STATE:
        return []
    return [f"phase22 nbval: twin migrated; notebooks dry-run with RUNBOOK_PARAMS={os.environ['RUNBOOK_PARAMS']} "
            f"RUNBOOK_RUN_DIR={_STATE['run_dir']}"]


def _stop() -> None:
    twin = _STATE.pop("twin", None)
    if twin is not None:
        twin.stop()
    tmp = _STATE.pop("tmp", None)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop()
