"""Golden-file tests: tests/fixtures/facts/<parser>/<case>/{output.txt,expected.json}.

A new case is a new folder; no code change needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import facts

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "facts"
PARSERS = {
    "ip_link": facts.parse_ip_link,
    "iptables_save": facts.parse_iptables_save,
    "kernel": facts.parse_kernel,
    "k3s_version": facts.parse_k3s_version,
    "systemctl_is_active": facts.parse_systemctl_is_active,
}
CASES = [(p, c.name) for p in PARSERS for c in sorted((ROOT / p).iterdir()) if c.is_dir()]


@pytest.mark.parametrize("parser,case", CASES)
def test_golden(parser, case):
    folder = ROOT / parser / case
    got = facts.to_jsonable(PARSERS[parser]((folder / "output.txt").read_text()))
    assert got == json.loads((folder / "expected.json").read_text())


@pytest.mark.parametrize("case", sorted(c.name for c in (ROOT / "filter_iptables").iterdir()))
def test_filter_golden(case):
    folder = ROOT / "filter_iptables" / case
    spec = json.loads((folder / "expected.json").read_text())
    got = facts.filter_iptables((folder / "output.txt").read_text(), spec["prefixes"],
                                comments=spec.get("comments", ()))
    assert got.splitlines() == spec["expected"]
    # the filtered dump has nothing left of the removed prefixes
    s = facts.parse_iptables_save(got, spec["prefixes"])
    assert sum(s.chains.values()) + sum(s.rules.values()) + sum(s.jumps.values()) == 0


def test_every_parser_has_cases():
    assert {p for p, _ in CASES} == set(PARSERS)


def test_kernel_comparisons():
    k = facts.parse_kernel("5.10.0-28-amd64")
    assert k >= (5, 10) and k.at_least(5, 4) and not k.at_least(5, 15)
    assert facts.parse_kernel("4.19.0") < (5, 4)
    with pytest.raises(ValueError):
        facts.parse_kernel("garbage")


def test_k3s_version_rejects_garbage():
    with pytest.raises(ValueError):
        facts.parse_k3s_version("bash: k3s: command not found")
    v = facts.parse_k3s_version("k3s version v1.31.1+k3s2 (abc1234)\n")
    assert v.at_least(1, 31) and v.k3s_release == 2


def test_filter_keeps_counters_and_unrelated_lines():
    dump = ("*filter\n:INPUT ACCEPT [5:300]\n:KUBE-SVC-X - [0:0]\n:KUBE-SVL-Y - [0:0]\n"
            "[1:60] -A INPUT -j KUBE-SVC-X\n-A INPUT -m comment --comment \"has KUBE-SVC in text\" -j ACCEPT\n"
            "COMMIT\n")
    out = facts.filter_iptables(dump, ["KUBE-SVC"])
    assert ":KUBE-SVL-Y - [0:0]" in out            # a different prefix stays
    assert "KUBE-SVC-X" not in out.replace("has KUBE-SVC in text", "")
    assert '"has KUBE-SVC in text" -j ACCEPT' in out  # mentioning it in a comment is not a jump
