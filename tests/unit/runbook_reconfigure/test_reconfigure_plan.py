"""Unit tests of the reconfigure phase's pure planning (golden files) and its journal logic."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook import facts, leftovers, params, reconfigure
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[3]
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def _load(case: str) -> tuple[reconfigure.NodeLeftovers, bool]:
    d = json.loads((GOLDEN / case / "facts.json").read_text())
    kpr = d.pop("kpr")
    dump = (GOLDEN / case / "iptables-save.txt").read_text()
    return reconfigure.NodeLeftovers(**d, iptables=dump), kpr


@pytest.mark.parametrize("case", CASES)
def test_leftover_plan_matches_golden(case: str) -> None:
    left, kpr = _load(case)
    plan = reconfigure.plan_leftovers(left, kpr=kpr, backup_dir="/var/backups/phase22", run_id="run-1")
    got = plan.to_dict()
    got["prefixes"] = plan.prefixes
    want = json.loads((GOLDEN / case / "expected.json").read_text())
    assert json.loads(json.dumps(got, sort_keys=True)) == want


def test_kube_proxy_chains_only_go_with_kube_proxy_replacement() -> None:
    left, _ = _load("server-flannel-kpr")
    with_kpr = reconfigure.plan_leftovers(left, kpr=True, backup_dir="/b", run_id="r")
    without = reconfigure.plan_leftovers(left, kpr=False, backup_dir="/b", run_id="r")
    assert with_kpr.chains["KUBE-SVC"] > 0 and "KUBE-SVC" in with_kpr.prefixes
    assert "KUBE-SVC" not in without.chains and "KUBE-SVC" not in without.prefixes
    # kube-router and flannel go either way (defect 9)
    assert without.chains["KUBE-ROUTER"] > 0 and without.chains["FLANNEL"] > 0


def test_filtered_dump_keeps_the_kubelet_chains_and_drops_the_rest() -> None:
    left, kpr = _load("server-flannel-kpr")
    plan = reconfigure.plan_leftovers(left, kpr=kpr, backup_dir="/b", run_id="r")
    cleaned = facts.filter_iptables(left.iptables, plan.prefixes, comments=reconfigure.FLANNEL_COMMENTS)
    after = facts.parse_iptables_save(cleaned, plan.prefixes)
    assert sum(after.chains.values()) == 0 and sum(after.rules.values()) == 0
    assert sum(after.jumps.values()) == 0
    assert ":KUBE-FIREWALL" in cleaned and "-A INPUT -j KUBE-FIREWALL" in cleaned
    assert "flanneld" not in cleaned
    # nothing left to do once cleaned: the plan of the cleaned node is a no-op
    clean = reconfigure.NodeLeftovers(left.node, left.role, ["lo", "eth0"], [], None, 0, cleaned)
    assert reconfigure.plan_leftovers(clean, kpr=kpr, backup_dir="/b", run_id="r").noop


def test_backup_names_keep_the_whole_path() -> None:
    a = reconfigure.backup_name("/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json",
                                "/var/backups/p22/", "r1")
    b = reconfigure.backup_name("/etc/flannel/net-conf.json", "/var/backups/p22", "r1")
    assert a != b and a.startswith("/var/backups/p22/") and a.endswith(".r1") and "//" not in a


def test_flannel_files_follow_the_params_paths() -> None:
    p = params.load(REPO / "params" / "minicloud.yaml")
    assert reconfigure.flannel_files(p.paths) == [
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
        "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"]


def test_units() -> None:
    assert reconfigure.unit_for("server") == "k3s" and reconfigure.unit_for("agent") == "k3s-agent"


# ----------------------------------------------------------------- journal-driven resume logic
@pytest.fixture
def fake_session(tmp_path: Path) -> SimpleNamespace:
    p = params.load(REPO / "params" / "minicloud.yaml")
    j = Journal.open(tmp_path / "run-1", params_hash="h" * 16, cluster_uid="uid-1", run_id="run-1")
    j.begin_phase("reconfigure")
    return SimpleNamespace(params=p, journal=j, run_id="run-1")


def _node(name: str, role: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, role=role)


def _write(s: SimpleNamespace, node: str) -> None:
    e = s.journal.record("write-file", "write", node=node, data={
        "path": s.params.paths.k3s_config, "backup": f"/var/backups/phase22/config.yaml.{node}.bak",
        "sha256_before": "a" * 64, "sha256_after": "b" * 64})
    s.journal.complete(e)


def test_nothing_restarts_when_this_run_changed_no_config(fake_session: SimpleNamespace) -> None:
    s = fake_session
    assert not reconfigure.restart_needed(s, _node("set-hog", "server"))
    assert not reconfigure.restart_needed(s, _node("fast-skunk", "agent"))


def test_agents_restart_when_the_server_config_changed(fake_session: SimpleNamespace) -> None:
    s = fake_session
    _write(s, "set-hog")
    assert reconfigure.restart_needed(s, _node("set-hog", "server"))
    assert reconfigure.restart_needed(s, _node("fast-skunk", "agent"))
    e = s.journal.record("restart-k3s", "restart", node="set-hog")
    s.journal.complete(e)
    # a restart recorded done is skipped on a rerun; a failed one is retried
    assert not reconfigure.restart_needed(s, _node("set-hog", "server"))
    e = s.journal.record("restart-k3s", "restart", node="fast-skunk")
    s.journal.fail(e, "ssh down")
    assert reconfigure.restart_needed(s, _node("fast-skunk", "agent"))


def test_backup_is_recorded_from_the_write_entry_first_wins(fake_session: SimpleNamespace) -> None:
    s = fake_session
    _write(s, "set-hog")
    reconfigure._record_backups(s, "set-hog")
    reconfigure._record_backups(s, "set-hog")
    b = s.journal.backups("set-hog")
    assert len(b) == 1 and b[0].backup_path.endswith("set-hog.bak") and b[0].run_step == "k3s-config"
    assert s.journal.backups("fast-skunk") == []


def test_changes_table_says_which_nodes_changed(fake_session: SimpleNamespace) -> None:
    s = fake_session
    _write(s, "set-hog")
    s.journal.complete(s.journal.record("restart-k3s", "restart", node="set-hog"))
    s.journal.complete(s.journal.record("restart-k3s", "restart", node="fast-skunk"))
    s.journal.fail(s.journal.record("restart-k3s", "restart", node="fast-heron"), "down")
    t = reconfigure.changes_table(s).set_index("node")
    assert t.loc["set-hog", "config"] == "done" and t.loc["set-hog", "restart"] == "done"
    assert t.loc["fast-skunk", "config"] == "untouched" and t.loc["fast-skunk", "restart"] == "done"
    assert t.loc["fast-heron", "restart"] == "FAILED" and t.loc["fast-heron", "cleanup"] == "untouched"


def test_flannel_still_there_means_restart_even_without_a_config_change(fake_session: SimpleNamespace) -> None:
    # an abandoned earlier run edited the server config but never restarted the node:
    # this run sees no config change, yet flannel.1 says k3s may still run flannel
    s = fake_session
    server, agent = _node("set-hog", "server"), _node("fast-skunk", "agent")
    assert reconfigure.restart_needed(s, server, flannel_leftovers=True)
    assert reconfigure.restart_needed(s, agent, flannel_leftovers=True)
    assert not reconfigure.restart_needed(s, agent, flannel_leftovers=False)
    s.journal.complete(s.journal.record("restart-k3s", "restart", node="fast-skunk"))
    assert not reconfigure.restart_needed(s, agent, flannel_leftovers=True)   # done in this run
    s.params.k3s.flannel_backend = "vxlan"   # flannel is meant to stay: its device proves nothing
    assert not reconfigure.restart_needed(s, server, flannel_leftovers=True)


def test_only_address_files_count_as_leases() -> None:
    names = "10.42.0.2 10.42.0.3 last_reserved_ip.0 lock fd00::5".split()
    assert [n for n in names if leftovers.is_ip(n)] == ["10.42.0.2", "10.42.0.3", "fd00::5"]
