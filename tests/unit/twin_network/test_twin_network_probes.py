"""The probes' output (``twin.nettools``), Cilium's cleanup on a node model
(``twin.controllers.cilium.cleanup``) and the in-pod handlers (``twin.podexec.net``),
called directly with stand-ins for the network model's answers."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from twin import nettools
from twin.podexec import net as podexec_net
from twin.clock import Clock
from twin.controllers.cilium import cleanup, datapath
from twin.controllers.cilium.config import CiliumConfig
from twin.controllers.network_view import DnsAnswer
from twin.controllers.reach import Trace, firewall_blocks
from twin.faults import Faults
from twin.fixtures import NodeSpec
from twin.node import build_nodes

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "p", "namespace": "web", "uid": "u"},
       "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox:1.36"}]},
       "status": {"phase": "Running", "podIP": "10.42.1.9"}}


def ok_trace(ip, port, proto):
    return Trace(True, "reached", backend={"metadata": {"namespace": "web", "name": "b"}}, addr=f"{ip}:{port}")


def dead_trace(ip, port, proto):
    return Trace(False, "VXLAN dropped", "timeout")


def resolve_ok(name, server):
    return DnsAnswer(server or "10.43.0.10", f"{name}.web.svc.cluster.local", "NOERROR", ["10.43.5.5"])


def resolve_timeout(name, server):
    return DnsAnswer(server or "10.43.0.10", name, "TIMEOUT", reason="stale socket LB")


# ----------------------------------------------------------------------------- nettools
def test_curl_success_timeout_refused_and_resolution():
    rc, out, err, wait = nettools.curl(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://10.42.2.4:8080/"],
                                       ok_trace, resolve_ok)
    assert (rc, out, err, wait) == (0, b"200", b"", 0)
    rc, out, err, wait = nettools.curl(["-sS", "--connect-timeout", "3", "http://10.42.2.4/"], dead_trace, resolve_ok)
    assert rc == 28 and wait == 3 and err == (b"curl: (28) Failed to connect to 10.42.2.4 port 80 after 3000 ms: "
                                              b"Timeout was reached\n")
    assert nettools.curl(["-s", "http://10.42.2.4/"], dead_trace, resolve_ok)[2] == b""    # -s without -S
    refused = lambda ip, port, proto: Trace(False, "no endpoints", "refused")          # noqa: E731
    assert nettools.curl(["http://web/"], refused, resolve_ok)[0] == 7
    assert nettools.curl(["http://web/"], ok_trace, resolve_timeout)[:3] == (
        6, b"", b"curl: (6) Could not resolve host: web\n")
    api = lambda ip, port, proto: Trace(True, "host", addr=f"{ip}:{port}")             # noqa: E731
    rc, out, _, _ = nettools.curl(["-sk", "https://10.0.0.2:6443/version"], api, resolve_ok)
    assert rc == 0 and b'"code": 401' in out
    assert nettools.curl(["-s", "https://10.0.0.2:6443/"], api, resolve_ok)[0] == 60
    assert nettools.curl(["-sfk", "https://10.0.0.2:6443/"], api, resolve_ok)[0] == 22


def test_dns_tools_print_like_bind_and_glibc():
    rc, out, _, _ = nettools.nslookup(["kubernetes.default"], resolve_ok, "10.43.0.10")
    assert rc == 0 and out.decode().startswith("Server:\t\t10.43.0.10\nAddress:\t10.43.0.10#53\n\n")
    assert "Name:\tkubernetes.default.web.svc.cluster.local\nAddress: 10.43.5.5\n" in out.decode()
    rc, out, _, wait = nettools.nslookup(["kubernetes.default"], resolve_timeout, "10.43.0.10")
    assert rc == 1 and out == b";; connection timed out; no servers could be reached\n\n" and wait == 15
    nx = lambda name, server: DnsAnswer("10.43.0.10", "nope.web.svc.cluster.local", "NXDOMAIN")  # noqa: E731
    assert b"** server can't find nope.web.svc.cluster.local: NXDOMAIN" in nettools.nslookup(["nope"], nx, "x")[1]
    assert nettools.dig(["@10.43.0.10", "a.b", "+short"], resolve_ok, "x")[:2] == (0, b"10.43.5.5\n")
    rc, out, _, wait = nettools.dig(["@10.43.0.10", "a.b", "+time=2", "+tries=2"], resolve_timeout, "x")
    assert rc == 9 and out.count(b"communications error") == 2 and wait == 4
    assert b";; ANSWER SECTION:" in nettools.dig(["a.b"], resolve_ok, "x")[1]
    assert nettools.getent(["hosts", "web"], resolve_ok)[:2] == (0, b"10.43.5.5       web.web.svc.cluster.local\n")
    assert nettools.getent(["hosts", "web"], resolve_timeout)[0] == 2


def test_firewall_rules_match_node_source_and_port():
    f = Faults()
    f.set("firewall", [{"node": "b", "from": ["a"], "ports": ["UDP/8473"]}])
    assert firewall_blocks(f, "a", "b", "udp", 8473)
    assert not firewall_blocks(f, "c", "b", "udp", 8473) and not firewall_blocks(f, "a", "b", "udp", 8472)
    assert not firewall_blocks(f, "b", "a", "udp", 8473)
    with pytest.raises(ValueError, match="bad port"):
        f.set("firewall", [{"node": "b", "ports": ["sctp/1"]}])


# ----------------------------------------------------------------------------- cleanup
@pytest.fixture
def node(tmp_path):
    spec = NodeSpec("n1", "server", "10.0.0.2", "10.42.0.0/24", "6.8.0-51-generic", "Ubuntu 24.04.1 LTS")
    nodes = build_nodes([spec], {"k3s_version": "v1.31.4+k3s1", "cluster_cidr": "10.42.0.0/16",
                                 "service_cidr": "10.43.0.0/16"}, tmp_path / "nodes", Clock(speed=0.001))
    nm = nodes["n1"]
    datapath.install(nm, CiliumConfig.from_data({"kube-proxy-replacement": "true", "tunnel-port": "8473"}),
                     router_ip="10.42.0.7", local=["10.42.0.0/24"], remote=["10.42.1.0/24"])
    return nm


def view(nm, **kw):
    mounts = {"/sys/fs/bpf": "/sys/fs/bpf", "/run/cilium": "/run/cilium", "/etc/cni/net.d": "/etc/cni/net.d"}
    return cleanup.ContainerView(nm, kw.get("host_network", True), kw.get("privileged", True),
                                 kw.get("mounts", mounts))


def test_cleanup_refuses_while_the_agent_runs(node):
    rc, out, err = cleanup.run(view(node), ["--all-state", "-f"], b"")
    assert rc == 1 and err == (b"Agent should not be running when cleaning up\n"
                               b"Found pidfile /var/run/cilium/cilium.pid\n")
    assert node.bpf.socket_lb_active()


def test_cleanup_removes_the_kernel_state_and_the_conflist(node):
    datapath.agent_gone(node, {"10.43.0.10:53/udp": ["10.42.0.9:53"]})
    rc, out, err = cleanup.run(view(node), ["--all-state"], b"n\n")      # asks, and "n" stops it
    assert rc == 0 and b"[y/N]" in out and node.bpf.socket_lb_active()
    rc, out, err = cleanup.run(view(node), ["--all-state", "-f"], b"")
    text = out.decode()
    assert rc == 0 and err == b"", err
    assert text.startswith("Warning: Destructive operation. You are about to remove:\n- tc filters\n")
    assert "removed all socketlb bpf programs" in text and "removed link cilium_vxlan" in text
    assert "removed map cilium_tunnel_map" in text
    assert not node.bpf.socket_lb_active() and node.bpf.tc_programs() == [] and node.bpf.maps() == []
    assert not any(i.startswith("cilium_") for i in node.interfaces)
    assert not node.exists(datapath.CILIUM_CONFLIST)
    assert node.exists(datapath.SYSCTL_FILE) and node.exists(datapath.CNI_BINARY)   # not its business


def test_cleanup_reaches_only_what_the_container_reaches(node):
    datapath.agent_gone(node, {})
    rc, out, err = cleanup.run(view(node, privileged=False, host_network=False, mounts={}), ["--all-state", "-f"], b"")
    assert rc == 0 and b"Failed to detach all socketlb bpf programs from /run/cilium/cgroupv2" in err
    assert node.bpf.socket_lb_active() and node.bpf.tc_programs() and "cilium_host" in node.interfaces
    rc, out, err = cleanup.run(view(node, privileged=False), ["--all-state", "-f"], b"")
    assert b"operation not permitted" in err and node.bpf.socket_lb_active()
    assert node.bpf.maps() == []                # unlinking pins needs no privilege
    rc, out, err = cleanup.run(view(node), ["--bpf-state", "-f"], b"")
    assert not node.bpf.socket_lb_active() and "cilium_host" in node.interfaces   # links kept


def test_container_view_from_a_pod_spec(node):
    pod = {"spec": {"hostNetwork": True, "volumes": [{"name": "run", "hostPath": {"path": "/var/run/cilium"}}],
                    "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}},
                                    "volumeMounts": [{"name": "run", "mountPath": "/var/run/cilium"}]}]}}
    v = cleanup.ContainerView.of(node, pod, "c")
    assert v.host_network and v.privileged and v.host("/var/run/cilium/cilium.pid") == "/run/cilium/cilium.pid"
    assert v.host("/sys/fs/bpf") is None


# ----------------------------------------------------------------------------- in-pod handlers
class StubView:
    def __init__(self, trace, resolve):
        self._t, self._r = trace, resolve
        self.net = SimpleNamespace(cilium=SimpleNamespace(agent_ready=lambda n: True))

    def trace(self, src, ip, port, proto="tcp"):
        return self._t(ip, port, proto)

    def resolve(self, src, name, server=None):
        return self._r(name, server)

    def resolver_of(self, src):
        return "10.43.0.10", ["web.svc.cluster.local"]

    def health(self, node):
        return [{"name": "n1", "ip": "10.0.0.2", "local": True, "host_icmp": "", "host_http": "",
                 "endpoint_ip": "10.42.0.8", "endpoint_icmp": "", "endpoint_http": "", "rtt": "300.1µs"},
                {"name": "n2", "ip": "10.0.0.4", "local": False, "host_icmp": "",
                 "host_http": 'Get "http://10.0.0.4:4240/hello": dial tcp 10.0.0.4:4240: i/o timeout',
                 "endpoint_ip": "10.42.1.8", "endpoint_icmp": "Connection timed out",
                 "endpoint_http": "Connection timed out", "rtt": "411.2µs"}]


def rt_with(v):
    return SimpleNamespace(nodes={"n1": SimpleNamespace(cluster_view=v)})


def test_pod_handlers_use_the_pods_view():
    rt = rt_with(StubView(ok_trace, resolve_ok))
    rc, out, _ = podexec_net.COMMANDS["nslookup"](rt, POD, "main", ["nslookup", "kubernetes.default"], b"")
    assert rc == 0 and out.startswith(b"Server:\t\t10.43.0.10\n")
    assert podexec_net.COMMANDS["curl"](rt, POD, "main", ["curl", "-s", "http://10.42.2.4/"], b"")[0] == 0
    assert podexec_net.COMMANDS["wget"](rt, POD, "main", ["wget", "-qO-", "http://10.42.2.4/"], b"")[0] == 0
    rt = rt_with(StubView(dead_trace, resolve_timeout))
    assert podexec_net.COMMANDS["getent"](rt, POD, "main", ["getent", "hosts", "web"], b"")[0] == 2
    assert podexec_net.COMMANDS["wget"](rt, POD, "main", ["wget", "-T", "2", "-qO-", "http://10.42.2.4/"],
                                        b"")[2] == b"wget: download timed out\n"
    assert set(podexec_net.COMMANDS) >= {"nslookup", "getent", "curl", "wget", "cilium-health"}
    assert set(podexec_net.CILIUM_DBG_SUBCOMMANDS) == {"post-uninstall-cleanup"}


def test_cilium_health_lists_unreachable_nodes_only_in_a_cilium_image():
    rt = rt_with(StubView(ok_trace, resolve_ok))
    assert podexec_net.COMMANDS["cilium-health"](rt, POD, "main", ["cilium-health", "status"], b"")[0] == 127
    agent = {**POD, "spec": {"nodeName": "n1", "containers": [{"name": "cilium-agent",
                                                               "image": "quay.io/cilium/cilium:v1.19.3"}]}}
    rc, out, _ = podexec_net.COMMANDS["cilium-health"](rt, agent, "cilium-agent", ["cilium-health", "status"], b"")
    text = out.decode()
    assert rc == 0 and text.startswith("Probe time:") and "  n1 (localhost):\n" in text
    assert "Endpoint connectivity to 10.42.1.8:\n      ICMP to stack:  Connection timed out" in text
    rc, out, _ = podexec_net.COMMANDS["cilium-health"](rt, agent, "cilium-agent",
                                                       ["cilium-health", "status", "--succinct"], b"")
    assert out.decode().startswith("Cluster health:  1/2 reachable") and "n2" in out.decode()


def test_cleanup_handler_needs_the_cilium_image(node):
    rt = SimpleNamespace(nodes={"n1": node})
    rc, _, err = podexec_net.CILIUM_DBG_SUBCOMMANDS["post-uninstall-cleanup"](
        rt, POD, "main", ["cilium-dbg", "post-uninstall-cleanup", "-f"], b"")
    assert rc == 127 and b'exec: "cilium-dbg": executable file not found in $PATH' in err
    assert asyncio.iscoroutinefunction(podexec_net.curl) is False     # plain functions, no awaiting
