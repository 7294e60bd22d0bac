"""Commands: no shell command is built by string interpolation of params.

Integration: params whose paths carry shell syntax (``; touch /tmp/pwned``, ``$(id)``)
are used by a real phase and by the node transport against a fresh twin. The twin's
node model parses a command line as bash would and refuses unquoted shell syntax, so
a value that was pasted into a command unquoted would fail there; quoted, it arrives
as ONE literal argument. The tests show that: the command log holds the single-quoted
argument, files are created with the literal names, and ``/tmp/pwned`` never appears on
any node. A node name with spaces or shell syntax is refused by the params schema.

Unit: an AST scan of ``lib/runbook`` finds no ``os.system``/``os.popen``, no
``shell=True``, no subprocess called with a string, and no node command (``.run``,
``.check_output``, ``.run_expect``) whose command is an f-string, a ``%``/``+``
expression or a ``.format()`` call: values go as ``%s`` arguments, which
``Node.run`` passes through ``shlex.quote``.
"""
from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import pytest
import yaml

from runbook import params as P
from runbook import runner
from runbook.errors import ParamsError

REPO = Path(__file__).resolve().parents[3]
LIB = REPO / "lib" / "runbook"

EVIL_CONFIG = "/etc/rancher/k3s/config.yaml; touch /tmp/pwned"
EVIL_BACKUP = "/var/backups/$(id)`id`"


def _commands(run_dir: Path) -> list[dict]:
    log = run_dir / "commands.jsonl"
    return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


def _pwned(twin) -> list[Path]:
    return [p for p in (twin.state_dir / "nodes").glob("*/tmp/pwned")] + \
        [p for p in (twin.state_dir / "nodes").rglob("pwned")]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_shell_metacharacters_in_params_arrive_as_literal_arguments(fresh_twin, tmp_path: Path) -> None:
    twin = fresh_twin
    data = yaml.safe_load(twin.params_path.read_text())
    data["paths"] = dict(data.get("paths") or {}, k3s_config=EVIL_CONFIG, backup_dir=EVIL_BACKUP)
    params = tmp_path / "evil-params.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))

    # 1. a real phase, as an operator would run it: preflight reads each node's k3s
    #    config at the given path. The path does not exist (it is taken literally), so
    #    the phase stops there, and nothing ran as a shell.
    res = runner.run(params, phases=["preflight"], execute=False, run_id="evil",
                     reports_dir=tmp_path / "reports", extra={"proceed_despite_deferral": True},
                     progress=lambda m: None)
    cmds = [c["command"] for c in _commands(res.run_dir)]
    quoted = shlex.quote(EVIL_CONFIG)
    assert quoted == "'/etc/rancher/k3s/config.yaml; touch /tmp/pwned'"
    assert any(quoted in c for c in cmds), "the path reached a node command, quoted"
    assert not any(EVIL_CONFIG in c.replace(quoted, "") for c in cmds), "an unquoted copy"
    for c in cmds:  # every logged command splits back into words without the payload running
        words = shlex.split(c)
        assert "touch" not in words[:1] and "/tmp/pwned" not in words, c
    assert not res.ok and res.failed is not None and res.failed.phase == "preflight", res.phases
    assert f"cannot read {EVIL_CONFIG}" in (res.failed.error or ""), res.failed.error
    assert _pwned(twin) == []

    # 2. the node transport with these params, writing: file names and the backup folder
    #    are created with their literal names on the node.
    from runbook.nodes import Node

    p = P.load(params)
    log = tmp_path / "node-commands.jsonl"
    node = next(n for n in Node.from_params(p, command_log=log, run_id="evil") if n.role == "agent")
    target = "/tmp/x; touch pwned && id"   # one file name, no slash after /tmp/
    node.write_file(target, "literal\n")
    assert node.read_file(target) == "literal\n"
    node.write_file(target, "second\n")           # the second write backs the first up
    root = twin.state_dir / "nodes" / node.name
    assert (root / "tmp" / "x; touch pwned && id").read_text() == "second\n"
    assert (root / "var" / "backups" / "$(id)`id`").is_dir(), "backup_dir created literally"
    assert list((root / "var" / "backups" / "$(id)`id`").iterdir()), "the backup is in it"
    r = node.run("echo %s", "$(id) `id` ; | & > <")
    assert r.ok and r.stdout == "$(id) `id` ; | & > <\n", r
    logged = [json.loads(ln)["command"] for ln in log.read_text().splitlines()]
    assert "echo '$(id) `id` ; | & > <'" in logged
    assert _pwned(twin) == []
    node.close()


@pytest.mark.unit
@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["fast skunk", "fast-skunk; touch /tmp/pwned", "$(id)",
                                  "Fast-Skunk", "-rf", "a/b"])
def test_node_names_with_spaces_or_shell_syntax_are_refused(name: str, tmp_path: Path) -> None:
    d = yaml.safe_load((REPO / "params" / "minicloud.yaml").read_text())
    d["nodes"][1]["name"] = name
    with pytest.raises(ParamsError) as ei:
        P.from_dict(d, source=tmp_path / "p.yaml")
    assert ei.value.field == "nodes.1.name" and "p.yaml" in str(ei.value)


# --------------------------------------------------------------------------- AST guard
_SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output", "getoutput",
               "getstatusoutput"}
_NODE_CMD = {"run": 0, "check_output": 0, "run_expect": 1}   # method -> index of cmd


def _dotted(fn: ast.AST) -> str:
    parts = []
    while isinstance(fn, ast.Attribute):
        parts.append(fn.attr)
        fn = fn.value
    if isinstance(fn, ast.Name):
        parts.append(fn.id)
    return ".".join(reversed(parts))


def _interpolated(node: ast.AST) -> bool:
    """An expression that builds a string from values: f-string, %, +, .format()."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "format":
        return True
    return False


def _stringy(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or _interpolated(node)


def shell_offences(source: str, filename: str = "<src>") -> list[str]:
    """Every place in ``source`` where a command is a shell string or built from values."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        if name in ("os.system", "os.popen", "asyncio.create_subprocess_shell",
                    "subprocess.getoutput", "subprocess.getstatusoutput") or \
                name.endswith(".create_subprocess_shell"):
            out.append(f"{where}: {name}()")
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                out.append(f"{where}: shell={ast.unparse(kw.value)}")
        head, _, method = name.rpartition(".")
        if head == "subprocess" and method in _SUBPROCESS and node.args and _stringy(node.args[0]):
            out.append(f"{where}: subprocess.{method} with a string command")
        if head and head not in ("subprocess", "runner") and method in _NODE_CMD:
            i = _NODE_CMD[method]
            if len(node.args) > i and _interpolated(node.args[i]):
                out.append(f"{where}: {name}() command built by interpolation: "
                           f"{ast.unparse(node.args[i])[:80]}")
    return out


@pytest.mark.unit
@pytest.mark.timeout(30)
def test_the_scan_finds_each_kind_of_offence() -> None:
    bad = '''
import os, subprocess, asyncio
os.system("rm -rf " + path)
subprocess.run("ls -l", shell=True)
subprocess.run(f"helm {args}")
subprocess.check_output("uname -r")
node.run(f"cat {path}")
n.run("cat %s" % path)
n.check_output("cat " + path)
n.run_expect([0], "test -e {}".format(path))
asyncio.create_subprocess_shell("x")
'''
    found = shell_offences(bad)
    assert len(found) == 10, found
    good = '''
subprocess.run([helm, "status", name], shell=False)
node.run("cat %s", path)
n.run_expect([0, 1], "test -e %s", path, sudo=True)
n.run("ip6tables-save" if v6 else "iptables-save")
runner.run(params, phases=x)
'''
    assert shell_offences(good) == []


@pytest.mark.unit
@pytest.mark.timeout(30)
def test_lib_runbook_builds_no_command_by_string_interpolation() -> None:
    files = sorted(LIB.rglob("*.py"))
    assert len(files) > 10
    offences = [o for f in files for o in shell_offences(f.read_text(), str(f.relative_to(REPO)))]
    assert offences == [], "\n".join(offences)
    # and the one place that sends a line to a node quotes every argument
    src = (LIB / "nodes.py").read_text()
    assert "shlex.quote(str(a)) for a in args" in src
