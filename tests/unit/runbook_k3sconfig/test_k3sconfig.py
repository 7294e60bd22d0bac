"""Golden-file tests of runbook.k3sconfig: one folder per case under tests/fixtures/k3sconfig.

A case folder holds ``params.yaml`` + ``values.yaml``, ``input/<node>.yaml`` (an empty file
means "no config yet") and ``expected/``: ``<node>.yaml`` (new text), ``<node>.diff`` and
``plan.json`` (role, noop, reason, changes per node). A new case is a new folder.
Regenerate the expected files after a deliberate change with ``UPDATE_GOLDEN=1`` and
review the diff before committing.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from runbook import k3sconfig as K
from runbook import params as P
from runbook.redact import MASK

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

CASES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "k3sconfig"
CASES = sorted(p for p in CASES_DIR.iterdir() if (p / "params.yaml").is_file())
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _inputs(case: Path) -> dict[str, str]:
    return {f.stem: f.read_text() for f in sorted((case / "input").glob("*.yaml"))}


def _secrets(text: str) -> list[str]:
    """Secret values in a config text: token-like keys and URL passwords."""
    out = [m.group(2) for m in re.finditer(r"^(token|agent-token):\s*(\S+)", text, re.M)]
    out += re.findall(r"://[^:/@\s]+:([^@\s]+)@", text)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case: Path) -> None:
    params = P.load(case / "params.yaml")
    inputs = _inputs(case)
    plans = K.plan(inputs, params)
    exp = case / "expected"
    summary = [{"node": pl.node, "role": pl.role, "noop": pl.noop, "reason": pl.reason,
                "changes": pl.changes} for pl in plans]
    if UPDATE:
        exp.mkdir(exist_ok=True)
        (exp / "plan.json").write_text(json.dumps(summary, indent=2) + "\n")
        for pl in plans:
            (exp / f"{pl.node}.yaml").write_text(pl.new_text)
            (exp / f"{pl.node}.diff").write_text(pl.diff)
    assert json.loads((exp / "plan.json").read_text()) == summary
    for pl in plans:
        assert pl.new_text == (exp / f"{pl.node}.yaml").read_text(), pl.node
        assert pl.diff == (exp / f"{pl.node}.diff").read_text(), pl.node


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_invariants(case: Path) -> None:
    """Properties every case must have, whatever the golden files say."""
    params = P.load(case / "params.yaml")
    values = params.values()
    inputs = _inputs(case)
    plans = K.plan(inputs, params)
    # servers first, every given node planned once
    assert sorted(pl.node for pl in plans) == sorted(inputs)
    roles = [pl.role for pl in plans]
    assert roles == sorted(roles, key=lambda r: r != "server")
    kpr = P.kpr_enabled(values)
    for pl in plans:
        new = K.parse(pl.new_text)
        old = K.parse(pl.old_text)
        if pl.role == "server":
            assert new.get("flannel-backend") == "none"
            assert str(new.get("disable-network-policy")).lower() == "true"
            assert ("disable-kube-proxy" in new) == kpr
        else:
            assert not set(K.SERVER_ONLY_KEYS) & set(new), "server-only key left on an agent"
        # nothing else changes: same other keys, same order
        others_old = [(k, v) for k, v in old.items() if k not in K.SERVER_ONLY_KEYS]
        others_new = [(k, v) for k, v in new.items() if k not in K.SERVER_ONLY_KEYS]
        assert others_old == others_new
        # comments survive
        for line in pl.old_text.splitlines():
            if "#" in line and not any(k in line for k in K.SERVER_ONLY_KEYS):
                assert line in pl.new_text.splitlines()
        # idempotent: planning the new text again is a no-op with a reason
        again = K.plan_node(pl.node, pl.role, pl.new_text, params, values)
        assert again.noop and again.reason and again.new_text == pl.new_text
        assert pl.noop == (pl.new_text == pl.old_text) and pl.noop == (pl.diff == "")
        # secrets: kept in new_text, masked everywhere a person could see them
        for secret in _secrets(pl.old_text):
            assert secret in pl.new_text
            shown = [pl.diff, "\n".join(pl.changes), pl.reason, repr(pl), str(pl),
                     pl._repr_html_(), pl.masked_new_text, json.dumps(pl.to_dict())]
            for s in shown:
                assert secret not in s
        if not pl.noop and _secrets(pl.old_text) and "token" in pl.diff:
            assert MASK in pl.diff
        # byte-exact rollback
        rb = K.rollback_plan(pl.new_text, pl.old_text, node=pl.node, role=pl.role)
        assert rb.new_text == pl.old_text and rb.noop == pl.noop


def test_diff_file_names_and_token_masking() -> None:
    case = CASES_DIR / "naive-phase22"
    params = P.load(case / "params.yaml")
    agent = K.plan({"fast-skunk": (case / "input" / "fast-skunk.yaml").read_text()}, params)[0]
    assert agent.diff.startswith("--- a/etc/rancher/k3s/config.yaml\n+++ b/etc/rancher/k3s/config.yaml\n")
    assert f" token: {MASK}\n" in agent.diff
    assert "-flannel-backend: none\n" in agent.diff and "-disable-network-policy: true\n" in agent.diff
    assert "K10" not in agent.diff


def test_agent_noop_reason() -> None:
    params = P.load(CASES_DIR / "server-kpr-on" / "params.yaml")
    pl = K.plan({"fast-skunk": "server: https://10.0.0.2:6443\n"}, params)[0]
    assert pl.noop and pl.reason == "agents inherit flannel/network-policy/kube-proxy settings from the server"


def test_explicit_switch_overrides_auto(tmp_path: Path) -> None:
    src = CASES_DIR / "server-kpr-off"
    (tmp_path / "values.yaml").write_text((src / "values.yaml").read_text())
    text = (src / "params.yaml").read_text().replace("disable_kube_proxy: auto", "disable_kube_proxy: true")
    (tmp_path / "params.yaml").write_text(text)
    params = P.load(tmp_path / "params.yaml")
    pl = K.plan({"set-hog": ""}, params)[0]
    assert "disable-kube-proxy" in K.parse(pl.new_text)


def test_unknown_node_and_bad_yaml_are_errors() -> None:
    params = P.load(CASES_DIR / "server-kpr-on" / "params.yaml")
    with pytest.raises(K.K3sConfigError, match="not in the params: ghost"):
        K.plan({"ghost": ""}, params)
    with pytest.raises(K.K3sConfigError, match="not valid YAML"):
        K.plan({"set-hog": "a: [\n"}, params)
    with pytest.raises(K.K3sConfigError, match="mapping"):
        K.plan({"set-hog": "- a\n"}, params)
    with pytest.raises(K.K3sConfigError, match="not valid YAML"):
        K.plan({"set-hog": "a: 1\na: 2\n"}, params)


def test_rollback_plan_restores_bytes_and_lists_keys() -> None:
    backup = "# orig\ntoken: abcdef0123456789secret\nflannel-backend: vxlan   # old\n"
    current = "# orig\ntoken: abcdef0123456789secret\nflannel-backend: none\ndisable-kube-proxy: true\n"
    rb = K.rollback_plan(current, backup, node="set-hog", role="server")
    assert rb.new_text == backup and not rb.noop
    assert "restore flannel-backend: vxlan (now none)" in rb.changes
    assert "remove disable-kube-proxy: true" in rb.changes
    assert "abcdef0123456789secret" not in rb.diff + repr(rb) + str(rb.changes)
    same = K.rollback_plan(backup, backup)
    assert same.noop and same.diff == "" and same.reason
    fmt = K.rollback_plan("a: 1\n", "a:  1\n")
    assert fmt.changes == ["restore the backup byte-for-byte (formatting/comments differ)"]


def test_crlf_file_keeps_its_line_endings() -> None:
    params = P.load(CASES_DIR / "server-kpr-on" / "params.yaml")
    text = "# windows editor\r\nnode-name: set-hog\r\nflannel-backend: vxlan\r\n"
    pl = K.plan({"set-hog": text}, params)[0]
    assert pl.new_text.startswith("# windows editor\r\nnode-name: set-hog\r\nflannel-backend: none\r\n")
    assert pl.new_text.count("\n") == pl.new_text.count("\r\n")


def test_to_frame_is_masked_and_complete() -> None:
    case = CASES_DIR / "naive-phase22"
    params = P.load(case / "params.yaml")
    plans = K.plan(_inputs(case), params)
    df = K.to_frame(plans)
    assert list(df["node"]) == ["set-hog", "fast-skunk", "fast-heron"]
    assert list(df["noop"]) == [False, False, False]
    assert "K10" not in df.to_string()
