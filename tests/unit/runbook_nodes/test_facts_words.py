"""The single-pass rule reader of runbook.facts reads every line as shlex.split does.

shlex is the oracle: every line of every iptables fixture (thousands of kube-proxy and
Cilium rules), plus quoting corner cases, must come out word for word the same.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from runbook import facts_iptables

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "facts"


def shell_words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def fixture_lines() -> list[str]:
    lines = []
    for folder in ("iptables_save", "filter_iptables"):
        for case in sorted((ROOT / folder).iterdir()):
            lines += (case / "output.txt").read_text().splitlines()
    return lines


def test_every_fixture_line_reads_as_shlex_reads_it():
    lines = fixture_lines()
    assert len(lines) > 5000   # the large kube-proxy + Cilium dump is among them
    wrong = [ln for ln in lines if facts_iptables._rule_words(ln) != shell_words(ln)]
    assert wrong == []


@pytest.mark.parametrize("line", [
    '-A X -m comment --comment "a b" -j Y',
    '-A X -m comment --comment a"b c"d -j Y',
    '-A X --comment "" -j Y',
    '-A X --comment ""x -j "Y"',
    '"-A" X "" ""',
    '-A X --comment "a""b" -j Y',
    '-A X --comment "  spaced  " -j Y ',
    '-A X --comment "unbalanced -j Y',
    "-A X --comment 'single quoted' -j Y",
    '-A X --comment "with \\"escaped\\" quotes" -j Y',
    '-A X --comment "tab\tinside" -j\tY',
    '[1:2] -A X -j Y',
    '',
    '""',
])
def test_corner_cases_read_as_shlex_reads_them(line):
    assert facts_iptables._rule_words(line) == shell_words(line)


def test_quoted_target_and_comment_are_unquoted():
    chain, target, comment = facts_iptables.rule_chain_and_target(
        '[0:0] -A KUBE-SVC-1 -m comment --comment "ns/a:http -> 10.42.0.5:80" -j "KUBE-SEP-2"')
    assert (chain, target, comment) == ("KUBE-SVC-1", "KUBE-SEP-2", "ns/a:http -> 10.42.0.5:80")


def test_quick_path_agrees_with_the_words_wherever_it_answers():
    rules = [ln for ln in fixture_lines() if ln.startswith("-A") or ln.startswith("[")]
    answered = 0
    for ln in rules + ['-A X -m comment --comment "a -j FAKE" -j REAL',
                       '-A X -m comment --comment "then -j FAKE"',
                       "-A X -j LOG --log-prefix 'x -j Y'", '-A X -j', '-A "X" -j Y']:
        quick = facts_iptables._quick_chain_and_target(ln)
        if quick is not None:
            answered += 1
            chain, target, _ = facts_iptables.rule_chain_and_target(ln)
            assert quick == (chain, target), ln
    assert answered > 0.9 * len(rules)


@pytest.mark.parametrize("module", ["runbook.facts", "runbook.facts_iptables"])
def test_the_parsers_docstring_examples_run_as_written(module: str) -> None:
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module))
    assert res.attempted > 0 and res.failed == 0, res
