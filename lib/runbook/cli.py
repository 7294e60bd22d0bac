"""The ``runbook`` command: parse arguments, call one library function, map errors to exit codes.

Commands:
    runbook twin up       start a rehearsal cluster in the foreground (--from-snapshot ARCHIVE)
    runbook run           execute phase notebooks into reports/<run-id>/
    runbook rehearse      twin + whole migration (+ rollback) + report (--from-snapshot ARCHIVE)
    runbook snapshot      read a cluster (API + SSH, read-only) into one archive
    runbook lab           JupyterLab on loopback next to a twin

Exit codes: 0 success; 1 a phase failed; 130 interrupted; otherwise the ``exit_code``
of the RunbookError subclass. Bad input fails before any connection:
  2 a params field has the wrong type or is missing   (ParamsError)
  3 the values contradict the params                 (ValuesMismatch)
  4 the run id is not a plain folder name            (RunIdError)
  5 --execute on a real target without --confirm     (ConfirmationRequired)
  6 a twin target points off loopback                (LoopbackViolation)
  7 the params file is missing or not valid YAML     (ParamsFileError)
  8 the params file has an unknown key               (UnknownKeyError)
  9 the values file is missing or not valid YAML     (ValuesFileError)
  10-20 a boundary failed at run time (cluster, node, host key, helm ...): see
  runbook.errors.
A twin given bad input (a chart archive that is not one, a malformed --scale) exits 2
as well: the twin's own errors (twin.errors) are mapped here, in TWIN_EXIT_CODES. So does
a snapshot archive that is missing, is not one, or has a format version this runbook
does not read (--from-snapshot; snapshot_format.SnapshotFormatError).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snapshot_format import SnapshotFormatError, read_manifest
from twin.errors import TwinError, TwinInputError

from .errors import ParamsError, RunbookError

#: The twin's errors on the runbook's exit codes (the twin knows nothing of the runbook).
#: Bad input given to a twin is bad input like a params field. Any other twin error
#: (a component that crashed while starting) keeps its traceback.
TWIN_EXIT_CODES: tuple[tuple[type[TwinError], int], ...] = (
    (TwinInputError, ParamsError.exit_code),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runbook", description="Phase 22: k3s Flannel -> Cilium + Hubble runbook",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    twin = sub.add_parser("twin", help="the rehearsal cluster")
    tsub = twin.add_subparsers(dest="twin_command", required=True)
    up = tsub.add_parser("up", help="start a twin in the foreground (Ctrl-C stops it)")
    source = up.add_mutually_exclusive_group()
    source.add_argument("--fixture", default="minicloud", help="fixture name or YAML path (default: minicloud)")
    source.add_argument("--scale", default=None, metavar="nodes=N,pods=M",
                        help="generate a cluster of the same shape at this size instead")
    source.add_argument("--from-snapshot", default=None, metavar="ARCHIVE",
                        help="rebuild the cluster of a `runbook snapshot` archive instead")
    up.add_argument("--state-dir", default=".twin", help="where kubeconfig, keys and params.yaml go")
    up.add_argument("--cilium-chart", default=None, metavar="ARCHIVE",
                    help="official cilium chart archive to serve (default: the stand-in chart)")
    up.add_argument("--speed", type=float, default=None, help="clock speed factor (default 0.05)")

    run = sub.add_parser("run", help="execute phase notebooks with papermill")
    run.add_argument("--params", required=True, help="params YAML file")
    run.add_argument("--phases", default=None,
                     help="comma-separated: preflight,reconfigure,install,verify,rollback "
                          "(default: the four migration phases)")
    run.add_argument("--execute", action="store_true", help="apply changes (default: dry run)")
    run.add_argument("--confirm", default="", help="cluster name; required with --execute on a real target")
    run.add_argument("--run-id", default=None, help="name or resume a run (default: new id)")
    run.add_argument("--reports-dir", default=None, help="default: reports/")
    run.add_argument("--proceed-despite-deferral", action="store_true",
                     help="go on when preflight's verdict is DEFER (rehearsals)")

    reh = sub.add_parser("rehearse", help="twin + whole migration on it + report")
    reh.add_argument("--with-rollback", action="store_true",
                     help="then run 05-rollback and verify flannel is back with identical configs")
    reh.add_argument("--cilium-chart", default=None, metavar="ARCHIVE",
                     help="serve this official chart archive from the twin (else the stand-in)")
    reh.add_argument("--run-id", default=None)
    reh.add_argument("--reports-dir", default=None)
    reh.add_argument("--state-dir", default=None, help="twin state (default: a temporary folder)")
    reh.add_argument("--from-snapshot", default=None, metavar="ARCHIVE",
                     help="rehearse on a twin of this snapshot (default: minicloud)")
    reh.add_argument("--strategy", default="big-bang", choices=["big-bang", "node-by-node"],
                     help="migration strategy: big-bang (the default) or node-by-node (docs/node-by-node.md)")

    snap = sub.add_parser("snapshot", help="read a cluster (API + SSH, read-only) into one archive")
    what = snap.add_mutually_exclusive_group(required=True)
    what.add_argument("--params", help="params YAML file of the cluster (real or twin)")
    what.add_argument("--of-twin", metavar="FIXTURE", default=None,
                      help="snapshot a fresh twin of this fixture (minicloud, a fixture file, "
                           "or nodes=N,pods=M), then stop it")
    snap.add_argument("--out", default=None, metavar="ARCHIVE",
                      help="archive to write (default: <cluster>-<UTC time>.snapshot.tar.gz)")
    snap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    snap.add_argument("--api-only", action="store_true",
                      help="read the API only, no node over SSH (a twin of it gets default k3s configs)")

    lab = sub.add_parser("lab", help="JupyterLab on 127.0.0.1 with a twin to step through")
    lab.add_argument("--state-dir", default=".twin-lab")
    lab.add_argument("--port", type=int, default=8888)
    return p


def twin_exit_code(e: TwinError) -> tuple[int, TwinError] | None:
    """The exit code for a twin error and the error to print, or None (not mapped).

    A start failure is judged by its cause: a twin that did not start because its chart
    archive is not one exits as that bad input.
    """
    for err in (e, getattr(e, "cause", None)):
        for cls, code in TWIN_EXIT_CODES:
            if isinstance(err, cls):
                return code, err
    return None


def check_snapshot(path: str | None) -> None:
    """Refuse a snapshot archive before any twin starts: missing, not one, another version.

    Raises:
        ParamsError: exit 2, naming the archive and ``--from-snapshot``.
    """
    if path is None:
        return
    try:
        read_manifest(path)
    except SnapshotFormatError as e:
        raise ParamsError(e.problem, file=e.path, field="--from-snapshot", hint=e.hint) from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "snapshot":
            from . import params as params_mod, snapshot

            if args.of_twin:
                from .rehearse import snapshot_of_twin

                name = Path(args.of_twin).stem if "nodes=" not in args.of_twin else "scaled"
                res = snapshot_of_twin(args.out or snapshot.default_name(f"twin-{name}"),
                                       fixture=args.of_twin, overwrite=args.overwrite,
                                       ssh=not args.api_only)
            else:
                p = params_mod.load(args.params)
                out = args.out or snapshot.default_name(p.target.name)
                res = snapshot.take(p, out, overwrite=args.overwrite, ssh=not args.api_only)
            print(f"\nsnapshot: {res.path}")
            return 0
        if args.command == "twin" and args.twin_command == "up":
            check_snapshot(args.from_snapshot)
            from twin.api import serve_forever  # the CLI is the one place that starts a twin

            return serve_forever(args)
        if args.command == "run":
            from . import runner

            extra = {"proceed_despite_deferral": True} if args.proceed_despite_deferral else None
            result = runner.run(args.params, phases=args.phases, execute=args.execute,
                                confirm=args.confirm, run_id=args.run_id,
                                reports_dir=args.reports_dir, extra=extra)
            print(f"\nreport: {result.index_html}")
            return 0 if result.ok else 1
        if args.command == "rehearse":
            from . import runner
            from .rehearse import rehearse

            if args.run_id:  # refuse it before a twin is started for nothing
                runner.check_run_id(args.run_id)
            check_snapshot(args.from_snapshot)
            outcome = rehearse(with_rollback=args.with_rollback, cilium_chart=args.cilium_chart,
                               run_id=args.run_id, reports_dir=args.reports_dir,
                               state_dir=args.state_dir, snapshot=args.from_snapshot,
                               strategy=args.strategy)
            print(f"\nreport: {outcome.index_html}")
            return 0 if outcome.ok else 1
        if args.command == "lab":
            from .rehearse import lab

            return lab(Path(args.state_dir), port=args.port)
    except RunbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except TwinError as e:
        mapped = twin_exit_code(e)
        if mapped is None:
            raise
        code, shown = mapped
        print(f"error: {shown}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console() -> None:
    """The ``runbook`` command: :func:`main`, then a prompt exit.

    A rehearsal leaves a twin's whole cluster model in this process; the interpreter's
    teardown frees it object by object, ~2.5 s after the report is written, for nothing.
    Once ``main`` has returned, the output is flushed and the exit handlers run (logging,
    kernel socket folders, kernels started ahead), then the process ends without that
    teardown. An exception from ``main`` goes the usual way.
    """
    import atexit
    import os

    rc = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
    finally:
        os._exit(rc or 0)
