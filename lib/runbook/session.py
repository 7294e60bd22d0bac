"""One phase's session: params, cluster, nodes, journal, lock, gates and figures.

The first code cell of every phase notebook is::

    s = session.start("preflight", params_file, run_dir, execute=execute, confirm=confirm)

which validates the params (before anything is contacted), refuses ``execute`` on a
real target without ``confirm`` equal to the cluster name, connects to the API,
opens the run journal and checks its provenance (same cluster UID, same params hash),
and, when executing, takes the migration lock. The last cell is ``s.finish(...)``,
which records the summary (gates and key figures) that the report index reads back.

The session owns this phase's gates (``s.gates``, filled by :meth:`Session.gate` and by
:class:`runbook.verify.Verification`) and the evidence that could not be recorded
(``s.evidence_lost``, shown in the summary): nothing about a phase is module state.

Example:
    >>> s = session.start("preflight", "params/minicloud.yaml", "")   # doctest: +SKIP
    >>> s                                                             # doctest: +SKIP
    preflight on minicloud (real) — DRY RUN — run 20261126-051200-a1b2
"""
from __future__ import annotations

import hashlib
import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import checks, evidence, lock, presentation, runinfo
from . import params as params_mod
from .cluster import Cluster
from .errors import ParamsError
from .evidence import EvidenceLost
from .journal import Journal
from .runner import NOTEBOOKS_DIR, PHASES, REPORTS_DIR, make_run_dir, new_run_id

if TYPE_CHECKING:
    import pandas as pd

    from .fleet import Fleet, FleetResult
    from .nodes import Node
    from .params import Params


def _notebook_hash(phase: str) -> str | None:
    path = NOTEBOOKS_DIR / PHASES[phase]
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


@dataclass
class Session:
    """Everything a phase notebook works with. Create it with :func:`start`."""

    phase: str
    params: Params
    values: dict
    run_dir: Path
    run_id: str
    execute: bool
    cluster: Cluster
    journal: Journal
    cluster_uid: str
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    #: every gate of this phase, in order (passed or not): the summary's table
    gates: list[checks.GateResult] = field(default_factory=list)
    #: evidence that could not be recorded in this phase (shown in the summary)
    evidence_lost: list[EvidenceLost] = field(default_factory=list)
    #: what the approving engineer must look at (the index's "Needs attention")
    attention_items: list[Attention] = field(default_factory=list)
    #: the storage wait a scale-up started (``storage_ops.StorageBudget``), until the
    #: volume check that follows it takes it: one deadline for both waits
    storage_budget: Any = None
    _nodes: list[Node] | None = None

    # -- nodes ---------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """One :class:`runbook.nodes.Node` per node in the params (servers first)."""
        if self._nodes is None:
            from .nodes import Node

            nodes = Node.from_params(self.params, journal=self.journal, run_id=self.run_id,
                                     command_log=self.run_dir / "commands.jsonl")
            self._nodes = sorted(nodes, key=lambda n: 0 if n.role == "server" else 1)
        return self._nodes

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def fleet(self, nodes: list[Node] | None = None) -> Fleet:
        """Servers first one at a time, then agents in batches of ``limits.agent_batch_size``.

        Args:
            nodes: only these nodes (default: every node of the params).
        """
        from .fleet import Fleet

        return Fleet(self.nodes if nodes is None else nodes,
                     batch_size=self.params.limits.agent_batch_size,
                     parallel_reads=getattr(self.params.limits, "parallel_reads", 20))

    def read_nodes(self, op: Callable[[Node], Any], *, description: str,
                   nodes: list[Node] | None = None) -> FleetResult:
        """Read every node at once (``limits.parallel_reads`` at a time): facts, checks.

        Read-only operations only; changes go through :meth:`fleet` (batched). Failures
        are per node in the result (``raise_for_failures()`` to stop on one).

        Example:
            >>> s.read_nodes(lambda n: n.kernel().raw, description="kernel").values()  # doctest: +SKIP
            {'set-hog': '6.1.0-18-amd64', ...}
        """
        return self.fleet(nodes).read(op, description=description)

    @property
    def timeouts(self) -> Any:
        return self.params.limits.timeouts

    # -- gates and figures -------------------------------------------------------------------
    def gate(self, condition: bool, message: str, *, only_when_executing: bool = False,
             overridden: bool = False, **kw: Any) -> "GateView":
        """Require ``condition`` (see :func:`runbook.checks.gate`): the phase stops here if not.

        Args:
            only_when_executing: the condition only makes sense after this phase's
                changes (e.g. "every pod managed by Cilium" after the install); in a dry
                run the gate is shown as skipped instead of failing.

        Returns a view that shows ``GATE PASSED: <message>`` in the notebook. The result
        (passed or failed) is kept in ``s.gates`` for the summary.
            overridden: the gate holds only because a person chose to go on (preflight's
                DEFER with ``proceed_despite_deferral``): shown as OVERRIDDEN, in its own
                colour on the page and the index, never as a plain pass.
        """
        if only_when_executing and not self.execute:
            checks.skip_gate(message, gates=self.gates, lost=self.evidence_lost, **kw)
            return GateView(None, skipped=message)
        return GateView(checks.gate(condition, message, gates=self.gates, lost=self.evidence_lost,
                                    overridden=overridden, **kw))

    def attention(self, kind: str, message: str) -> Attention:
        """Flag something the engineer who approves the run must look at.

        It is shown in the cell (a framed line) and recorded as evidence
        ``attention/<kind>/<n>``, which the report's index lists under "Needs attention"
        with a link to this cell.

        Args:
            kind: one of :data:`ATTENTION_KINDS` (``deferral-overridden``,
                ``preflight-warning``, ``no-regression-checks``, ``pods-skipped``,
                ``lock-takeover``, ``evidence-lost``, ``clock-skew``).
            message: one sentence, with what to do about it.

        Example:
            >>> s.attention("preflight-warning", "firewall ports not verifiable from the API")  # doctest: +SKIP
        """
        item = Attention(kind, message, self.phase)
        self.attention_items.append(item)
        evidence.record_or_warn(f"attention/{kind}/{len(self.attention_items)}", item.to_dict(),
                                lost=self.evidence_lost)
        if _in_kernel():
            from IPython.display import display

            display(item)
        else:
            print(repr(item), flush=True)
        return item

    def record(self, name: str, value: Any) -> Any:
        """Record a named result as evidence (:func:`runbook.evidence.record`); if that
        fails, the phase goes on and the page shows ``EVIDENCE LOST`` naming it and why."""
        return evidence.record_or_warn(name, value, lost=self.evidence_lost)

    def figure(self, name: str, value: Any) -> Any:
        """Keep a key figure for the summary and the report index."""
        self.figures[name] = value
        return value

    def progress(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def save(self, name: str, obj: Any) -> Path:
        """Save a snapshot (DataFrame or JSON-able) under ``snapshots/<phase>/``."""
        return evidence.save_snapshot(self.run_dir, self.phase, name, obj)

    def snapshot(self, *kinds: str) -> dict[str, Any]:
        """Snapshot cluster tables (pods, services, ingresses, pvcs, nodes ...) and save them."""
        out = {}
        for kind in kinds or ("pods", "services", "ingresses", "pvcs", "nodes", "daemonsets"):
            df = self.cluster.snapshot(kind)
            self.save(kind, df)
            out[kind] = df
        return out

    def require_execute(self, what: str) -> bool:
        """True when executing; otherwise prints that ``what`` is only planned."""
        if not self.execute:
            print(f"DRY RUN: {what} is shown, not done. Re-run with execute=True to apply it.")
        return self.execute

    def finish(self, verdict: str | None = None) -> pd.DataFrame:
        """Record the phase summary for the index and return it as a table.

        Evidence lost during the phase is listed in the table (``EVIDENCE LOST: ...``)
        and in the summary record (``evidence_lost``)."""
        import pandas as pd

        gates = [g.to_dict() for g in self.gates]
        summary = {"phase": self.phase, "verdict": verdict, "execute": self.execute,
                   "seconds": round(time.time() - self.started, 1),
                   "gates": [{"name": g["name"], "passed": g["passed"], "message": g["message"],
                              "overridden": g.get("overridden", False)} for g in gates],
                   "figures": self.figures,
                   "attention": [a.to_dict() for a in self.attention_items],
                   "evidence_lost": [{"name": e.name, "reason": e.reason} for e in self.evidence_lost]}
        evidence.record_or_warn("summary", summary, lost=self.evidence_lost)
        self.journal.end_phase(self.phase, "passed")
        rows = [{"item": f"gate: {g['message']}",
                 "result": "OVERRIDDEN" if g.get("overridden") else "PASSED" if g["passed"] else "FAILED"}
                for g in gates]
        rows += [{"item": k, "result": v} for k, v in self.figures.items()]
        if verdict and self.figures.get("verdict") != verdict:
            rows.append({"item": "verdict", "result": verdict})
        rows += [{"item": f"NEEDS ATTENTION: {a.kind}", "result": a.message} for a in self.attention_items]
        rows += [{"item": f"EVIDENCE LOST: {e.name}", "result": e.reason} for e in self.evidence_lost]
        return pd.DataFrame(rows, columns=["item", "result"])

    def __repr__(self) -> str:
        mode = "EXECUTE" if self.execute else "DRY RUN"
        return (f"{self.phase} on {self.params.target.name} ({self.params.target.kind}) — {mode} — "
                f"run {self.run_id}")

    def _repr_html_(self) -> str:
        mode = ("<b style='color:#b00020'>EXECUTE</b>" if self.execute
                else "<b>DRY RUN</b> (nothing is changed)")
        rows = [("phase", self.phase), ("target", f"{self.params.target.name} ({self.params.target.kind})"),
                ("API server", self.cluster.server), ("cluster UID", self.cluster_uid),
                ("nodes", ", ".join(f"{n.name} ({n.role})" for n in self.params.nodes)),
                ("run", f"{self.run_id} → {self.run_dir}"),
                ("journal", f"{len(self.journal.entries())} entries")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return f"<p>Mode: {mode}</p><table>{body}</table>"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (papermill's or JupyterLab's), not merely when some
    module imported ipykernel (a test process, a script that renders notebooks)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


#: The kinds of "Needs attention" items, with the words the index uses for each.
ATTENTION_KINDS: dict[str, str] = {
    "deferral-overridden": "DEFER overridden",
    "preflight-warning": "preflight warning",
    "no-regression-checks": "no regression checks",
    "pods-skipped": "pods left for a person",
    "lock-takeover": "lock taken over",
    "evidence-lost": "evidence lost",
    "clock-skew": "clocks disagree",
}


@dataclass
class Attention:
    """One thing the approving engineer must look at (see :meth:`Session.attention`)."""

    kind: str
    message: str
    phase: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "phase": self.phase}

    def __repr__(self) -> str:
        return f"NEEDS ATTENTION ({ATTENTION_KINDS.get(self.kind, self.kind)}): {self.message}"

    def _repr_html_(self) -> str:
        return ("<div class='p22-attention' style='border-left:4px solid #b45309;background:#fff7e6;"
                "padding:.3rem .7rem;margin:.2rem 0'><b>&#9888; NEEDS ATTENTION</b> "
                f"({html.escape(ATTENTION_KINDS.get(self.kind, self.kind))}): {html.escape(self.message)}</div>")


@dataclass
class GateView:
    """How a passed gate reads in a notebook (a failed gate raises instead)."""

    result: checks.GateResult | None
    skipped: str | None = None

    def __repr__(self) -> str:
        if self.result is None:
            return f"GATE SKIPPED (dry run): {self.skipped}"
        if self.result.overridden:
            return f"GATE OVERRIDDEN: {self.result.message}"
        return f"GATE PASSED: {self.result.message}"

    def _repr_html_(self) -> str:
        if self.result is None:
            return f"<p style='color:#666'><b>GATE SKIPPED (dry run)</b>: {html.escape(str(self.skipped))}</p>"
        if self.result.overridden:
            return (f"<p style='color:#7c3aed'><b>&#9888; GATE OVERRIDDEN</b>: "
                    f"{html.escape(self.result.message)}</p>")
        return (f"<p style='color:#116611'><b>✔ GATE PASSED</b>: {html.escape(self.result.message)}</p>")


def _record_takeover(j: Journal, lease: dict) -> str | None:
    """Keep in the journal that this run took over an expired lock from another run
    (the lease's annotation says which; the first takeover of a run is kept)."""
    ann = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    taken = ann.get(lock.TAKEOVER_ANNOTATION)
    if taken and not j.get("lock_takeover"):
        j.set("lock_takeover", {"from": taken, "lease": f"{lock.LEASE_NAMESPACE}/{lock.LEASE_NAME}",
                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return taken
    return None


def _show_whole_cells() -> None:
    """Tables in the evidence show each cell whole: pandas' default cuts text at 50
    characters ("it re..."), which hides the reason a check failed or is handled."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)


def start(phase: str, params_file: str = "", run_dir: str = "", *, execute: bool = False,
          confirm: str = "", take_lock: bool = True) -> Session:
    """Validate, connect, open the journal (provenance-checked) and take the lock.

    Args:
        phase: preflight | reconfigure | install | verify | rollback.
        params_file: the params YAML; empty means ``$RUNBOOK_PARAMS`` (set by ``make lab``).
        run_dir: ``reports/<run-id>``; empty means ``$RUNBOOK_RUN_DIR`` when set (so that
            notebooks run one after another without parameters, e.g. ``pytest --nbval-lax``
            or a person stepping through ``make lab``, share one journal and the preflight
            snapshots), else a new run folder.
        execute: apply changes; confirm: the cluster name (real targets, with execute).

    Raises:
        ParamsError: bad params/values (names the file and field), before any connection.
        JournalError: the run folder belongs to another cluster or other params.
        LockHeld: another run is migrating this cluster.
    """
    if phase not in PHASES:
        raise ParamsError(f"unknown phase {phase!r}", field="phase")
    params_file = params_file or os.environ.get("RUNBOOK_PARAMS", "")
    if not params_file:
        raise ParamsError("no params file given", field="params_file",
                          hint="set params_file in the parameters cell, or RUNBOOK_PARAMS")
    # A phase kernel writes only cluster state (run folder, helm home): owner-only, also
    # when the notebook is opened by hand rather than through the runner (which sets the
    # same umask for its kernels). Only in a kernel: a library caller keeps its own umask.
    if _in_kernel():
        os.umask(0o077)
    p = params_mod.load(params_file)
    values = p.values()
    params_mod.validate(p, values)
    params_mod.require_confirmation(p, execute, confirm)
    run_dir = run_dir or os.environ.get("RUNBOOK_RUN_DIR", "")
    rd = Path(run_dir) if run_dir else make_run_dir(new_run_id(), REPORTS_DIR)
    if run_dir:
        params_mod.validate_run_id(rd.name)
        rd.mkdir(mode=0o700, parents=True, exist_ok=True)
    c = Cluster.from_params(p)
    c.wait_log = rd / "waits.jsonl"   # how long each wait took (benchmarks/rehearse.py reads it)
    uid = c.identity()
    # a twin's cluster dies with this machine: its journal needs no fsync (Journal docs)
    j = Journal.open(rd, params_hash=params_mod.params_hash(p, values), cluster_uid=uid, run_id=rd.name,
                     durable=p.target.kind != "twin")
    j.begin_phase(phase, _notebook_hash(phase))
    _show_whole_cells()
    if _in_kernel():
        presentation.install()
    taken = None
    if execute and take_lock:
        lease = lock.acquire(c, rd.name, lease_seconds=p.limits.lock_seconds)
        taken = _record_takeover(j, lease)
    runinfo.record_session(rd, phase=phase, params=p, execute=execute)
    s = Session(phase=phase, params=p, values=values, run_dir=rd, run_id=rd.name, execute=execute,
                cluster=c, journal=j, cluster_uid=uid)
    if taken:
        s.attention("lock-takeover", takeover_advice(taken))
    return s


def takeover_advice(taken: str) -> str:
    """What to do after this run took over the expired lock of run ``taken``."""
    return (f"took over the migration lock from run {taken}. If that run changed anything, roll "
            "it back with its own run id first: its journal holds the originals (Argo CD "
            "policies, config backups) that this run cannot know.")
