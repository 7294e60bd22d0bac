"""runbook.datapath: what Cilium leaves on a node, parsed from bpftool's JSON (golden files
under tests/fixtures/datapath), and the verdicts built on it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import datapath
from runbook.datapath import NodeDatapath

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "datapath"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_bpftool_outputs(name: str) -> None:
    case = EXPECTED[name]
    parser = getattr(datapath, case["parser"])
    assert parser((FIXTURES / name).read_text()) == case["expect"]


def test_other_programs_and_maps_are_not_cilium_s() -> None:
    assert "fw_ingress" not in " ".join(datapath.parse_net_show((FIXTURES / "net-show-tcx.json").read_text()))
    assert all("sd_" not in p for p in datapath.parse_cgroup_tree((FIXTURES / "cgroup-tree.json").read_text()))
    assert "/sys/fs/bpf/fw/state" not in datapath.parse_maps((FIXTURES / "map-show.json").read_text())


def test_empty_output_is_nothing() -> None:
    assert datapath.parse_net_show("") == datapath.parse_cgroup_tree("\n") == datapath.parse_maps("[]") == []


def test_cni_dirs_and_files_follow_the_values() -> None:
    values = {"cni": {"confPath": "/etc/cni/custom/", "binPath": "/usr/libexec/cni"}}
    assert datapath.cni_dirs(values) == ("/etc/cni/custom", "/usr/libexec/cni")
    assert datapath.cilium_files(values) == ["/etc/cni/custom/05-cilium.conflist",
                                             "/usr/libexec/cni/cilium-cni", datapath.SYSCTL_FILE]


def test_a_clean_node_has_no_problem_and_needs_no_cleanup() -> None:
    dp = NodeDatapath("n1", "agent")
    assert dp.problems() == [] and not dp.needs_cleanup and dp.row()["clean"]


def test_each_kind_of_leftover_is_named() -> None:
    dp = NodeDatapath("n1", "agent", tc=["eth0 tcx/ingress cil_from_netdev"],
                      cgroup=["/sys/fs/cgroup cgroup_inet4_connect cil_sock4_connect"],
                      maps=[f"/sys/fs/bpf/tc/globals/cilium_m{i}" for i in range(8)],
                      interfaces=["cilium_host"], files=[datapath.SYSCTL_FILE],
                      state_dirs=[datapath.LIB_DIR], pidfile=True)
    text = "\n".join(dp.problems())
    for needle in ("tc programs: eth0", "socket LB", "8 in all", "devices: cilium_host",
                   "99-zzz-override_cilium.conf", "/var/lib/cilium", "cilium.pid"):
        assert needle in text
    assert dp.kernel_state and dp.needs_cleanup


def test_files_alone_need_no_cleanup_pod_but_a_missing_bpftool_is_a_problem() -> None:
    assert not NodeDatapath("n1", "agent", files=[datapath.SYSCTL_FILE]).needs_cleanup
    dp = NodeDatapath("n1", "agent", bpftool=False)
    assert "bpftool could not run" in dp.problems()[0] and not dp.row()["clean"]
