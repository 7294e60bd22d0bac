"""What runs in a container: how long, with which exit code, what it logs, and how it
takes SIGTERM (pure).

The twin runs no processes; :func:`program_for` reads a container's ``command``/``args``
(else its image's default) the way a shell would and returns a :class:`Program`:

- ``sh -c "<script>"`` (also ``bash``/``ash``, ``/bin/sh``) and plain command lines are
  interpreted for the commands whose effect is known: ``echo`` (logs its words),
  ``sleep N`` (runs N s; ``infinity`` forever), ``exit N``, ``true``, ``false``,
  ``date``, ``hostname``, and ``wget``/``curl`` to a URL (decided by a ``reach``
  callback: the kubelet asks the cluster whether the Service has ready endpoints),
  joined by ``&&``, ``||``, ``;`` or newlines. A command the twin cannot know the
  effect of (a server, a tool) runs until it is stopped.
- a base image run without a command (``busybox``, ``alpine``, ``ubuntu``, ``debian``)
  starts a non-interactive shell that exits at once with 0, as on a node; ``args``
  without ``command`` are the arguments of another image's own entrypoint (its server);
- SIGTERM: most programs exit within :func:`~.stages.seconds` ``("pod.sigterm-exit")``;
  a shell or ``sleep`` running as PID 1 installs no handler, so the signal is ignored
  and the container is killed when the grace period ends (exit code 137), unless the
  script ``trap``s TERM. The pod
  annotation ``twin.phase22.io/sigterm-exit-seconds`` (a number, or ``ignore``)
  overrides this for every container of a pod.

Example:
    >>> c = {"name": "t", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi; exit 3"]}
    >>> p = program_for({"metadata": {"name": "p"}}, c)
    >>> (p.runs_for, p.exit_code, p.lines)
    (0.0, 3, ('hi',))
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from typing import Callable

from .stages import seconds

SIGTERM_ANNOTATION = "twin.phase22.io/sigterm-exit-seconds"
BASE_IMAGES = frozenset({"busybox", "alpine", "ubuntu", "debian", "bash"})
SHELLS = frozenset({"sh", "bash", "ash", "dash"})

#: ``reach(url, namespace) -> (ok, error text)``: whether an HTTP client in a pod of
#: ``namespace`` gets an answer from ``url``.
Reach = Callable[[str, str], "tuple[bool, str]"]

#: What some well-known images log when they start (by repository, without the registry).
START_LINES: dict[str, tuple[str, ...]] = {
    "cilium/cilium": ('level=info msg="Cilium agent starting" subsys=daemon',
                      'level=info msg="Daemon initialization completed" subsys=daemon'),
    "cilium/operator-generic": ('level=info msg="Cilium Operator starting" subsys=cilium-operator-generic',),
    "cilium/operator": ('level=info msg="Cilium Operator starting" subsys=cilium-operator-generic',),
    "cilium/hubble-relay": ('level=info msg="Starting gRPC server..." subsys=hubble-relay',),
    "cilium/cilium-envoy": ("[info][main] starting main dispatch loop",),
    "rancher/mirrored-coredns-coredns": (".:53", "CoreDNS-1.12.0", "linux/amd64, go1.23.3, 51e11f1"),
    "coredns/coredns": (".:53", "CoreDNS-1.12.0", "linux/amd64, go1.23.3, 51e11f1"),
    "library/nginx": ("/docker-entrypoint.sh: Configuration complete; ready for start up",),
}


@dataclass(frozen=True)
class Program:
    """A container's program as the twin runs it.

    Attributes:
        runs_for: cluster seconds until it exits by itself; None: until stopped.
        exit_code: its exit code when it exits by itself.
        output: ``(seconds after the start, line)`` of what it writes while it runs.
        stop_seconds: cluster seconds it takes to exit after SIGTERM; None: it ignores
            SIGTERM and is killed at the end of the grace period.
    """

    runs_for: float | None
    exit_code: int = 0
    output: tuple[tuple[float, str], ...] = ()
    stop_seconds: float | None = 1.0

    @property
    def lines(self) -> tuple[str, ...]:
        """What it writes, without the times."""
        return tuple(line for _, line in self.output)

    @property
    def timed(self) -> bool:
        """Whether it exits by itself or writes anything after its start."""
        return self.runs_for is not None or any(t > 0 for t, _ in self.output)


def repository(image: str) -> str:
    """``quay.io/cilium/cilium:v1.19.3@sha256:..`` -> ``cilium/cilium`` (registry, tag
    and digest dropped; Docker Hub's official images are ``library/<name>``)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) == 1:
        parts = ["library"] + parts
    return "/".join(parts)


def _sigterm_override(pod: dict) -> tuple[bool, float | None]:
    ann = ((pod.get("metadata") or {}).get("annotations") or {}).get(SIGTERM_ANNOTATION)
    if ann is None:
        return False, None
    if str(ann).strip().lower() == "ignore":
        return True, None
    try:
        return True, max(0.0, float(ann))
    except ValueError:
        return False, None


def program_for(pod: dict, container: dict, reach: Reach | None = None) -> Program:
    """The program of ``container`` in ``pod`` (see module doc)."""
    repo = repository(container.get("image", ""))
    base = repo.rsplit("/", 1)[-1] in BASE_IMAGES and repo.startswith("library/")
    if container.get("command") or base:
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    else:
        argv = []     # args without a command go to the image's own entrypoint: its program
    name = (pod.get("metadata") or {}).get("name", "")
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    if not argv:
        if base:
            prog = Program(0.0, 0, ())          # a shell with no terminal: exits at once
        else:
            prog = Program(None, 0, tuple((0.0, ln) for ln in START_LINES.get(repo, ())),
                           seconds("pod.sigterm-exit"))
    else:
        prog = _run_argv(argv, name, ns, reach)
    overridden, stop = _sigterm_override(pod)
    if overridden:
        prog = Program(prog.runs_for, prog.exit_code, prog.output, stop)
    return prog


def _run_argv(argv: list[str], pod_name: str, ns: str, reach: Reach | None) -> Program:
    prog0 = argv[0].rsplit("/", 1)[-1]
    if prog0 in SHELLS and len(argv) >= 3 and argv[1] in ("-c", "-ec", "-ce", "-euc", "-eu"):
        commands = _split_script(argv[2])
        pid1_ignores = True        # the shell is PID 1 and installs no SIGTERM handler
    else:
        commands = [("", argv)]
        pid1_ignores = prog0 in ("sleep",) or prog0 in SHELLS
    elapsed = 0.0
    code = 0
    out: list[tuple[float, str]] = []
    for joiner, words in commands:
        if joiner == "&&" and code != 0 or joiner == "||" and code == 0:
            continue
        if not words:
            continue
        if words[0] == "trap" and {"TERM", "SIGTERM", "15"} & set(words[2:]):
            pid1_ignores = False        # the script handles SIGTERM itself
            continue
        if words[0] == "wait":
            continue
        if words[0] == "exec":          # the shell becomes the program: it gets SIGTERM
            words, pid1_ignores = words[1:], words[1:2] in (["sleep"], ["sh"])
            if not words:
                continue
        result = _command(words, pod_name, ns, reach)
        if result is None:
            # Unknown to the twin: a server or a tool; it runs until stopped.
            stop = None if pid1_ignores else seconds("pod.sigterm-exit")
            return Program(None, 0, tuple(out), stop)
        took, code, lines, stop_all = result
        out.extend((elapsed, ln) for ln in lines)
        if took is None:
            return Program(None, 0, tuple(out), None if pid1_ignores else seconds("pod.sigterm-exit"))
        elapsed += took
        if stop_all:
            break
    return Program(elapsed, code, tuple(out), None if pid1_ignores else seconds("pod.sigterm-exit"))


def _split_script(script: str) -> list[tuple[str, list[str]]]:
    """``a && b || c; d`` -> ``[("", a), ("&&", b), ("||", c), (";", d)]``."""
    lex = shlex.shlex(script.replace("\n", ";"), posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    out: list[tuple[str, list[str]]] = []
    joiner, words = "", []
    for tok in lex:
        if tok in (";", "&&", "||", "&", "|"):
            out.append((joiner, words))
            joiner, words = (";" if tok in (";", "&", "|") else tok), []
        else:
            words.append(tok)
    out.append((joiner, words))
    return out


def _command(words: list[str], pod_name: str, ns: str,
             reach: Reach | None) -> tuple[float | None, int, list[str], bool] | None:
    """``(seconds, exit code, output lines, ends the script)`` or None when unknown."""
    cmd, args = words[0].rsplit("/", 1)[-1], words[1:]
    if cmd == "echo":
        return 0.0, 0, [" ".join(a for a in args if a not in ("-n", "-e"))], False
    if cmd == "true" or cmd == ":":
        return 0.0, 0, [], False
    if cmd == "false":
        return 0.0, 1, [], False
    if cmd == "exit":
        try:
            return 0.0, int(args[0]) if args else 0, [], True
        except ValueError:
            return 0.0, 2, [f"sh: exit: Illegal number: {args[0]}"], True
    if cmd == "sleep":
        if not args or args[0] in ("infinity", "inf"):
            return None if args else (0.0, 1, ["sleep: missing operand"], False)
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", args[0])
        if not m:
            return 0.0, 1, [f"sleep: invalid number '{args[0]}'"], False
        mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return float(m.group(1)) * mult, 0, [], False
    if cmd == "date":
        return 0.0, 0, [time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())], False
    if cmd == "hostname":
        return 0.0, 0, [pod_name], False
    if cmd in ("wget", "curl") and reach is not None:
        url = next((a for a in args if not a.startswith("-") and a not in ("-O", "-o")
                    and ("/" in a or "." in a or ":" in a)), None)
        if url is None:
            return None
        ok, why = reach(url, ns)
        quiet = cmd == "curl" or any(a.startswith("-") and "q" in a and not a.startswith("--") for a in args)
        said = [] if quiet else [f"Connecting to {_host(url)}"]
        if ok:
            return 0.1, 0, said, False
        if cmd == "wget":
            return 1.0, 1, said + [f"wget: {why}"], False
        return 1.0, 7, [f"curl: (7) {why}"], False
    return None


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]
