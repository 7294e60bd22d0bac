"""The iptables model's indexes stay consistent, and deferred kube-proxy work is invisible.

``_Table`` keeps its rules three ways (in order, by chain, by text) so that adding a rule
and rendering ``iptables-save`` stay cheap at scale (timings live in ``benchmarks/``).
These tests drive every mutation path and compare with a plain list model of iptables,
the way the model behaved before it had indexes.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from twin.clock import Clock
from twin.node import BUILTIN_CHAINS, RESYNC_SECONDS, Iptables, IptablesError, build_nodes
from twin_nodes_cases import CLUSTER, SERVICES, SPECS, run, sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def chain_of(rule: str) -> str:
    return rule.split()[1]


class ListModel:
    """iptables as one ordered list of rules per table (no index): the reference."""

    def __init__(self) -> None:
        self.tables: dict[str, dict] = {}

    def table(self, name: str) -> dict:
        return self.tables.setdefault(name, {"chains": {c: "ACCEPT" for c in BUILTIN_CHAINS[name]},
                                             "rules": []})

    def ensure_rule(self, table: str, rule: str, first: bool = False) -> None:
        t = self.table(table)
        parts = rule.split()
        t["chains"].setdefault(parts[1], "-")
        for opt in ("-j", "-g"):
            if opt in parts and parts[parts.index(opt) + 1].startswith(("KUBE", "X", "Y", "CILIUM")):
                t["chains"].setdefault(parts[parts.index(opt) + 1], "-")
        if rule in t["rules"]:
            return
        heads = [i for i, r in enumerate(t["rules"]) if chain_of(r) == parts[1]]
        t["rules"].insert(heads[0] if first and heads else len(t["rules"]), rule)

    def delete_chain(self, table: str, chain: str) -> None:
        t = self.table(table)
        t["rules"] = [r for r in t["rules"] if chain_of(r) != chain and f"-j {chain}" not in r]
        t["chains"].pop(chain, None)

    def rules(self, table: str) -> list[str]:
        return list(self.tables.get(table, {"rules": []})["rules"])


def assert_same(ipt: Iptables, ref: ListModel) -> None:
    assert ipt.check() == []
    for name in BUILTIN_CHAINS:
        assert ipt.rules(name) == ref.rules(name), name
        if name in ref.tables:
            assert ipt.chains(name) == list(ref.tables[name]["chains"]), name
    # iptables-save groups each chain's rules, in the chains' listing order.
    for name in ipt.table_names():
        saved = [line for line in ipt.save(name).splitlines() if line.startswith("-A ")]
        expected = sorted(ref.rules(name), key=lambda r: _listing_key(name, chain_of(r)))
        assert saved == expected, name


def _listing_key(table: str, chain: str) -> tuple[int, str]:
    builtin = BUILTIN_CHAINS[table]
    return (builtin.index(chain), "") if chain in builtin else (len(builtin), chain)


def test_index_follows_ensure_rule_and_delete_chain():
    ipt, ref = Iptables(), ListModel()
    steps = [("filter", "-A INPUT -j KUBE-FIREWALL", False),
             ("filter", "-A OUTPUT -j KUBE-FIREWALL", False),
             ("filter", "-A KUBE-FIREWALL -s 10.0.0.0/8 -j DROP", False),
             ("filter", "-A INPUT -j KUBE-FIREWALL", False),            # present: no change
             ("filter", "-A INPUT -j X-FIRST", True),                   # head of INPUT
             ("filter", "-A FORWARD -j Y-FIRST", True),                 # empty chain: appended
             ("filter", "-A INPUT -j X-SECOND", True),
             ("nat", "-A KUBE-SERVICES -d 10.43.0.1/32 -j KUBE-SVC-A", False),
             ("nat", "-A KUBE-SVC-A -j KUBE-SEP-A", False),
             ("nat", "-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.2:6443", False)]
    for table, rule, first in steps:
        added = ipt.ensure_rule(table, rule, first=first)
        assert added == (rule not in ref.rules(table))
        ref.ensure_rule(table, rule, first=first)
        assert_same(ipt, ref)
    for table, chain in (("nat", "KUBE-SEP-A"), ("filter", "KUBE-FIREWALL"), ("filter", "NOPE")):
        ipt.delete_chain(table, chain)
        ref.delete_chain(table, chain)
        assert_same(ipt, ref)
    # A deleted rule can come back, once.
    assert ipt.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    assert not ipt.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    ref.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    assert_same(ipt, ref)


def test_index_follows_restore_in_every_mode():
    ipt = Iptables()
    ipt.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    ipt.ensure_rule("filter", "-A KUBE-FIREWALL -j DROP")
    ipt.ensure_rule("nat", "-A KUBE-SERVICES -j RETURN")
    # Full replace of one table; a duplicated rule is loaded twice, as the real tool does.
    ipt.restore("*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n-A X -j ACCEPT\n-A X -j ACCEPT\n"
                "-A INPUT -j X\nCOMMIT\n")
    assert ipt.check() == [] and ipt.rules("filter") == ["-A X -j ACCEPT", "-A X -j ACCEPT", "-A INPUT -j X"]
    assert not ipt.ensure_rule("filter", "-A X -j ACCEPT")           # the index knows it
    # --noflush: -I goes to the chain's head, a declared chain is flushed, -F CHAIN empties one.
    ipt.restore("*filter\n:Y - [0:0]\n-A Y -j DROP\n-I INPUT -j Y\n-I X -j RETURN\nCOMMIT\n", noflush=True)
    assert ipt.check() == []
    assert ipt.rules("filter") == ["-A X -j RETURN", "-A X -j ACCEPT", "-A X -j ACCEPT",
                                   "-A INPUT -j Y", "-A INPUT -j X", "-A Y -j DROP"]
    ipt.restore("*filter\n:X - [0:0]\n-F Y\nCOMMIT\n", noflush=True)
    assert ipt.check() == [] and ipt.rules("filter") == ["-A INPUT -j Y", "-A INPUT -j X"]
    assert ipt.ensure_rule("filter", "-A X -j ACCEPT")                # flushed: added again
    ipt.restore("*filter\n-F\nCOMMIT\n", noflush=True)
    assert ipt.check() == [] and ipt.rules("filter") == []
    # A rejected input changes nothing, the index included.
    before = ipt.save()
    with pytest.raises(IptablesError):
        ipt.restore("*nat\n-A KUBE-SERVICES -j NOPE\nCOMMIT\n")
    assert ipt.save() == before and ipt.check() == []
    assert ipt.rules("nat") == ["-A KUBE-SERVICES -j RETURN"]
    ipt.reset()
    assert ipt.check() == [] and ipt.rules() == [] and ipt.table_names() == []


def strip_stamps(text: str) -> str:
    return re.sub(r"(?m)^#.*\n", "", text)


@pytest.fixture
def nodes(service_nodes):
    return service_nodes


def test_kube_proxy_chains_are_deferred_until_read(nodes):
    a = nodes["agent-1"]
    # Built but not materialised: the service chains wait for the first reader ...
    assert a.iptables.pending
    assert "nat" in a.iptables.table_names() and a.iptables.pending
    # ... and every reader sees them, whatever it reads first.
    assert any(c.startswith("KUBE-SVC-") for c in a.iptables.chains("nat")) and not a.iptables.pending
    assert "-j REJECT" in a.iptables_save() and "web/empty has no endpoints" in a.iptables_save()
    s = nodes["agent-2"]
    assert s.iptables.pending
    rc, out, _ = sh(s, "sudo iptables-save -t nat")
    assert rc == 0 and b"--to-destination 10.42.2.3:8080" in out and not s.iptables.pending
    assert a.iptables.check() == [] and s.iptables.check() == []
    # The same Services give the same chains on every node (the rules are shared, not
    # recomputed, but they must read the same).
    srv = nodes["server-1"]
    svc_lines = lambda n: [l for l in n.iptables_save().splitlines() if "KUBE-SVC" in l or "KUBE-SEP" in l]
    assert svc_lines(srv) == svc_lines(a)


def test_superseded_sync_reads_the_same_as_an_applied_one(nodes):
    a = nodes["agent-1"]
    first, second = SERVICES[:2], SERVICES[1:]
    a.set_kube_services(first)
    a.iptables_save()                      # applied
    a.set_kube_services(second)
    applied = strip_stamps(a.iptables_save())
    a.set_kube_services(first)             # never read: superseded by the next sync
    a.set_kube_services(second)
    assert a.iptables.pending
    assert strip_stamps(a.iptables_save()) == applied
    assert a.iptables.rules() == a.iptables.rules() and a.iptables.check() == []
    assert "10.43.0.1/32" not in applied   # default/kubernetes left with the first list


def test_index_survives_restore_resync_and_reboot(nodes):
    a = nodes["agent-1"]
    dump = a.iptables_save()
    kept = "".join(line + "\n" for line in dump.splitlines() if "KUBE-SVC" not in line and "KUBE-SEP" not in line)

    async def restore_then_wait():
        # One event loop: the resync kube-proxy schedules runs while we wait.
        assert (await a.exec("sudo iptables-restore", kept.encode())).rc == 0
        assert a.iptables.check() == [] and "KUBE-SVC-" not in a.iptables_save()
        await a.clock.sleep(RESYNC_SECONDS + 1)
    run(restore_then_wait())
    # kube-proxy put its chains back: the same text as before the restore.
    assert strip_stamps(a.iptables_save()) == strip_stamps(dump) and a.iptables.check() == []
    run(a.reboot())
    assert a.unit_state == "active" and a.iptables.check() == [] and a.ip6tables.check() == []
    assert strip_stamps(a.iptables_save()) == strip_stamps(dump)


# ----------------------------------------------------------------- deferred lease files
LEASES = "/var/lib/cni/networks/cbr0"
PODS = {"agent-1": [("10.42.1.7", "a" * 64), ("10.42.1.12", "b" * 64)], "agent-2": [("10.42.2.9", "c" * 64)]}


def lease_files(node) -> list[str]:
    # What is on disk, read without going through the node (which would write them).
    d = Path(node.files.host_root) / LEASES.lstrip("/")
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit() and p.name != "last_reserved_ip.0")


@pytest.mark.parametrize("first_look", [
    f"sudo ls {LEASES}", f"sudo cat {LEASES}/10.42.1.7", "sudo ls /", "sudo test -d /var/lib/cni",
    f"sudo rm -rf {LEASES}", "sudo ls /var/lib/cni/networks/cbr0/10.42.1.12"])
def test_lease_files_exist_before_anyone_looks(tmp_path, first_look):
    nodes = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), pods=PODS, defer_leases=True)
    a = nodes["agent-1"]
    # Interfaces and the last reserved address are there from the start ...
    assert sum(1 for i in a.interfaces if i.startswith("veth")) == 2
    assert lease_files(a) == []
    # ... and the lease files appear before any command sees the directory.
    rc, out, err = sh(a, first_look)
    assert rc == 0, err
    if first_look == f"sudo ls {LEASES}":
        assert out.decode().split() == ["10.42.1.12", "10.42.1.7", "last_reserved_ip.0", "lock"]
    if "cat" in first_look:
        assert out == b"a" * 64 + b"\r\neth0"
    if "rm -rf" in first_look:
        assert not a.exists(LEASES) and lease_files(nodes["agent-2"]) == []
        return
    assert lease_files(a) == ["10.42.1.12", "10.42.1.7"]
    assert a.leases() == {"10.42.1.7": "a" * 64, "10.42.1.12": "b" * 64}
    assert not any(p.name.startswith(".agent-1") for p in (tmp_path / "nodes").iterdir())


def test_deferred_leases_survive_a_twin_restart_on_the_same_state(tmp_path):
    build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), pods=PODS, defer_leases=True)
    # Built again from the existing files (another `twin up` on the same directory),
    # before anything read the leases: they are still the fixture's.
    again = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), pods={})
    assert again["agent-2"].leases() == {"10.42.2.9": "c" * 64}
    assert sum(1 for i in again["agent-1"].interfaces if i.startswith("veth")) == 2
    assert again["agent-1"].leases() == {"10.42.1.7": "a" * 64, "10.42.1.12": "b" * 64}
    assert again["server-1"].leases() == {}


def test_lease_files_are_on_disk_at_once_by_default(tmp_path):
    nodes = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), pods=PODS)
    assert lease_files(nodes["agent-1"]) == ["10.42.1.12", "10.42.1.7"]
    assert lease_files(nodes["agent-2"]) == ["10.42.2.9"]
    assert [p.name for p in (tmp_path / "nodes").iterdir() if p.name.startswith(".")] == []
    assert (Path(nodes["agent-1"].files.host_root) / LEASES.lstrip("/") / "10.42.1.7").read_bytes() == \
        b"a" * 64 + b"\r\neth0"
