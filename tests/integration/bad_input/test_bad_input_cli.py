"""Bad input stops the ``runbook`` command before anything is contacted or changed.

Each case runs the real CLI (``python -m runbook.cli run ...``) in a child process whose
sockets are wired to a tripwire (see ``conftest.py``): any TCP/UDP connection or name
lookup, even to loopback, is recorded and refused. Each case asserts: the exit code of
its category, ONE message (plus an optional hint line) on stderr that names the file
and the field, no traceback, no run folder created, no params or values file changed,
and an empty tripwire log.

Exit codes (the same table is in README.md, "Exit codes"; the classes are in
``runbook.errors``):

| code | bad input                                                  | error class            |
|------|------------------------------------------------------------|------------------------|
| 2    | a params field has the wrong type (or a required one is missing) | ParamsError      |
| 3    | the values contradict the params (KPR on with `k3s.disable_kube_proxy: false`; tunnel port = flannel's 8472 while flannel stays) | ValuesMismatch |
| 4    | the run id has a path separator or `..`                    | RunIdError             |
| 5    | `--execute` on a real target without a matching `--confirm` | ConfirmationRequired  |
| 6    | a twin target points at a non-loopback address             | LoopbackViolation      |
| 7    | the params file is missing or is not valid YAML            | ParamsFileError        |
| 8    | the params file has an unknown key                         | UnknownKeyError        |
| 9    | the values file is missing or is not valid YAML            | ValuesFileError        |

``params/minicloud.yaml`` describes a REAL cluster on 10.0.0.x: it is used here only to
show that ``--execute`` without ``--confirm`` is refused; the tripwire proves that the
refusal comes before any network use, and ``HOME`` points at an empty folder so that its
``~/.kube/config`` does not exist either.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from runbook import errors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]
MINICLOUD = REPO / "params" / "minicloud.yaml"
VALUES = REPO / "params" / "cilium-values.yaml"

#: exit code -> error class: the table of the docstring, checked against runbook.errors.
EXIT_CODES: dict[int, type[errors.RunbookError]] = {
    2: errors.ParamsError, 3: errors.ValuesMismatch, 4: errors.RunIdError,
    5: errors.ConfirmationRequired, 6: errors.LoopbackViolation, 7: errors.ParamsFileError,
    8: errors.UnknownKeyError, 9: errors.ValuesFileError,
}


# --------------------------------------------------------------------------- helpers
def _params(tmp: Path) -> dict[str, Any]:
    """minicloud's params, with its kubeconfig and values moved into ``tmp``.

    The kubeconfig does not exist: even if the refusal under test were missing, the run
    could not reach a cluster (the tripwire would also catch it).
    """
    d = yaml.safe_load(MINICLOUD.read_text())
    d["target"]["kubeconfig"] = str(tmp / "no-such-kubeconfig")
    values = tmp / "cilium-values.yaml"
    if not values.exists():
        values.write_text(VALUES.read_text())
    d["cilium"]["values_file"] = str(values)
    return d


def _write(tmp: Path, data: dict[str, Any] | str, name: str = "bad-params.yaml") -> Path:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Case:
    """One bad input: how to build it, the exit code, and what the message must name."""

    id: str
    build: Callable[[Path], list[str]]     # tmp -> CLI arguments after "run"
    code: int
    names: Callable[[Path], list[str]]     # tmp -> substrings of the first stderr line


def _malformed(tmp: Path) -> list[str]:
    text = yaml.safe_dump(_params(tmp), sort_keys=False)
    text = text.replace("  kind: real\n", "  kind: [real\n", 1)   # an unclosed flow list
    return ["--params", str(_write(tmp, text))]


def _unknown_key(tmp: Path) -> list[str]:
    d = _params(tmp)
    d["ssh"]["sudoo"] = True
    return ["--params", str(_write(tmp, d))]


def _wrong_type(tmp: Path) -> list[str]:
    d = _params(tmp)
    d["nodes"][1]["port"] = "22"         # a quoted port: strict typing refuses to guess
    return ["--params", str(_write(tmp, d))]


def _missing_values(tmp: Path) -> list[str]:
    d = _params(tmp)
    d["cilium"]["values_file"] = "missing-values.yaml"
    return ["--params", str(_write(tmp, d))]


def _kpr_contradiction(tmp: Path) -> list[str]:
    d = _params(tmp)
    d["k3s"]["disable_kube_proxy"] = False   # the values turn kubeProxyReplacement on
    return ["--params", str(_write(tmp, d))]


def _tunnel_port(port: int | None) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        d = _params(tmp)
        d["k3s"]["flannel_backend"] = "vxlan"    # flannel stays, so flannel.1 keeps UDP 8472
        values = yaml.safe_load(VALUES.read_text())
        if port is None:
            values.pop("tunnelPort", None)       # Cilium's VXLAN default: 8472 as well
        else:
            values["tunnelPort"] = port
        vpath = tmp / "values-8472.yaml"
        vpath.write_text(yaml.safe_dump(values))
        d["cilium"]["values_file"] = str(vpath)
        return ["--params", str(_write(tmp, d))]
    return build


def _run_id(run_id: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["--params", str(_write(tmp, _params(tmp))), "--run-id", run_id]
    return build


def _real_execute(*confirm: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["--params", str(MINICLOUD), "--execute", *confirm]
    return build


CASES = [
    Case("malformed-yaml", _malformed, 7,
         lambda t: ["bad-params.yaml", "field 'target.kind'", "not valid YAML", "line "]),
    Case("unknown-key", _unknown_key, 8,
         lambda t: ["bad-params.yaml", "field 'ssh.sudoo'", "unknown key"]),
    Case("wrong-type", _wrong_type, 2,
         lambda t: ["bad-params.yaml", "field 'nodes.1.port'", "valid integer"]),
    Case("missing-values-file", _missing_values, 9,
         lambda t: ["bad-params.yaml", "field 'cilium.values_file'", "missing-values.yaml",
                    "does not exist"]),
    Case("kpr-without-disable-kube-proxy", _kpr_contradiction, 3,
         lambda t: ["cilium-values.yaml", "field 'k3s.disable_kube_proxy'", "bad-params.yaml",
                    "kube-proxy replacement is on"]),
    Case("tunnel-port-equals-flannel", _tunnel_port(8472), 3,
         lambda t: ["values-8472.yaml", "field 'tunnelPort'", "bad-params.yaml", "8472"]),
    Case("tunnel-port-defaults-to-flannel", _tunnel_port(None), 3,
         lambda t: ["values-8472.yaml", "field 'tunnelPort'", "bad-params.yaml", "8472"]),
    Case("run-id-dotdot", _run_id("../x"), 4, lambda t: ["field '--run-id'", "'../x'"]),
    Case("run-id-slash", _run_id("a/b"), 4, lambda t: ["field '--run-id'", "'a/b'"]),
    Case("real-execute-without-confirm", _real_execute(), 5,
         lambda t: [str(MINICLOUD), "target.name", "field 'confirm'", "--confirm minicloud"]),
    Case("real-execute-wrong-confirm", _real_execute("--confirm", "twin"), 5,
         lambda t: [str(MINICLOUD), "target.name", "field 'confirm'", "(got 'twin')"]),
]


def _digests(*paths: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runbook.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=90)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_first_with_its_code_and_one_message(case: Case, tmp_path: Path,
                                                             tripwire) -> None:
    args = case.build(tmp_path)
    reports = tmp_path / "reports"
    inputs = [Path(a) for a in args if a.endswith(".yaml")] + list(tmp_path.glob("*.yaml"))
    before = _digests(MINICLOUD, VALUES, *inputs)

    p = _cli(["run", *args, "--reports-dir", str(reports)], tripwire.env, tmp_path)

    assert p.returncode == case.code, (p.returncode, p.stdout, p.stderr)
    assert isinstance(case.code, int) and case.code not in (0, 1)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    # one message: "error: <file>: field '<field>': <problem>", optionally one hint line
    assert lines and lines[0].startswith("error: "), p.stderr
    assert len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]), p.stderr
    for words in case.names(tmp_path):
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    # nothing started, nothing written, nothing contacted
    assert "phase" not in p.stdout and "report:" not in p.stdout, p.stdout
    assert not reports.exists() or not any(reports.iterdir())
    assert _digests(*before) == before
    assert tripwire.attempts() == [], "the CLI opened a connection on bad input"


def test_exit_codes_are_distinct_and_match_the_error_classes() -> None:
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)
    assert len({c.exit_code for c in EXIT_CODES.values()}) == len(EXIT_CODES)
    for code, cls in EXIT_CODES.items():
        assert cls.exit_code == code, cls
        # every bad-input error is a ParamsError (ValueError) except the loopback guard
        assert issubclass(cls, errors.ParamsError) or cls is errors.LoopbackViolation
    # bad input never collides with "a phase failed" (1) or a run-time boundary (10+)
    assert all(2 <= c <= 9 for c in EXIT_CODES)
    seen = {c.code for c in CASES}
    assert seen == set(EXIT_CODES) - {6}, "each code but 6 has a CLI case here; 6: security/"


def test_readme_lists_the_same_exit_codes() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Exit codes" in readme, "README.md has no 'Exit codes' section"
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\|\s*(\d+)\s*\|.*?\|\s*`?(\w+)`?\s*\|\s*$", section, flags=re.M))
    for code, cls in EXIT_CODES.items():
        assert rows.get(str(code)) == cls.__name__, f"README exit code {code}: {rows.get(str(code))}"


def test_rehearse_refuses_a_bad_run_id_before_starting_a_twin(tmp_path: Path, tripwire) -> None:
    p = _cli(["rehearse", "--run-id", "a/b", "--reports-dir", str(tmp_path / "reports"),
              "--state-dir", str(tmp_path / "twin")], tripwire.env, tmp_path)
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert "field '--run-id'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "twin").exists(), "a twin was started for a run id that is refused"
    assert tripwire.attempts() == []


def test_the_tripwire_would_have_caught_a_connection(tmp_path: Path, tripwire) -> None:
    """The guard itself works: a child that connects is recorded (so an empty log means none)."""
    code = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=0.1)\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=tripwire.env, timeout=60, check=True)
    assert [a["host"] for a in tripwire.attempts()] == ["127.0.0.1"]
