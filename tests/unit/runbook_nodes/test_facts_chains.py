"""parse_iptables_chains: the chain declarations of a dump, read without the rules.

Golden: every iptables_save fixture's expected.json (chains, total_chains, tables).
Oracle: parse_iptables_save, on corner cases and on random dumps built from the
pieces that make the scan fall back or not (blanks, tabs, carriage returns, nested
prefixes, declarations with spaces).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from runbook import facts

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "facts" / "iptables_save"


def oracle(text: str, prefixes=facts.DEFAULT_PREFIXES) -> tuple:
    s = facts.parse_iptables_save(text, prefixes)
    return s.chains, s.total_chains, s.tables


def chains(text: str, prefixes=facts.DEFAULT_PREFIXES) -> tuple:
    c = facts.parse_iptables_chains(text, prefixes)
    return c.chains, c.total_chains, c.tables


@pytest.mark.parametrize("case", sorted(c.name for c in ROOT.iterdir() if c.is_dir()))
def test_golden_declarations(case):
    want = json.loads((ROOT / case / "expected.json").read_text())
    got = facts.to_jsonable(facts.parse_iptables_chains((ROOT / case / "output.txt").read_text()))
    assert got == {k: want[k] for k in ("chains", "total_chains", "tables")}


@pytest.mark.parametrize("text", [
    "",
    "*nat",
    ":KUBE-SVC-A - [0:0]",                        # no newline at all
    "*nat\n:KUBE-SVC-A - [0:0]\nCOMMIT",
    "*nat  \n  :KUBE-SVC-A - [0:0]\n: FLANNEL-X - [0:0]\n:\n: \n",
    "* nat\n:CILIUM_X\n:KUBE-SEP\n-A KUBE-SEP-1 -j KUBE-SVC-2\n",
    "*nat\r\n:KUBE-SVC-A - [0:0]\r\n:FLANNEL\rx\n",    # carriage returns split lines
    "*nat\n:\tKUBE-SVC-A - [0:0]\n\t:CILIUM\n",      # tabs around declarations
    "*filter\n-A X -m comment --comment \"a\ttab\" -j Y\n:KUBE-ROUTER-A - [0:0]\n",
    "*filter\n:KUBE-ROUTER\x1fA\n\x0b:CILIUM\x0c:FLANNEL\x1c:KUBE-SVC\n",
    "*filter\n:KUBE-ROUTER-é - [0:0]\n\u2028:CILIUM\x85:FLANNEL\n",
    "# comment\n:KUBE-SVC-A\n*mangle\n*nat\n*mangle\nCOMMIT\n",
])
def test_corner_cases_agree_with_the_full_parser(text):
    assert chains(text) == oracle(text)


@pytest.mark.parametrize("prefixes", [
    ("KUBE", "KUBE-SVC"), ("KUBE-SVC", "KUBE"), ("A B",), ('KUBE"',), ("",), ("CILIUM", "CILIUM")])
def test_nested_and_odd_prefixes_agree_with_the_full_parser(prefixes):
    text = "*nat\n:KUBE-SVC-A\n:KUBE-SEP-B\n: KUBE-X\n:A B\n:KUBE\"q\n:CILIUM_Z\n:\n"
    assert chains(text, prefixes) == oracle(text, prefixes)


PIECES = ["*nat", "*filter", "* raw ", ":KUBE-SVC-A - [0:0]", ":KUBE-SEP-B", ": CILIUM_C", ":",
          ":FLANNEL-FWD", ":KUBE-SERVICES", ":OTHER", "-A KUBE-SVC-A -j KUBE-SEP-B", "COMMIT",
          "# Generated", "", " ", "\t", "\x1f", "\r", "\x0b", "KUBE-ROUTER", "é", '"', "-A", "\\"]


def test_random_dumps_agree_with_the_full_parser():
    rng = random.Random(16)
    checked = 0
    for _ in range(3000):
        lines = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 3)))
                 for _ in range(rng.randint(0, 12))]
        text = rng.choice(["\n", "\n", " \n", "\r\n"]).join(lines) + rng.choice(["", "\n"])
        prefixes = rng.choice([facts.DEFAULT_PREFIXES, ("KUBE", "KUBE-SVC", "CILIUM"), ("FLANNEL",)])
        assert chains(text, prefixes) == oracle(text, prefixes), (text, prefixes)
        checked += 1
    assert checked == 3000
