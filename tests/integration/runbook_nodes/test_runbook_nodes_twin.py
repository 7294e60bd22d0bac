"""runbook.nodes (the real library) against the twin's SSH servers over real sockets."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from runbook.errors import HostKeyError, NodeError
from runbook.journal import Journal
from runbook.nodes import Fleet, Node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CONFIG = "/etc/rancher/k3s/config.yaml"


def twin_nodes(t, tmp_path, **kw):
    params = SimpleNamespace(
        target=SimpleNamespace(kind="twin", name="minicloud"),
        ssh=SimpleNamespace(user="ubuntu", key_path=str(t.ssh.client_key),
                            known_hosts=str(t.ssh.known_hosts), trust_on_first_use=False,
                            connect_timeout=10, sudo=True),
        nodes=[SimpleNamespace(name=n, role="server" if n.startswith("server") else "agent",
                               address="127.0.0.1", port=p, user=None)
               for n, p in t.rt.endpoints["ssh"].items()],
        paths=SimpleNamespace(backup_dir="/var/backups/phase22"),
        limits=SimpleNamespace(timeouts=SimpleNamespace(ssh_command=30)))
    return {n.name: n for n in Node.from_params(params, **kw)}


def test_read_write_restore_config(nodes_twin, tmp_path):
    j = Journal.open(tmp_path / "run", params_hash="p" * 64, cluster_uid="uid", run_id="r1")
    nodes = twin_nodes(nodes_twin, tmp_path, journal=j, run_id="r1",
                       command_log=tmp_path / "run" / "commands.log")
    agent = nodes["agent-1"]
    original = agent.read_file(CONFIG)
    assert "server: https://10.0.0.2:6443" in original
    new = original + "node-label:\n  - phase22=yes\n"
    w = agent.write_file(CONFIG, new)
    assert w.changed and w.backup_path == "/var/backups/phase22/config.yaml.r1.bak"
    assert agent.read_file(CONFIG) == new
    assert agent.sha256(CONFIG) == hashlib.sha256(new.encode()).hexdigest()
    assert agent.read_file(w.backup_path) == original
    assert not agent.exists(CONFIG + ".phase22.tmp")
    assert not agent.write_file(CONFIG, new).changed          # idempotent
    r = agent.restore_file(CONFIG, w.backup_path)
    assert r.changed and agent.read_file(CONFIG) == original
    assert [e.status for e in j.entries(node="agent-1")] == ["done", "done"]
    # the join token never reaches the command log or the journal
    token = next(l.split(":", 1)[1].strip() for l in original.splitlines() if l.startswith("token:"))
    assert token not in (tmp_path / "run" / "commands.log").read_text()
    assert token not in j.path.read_text()


def test_facts_and_run(nodes_twin, tmp_path):
    nodes = twin_nodes(nodes_twin, tmp_path)
    s = nodes["server-1"]
    assert s.kernel().version == (5, 15, 0)
    assert s.k3s_version().raw.startswith("v1.30.6")
    names = [i.name for i in s.interfaces()]
    assert "flannel.1" in names
    assert s.is_active("k3s")
    r = s.run("echo %s", "; rm -rf /")
    assert r.ok and r.stdout == "; rm -rf /\n"
    assert s.run("cat %s", CONFIG).rc != 0                    # not root without sudo
    with pytest.raises(NodeError):
        s.run("cat %s", CONFIG).check_output()


def test_iptables_summary_and_remove_chains(nodes_twin, tmp_path):
    nodes = twin_nodes(nodes_twin, tmp_path)
    s = nodes["server-1"]
    before = s.iptables_summary()
    assert before.count("KUBE-SVC") > 0 and before.count("FLANNEL") > 0
    # With kube-proxy (and kube-router) still running inside k3s the chains come back:
    # turn them off first, as reconfigure does, then clean the leftovers.
    s.write_file(CONFIG, s.read_file(CONFIG) + "disable-kube-proxy: true\ndisable-network-policy: true\n")
    s.systemctl("restart", "k3s")
    assert s.iptables_summary().count("KUBE-SVC") > 0       # stale chains stay after restart
    res = s.remove_chains(["KUBE-SVC", "KUBE-SEP", "KUBE-SERVICES", "KUBE-ROUTER"])
    assert res.changed and res.after.count("KUBE-SVC") == 0 and res.after.count("KUBE-ROUTER") == 0
    after = s.iptables_summary()
    assert after.count("KUBE-SVC") == 0 and after.count("FLANNEL") == before.count("FLANNEL")
    assert not s.remove_chains(["KUBE-SVC"]).changed


def test_delete_interface_and_fleet(nodes_twin, tmp_path):
    nodes = twin_nodes(nodes_twin, tmp_path)
    res = Fleet(list(nodes.values()), 2).apply(lambda n: n.delete_interface("flannel.1"),
                                               description="delete flannel.1")
    assert res.ok and [o.node for o in res.outcomes] == ["server-1", "agent-1"]
    assert set(res.values().values()) == {True}
    again = Fleet(list(nodes.values()), 2).apply(lambda n: n.delete_interface("flannel.1"),
                                                 description="again")
    assert set(again.values().values()) == {False}


def test_mismatched_host_key_refused(nodes_twin, tmp_path):
    t = nodes_twin
    kh = tmp_path / "known_hosts"
    lines = t.ssh.known_hosts.read_text().splitlines()
    port = t.rt.endpoints["ssh"]["agent-1"]
    other = next(l for l in lines if l.startswith("[127.0.0.1]:") and f":{port} " not in l)
    # give agent-1 the server's key: a mismatch
    kh.write_text(f"[127.0.0.1]:{port} " + " ".join(other.split()[1:]) + "\n")
    node = Node("agent-1", "agent", "127.0.0.1", port, "ubuntu", str(t.ssh.client_key), str(kh),
                kind="twin", trust_on_first_use=True)
    with pytest.raises(HostKeyError) as ei:
        node.run("true")
    assert "ssh-keygen -R" in str(ei.value)
