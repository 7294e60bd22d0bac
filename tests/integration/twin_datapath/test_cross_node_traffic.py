"""Issue #11, item 3: cross-node traffic is a property of the network, not of agent readiness.

With a node's firewall dropping the overlay's UDP port (fault ``firewall``, set through the
admin endpoint), every Cilium agent stays Ready and same-node traffic works, but pod to
pod and node to pod across nodes time out; ``cilium-health status`` shows the node; DNS
from a pod on a node without a DNS pod crosses nodes and fails; a NodePort answers on
every node's address but forwards across nodes only where the tunnel passes.
"""
from __future__ import annotations

import pytest

from datapath_harness import AGENT1, AGENT2, NODES, SERVER, Ops, render_env
from twin.podexec import net as podexec_net
from twin_network_helpers import deployment, pod_ready, sandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def ops(tmp_path):
    o = Ops.start(tmp_path / "twin")
    yield o
    o.close()


@pytest.fixture
def env(tmp_path_factory):
    return render_env(tmp_path_factory.mktemp("helm-home"))


def web(ops: Ops, name: str, node: str) -> dict:
    ops.create(deployment(name, 1, node=node))
    return ops.until(lambda: next((p for p in ops.pods("default", f"app={name}") if pod_ready(p)), None),
                     what=f"{name} Ready on {node}")


def node_port_service(ops: Ops) -> None:
    ops.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-b", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.43.200.10", "clusterIPs": ["10.43.200.10"],
                         "selector": {"app": "web-b"},
                         "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP", "nodePort": 30080}]}})


def in_pod(ops: Ops, pod: dict, argv: list[str]) -> tuple[int, str, str]:
    live = ops.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
    rc, out, err = ops.call(podexec_net.COMMANDS[argv[0]], ops.rt, live, live["spec"]["containers"][0]["name"],
                            argv, b"")
    return rc, out.decode(), err.decode()


def curl(ops: Ops, node: str, url: str) -> tuple[int, str, str]:
    return ops.ssh(node, f"curl -sS --connect-timeout 2 -o /dev/null -w %{{http_code}} {url}")


def test_blocked_vxlan_fails_cross_node_probes_while_agents_are_ready(ops, helm_bin, env):
    ops.migrate(helm_bin, env)                                 # Phase 22 values: VXLAN on UDP 8473
    a, b = web(ops, "web-a", AGENT1), web(ops, "web-b", AGENT2)
    assert sandbox(a) == sandbox(b) == "cilium"
    node_port_service(ops)
    b_ip = b["status"]["podIP"]
    assert curl(ops, AGENT1, f"http://{b_ip}/")[:2] == (0, "200")       # across nodes, before
    assert "0.0.0.0:8473" in ops.ssh_ok(AGENT2, "ss -lun")

    status, body = ops.admin({"firewall": [{"node": AGENT2, "from": "*", "ports": ["udp/8473", "tcp/4240"]}]})
    assert status == 200 and body["firewall"][0]["ports"] == ["udp/8473", "tcp/4240"]
    assert ops.admin({"firewall": [{"node": AGENT2, "ports": ["udp/x"]}]})[0] == 400

    # Agents stay Ready, nodes stay Ready: readiness does not test the tunnel.
    assert all(pod_ready(p) for p in ops.pods("kube-system", "k8s-app=cilium"))
    assert all(ops.api_node_ready(n)[0] == "True" for n in NODES)
    # Same node works; across nodes times out, from the node and from a pod.
    assert curl(ops, AGENT2, f"http://{b_ip}/")[:2] == (0, "200")
    rc, out, err = curl(ops, AGENT1, f"http://{b_ip}/")
    assert rc == 28 and "Timeout was reached" in err
    rc, _, err = in_pod(ops, a, ["curl", "-sS", "--connect-timeout", "2", f"http://{b_ip}/"])
    assert rc == 28
    ok, why = ops.call(ops.net.reach, a, b_ip, 80)
    assert not ok and "UDP 8473" in why and f"{AGENT2}'s firewall" in why

    # cilium-health shows the node: host HTTP (4240) and endpoint (through the tunnel) fail.
    agent = next(p for p in ops.pods("kube-system", "k8s-app=cilium") if p["spec"]["nodeName"] == AGENT1)
    rc, out, _ = ops.call(podexec_net.COMMANDS["cilium-health"], ops.rt, agent, "cilium-agent",
                          ["cilium-health", "status", "--succinct"], b"")
    text = out.decode()
    assert rc == 0 and "Cluster health:" in text and "2/3 reachable" in text and AGENT2 in text
    rc, out, _ = ops.call(podexec_net.COMMANDS["cilium-health"], ops.rt, agent, "cilium-agent",
                          ["cilium-health", "status"], b"")
    detail = out.decode().split(f"  {AGENT2}:")[1]
    assert "Connection timed out" in detail and "4240: i/o timeout" in detail

    # NodePort: answered on every node's address, forwarded across nodes only where it can.
    assert curl(ops, SERVER, f"http://10.0.0.7:30080/")[:2] == (0, "200")   # agent-2 itself: local backend
    assert curl(ops, SERVER, f"http://10.0.0.4:30080/")[0] == 28            # agent-1 forwards to agent-2
    ok, why = ops.call(ops.net.reach, SERVER, "10.0.0.4", 30080)
    assert not ok and "Cilium's kube-proxy replacement on fast-skunk" in why

    # DNS from a pod on a node without a DNS pod crosses nodes.
    dns_nodes = {p["spec"]["nodeName"] for p in ops.kube_dns()}
    status, _ = ops.admin({"firewall": [{"node": n, "from": "*", "ports": ["udp/8473"]} for n in dns_nodes]})
    assert status == 200
    far = next(n for n in NODES if n not in dns_nodes)
    c = web(ops, "client", far)
    rc, out, _ = in_pod(ops, c, ["nslookup", "kubernetes.default"])
    assert rc == 1 and "connection timed out" in out
    near = web(ops, "near", sorted(dns_nodes)[0])
    rc, out, _ = in_pod(ops, near, ["nslookup", "kubernetes.default"])
    assert rc == 0 and "Address: 10.43.0.1" in out

    # Firewall open again: the same probes pass.
    assert ops.admin({"firewall": []})[0] == 200
    assert curl(ops, AGENT1, f"http://{b_ip}/")[:2] == (0, "200")
    assert in_pod(ops, c, ["nslookup", "kubernetes.default"])[0] == 0


def test_flannel_overlay_and_kube_proxy_nodeport(ops):
    """Before any migration: flannel's VXLAN on UDP 8472, NodePorts through kube-proxy."""
    a, b = web(ops, "web-a", AGENT1), web(ops, "web-b", AGENT2)
    assert sandbox(a) == sandbox(b) == "flannel"
    node_port_service(ops)
    assert curl(ops, SERVER, "http://10.0.0.4:30080/")[:2] == (0, "200")    # kube-proxy on agent-1
    assert ops.admin({"firewall": [{"node": AGENT2, "from": [AGENT1], "ports": ["udp/8472"]}]})[0] == 200
    rc, _, _ = in_pod(ops, a, ["curl", "-sS", "--connect-timeout", "2", f"http://{b['status']['podIP']}/"])
    assert rc == 28
    assert curl(ops, SERVER, f"http://{b['status']['podIP']}/")[:2] == (0, "200")  # only agent-1 is cut off
    ok, why = ops.call(ops.net.reach, SERVER, "10.0.0.4", 30080)
    assert not ok and "kube-proxy (in k3s) on fast-skunk" in why and "UDP 8472" in why
