"""k3s semantics: server-only options, what stays after disabling, reboot, observers."""
from __future__ import annotations

import asyncio
import re

import pytest

from twin.node import FLANNEL_CONFLIST, FLANNEL_NETCONF, Iptables, IptablesError
from twin_nodes_cases import run, sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

CFG = "/etc/rancher/k3s/config.yaml"
PHASE22_LINES = "flannel-backend: none\ndisable-network-policy: true\n"


def append_cfg(node, text):
    assert sh(node, f"sudo tee -a {CFG}", text.encode()).rc == 0


def restart(node):
    rc, _, err = sh(node, f"sudo systemctl restart {node.unit}")
    assert rc == 0, err


def kube_svc(node):
    return [c for c in node.iptables.chains("nat") if c.startswith("KUBE-SVC-")]


def test_initial_state_is_a_flannel_cluster(nodes):
    for n in nodes.values():
        s = n.effective_settings()
        assert (s["flannel"], s["network_policy"], s["kube_proxy"]) == (True, True, True)
        assert {"lo", "eth0", "flannel.1", "cni0"} <= set(n.interfaces)
        assert n.exists(FLANNEL_CONFLIST) and '"Type": "vxlan"' in n.read_text(FLANNEL_NETCONF)
        assert '"Network": "10.42.0.0/16"' in n.read_text(FLANNEL_NETCONF)
        assert n.is_dir("/etc/cni/net.d") and n.listdir("/etc/cni/net.d") == []
        assert "last_reserved_ip.0" in n.listdir("/var/lib/cni/networks/cbr0")
        assert len(n.leases()) >= 2
        save = n.iptables_save()
        for chain in ("KUBE-SVC-NPX46M4PTMTKRN6Y", "KUBE-SERVICES", "KUBE-NODEPORTS",
                      "KUBE-POSTROUTING", "KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD",
                      "KUBE-ROUTER-OUTPUT", "FLANNEL-FWD", "FLANNEL-POSTRTG"):
            assert f":{chain} " in save, chain
        assert '"flanneld forward"' in save and "KUBE-SEP-" in save
        assert "KUBE-ROUTER-INPUT" in n.iptables_save(v6=True)
    server = nodes["server-1"].read_text(CFG)
    assert 'write-kubeconfig-mode: "0644"' in server and "- traefik" in server and "- servicelb" in server
    tokens = {nodes[a].read_text(CFG).split("token: ")[1].split()[0] for a in ("agent-1", "agent-2")}
    assert len(tokens) == 1 and tokens.pop() == nodes["server-1"].read_text(
        "/var/lib/rancher/k3s/server/token").strip()


def test_defect1_server_only_keys_on_agents_change_nothing(nodes):
    """Phase 22 wrote flannel-backend/disable-network-policy on agents: no effect."""
    for name in ("agent-1", "agent-2"):
        append_cfg(nodes[name], PHASE22_LINES)
        restart(nodes[name])
    for name in ("agent-1", "agent-2"):
        a = nodes[name]
        assert a.service_active("k3s-agent")
        assert a.running["flannel"] and a.running["network_policy"]
        assert a.effective_settings()["ignored_keys"] == ["flannel-backend", "disable-network-policy"]
        log = "\n".join(a.journal())
        assert "Unknown flag --flannel-backend found in config.yaml, skipping" in log
        assert "Unknown flag --disable-network-policy found in config.yaml, skipping" in log
        assert "flannel.1" in a.interfaces and "KUBE-ROUTER-INPUT" in a.iptables.chains("filter")
    assert nodes["server-1"].running["flannel"]


def test_server_flags_reach_agents_only_after_their_restart(nodes):
    s, a = nodes["server-1"], nodes["agent-1"]
    append_cfg(s, PHASE22_LINES + "disable-kube-proxy: true\n")
    assert s.running["flannel"]                 # nothing changes before the restart
    calls = []
    s.on_server_restart = calls.append
    restart(s)
    assert calls and calls[0] > 0               # the API server is told about the outage
    assert s.running["flannel"] is False and s.running["kube_proxy"] is False
    assert "Unknown flag" not in "\n".join(s.journal())
    # the agent still runs what it started with, but would inherit the server's settings
    assert a.running["flannel"] is True
    eff = a.effective_settings()
    assert (eff["flannel"], eff["network_policy"], eff["kube_proxy"]) == (False, False, False)
    restart(a)
    assert a.running["flannel"] is False and a.cni_running() is None
    # disabling does not remove what exists: interface, chains and files stay
    for n in (s, a):
        assert "flannel.1" in n.interfaces and "cni0" in n.interfaces
        assert n.exists(FLANNEL_CONFLIST)
        assert kube_svc(n) and "KUBE-ROUTER-FORWARD" in n.iptables.chains("filter")
    # ... until deleted
    assert sh(a, "sudo ip link delete flannel.1").rc == 0
    assert sh(a, "sudo ip link delete cni0").rc == 0
    restart(a)
    assert "flannel.1" not in a.interfaces and "cni0" not in a.interfaces


def test_flannel_conflist_recreated_when_flannel_runs(nodes):
    a = nodes["agent-1"]
    assert sh(a, f"sudo rm -f {FLANNEL_CONFLIST}").rc == 0
    assert sh(a, "sudo ip link delete flannel.1").rc == 0
    restart(a)
    assert a.exists(FLANNEL_CONFLIST) and "flannel.1" in a.interfaces


def test_defect2_kube_svc_chains_stay_until_cleaned_or_reboot(nodes):
    s = nodes["server-1"]
    append_cfg(s, "disable-kube-proxy: true\n")
    restart(s)
    assert not s.running["kube_proxy"]
    save = sh(s, "sudo iptables-save").stdout.decode()
    assert "KUBE-SVC-" in save                        # stale chains stay visible
    # the runbook filters in Python, then restores
    kept = "\n".join(line for line in save.splitlines() if "KUBE-SVC" not in line
                     and "KUBE-SEP" not in line) + "\n"
    rc, _, err = sh(s, "sudo iptables-restore", kept.encode())
    assert rc == 0, err
    assert kube_svc(s) == [] and "KUBE-SEP" not in s.iptables_save()
    assert ":FLANNEL-POSTRTG" in s.iptables_save()    # other tables/chains untouched


def test_running_kube_proxy_puts_its_chains_back(nodes):
    a = nodes["agent-1"]

    async def scenario():
        save = (await a.exec("sudo iptables-save")).stdout.decode()
        kept = "\n".join(l for l in save.splitlines() if "KUBE-" not in l) + "\n"
        assert (await a.exec("sudo iptables-restore", kept.encode())).rc == 0
        assert kube_svc(a) == []
        await asyncio.sleep(0.1)                      # RESYNC_SECONDS on the fast clock
        return kube_svc(a)
    assert run(scenario()), "kube-proxy still runs: it re-creates its chains"


def test_reboot_clears_interfaces_and_chains(nodes):
    s, a = nodes["server-1"], nodes["agent-1"]
    append_cfg(s, PHASE22_LINES + "disable-kube-proxy: true\n")
    restart(s)
    a.add_interface("cilium_vxlan", "vxlan", 1500, info={"vxlan_port": 8472})
    sh(a, "sudo tee /tmp/scratch", b"x")
    events = []
    a.subscribe(lambda node, ev, info: events.append(ev))
    run(a.reboot())
    assert set(a.interfaces) == {"lo", "eth0"}
    save = a.iptables_save()
    assert "KUBE-SVC" not in save and "FLANNEL" not in save and "KUBE-ROUTER" not in save
    assert "KUBE-KUBELET-CANARY" in save              # the kubelet inside k3s is back
    assert a.service_active("k3s-agent") and a.running["flannel"] is False
    assert not a.exists("/tmp/scratch")
    assert a.exists(FLANNEL_CONFLIST)                 # files on disk survive a reboot
    assert events[0] == "rebooting" and "rebooted" in events and events[-1] == "k3s-started"


def test_reboot_with_flannel_brings_it_back(nodes):
    a = nodes["agent-1"]
    run(a.reboot())
    assert {"flannel.1", "cni0"} <= set(a.interfaces) and kube_svc(a)


def test_reboot_command_needs_root_and_returns_first(nodes):
    a = nodes["agent-1"]

    async def scenario():
        assert (await a.exec("reboot")).rc == 1
        assert (await a.exec("systemctl reboot")).rc == 1
        res = await a.exec("sudo -n systemctl reboot")
        assert res.rc == 0 and a.up                   # the reply leaves before the node goes
        down = False
        for _ in range(200):
            if not a.up:
                down = True
                break
            await asyncio.sleep(0.001)
        for _ in range(200):
            if a.up and a.service_active("k3s-agent"):
                break
            await asyncio.sleep(0.01)
        return down, a.boot_count
    down, boots = run(scenario())
    assert down and boots == 2


def test_stop_leaves_interfaces_and_chains(nodes):
    a = nodes["agent-1"]
    # every table's "# Generated ... on <time>" / "# Completed on <time>" lines left out:
    # a loaded machine may pass a second boundary between the two saves
    before = (set(a.interfaces), re.sub(r"(?m)^#.*\n", "", a.iptables_save()))
    events = []
    a.subscribe(lambda node, ev, info: events.append(ev))
    assert sh(a, "sudo systemctl stop k3s-agent").rc == 0
    assert not a.service_active("k3s-agent") and a.running == {}
    assert (set(a.interfaces), re.sub(r"(?m)^#.*\n", "", a.iptables_save())) == before
    assert events == ["k3s-stopped"]


def test_flannel_refuses_vxlan_port_held_by_cilium(nodes):
    """Rollback: flannel fails 'address already in use' until cilium_vxlan is deleted."""
    a = nodes["agent-1"]
    sh(a, "sudo ip link delete flannel.1")
    a.add_interface("cilium_vxlan", "vxlan", 1500, info={"vxlan_port": 8472})

    async def scenario():
        res = await a.exec("sudo systemctl restart k3s-agent")
        state = a.unit_state
        assert (await a.exec("sudo ip link delete cilium_vxlan")).rc == 0
        for _ in range(200):                          # systemd retries every RestartSec
            if a.service_active("k3s-agent"):
                break
            await asyncio.sleep(0.01)
        return res, state
    res, state = run(scenario())
    assert res.rc == 1 and b"journalctl -xeu k3s-agent.service" in res.stderr
    assert state == "activating"
    assert "address already in use" in "\n".join(a.journal())
    assert a.service_active("k3s-agent") and "flannel.1" in a.interfaces


def test_broken_config_keeps_unit_activating(nodes):
    a = nodes["agent-1"]
    append_cfg(a, "node-label: [unclosed\n")
    assert sh(a, "sudo systemctl restart k3s-agent").rc == 1
    assert sh(a, "systemctl is-active k3s-agent") == (3, b"activating\n", b"")
    assert "failed to parse" in "\n".join(a.journal())


def test_config_dir_is_merged(nodes):
    s = nodes["server-1"]
    assert sh(s, "sudo mkdir -p /etc/rancher/k3s/config.yaml.d").rc == 0
    assert sh(s, "sudo tee /etc/rancher/k3s/config.yaml.d/90-cilium.yaml",
              b"flannel-backend: none\ndisable+: [local-storage]\n").rc == 0
    eff = s.effective_settings()
    assert eff["flannel"] is False and eff["disable"] == ["traefik", "servicelb", "local-storage"]


def test_observers_see_changes(nodes):
    a = nodes["agent-1"]
    seen = []
    unsub = a.subscribe(lambda node, ev, info: seen.append((node.name, ev, info)))
    sh(a, "sudo ip link delete cni0")
    sh(a, "sudo tee /etc/cni/net.d/05-cilium.conflist", b"{}")
    a.add_chain("filter", "CILIUM_INPUT", ["-A INPUT -j CILIUM_INPUT"])
    evs = [(e, i) for _, e, i in seen]
    assert ("interfaces-changed", {"added": [], "removed": ["cni0"]}) in evs
    assert ("file-changed", {"path": "/etc/cni/net.d/05-cilium.conflist", "op": "write"}) in evs
    assert any(e == "iptables-changed" for e, _ in evs)
    unsub()
    sh(a, "sudo ip link delete flannel.1")
    assert not any(i.get("removed") == ["flannel.1"] for _, _, i in seen)


# -------------------------------------------------------------------- iptables
def test_iptables_restore_semantics():
    t = Iptables()
    t.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    t.ensure_rule("nat", "-A KUBE-SERVICES -j RETURN")
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A X -j ACCEPT\nCOMMIT\n"
    assert t.restore(text) == ["filter"]
    assert "KUBE-FIREWALL" not in t.chains("filter") and t.rules("filter") == ["-A X -j ACCEPT"]
    assert t.rules("nat") == ["-A KUBE-SERVICES -j RETURN"]      # not mentioned: untouched
    assert ":FORWARD DROP [0:0]" in t.save()
    with pytest.raises(IptablesError, match="Couldn't load target `NOPE'"):
        t.restore("*filter\n-A INPUT -j NOPE\nCOMMIT\n")
    with pytest.raises(IptablesError, match="Chain 'Y' does not exist"):
        t.restore("*filter\n-A Y -j ACCEPT\nCOMMIT\n")
    with pytest.raises(IptablesError, match="COMMIT expected"):
        t.restore("*filter\n:Z - [0:0]\n")
    assert t.rules("filter") == ["-A X -j ACCEPT"]               # failures change nothing
    t.restore("*filter\n:Z - [0:0]\n-A Z -j DROP\nCOMMIT\n", noflush=True)
    assert t.rules("filter") == ["-A X -j ACCEPT", "-A Z -j DROP"]


def test_iptables_restore_over_exec_reports_errors(nodes):
    a = nodes["agent-1"]
    rc, _, err = sh(a, "sudo iptables-restore", b"*filter\n-A INPUT -j KUBE-GONE\nCOMMIT\n")
    assert rc == 1 and b"Couldn't load target" in err
    assert "KUBE-ROUTER-INPUT" in a.iptables.chains("filter")
    assert sh(a, "iptables-save").rc == 1                         # needs root
    v6 = sh(a, "sudo ip6tables-save").stdout.decode()
    kept = "\n".join(l for l in v6.splitlines() if "KUBE-ROUTER" not in l) + "\n"
    assert sh(a, "sudo ip6tables-restore", kept.encode()).rc == 0
    assert "KUBE-ROUTER" not in a.iptables_save(v6=True)
    assert "KUBE-ROUTER" in a.iptables_save()                     # v4 untouched
    assert sh(a, "sudo iptables-save -t nat").stdout.decode().count("*") == 1


def test_cni_config_follows_the_running_conf_dir(nodes):
    s, a = nodes["server-1"], nodes["agent-1"]
    assert a.cni_config() == FLANNEL_CONFLIST
    append_cfg(s, "flannel-backend: none\n")
    restart(s)
    restart(a)
    # flannel is off: containerd looks in /etc/cni/net.d, which is empty -> no CNI
    assert a.running["cni_conf_dir"] == "/etc/cni/net.d" and a.cni_config() is None
    assert a.exists(FLANNEL_CONFLIST)              # the old file is still there, unused
    sh(a, "sudo tee /etc/cni/net.d/05-cilium.conflist", b"{}")
    assert a.cni_config() == "/etc/cni/net.d/05-cilium.conflist"
    # k3s's unit kills only its main process (KillMode=process): containerd and the pods
    # keep running with the config they had, until k3s-killall.sh or a reboot.
    sh(a, "sudo systemctl stop k3s-agent")
    assert a.cni_config() == "/etc/cni/net.d/05-cilium.conflist"


def test_invalid_flannel_backend_fails_the_server(nodes):
    s = nodes["server-1"]
    append_cfg(s, "flannel-backend: None\n")        # k3s compares exactly: not "none"
    assert sh(s, "sudo systemctl restart k3s").rc == 1
    assert "invalid flannel backend 'None'" in "\n".join(s.journal())
    assert not s.service_active("k3s")
