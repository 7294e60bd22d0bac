"""Events and logs of a migration going wrong, as kubectl shows them: a kubelet that
stops posting (NodeNotReady, stale Lease), nodes without a CNI (NetworkNotReady), and a
Cilium agent crash-looping on flannel's VXLAN port 8472 (issue 10, rows 3, 4 and 7)."""
from __future__ import annotations

import pytest

from twin_lifecycle_helpers import CILIUM_VALUES, STANDIN_CHART, condition, container_status, start_twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NETWORK_NOT_READY = ("network is not ready: container runtime network not ready: NetworkReady=false "
                     "reason:NetworkPluginNotReady message:Network plugin returns error: "
                     "cni plugin not initialized")
VXLAN_IN_USE = ("failed to setup vxlan tunnel device: setting up vxlan device: creating vxlan device "
                "cilium_vxlan: setting up device cilium_vxlan: address already in use")


@pytest.fixture(scope="module")
def kube(kubectl_bin, helm_bin, tmp_path_factory):
    k = start_twin(tmp_path_factory, kubectl_bin, helm_bin)
    yield k
    k.twin.stop()


def sh(kube, node: str, command: str) -> None:
    nm = kube.twin.rt.nodes[node]
    res = kube.twin.call(nm.exec, command, timeout=60)
    assert res.rc == 0, f"{node}: {command}: {res.stderr!r}"


def roles(kube) -> tuple[str, list[str]]:
    nodes = kube.twin.rt.nodes
    server = next(n for n, m in nodes.items() if m.role == "server")
    return server, sorted(n for n, m in nodes.items() if m.role != "server")


def test_a_stopped_kubelet_turns_the_node_not_ready_with_events(kube):
    _, agents = roles(kube)
    node = agents[0]
    lease = kube.until(lambda: kube.try_get("lease", node, "-n", "kube-node-lease"), what="lease")
    sh(kube, node, "sudo systemctl stop k3s-agent")
    kube.until(lambda: condition(kube.get("node", node), "Ready")["status"] == "Unknown",
               what="Ready Unknown", timeout=60)
    ready = condition(kube.get("node", node), "Ready")
    assert ready["reason"] == "NodeStatusUnknown" and ready["message"] == "Kubelet stopped posting node status."
    events = kube.until(lambda: [e for e in kube.events("default", node) if e["reason"] == "NodeNotReady"],
                        what="NodeNotReady event")
    assert events[0]["message"] == f"Node {node} status is now: NodeNotReady"
    assert events[0]["involvedObject"]["kind"] == "Node"
    pods = [p for p in kube.get("pods", "-A")["items"] if p["spec"].get("nodeName") == node]
    some = pods[0]["metadata"]
    assert any(e["reason"] == "NodeNotReady" and e["type"] == "Warning"
               for e in kube.events(some["namespace"], some["name"]))
    # the kubelet renews nothing while it is down
    stale = kube.get("lease", node, "-n", "kube-node-lease")["spec"]["renewTime"]
    others = {a: kube.get("lease", a, "-n", "kube-node-lease")["spec"]["renewTime"] for a in agents[1:]}
    kube.until(lambda: all(kube.get("lease", a, "-n", "kube-node-lease")["spec"]["renewTime"] != t
                           for a, t in others.items()), what="other leases renewed")
    assert kube.get("lease", node, "-n", "kube-node-lease")["spec"]["renewTime"] == stale
    assert lease["spec"]["holderIdentity"] == node
    sh(kube, node, "sudo systemctl start k3s-agent")
    kube.until(lambda: condition(kube.get("node", node), "Ready")["status"] == "True", what="Ready again")
    kube.until(lambda: any(e["reason"] == "NodeReady" for e in kube.events("default", node)), what="NodeReady")


def test_without_a_cni_new_pods_wait_with_network_not_ready_events(kube):
    server, agents = roles(kube)
    nm = kube.twin.rt.nodes[server]
    cfg = kube.twin.call(nm.read_text, "/etc/rancher/k3s/config.yaml")
    kube.twin.call(nm.write, "/etc/rancher/k3s/config.yaml",
                   cfg.rstrip("\n") + "\nflannel-backend: none\ndisable-network-policy: true\n")
    sh(kube, server, "sudo systemctl restart k3s")
    for a in agents:
        sh(kube, a, "sudo systemctl restart k3s-agent")
    kube.until(lambda: all(condition(n, "Ready")["status"] == "False" for n in kube.get("nodes")["items"]),
               what="nodes NotReady", timeout=60)
    kube.kubectl("create", "namespace", "stuck")
    # an ordinary pod is not even scheduled: every node carries the not-ready taint
    kube.kubectl("run", "unscheduled", "-n", "stuck", "--image=nginx:1.27")
    kube.until(lambda: any(e["reason"] == "FailedScheduling" and "node.kubernetes.io/not-ready" in e["message"]
                           for e in kube.events("stuck", "unscheduled")), what="FailedScheduling")
    # one that tolerates it lands, and waits for a sandbox
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: waiting, namespace: stuck}
spec:
  tolerations: [{key: node.kubernetes.io/not-ready, operator: Exists}]
  containers: [{name: web, image: "nginx:1.27"}]
""")
    kube.until(lambda: any(e["reason"] == "NetworkNotReady" for e in kube.events("stuck", "waiting")),
               what="NetworkNotReady event")
    event = next(e for e in kube.events("stuck", "waiting") if e["reason"] == "NetworkNotReady")
    assert event["type"] == "Warning" and event["message"] == NETWORK_NOT_READY
    assert event["source"]["component"] == "kubelet"
    pod = kube.get("pod", "waiting", "-n", "stuck")
    assert pod["status"]["phase"] == "Pending"
    assert "ContainerCreating" in kube.kubectl("get", "pod", "waiting", "-n", "stuck").stdout


def test_agent_crash_looping_on_port_8472_says_why_in_logs_and_events(kube):
    # flannel is off but its flannel.1 is still on every node: VXLAN on 8472 collides
    kube.helm("install", "cilium", str(STANDIN_CHART), "-n", "kube-system", "-f", str(CILIUM_VALUES),
              "--set", "tunnelPort=8472")

    def agents():
        return kube.get("pods", "-n", "kube-system", "-l", "k8s-app=cilium")["items"]
    kube.until(lambda: agents() and all(container_status(p, "cilium-agent")["restartCount"] >= 2
                                        for p in agents()), what="agents restarting", timeout=90)
    pod = agents()[0]
    name = pod["metadata"]["name"]
    # one listing: a crash-looping agent alternates between CrashLoopBackOff (waiting out the
    # back-off) and Running (restarted), so two listings may each catch the other state
    listing = kube.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=cilium").stdout.splitlines()[1:]
    assert listing and all("CrashLoopBackOff" in line or "Running" in line for line in listing), listing
    previous = kube.kubectl("logs", name, "-n", "kube-system", "-c", "cilium-agent", "--previous").stdout
    assert VXLAN_IN_USE in previous and "level=fatal" in previous
    assert "port=8472" in previous
    cs = container_status(kube.get("pod", name, "-n", "kube-system"), "cilium-agent")
    last = cs["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("Error", 1)
    assert VXLAN_IN_USE in last["message"]          # terminationMessagePolicy: FallbackToLogsOnError
    backoff = [e for e in kube.events("kube-system", name) if e["reason"] == "BackOff"]
    assert backoff and backoff[0]["type"] == "Warning"
    assert backoff[0]["message"].startswith(f"Back-off restarting failed container cilium-agent in pod {name}_")
    assert backoff[0]["involvedObject"]["fieldPath"] == "spec.containers{cilium-agent}"
    listed = kube.kubectl("get", "events", "-n", "kube-system", "--field-selector", f"involvedObject.name={name}")
    assert "BackOff" in listed.stdout and "Started" in listed.stdout
    # the chart has no test hooks (official and stand-in alike): helm test runs nothing
    tested = kube.helm("test", "cilium", "-n", "kube-system").stdout
    assert "Phase:" not in tested
