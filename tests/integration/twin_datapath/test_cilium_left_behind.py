"""Issue #11, item 1: Cilium's datapath survives ``helm uninstall``.

A rollback that skips ``cilium-dbg post-uninstall-cleanup`` leaves the socket load
balancer on every node's cgroup root: the kube-dns ClusterIP is still translated to the
Cilium-era coredns address, so DNS from the node (and from its pods) times out although
flannel and kube-proxy are back. Seen with ``bpftool`` and ``ls /sys/fs/bpf`` over SSH;
fixed by the cleanup in a privileged hostNetwork pod with the host's bpffs and
``/run/cilium`` (not in one without them, not inside a running agent), or by a reboot.
"""
from __future__ import annotations

import pytest

from datapath_harness import AGENT1, AGENT2, NODES, SERVER, Ops, render_env
from twin.podexec import net as podexec_net
from twin_network_helpers import deployment, pod_ready, sandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DNS_PROBE = "nslookup kubernetes.default.svc.cluster.local 10.43.0.10"
CLEANUP = ["cilium-dbg", "post-uninstall-cleanup", "--all-state", "-f"]
IMAGE = "quay.io/cilium/cilium:v1.19.3"


@pytest.fixture
def ops(tmp_path):
    o = Ops.start(tmp_path / "twin")
    yield o
    o.close()


@pytest.fixture
def env(tmp_path_factory):
    return render_env(tmp_path_factory.mktemp("helm-home"))


def cleanup_pod(node: str, name: str, *, privileged: bool = True, host_network: bool = True,
                mounts: bool = True) -> dict:
    """The pod an operator starts on a node to run Cilium's cleanup after the uninstall."""
    vols = [{"name": "bpf", "hostPath": {"path": "/sys/fs/bpf"}},
            {"name": "run", "hostPath": {"path": "/run/cilium"}}] if mounts else []
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"nodeName": node, "hostNetwork": host_network, "restartPolicy": "Never",
                     "tolerations": [{"operator": "Exists"}], "volumes": vols,
                     "containers": [{"name": "cleanup", "image": IMAGE, "command": ["sleep", "infinity"],
                                     "securityContext": {"privileged": privileged},
                                     "volumeMounts": [{"name": v["name"], "mountPath": v["hostPath"]["path"]}
                                                      for v in vols]}]}}


def run_in(ops: Ops, pod: dict, container: str, argv: list[str], handler=None) -> tuple[int, str, str]:
    fn = handler or (podexec_net.CILIUM_DBG_SUBCOMMANDS[argv[1]] if argv[0] == "cilium-dbg"
                     else podexec_net.COMMANDS[argv[0]])
    live = ops.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
    rc, out, err = ops.call(fn, ops.rt, live, container, argv, b"")
    return rc, out.decode(), err.decode()


def running(ops: Ops, name: str, ns: str = "kube-system") -> dict:
    return ops.until(lambda: (lambda p: p if p and p["status"].get("phase") == "Running" else None)(
        ops.get("pods", ns, name)), timeout=30, what=f"{name} Running")


def test_rollback_without_cleanup_leaves_clusterip_broken_until_the_cleanup(ops, helm_bin, env):
    rc, out, _ = ops.ssh(AGENT1, DNS_PROBE)
    assert rc == 0 and "Address: 10.43.0.1" in out          # before: DNS through kube-proxy works
    assert "cil_" not in ops.ssh_ok(AGENT1, "sudo bpftool cgroup tree")

    docs = ops.migrate(helm_bin, env)
    cilium_dns = {p["status"]["podIP"] for p in ops.kube_dns()}
    assert "cil_from_netdev" in ops.ssh_ok(AGENT1, "sudo bpftool net show")
    # Inside a running agent the cleanup refuses: the agent's pid file is there.
    agent = next(p for p in ops.pods("kube-system", "k8s-app=cilium") if p["spec"]["nodeName"] == AGENT1)
    rc, _, err = run_in(ops, agent, "cilium-agent", CLEANUP)
    assert rc == 1 and "Agent should not be running when cleaning up" in err
    assert "Found pidfile /var/run/cilium/cilium.pid" in err

    ops.rollback_without_cleanup(docs)
    flannel_dns = {p["status"]["podIP"] for p in ops.kube_dns()}
    assert cilium_dns and flannel_dns and not cilium_dns & flannel_dns   # coredns moved address

    # The facts, as an operator sees them on the node.
    for n in NODES:
        tree = ops.ssh_ok(n, "sudo bpftool cgroup tree /sys/fs/cgroup")
        assert "cil_sock4_connect" in tree and "cgroup_inet4_connect" in tree
        assert "cil_from_netdev" in ops.ssh_ok(n, "sudo bpftool net show")   # on eth0, tcx
        maps = ops.ssh_ok(n, "sudo ls /sys/fs/bpf/tc/globals").split()
        assert "cilium_lb4_services_v2" in maps and "cilium_lb4_backends_v3" in maps
        assert "cilium_lb4_services_v2" in ops.ssh_ok(n, "sudo bpftool map show -f")
        assert "net.ipv4.conf.all.rp_filter = 0" in ops.ssh_ok(n, "cat /etc/sysctl.d/99-zzz-override_cilium.conf")
        assert ops.ssh(n, "test -f /opt/cni/bin/cilium-cni")[0] == 0
        assert ops.ssh(n, "test -f /etc/cni/net.d/05-cilium.conflist")[0] == 0
        assert "flannel.1" in ops.ssh_ok(n, "ip -o link show")
        assert ops.cni(n) == "flannel"
    assert "KUBE-SVC-" in ops.ssh_ok(AGENT1, "sudo iptables-save -t nat")   # kube-proxy is back

    # The consequence: the kube-dns ClusterIP goes to the Cilium-era coredns address.
    # (Its old address is free, or already another pod's: either way nobody answers DNS.)
    rc, out, _ = ops.ssh(AGENT1, DNS_PROBE)
    assert rc == 1 and ("connection timed out; no servers could be reached" in out
                        or "communications error to 10.43.0.10#53: connection refused" in out)
    rc, out, _ = ops.ssh(AGENT1, "dig +short +time=1 +tries=1 @10.43.0.10 kubernetes.default.svc.cluster.local")
    assert rc == 9 and "no servers could be reached" in out
    ok, why = ops.call(ops.net.reach, AGENT1, "10.43.0.10", 53, "udp")
    assert "socket LB Cilium left" in why and any(ip in why for ip in cilium_dns)
    # ... and from a pod on that node, through its ClusterFirst resolver.
    ops.create(deployment("probe", 1, node=AGENT1))
    probe = ops.until(lambda: next((p for p in ops.pods("default", "app=probe") if pod_ready(p)), None),
                      what="probe pod")
    assert sandbox(probe) == "flannel"
    rc, out, _ = run_in(ops, probe, "main", ["nslookup", "kubernetes.default"])
    assert rc == 1 and ("connection timed out" in out or "connection refused" in out)
    # A pod IP works: only service translation is stale.
    dns_ip = sorted(flannel_dns)[0]
    rc, out, _ = ops.ssh(AGENT1, f"nslookup kubernetes.default.svc.cluster.local {dns_ip}")
    assert rc == 0 and "Address: 10.43.0.1" in out

    # Cleanup from a pod without privilege and mounts: nothing changes (and exit 0).
    ops.create(cleanup_pod(AGENT1, "cleanup-unprivileged", privileged=False, mounts=False))
    pod = running(ops, "cleanup-unprivileged")
    rc, out, err = run_in(ops, pod, "cleanup", CLEANUP)
    assert rc == 0 and "Failed to detach all socketlb bpf programs" in err
    assert "cil_sock4_connect" in ops.ssh_ok(AGENT1, "sudo bpftool cgroup tree")
    assert ops.ssh(AGENT1, DNS_PROBE)[0] == 1

    # The cleanup in a privileged hostNetwork pod with the host's bpffs and /run/cilium.
    ops.create(cleanup_pod(AGENT1, "cilium-cleanup"))
    pod = running(ops, "cilium-cleanup")
    rc, out, err = run_in(ops, pod, "cleanup", CLEANUP)
    assert rc == 0, err
    assert "Warning: Destructive operation" in out and "removed all socketlb bpf programs" in out
    assert "removed tc filter cil_from_netdev (ingress) of eth0" in out
    assert "removed map cilium_lb4_services_v2" in out
    assert "cil_" not in ops.ssh_ok(AGENT1, "sudo bpftool cgroup tree")
    assert "cil_" not in ops.ssh_ok(AGENT1, "sudo bpftool net show")
    assert ops.ssh_ok(AGENT1, "sudo ls /sys/fs/bpf/tc/globals").split() == []
    # What the cleanup leaves (it does not touch them): the sysctl file and the CNI binary.
    assert ops.ssh(AGENT1, "test -f /etc/sysctl.d/99-zzz-override_cilium.conf")[0] == 0
    assert ops.ssh(AGENT1, "test -f /opt/cni/bin/cilium-cni")[0] == 0
    rc, out, _ = ops.ssh(AGENT1, DNS_PROBE)
    assert rc == 0 and "Address: 10.43.0.1" in out
    rc, out, _ = run_in(ops, probe, "main", ["nslookup", "kubernetes.default"])
    assert rc == 0 and "kubernetes.default.svc.cluster.local" in out
    # The other nodes keep the stale socket LB until cleaned up there too.
    assert ops.ssh(AGENT2, DNS_PROBE)[0] == 1


def test_a_reboot_clears_the_datapath_but_not_the_files(ops, helm_bin, env):
    docs = ops.migrate(helm_bin, env)
    ops.rollback_without_cleanup(docs)
    assert ops.ssh(AGENT2, DNS_PROBE)[0] == 1
    rc, _, _ = ops.ssh(AGENT2, "sudo reboot")
    assert rc == 0
    ops.until(lambda: ops.node(AGENT2).boot_count == 2 and ops.node(AGENT2).unit_state == "active",
              timeout=60, what="reboot done")
    ops.until(lambda: ops.cni(AGENT2) == "flannel", timeout=30, what="flannel after the reboot")
    assert "cil_" not in ops.ssh_ok(AGENT2, "sudo bpftool cgroup tree")
    assert ops.ssh_ok(AGENT2, "sudo ls /sys/fs/bpf").split() == []
    rc, out, _ = ops.ssh(AGENT2, DNS_PROBE)
    assert rc == 0 and "Address: 10.43.0.1" in out
    # Files on disk stay; with flannel on, containerd does not read /etc/cni/net.d.
    assert ops.ssh(AGENT2, "test -f /etc/cni/net.d/05-cilium.conflist")[0] == 0
    assert ops.ssh(AGENT2, "test -f /etc/sysctl.d/99-zzz-override_cilium.conf")[0] == 0
    assert ops.ssh(SERVER, DNS_PROBE)[0] == 1         # not rebooted: still stale
