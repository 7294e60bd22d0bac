"""``kubectl exec`` into Cilium agents of a twin that migrates: ``cilium-dbg status`` and
``service list`` tell what the Cilium model knows; a crash-looping agent cannot be
exec'd into; other images do not have ``cilium-dbg``."""
from __future__ import annotations

import subprocess

import pytest

from twin.api import Twin, _build_components
from twin.controllers.cilium import CiliumModel
from twin.controllers.network import NetworkModel
from twin_network_helpers import AGENT1, AGENT2, SERVER, SPEED, Net, render_cilium

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def net(tmp_path):
    t = Twin(tmp_path / "twin", speed=SPEED,
             components=lambda rt: _build_components(rt) + [NetworkModel(), CiliumModel()]).start()
    yield Net(t)
    t.stop()


def kubectl(bin_: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_, "--request-timeout=20s", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_cilium_dbg_in_the_agents(net, kubectl_bin, helm_bin, tool_env):
    env = dict(tool_env, KUBECONFIG=str(net.t.kubeconfig))
    net.add_config(SERVER, "flannel-backend: none\ndisable-network-policy: true\n"
                           "disable-kube-proxy: true\n")
    net.restart(SERVER, AGENT1, AGENT2)
    net.sh(SERVER, "sudo ip link delete flannel.1")
    net.sh(AGENT1, "sudo ip link delete flannel.1")
    net.apply(render_cilium(helm_bin, tool_env, tunnelPort=0))   # VXLAN on 8472: AGENT2 crashes
    net.until(lambda: net.agent_ready(SERVER) and net.agent_ready(AGENT1), what="two agents Ready")
    net.until(lambda: net.agent(AGENT2).waiting == "CrashLoopBackOff", what="third agent crash-looping")

    good = net.agent(SERVER).pod
    p = kubectl(kubectl_bin, env, "exec", "-n", "kube-system", good, "-c", "cilium-agent", "--",
                "cilium-dbg", "status")
    assert p.returncode == 0, p.stderr
    lines = dict(line.split(":", 1) for line in p.stdout.splitlines() if ":" in line)
    assert lines["KubeProxyReplacement"].split()[0] == "True"
    assert lines["Cilium"].split()[:2] == ["Ok", "1.19.3"]
    assert lines["Routing"].split() == ["Network:", "Tunnel", "[vxlan]", "Host:", "Legacy"]
    assert lines["Cluster health"].split()[:2] == ["2/3", "reachable"]
    assert lines["Controller Status"].split()[1] == "healthy"
    verbose = kubectl(kubectl_bin, env, "exec", "-n", "kube-system", good, "-c", "cilium-agent",
                      "--", "cilium", "status", "--verbose").stdout
    assert f"{AGENT2}" in verbose and "Unreachable" in verbose

    services = kubectl(kubectl_bin, env, "exec", "-n", "kube-system", good, "-c", "cilium-agent",
                       "--", "cilium-dbg", "service", "list").stdout.splitlines()
    assert services[0].split() == ["ID", "Frontend", "Service", "Type", "Backend"]
    assert any("10.43.0.1:443/TCP" in row and "ClusterIP" in row for row in services)

    bad = net.agent(AGENT2).pod
    p = kubectl(kubectl_bin, env, "exec", "-n", "kube-system", bad, "-c", "cilium-agent", "--",
                "cilium-dbg", "status")
    assert p.returncode == 1
    if 'container not found ("cilium-agent")' not in p.stderr:
        # Between two crashes the container runs for a moment: the agent then says why.
        failing = dict(line.split(":", 1) for line in p.stdout.splitlines() if ":" in line)
        assert failing["Cilium"].split()[0] == "Failure" and "8472" in failing["Cilium"]
        assert "command terminated with exit code 1" in p.stderr

    coredns = net.pods("kube-system", "k8s-app=kube-dns")[0]["metadata"]["name"]
    p = kubectl(kubectl_bin, env, "exec", "-n", "kube-system", coredns, "--", "cilium-dbg", "status")
    assert p.returncode == 1
    assert 'exec: "cilium-dbg": executable file not found in $PATH' in p.stderr
