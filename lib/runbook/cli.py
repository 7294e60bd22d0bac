"""The ``runbook`` command: parse arguments, call one library function, map errors to exit codes."""
from __future__ import annotations

import argparse
import sys

from .errors import RunbookError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runbook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    twin = sub.add_parser("twin", help="the rehearsal cluster")
    tsub = twin.add_subparsers(dest="twin_command", required=True)
    up = tsub.add_parser("up", help="start a twin in the foreground")
    up.add_argument("--fixture", default="minicloud")
    up.add_argument("--scale", default=None, help="nodes=N,pods=M")
    up.add_argument("--state-dir", default=".twin")
    up.add_argument("--cilium-chart", default=None)
    up.add_argument("--speed", type=float, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "twin" and args.twin_command == "up":
            from twin.api import serve_forever  # the CLI is the one place that starts a twin
            return serve_forever(args)
    except RunbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
