"""The real helm and kubectl against a full twin (API server, SSH, chart repository) with
the network and Cilium models: ``helm upgrade --install --wait`` times out while an
agent crash-loops on ``flannel.1`` and succeeds once it is deleted; ``kubectl get
ciliumnodes`` only works after the operator registered the CRDs; ``helm uninstall``
leaves the node's interfaces and conflist. Runs with the stand-in chart and, when
``../shared/charts/cilium-1.19.3.tgz`` is present, with the official archive."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from twin.api import Twin, _build_components
from twin.controllers.cilium import CiliumModel
from twin.controllers.network import CILIUM_CONFLIST, NetworkModel
from twin_network_helpers import AGENT1, AGENT2, NODES, PHASE22_VALUES, SERVER, SPEED, Net

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def full_components(rt):
    return _build_components(rt) + [NetworkModel(), CiliumModel()]


@pytest.fixture(params=["stand-in", "official"])
def net(request, tmp_path):
    chart = request.getfixturevalue("cilium_chart") if request.param == "official" else None
    t = Twin(tmp_path / "twin", speed=SPEED, cilium_chart=chart, components=full_components).start()
    yield Net(t)
    t.stop()


def run(args: list[str], env: dict[str, str], *, check: bool = True,
        timeout: float = 180) -> subprocess.CompletedProcess:
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{Path(args[0]).name} {' '.join(args[1:3])}: {p.stderr[-2000:]}"
    return p


def test_helm_wait_follows_the_agents(net, helm_bin, kubectl_bin, tool_env):
    env = dict(tool_env, KUBECONFIG=str(net.t.kubeconfig))
    kubectl = [kubectl_bin, "--request-timeout=20s"]
    nope = run(kubectl + ["get", "ciliumnodes"], env, check=False)
    assert nope.returncode != 0 and "the server doesn't have a resource type" in nope.stderr

    net.add_config(SERVER, "flannel-backend: none\ndisable-network-policy: true\n"
                           "disable-kube-proxy: true\n")
    net.restart(SERVER, AGENT1, AGENT2)
    net.until(lambda: all(net.ready(n)[0] == "False" for n in NODES), what="no CNI")
    net.sh(SERVER, "sudo ip link delete flannel.1")
    net.sh(AGENT1, "sudo ip link delete flannel.1")

    run([helm_bin, "repo", "add", "twin", net.t.endpoints["charts"]], env)
    install = [helm_bin, "upgrade", "--install", "cilium", "twin/cilium", "--version", "1.19.3",
               "-n", "kube-system", "-f", str(PHASE22_VALUES), "--set", "tunnelPort=0", "--wait"]
    first = run(install + ["--timeout", "6s"], env, check=False)
    assert first.returncode != 0, first.stdout
    assert "DaemonSet/kube-system/cilium" in first.stderr or "deadline" in first.stderr
    # helm gave up after 6 s whatever the agents were doing; the agent on AGENT2 reaches
    # CrashLoopBackOff in its own time (its pod is created, started and crashes first:
    # on a loaded machine that can take longer than helm's 6 s), and is the only one.
    def crash_looping() -> list[str]:
        pods = run(kubectl + ["get", "pods", "-n", "kube-system", "-l", "k8s-app=cilium", "-o", "wide"],
                   env).stdout
        return [line for line in pods.splitlines() if "CrashLoopBackOff" in line]

    crashing = net.until(crash_looping, timeout=90, what="a cilium agent in CrashLoopBackOff")
    assert len(crashing) == 1 and AGENT2 in crashing[0]
    a = net.agent(AGENT2)
    assert "port 8472 is used by flannel.1" in a.reason

    net.sh(AGENT2, "sudo ip link delete flannel.1")
    second = run(install + ["--timeout", "90s"], env)
    assert "STATUS: deployed" in second.stdout
    cn = run(kubectl + ["get", "ciliumnodes", "-o", "name"], env).stdout.split()
    assert sorted(cn) == sorted(f"ciliumnode.cilium.io/{n}" for n in NODES)
    nodes = run(kubectl + ["get", "nodes", "--no-headers"], env).stdout
    assert nodes.count(" Ready ") == 3
    for n in NODES:
        assert net.agent(n).kpr_active

    run([helm_bin, "uninstall", "cilium", "-n", "kube-system", "--wait", "--timeout", "60s"], env)
    net.until(lambda: not net.pods("kube-system", "k8s-app=cilium"), what="agent pods gone")
    for n in NODES:
        assert {"cilium_host", "cilium_net", "cilium_vxlan"} <= net.interfaces(n)
        assert net.call(net.node(n).exists, CILIUM_CONFLIST)
    # The CRDs (and CiliumNodes) are not part of the release: they stay.
    assert run(kubectl + ["get", "ciliumnodes", "-o", "name"], env).stdout.split()
