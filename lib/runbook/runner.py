"""Run the phase notebooks headless with papermill, into ``reports/<run-id>/``.

Each phase notebook is executed with its parameters (``params_file``, ``run_dir``,
``execute``, ``confirm`` ...) into the run folder, where the executed notebook is the
evidence. The run stops at the first failing phase and always renders the report
(``report.render_run``) in a ``finally``, so a failed run still leaves a readable
artifact that shows where and why it stopped.

Example:
    >>> from runbook import runner
    >>> result = runner.run("params/twin.yaml", phases=["preflight"])   # doctest: +SKIP
    >>> result.index_html                                              # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import kernels, lean_imports, report
from .errors import ParamsError, RunIdError
from .phases import MIGRATION, PHASES

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO / "notebooks"
REPORTS_DIR = REPO / "reports"

__all__ = ["MIGRATION", "PHASES", "PhaseResult", "RunResult", "run", "execute_phase",
           "parse_phases", "new_run_id", "check_run_id", "make_run_dir", "secure_tree"]

_COMMON = {"params_file", "run_dir", "execute", "confirm"}
#: phases a strategy does not run, and why (the run's progress and result say it)
NOT_IN_STRATEGY: dict[str, dict[str, str]] = {
    "node-by-node": {"reconfigure": "strategy node-by-node: flannel stays on until every node runs its pods "
                                    "on Cilium; 03-install writes the k3s keys and restarts k3s at the switch"},
}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class PhaseResult:
    """The outcome of one phase notebook."""

    phase: str
    notebook: Path
    status: str = "not-run"        # passed | failed | stopped (a deliberate stop: DEFER) | not-run
    seconds: float = 0.0
    error: str | None = None       # "GateFailed: ..." for a failed phase
    failed_cell: int | None = None


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    phases: list[PhaseResult] = field(default_factory=list)
    index_html: Path | None = None

    @property
    def ok(self) -> bool:
        return all(p.status == "passed" for p in self.phases if p.status != "not-run") and \
            any(p.status == "passed" for p in self.phases)

    @property
    def failed(self) -> PhaseResult | None:
        """The phase that failed or was stopped (None when none did)."""
        return next((p for p in self.phases if p.status in ("failed", "stopped")), None)


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261126-051200-a1b2``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    """Refuse a run id that is not a plain folder name."""
    if not run_id or not _RUN_ID.fullmatch(run_id) or ".." in run_id:  # fullmatch: "$" lets "x\n" through
        raise RunIdError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only "
                         "(no path separators, no '..')", field="--run-id")
    return run_id


def parse_phases(text: str | list[str] | None) -> list[str]:
    """``"preflight,install"`` -> phase names in canonical order; unknown names are errors."""
    if text is None:
        return list(MIGRATION)
    names = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        raise ParamsError(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(PHASES)}",
                          field="--phases")
    return [p for p in PHASES if p in names]


def make_run_dir(run_id: str, reports_dir: Path | None = None) -> Path:
    """Create ``reports/<run-id>`` owner-only (it holds cluster state)."""
    root = Path(reports_dir or REPORTS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / check_run_id(run_id)
    run_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(run_dir, 0o700)
    return run_dir


def secure_tree(root: Path) -> int:
    """Make every folder (0700) and file (0600) under ``root`` owner-only; returns how many
    modes were tightened.

    The run folder (0700) already keeps others out; helm writes its repository cache with
    an explicit ``chmod 0644`` and papermill saves notebooks with the default umask, so
    this makes the files themselves owner-only too.
    """
    changed = 0
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # a file removed while we walk (lock files)
            continue
        if path.is_symlink():
            continue
        want = 0o700 if path.is_dir() else (st.st_mode & 0o700) | 0o600
        if (st.st_mode & 0o777) != want:
            os.chmod(path, want)
            changed += 1
    return changed


def _cell_label(cell: Any) -> str:
    src = cell.get("source", "")
    m = re.search(r"#\s*papermill_description=(.+)", src)
    if m:
        return m.group(1).strip()
    first = next((ln.strip() for ln in src.splitlines() if ln.strip() and not ln.startswith("#")), "")
    return first[:70]


def execute_phase(phase: str, run_dir: Path, parameters: dict[str, Any], *,
                  progress: Callable[[str], None] = print, notebooks_dir: Path | None = None,
                  cell_timeout: float | None = 1800, warm_next: str | None = None) -> PhaseResult:
    """Execute one phase notebook into ``run_dir``; never raises for a failed cell.

    The phase runs in the kernel started ahead for its notebook (:func:`warm_up`), if
    one is ready, else in a kernel papermill starts. ``warm_next``: the phase that runs
    after this one, whose kernel is started ahead as this phase begins
    (:data:`WARM_AFTER_CELLS`)."""
    lean_imports.jsonschema()   # before papermill imports it
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from .nbengine import ENGINE

    src = Path(notebooks_dir or NOTEBOOKS_DIR) / PHASES[phase]
    out = run_dir / PHASES[phase]
    result = PhaseResult(phase=phase, notebook=out)
    n_cells = 0

    code_cells = 0

    def on_start(cell: Any = None, cell_index: int = 0, **_: Any) -> None:
        nonlocal code_cells
        if cell is not None and cell.get("cell_type") == "code":
            progress(f"  [{phase}] cell {cell_index}/{n_cells}: {_cell_label(cell)}")
            code_cells += 1
            if warm_next and code_cells == WARM_AFTER_CELLS:
                warm_up(warm_next, notebooks_dir)

    try:
        import nbformat

        n_cells = len(nbformat.read(src, as_version=4).cells)
        # Phase-specific parameters (e.g. proceed_despite_deferral) go only to the
        # notebooks that declare them: papermill would warn about the others.
        declared = set(pm.inspect_notebook(str(src)))
        parameters = {k: v for k, v in parameters.items() if k in declared or k in _COMMON}
    except Exception:  # the executor reports an unreadable notebook itself
        pass
    progress(f"phase {phase}: running {src.name}")
    t0 = time.monotonic()
    km = _take_warm(src, progress)
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3",
                            engine_name=ENGINE,   # the notebook written about once a second
                            progress_bar=False, cwd=str(src.parent), execution_timeout=cell_timeout,
                            on_cell_start=on_start, kernel_manager_class=kernels.LocalKernelManager,
                            # every output is in by then, and the library keeps nothing to
                            # flush at exit: a graceful kernel shutdown costs ~1 s a phase
                            shutdown_kernel="immediate", km=km)
        result.status = "passed"
    except PapermillExecutionError as e:
        result.status = "stopped" if e.ename in report.STOP_ERRORS else "failed"
        result.error = f"{e.ename}: {_first_line(e.evalue)}"
        result.failed_cell = e.exec_count
    except Exception as e:  # kernel death, missing notebook ...
        result.status = "failed"
        result.error = f"{type(e).__name__}: {_first_line(str(e))}"
    finally:
        kernels.shutdown(km, wait=False)   # papermill leaves a kernel it did not start running
        result.seconds = time.monotonic() - t0
        if out.exists():
            os.chmod(out, 0o600)
    progress(f"phase {phase}: {result.status.upper()} in {result.seconds:.1f}s"
             + (f" — {result.error}" if result.error else ""))
    return result


#: the next phase's kernel starts with this code cell of the current phase: the first, as
#: the current phase's own kernel was started ahead too (its imports are done), and a short
#: phase (5 s) is barely longer than a kernel start with its imports on a busy machine
WARM_AFTER_CELLS = 1
#: kernels started ahead in this process, by notebook path (see :func:`warm_up`)
_WARM: dict[Path, kernels.WarmKernel] = {}


def warm_up(phase: str, notebooks_dir: Path | None = None) -> None:
    """Start ``phase``'s kernel now, in the background, with its notebook's imports done:
    :func:`execute_phase` takes it when the phase comes (a caller that runs another
    phase after a run, such as a rehearsal's rollback, passes it as ``run(then=...)``).
    A kernel nobody takes is stopped by :func:`discard_warm` (at exit at the latest)."""
    src = (Path(notebooks_dir or NOTEBOOKS_DIR) / PHASES[phase]).resolve()
    if src not in _WARM and src.exists():
        if not _WARM:
            atexit.register(discard_warm)
        _WARM[src] = kernels.WarmKernel(src).start()


def discard_warm(keep: str | None = None) -> None:
    """Stop the kernels started ahead that no phase took (all but ``keep``'s phase), and
    wait for the used ones being stopped in the background."""
    spare = (NOTEBOOKS_DIR / PHASES[keep]).resolve() if keep else None
    for src in [s for s in _WARM if s != spare]:
        _WARM.pop(src).discard()
    kernels.join_shutdowns()


def _take_warm(src: Path, progress: Callable[[str], None]) -> Any:
    warm = _WARM.pop(src.resolve(), None)
    if warm is None:
        return None
    km = warm.take()
    if km is None:
        progress(f"  (the kernel started ahead for {src.name} failed: {warm.error}; papermill starts one)")
    return km


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:300] if text else ""


def run(params_file: str | os.PathLike, *, phases: list[str] | str | None = None,
        execute: bool = False, confirm: str = "", run_id: str | None = None,
        reports_dir: str | os.PathLike | None = None, extra: dict[str, Any] | None = None,
        progress: Callable[[str], None] = print, sample_timeline: bool = True,
        render: bool = True, then: str | None = None) -> RunResult:
    """Validate the params, then run ``phases`` in order, stopping at the first failure.

    Args:
        params_file: the params YAML (validated before anything is contacted).
        phases: names or a comma-separated string (default: the four migration phases).
        execute: apply changes (default is a dry run).
        confirm: the cluster name; required with ``execute`` on a real target.
        run_id: resume or name a run (default: a new id).
        extra: more notebook parameters (e.g. ``{"proceed_despite_deferral": True}``).
        render: render the report at the end. A caller that runs more phases into the
            same folder afterwards (a rehearsal's rollback) passes False and renders once
            at its own end; a failed or stopped run is rendered anyway.
        then: the phase the caller runs next in this process, into the same folder (a
            rehearsal's rollback): its kernel is started ahead during the last phase,
            kept after the run, and stopped by :func:`discard_warm` if never used.

    Raises:
        ParamsError (and subclasses), ClusterError: before the run folder is created
            (bad params; the target's kubeconfig missing or its API not answering).

    Returns:
        RunResult with each phase's status and the path of ``index.html``.
    """
    params_path = Path(params_file).resolve()
    # Everything this run creates holds cluster state: the run folder is 0700 and
    # secure_tree() makes every file in it owner-only after each phase. The process
    # umask is left alone on purpose: it is process-wide, and a twin running in this
    # process (rehearsals, tests) would create its node files with it.
    return _run(params_path, phases=phases, execute=execute, confirm=confirm, run_id=run_id,
                reports_dir=reports_dir, extra=extra, progress=progress,
                sample_timeline=sample_timeline, render=render, then=then)


def reachable(p: Any) -> None:
    """Refuse to start a run whose cluster cannot be reached, before a run folder exists.

    A twin is given a few seconds (when it is not running, nothing will answer); a real
    cluster the usual ``limits.timeouts.api_ready``.

    Raises:
        ClusterError: the kubeconfig is missing or the API does not answer; for a twin
            the hint says how to start one.
    """
    from .cluster import Cluster
    from .errors import ClusterError

    c = Cluster.from_params(p)
    if p.target.kind == "twin":
        c.retry_for = min(c.retry_for, 5.0)
    try:
        c.version()
    except ClusterError as e:
        if p.target.kind != "twin" or "kubeconfig" in e.message:
            raise
        raise ClusterError(f"no API server answers at {c.server}: {e.message.splitlines()[0]}", hint=(
            "the twin that wrote these params is not running: start it with `.venv/bin/runbook twin up "
            f"--state-dir {Path(p.source).parent if p.source else '.twin'}` (or rehearse everything with "
            "`make rehearse`)")) from e


def _run(params_path: Path, *, phases: list[str] | str | None, execute: bool, confirm: str,
         run_id: str | None, reports_dir: str | os.PathLike | None, extra: dict[str, Any] | None,
         progress: Callable[[str], None], sample_timeline: bool, render: bool,
         then: str | None) -> RunResult:
    from . import params as params_mod

    p = params_mod.load(params_path)
    params_mod.validate(p)
    params_mod.require_confirmation(p, execute, confirm)
    names = parse_phases(phases)
    run_id = check_run_id(run_id) if run_id else new_run_id()
    reachable(p)   # a run that cannot start leaves no empty run folder behind
    run_dir = make_run_dir(run_id, Path(reports_dir) if reports_dir else None)
    result = RunResult(run_id=run_id, run_dir=run_dir,
                       phases=[PhaseResult(ph, run_dir / PHASES[ph]) for ph in names])
    parameters = {"params_file": str(params_path), "run_dir": str(run_dir),
                  "execute": bool(execute), "confirm": confirm, **(extra or {})}
    # papermill pulls in requests; the sampler thread below imports the Kubernetes client,
    # which does too. Two threads importing the same package at once can see it half
    # initialised ("cannot import name ... partially initialized module"): import first.
    lean_imports.jsonschema()
    import papermill  # noqa: F401

    sampler = None
    if sample_timeline:
        from .timeline import Sampler

        sampler = Sampler(p, run_dir)
        sampler.start()
    progress(f"run {run_id}: {', '.join(names)} ({'EXECUTE' if execute else 'dry run'}) "
             f"against {p.target.name} ({p.target.kind})")
    skipped = NOT_IN_STRATEGY.get(p.strategy, {})
    to_run = [ph for ph in names if ph not in skipped] + ([then] if then and then not in names else [])
    after = dict(zip(to_run, to_run[1:]))      # each phase's successor, whose kernel it warms
    try:
        for i, ph in enumerate(names):
            if ph in NOT_IN_STRATEGY.get(p.strategy, {}):
                # not executed: the strategy does this phase's work elsewhere (the page says where)
                progress(f"{ph}: not run ({NOT_IN_STRATEGY[p.strategy][ph]})")
                result.phases[i] = PhaseResult(ph, run_dir / PHASES[ph], status="not-run",
                                               error=NOT_IN_STRATEGY[p.strategy][ph])
                continue
            res = execute_phase(ph, run_dir, parameters, progress=progress, warm_next=after.get(ph))
            secure_tree(run_dir)
            result.phases[i] = res
            report.record_phase(run_dir, res)
            if res.status != "passed":
                if execute:
                    _release_lock_if_nothing_changed(p, run_dir, progress)
                break
    finally:
        discard_warm(keep=then)    # a kernel started for a phase the run did not reach
        if sampler is not None:
            sampler.stop()
        if render or not result.ok:
            try:
                result.index_html = report.render_run(run_dir)
                progress(f"report: {result.index_html}")
            except Exception as e:  # the report must never hide the run's own outcome
                progress(f"report rendering failed: {type(e).__name__}: {e}")
        else:
            result.index_html = None   # the caller renders once, at its own end
        secure_tree(run_dir)
    return result


def _release_lock_if_nothing_changed(params: Any, run_dir: Path, progress: Callable[[str], None]) -> None:
    """A phase that failed before its first change (e.g. a preflight gate) holds the
    migration lock for nothing: release it, so a corrected run can start at once. A run
    that changed anything keeps the lock until it is rolled back, verified or expires."""
    from . import lock
    from .cluster import Cluster
    from .journal import JOURNAL_NAME, Journal

    if not (run_dir / JOURNAL_NAME).exists():
        return
    try:
        if Journal.read(run_dir).entries():
            return
        if lock.release(Cluster.from_params(params), run_dir.name):
            progress("nothing was changed: the migration lock is released")
    except Exception as e:  # best effort: the lock expires by itself
        progress(f"could not release the migration lock: {type(e).__name__}: {e}")
