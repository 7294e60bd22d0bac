"""Issue #11, item 5: smaller facts of a real node, read with the operator's tools over SSH.

``ip -d link`` shows a VXLAN device's id and UDP port, ``ss -lun`` the kernel socket
holding it, ``ip route`` flannel's routes; ``scp`` (SFTP and the legacy protocol) exits
0 after a good copy; servers have their admin kubeconfig, whose key the runbook's
redaction masks; kube-router's ipsets and the portmap plugin's ``CNI-*`` chains outlive
a k3s restart, as ``k3s-killall.sh``'s list says.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from datapath_harness import AGENT1, AGENT2, SERVER, Ops

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def ops(tmp_path):
    o = Ops.start(tmp_path / "twin")
    yield o
    o.close()


def test_vxlan_details_sockets_and_routes(ops):
    out = ops.ssh_ok(AGENT1, "ip -d link show flannel.1")
    assert "vxlan id 1 local 10.0.0.4 dev eth0 srcport 0 0 dstport 8472" in out
    udp = ops.ssh_ok(AGENT1, "ss -lun")
    assert "0.0.0.0:8472" in udp
    tcp = ops.ssh_ok(SERVER, "sudo ss -ltnp")
    assert "*:6443" in tcp and 'users:(("k3s-server"' in tcp
    routes = ops.ssh_ok(AGENT1, "ip route").splitlines()
    assert "10.42.0.0/24 via 10.42.0.0 dev flannel.1 onlink " in routes     # set-hog's pod CIDR
    assert "10.42.1.0/24 dev cni0 proto kernel scope link src 10.42.1.1 " in routes
    ops.ssh_ok(AGENT1, "sudo ip link delete flannel.1")
    assert "8472" not in ops.ssh_ok(AGENT1, "ss -lun") and "flannel.1" not in ops.ssh_ok(AGENT1, "ip route")


@pytest.mark.skipif(shutil.which("scp") is None, reason="OpenSSH scp not installed")
@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "legacy-O"])
def test_scp_exits_zero_after_a_good_copy(ops, tmp_path, legacy):
    key, known = ops.t.state_dir / "ssh" / "id_ed25519", ops.t.state_dir / "ssh" / "known_hosts"
    port = ops.t.endpoints["ssh"][AGENT1]
    base = ["scp", *(["-O"] if legacy else []), "-i", str(key), "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-P", str(port)]
    src = tmp_path / "values.yaml"
    src.write_text("tunnelPort: 8473\n")
    p = subprocess.run([*base, str(src), "ubuntu@127.0.0.1:/tmp/values.yaml"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert ops.ssh_ok(AGENT1, "cat /tmp/values.yaml") == "tunnelPort: 8473\n"
    back = tmp_path / "back.yaml"
    p = subprocess.run([*base, "ubuntu@127.0.0.1:/tmp/values.yaml", str(back)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and back.read_text() == "tunnelPort: 8473\n", p.stderr
    p = subprocess.run([*base, str(src), "ubuntu@127.0.0.1:/etc/values.yaml"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "ermission denied" in p.stderr            # /etc needs sudo, as on a node


def test_servers_have_the_admin_kubeconfig_and_it_is_redacted(ops):
    from runbook.redact import MASK, redact
    assert ops.ssh_ok(SERVER, "stat -c %a /etc/rancher/k3s/k3s.yaml") == "644\n"   # write-kubeconfig-mode "0644"
    text = ops.ssh_ok(SERVER, "cat /etc/rancher/k3s/k3s.yaml")
    assert "server: https://127.0.0.1:6443" in text and "client-key-data: LS0t" in text
    key = next(line.split(": ", 1)[1] for line in text.splitlines() if "client-key-data" in line)
    masked = redact(text)
    assert key not in masked and f"client-key-data: {MASK}" in masked
    assert ops.ssh(AGENT1, "test -e /etc/rancher/k3s/k3s.yaml")[0] == 1


def test_kube_router_ipsets_and_portmap_chains_outlive_a_restart(ops):
    ops.create({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "web-from-front", "namespace": "default"},
                "spec": {"podSelector": {"matchLabels": {"app": "edge"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "front"}}}]}]}})
    ops.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge", "namespace": "default"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "edge"}},
                         "template": {"metadata": {"labels": {"app": "edge"}},
                                      "spec": {"nodeSelector": {"kubernetes.io/hostname": AGENT2},
                                               "containers": [{"name": "nginx", "image": "nginx:1.27",
                                                               "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}}})
    edge = ops.until(lambda: next((p for p in ops.pods("default", "app=edge")
                                   if p["status"].get("phase") == "Running"), None), what="edge Running")
    sets = ops.ssh_ok(AGENT2, "sudo ipset list -n").split()
    dst = next(s for s in sets if s.startswith("KUBE-DST-"))
    assert any(s.startswith("KUBE-SRC-") for s in sets)
    assert edge["status"]["podIP"] in ops.ssh_ok(AGENT2, f"sudo ipset list {dst}")
    nat = ops.ssh_ok(AGENT2, "sudo iptables-save -t nat")
    assert "CNI-HOSTPORT-DNAT" in nat and f"--to-destination {edge['status']['podIP']}:80" in nat

    # Network policy off on the server, every node restarted: k3s removes nothing.
    ops.add_config(SERVER, "disable-network-policy: true\n")
    ops.restart(SERVER, AGENT1, AGENT2)
    assert "KUBE-ROUTER-INPUT" in ops.ssh_ok(AGENT2, "sudo iptables-save -t filter")
    assert dst in ops.ssh_ok(AGENT2, "sudo ipset list -n").split()
    assert "CNI-HOSTPORT-DNAT" in ops.ssh_ok(AGENT2, "sudo iptables-save -t nat")
    # What k3s-killall.sh does with the rules (KUBE- and CNI- lines out); the sets need ipset.
    saved = ops.ssh_ok(AGENT2, "sudo iptables-save")
    kept = "".join(line + "\n" for line in saved.splitlines() if "KUBE-" not in line and "CNI-" not in line)
    assert ops.ssh(AGENT2, "sudo iptables-restore", kept.encode())[0] == 0
    assert "CNI-" not in ops.ssh_ok(AGENT2, "sudo iptables-save")
    assert ops.ssh(AGENT2, f"sudo ipset destroy {dst}")[0] == 0
    assert dst not in ops.ssh_ok(AGENT2, "sudo ipset list -n").split()
    assert ops.ssh(AGENT2, "ipset list -n")[0] == 1                          # root only
