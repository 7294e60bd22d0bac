"""Golden files of the snapshot's node facts: tests/fixtures/snapshot_hosts/<parser>/<case>/.

``output.txt`` is captured command output (or ``input.json`` the files read), and
``expected.json`` what the parser makes of it. A new case is a new folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook.snapshot_hosts import containerd_cni_section, effective_config, iptables_rule_counts, listing

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_hosts"


def _cases(parser: str) -> list[str]:
    return sorted(c.name for c in (ROOT / parser).iterdir() if c.is_dir())


@pytest.mark.parametrize("case", _cases("iptables_rule_counts"))
def test_iptables_rule_counts_golden(case: str) -> None:
    folder = ROOT / "iptables_rule_counts" / case
    got = iptables_rule_counts((folder / "output.txt").read_text())
    assert got == json.loads((folder / "expected.json").read_text())


@pytest.mark.parametrize("case", _cases("containerd_cni_section"))
def test_containerd_cni_section_golden(case: str) -> None:
    folder = ROOT / "containerd_cni_section" / case
    got = containerd_cni_section((folder / "output.txt").read_text())
    assert got == json.loads((folder / "expected.json").read_text())["section"]


@pytest.mark.parametrize("case", _cases("effective_config"))
def test_effective_config_golden(case: str) -> None:
    folder = ROOT / "effective_config" / case
    got = effective_config(json.loads((folder / "input.json").read_text()))
    assert got == json.loads((folder / "expected.json").read_text())


def test_every_parser_has_cases() -> None:
    assert {p.name for p in ROOT.iterdir()} == {"iptables_rule_counts", "containerd_cni_section",
                                                 "effective_config"}
    assert all(_cases(p.name) for p in ROOT.iterdir())


def test_iptables_rule_counts_reads_counters_and_ignores_what_is_outside_a_table() -> None:
    dump = ("# comment\n-A STRAY -j ACCEPT\n*filter\n:INPUT ACCEPT [9:540]\n:CILIUM_INPUT - [0:0]\n"
            "[3:180] -A INPUT -j CILIUM_INPUT\n-A CILIUM_INPUT -j ACCEPT\n-A NEW-CHAIN -j DROP\nCOMMIT\n")
    assert iptables_rule_counts(dump) == {"filter": {"INPUT": 1, "CILIUM_INPUT": 1, "NEW-CHAIN": 1}}


def test_listing_keeps_names_in_order() -> None:
    assert listing("10-flannel.conflist\n\n05-cilium.conflist\n") == ["10-flannel.conflist",
                                                                     "05-cilium.conflist"]
