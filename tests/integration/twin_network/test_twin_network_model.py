"""The physics of a CNI migration on the twin: node models + workload controllers +
network and Cilium models on a real store, driven through the node command set, the
store and the models' API. The Cilium objects are what the stand-in chart renders with
the real ``helm template`` and the Phase 22 values (``tunnelPort`` set per test).

Each test shows one defect of the original Phase 22 procedure (shared reference §6)
having a visible consequence, or one rule of the Cilium model.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from twin.api import Twin
from twin.controllers.cilium import CRDS
from twin.controllers.network import CILIUM_CONFLIST, NOT_READY_MESSAGE
from twin_network_helpers import (AGENT1, AGENT2, NODES, SERVER, SPEED, Net, deployment,
                                  model_components, pod_ready, render_cilium, sandbox, waiting)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOT_READY_TOLERATION = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]


@pytest.fixture(scope="module")
def render(helm_bin, tmp_path_factory):
    """``render(**sets)``: the stand-in chart's objects, cached per set of values."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_CACHE_HOME=str(home / "k"),
               XDG_DATA_HOME=str(home / "d"))
    cache: dict = {}

    def do(**sets):
        key = tuple(sorted(sets.items()))
        if key not in cache:
            cache[key] = render_cilium(helm_bin, env, **sets)
        return [dict(d) for d in cache[key]]
    return do


def start(tmp_path: Path, **kw) -> Net:
    kernels = kw.pop("kernels", None)
    t = Twin(tmp_path / "twin", speed=SPEED, components=model_components(kernels), **kw).start()
    return Net(t)


@pytest.fixture
def env(tmp_path):
    n = start(tmp_path)
    yield n
    n.t.stop()


def switch_off_flannel(env: Net, *, kube_proxy: bool = False) -> None:
    """The corrected k3s step: server-only options on the server, restart every node."""
    extra = "flannel-backend: none\ndisable-network-policy: true\n"
    if not kube_proxy:
        extra += "disable-kube-proxy: true\n"
    env.add_config(SERVER, extra)
    env.restart(SERVER, AGENT1, AGENT2)


def switch_on_flannel(env: Net) -> None:
    """The rollback of :func:`switch_off_flannel`: the server's config as it was, every node restarted."""
    cfg = env.call(env.node(SERVER).read_text, "/etc/rancher/k3s/config.yaml")
    for line in ("flannel-backend: none", "disable-network-policy: true", "disable-kube-proxy: true"):
        cfg = cfg.replace(line + "\n", "")
    env.call(env.node(SERVER).write, "/etc/rancher/k3s/config.yaml", cfg)
    env.restart(SERVER, AGENT1, AGENT2)


def cilium_takes_over(env: Net, docs: list[dict]) -> None:
    """Install Cilium where containerd will read its conflist: k3s's generated containerd
    config names /etc/cni/net.d only once flannel is off (a conflist written there next
    to a running flannel is never read). Tunnel port 8473: flannel.1 may stay."""
    switch_off_flannel(env, kube_proxy=True)
    env.apply(docs)


def all_agents_ready(env: Net, nodes=NODES) -> bool:
    return all(env.agent_ready(n) for n in nodes)


# ----------------------------------------------------------------------------- defect 1
def test_flannel_lines_on_agents_only_change_nothing(env):
    """Defect 1: flannel-backend/disable-network-policy are server options."""
    for n in (AGENT1, AGENT2):
        env.add_config(n, "flannel-backend: none\ndisable-network-policy: true\n")
    env.restart(AGENT1, AGENT2)
    for n in (AGENT1, AGENT2):
        assert "flannel.1" in env.interfaces(n)
        assert env.cni(n) == "flannel"
        assert any("Unknown flag --flannel-backend found in config.yaml, skipping" in line
                   for line in env.call(env.node(n).journal))
        assert "KUBE-ROUTER-INPUT" in env.iptables(n)   # network policy still runs
    env.create(deployment("probe", 3))
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if pod_ready(p)]) == 3, what="3 probe pods Ready")
    pods = env.pods("default", "app=probe")
    assert {sandbox(p) for p in pods} == {"flannel"}
    assert all(env.reachable(p)[0] for p in pods)
    assert all(env.ready(n)[0] == "True" for n in NODES)


# ----------------------------------------------------------------------------- defect 3
def test_server_flannel_none_leaves_nodes_without_cni(env):
    """After the server restart with flannel-backend none there is no CNI anywhere."""
    fixture_pod = next(p for p in env.list("pods") if sandbox(p) == "flannel")
    switch_off_flannel(env)
    env.until(lambda: all(env.ready(n)[0] == "False" for n in NODES), what="nodes NotReady")
    for n in NODES:
        status, reason, message = env.ready(n)
        assert (reason, message) == ("KubeletNotReady", NOT_READY_MESSAGE)
        assert "cni plugin not initialized" in message
        assert "flannel.1" in env.interfaces(n)     # disabling removes nothing
        assert env.cni(n) is None
    env.until(lambda: all(any(t["key"] == "node.kubernetes.io/not-ready" and t["effect"] == "NoExecute"
                              for t in (env.get("nodes", None, n)["spec"].get("taints") or ()))
                          for n in NODES), what="not-ready taints")

    app = deployment("probe", 2)
    app["spec"]["template"]["spec"]["tolerations"] = NOT_READY_TOLERATION
    host = deployment("hostprobe", 2, host_network=True)
    host["spec"]["template"]["spec"]["tolerations"] = NOT_READY_TOLERATION
    env.create(app)
    env.create(host)
    env.until(lambda: len([p for p in env.pods("default", "app=hostprobe")
                           if pod_ready(p)]) == 2, what="hostNetwork pods Running")
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if waiting(p)[0] == "ContainerCreating" and waiting(p)[1]]) == 2,
              what="non-host pods ContainerCreating")
    for p in env.pods("default", "app=probe"):
        assert p["status"]["phase"] == "Pending"
        assert "cni plugin not initialized" in waiting(p)[1]
        assert not p["status"].get("podIP")
    for p in env.pods("default", "app=hostprobe"):
        assert sandbox(p) == "host" and p["status"]["phase"] == "Running"
    # Pods that were running keep running, but nothing carries their traffic.
    old = env.get("pods", fixture_pod["metadata"]["namespace"], fixture_pod["metadata"]["name"])
    assert old["status"]["phase"] == "Running"
    ok, why = env.reachable(old)
    assert not ok and "no working CNI" in why


# ----------------------------------------------------------------------------- defect 4
def test_install_while_flannel1_exists_leaves_that_agent_unready(env, render):
    switch_off_flannel(env)
    env.sh(SERVER, "sudo ip link delete flannel.1")
    env.sh(AGENT1, "sudo ip link delete flannel.1")
    env.apply(render(tunnelPort=0))      # no tunnel-port: VXLAN on 8472, flannel's port
    assert "tunnel-port" not in env.get("configmaps", "kube-system", "cilium-config")["data"]
    env.until(lambda: all_agents_ready(env, (SERVER, AGENT1)), what="agents Ready where flannel.1 is gone")
    env.until(lambda: env.agent(AGENT2).restarts >= 2, what="restarts growing")
    a = env.agent(AGENT2)
    assert not a.ready and a.waiting == "CrashLoopBackOff"
    assert "failed to create vxlan device: address already in use" in a.reason
    assert "port 8472 is used by flannel.1" in a.reason
    pod = env.get("pods", "kube-system", a.pod)
    assert pod["status"]["phase"] == "Running" and not pod_ready(pod)
    # As on a node: the waiting message is the kubelet's back-off; the agent's own words
    # are in its log and (FallbackToLogsOnError) in the crash's termination message.
    assert waiting(pod)[1].startswith("back-off ")
    crashed = next(cs for cs in pod["status"]["containerStatuses"] if cs["name"] == "cilium-agent")
    assert crashed["lastState"]["terminated"]["exitCode"] == 1
    assert "address already in use" in crashed["lastState"]["terminated"]["message"]
    assert env.ready(AGENT2)[0] == "False"
    assert env.cni(AGENT2) is None

    # Where the agent is Ready, it set the node up.
    for n in (SERVER, AGENT1):
        assert {"cilium_host", "cilium_net", "cilium_vxlan"} <= env.interfaces(n)
        assert env.node(n).interfaces["cilium_vxlan"].info["vxlan_port"] == 8472
        assert env.call(env.node(n).exists, CILIUM_CONFLIST)
        assert ":CILIUM_INPUT" in env.iptables(n) and "cilium-feeder: CILIUM_FORWARD" in env.iptables(n)
    env.until(lambda: env.ready(SERVER)[0] == "True", what="server Ready with cilium")

    env.sh(AGENT2, "sudo ip link delete flannel.1")
    env.until(lambda: env.agent_ready(AGENT2), what="agent Ready once flannel.1 is gone")
    env.until(lambda: env.ready(AGENT2)[0] == "True", what="node Ready")
    assert env.cni(AGENT2) == "cilium"
    env.until(lambda: len(env.list("ciliumnodes", group="cilium.io")) == 3, what="3 CiliumNodes")
    for cn in env.list("ciliumnodes", group="cilium.io"):
        node = env.get("nodes", None, cn["metadata"]["name"])
        assert cn["spec"]["ipam"]["podCIDRs"] == [node["spec"]["podCIDR"]]    # ipam kubernetes
        types = {a["type"] for a in cn["spec"]["addresses"]}
        assert types == {"InternalIP", "CiliumInternalIP"}


# ----------------------------------------------------------------------------- defect 2
def test_kube_proxy_chains_stay_without_disable_kube_proxy(env, render):
    switch_off_flannel(env, kube_proxy=True)       # the original step: no disable-kube-proxy
    for n in NODES:
        env.sh(n, "sudo ip link delete flannel.1")
    env.apply(render(tunnelPort=0))
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    for n in NODES:
        assert env.agent(n).kpr_active      # Cilium replaces kube-proxy ...
        assert "KUBE-SVC-" in env.iptables(n)   # ... but k3s's kube-proxy still programs

    def clean(n: str) -> None:
        kept = "".join(line + "\n" for line in env.iptables(n).splitlines() if "KUBE" not in line)
        res = env.call(env.node(n).exec, "sudo iptables-restore", kept.encode(), timeout=30)
        assert res.rc == 0, res.stderr

    clean(AGENT1)
    assert "KUBE-SVC-" not in env.iptables(AGENT1)
    env.until(lambda: "KUBE-SVC-" in env.node(AGENT1).iptables_save(),
              what="kube-proxy re-creating its chains")

    # The fix: disable-kube-proxy on the server, restart, clean once: they stay gone.
    env.add_config(SERVER, "disable-kube-proxy: true\n")
    env.restart(SERVER, AGENT1, AGENT2)
    assert "KUBE-SVC-" in env.iptables(AGENT1)      # stale chains survive the restart
    clean(AGENT1)
    seen = env.now()
    env.until(lambda: env.now() > seen + 15, what="a resync period")
    assert "KUBE-SVC-" not in env.iptables(AGENT1)
    assert env.agent(AGENT1).kpr_active


# ----------------------------------------------------------------------------- defect 6
def test_old_pods_stay_unmanaged_until_restarted(env, render):
    """Tunnel port 8473, flannel off on the server: Cilium takes over every node, and the
    pods flannel created keep running without a network."""
    cilium_takes_over(env, render(tunnelPort=8473))
    env.until(lambda: all_agents_ready(env), what="agents Ready next to flannel.1")
    env.until(lambda: all(env.cni(n) == "cilium" for n in NODES), what="cilium everywhere")
    env.until(lambda: all(env.ready(n)[0] == "True" for n in NODES), what="nodes Ready on cilium")
    assert all("flannel.1" in env.interfaces(n) for n in NODES)    # disabling removed nothing

    old = next(p for p in env.pods("whoami") if sandbox(p) == "flannel")
    ns, name = old["metadata"]["namespace"], old["metadata"]["name"]
    ok, why = env.reachable(old)
    assert old["status"]["phase"] == "Running" and pod_ready(old)   # a "non-Running pods" check passes
    assert not ok and why.startswith("unmanaged")
    assert env.get("ciliumendpoints", ns, name, "cilium.io") is None

    names = {p["metadata"]["name"] for p in env.pods(ns)}
    env.delete("pods", ns, name)
    new = env.until(lambda: next((p for p in env.pods(ns)
                                  if p["metadata"]["name"] not in names and pod_ready(p)), None),
                    what="replacement pod Ready")
    assert sandbox(new) == "cilium"
    assert env.reachable(new) == (True, "managed by cilium")
    cep = env.until(lambda: env.get("ciliumendpoints", ns, new["metadata"]["name"], "cilium.io"),
                    what="CiliumEndpoint")
    assert cep["status"]["networking"]["addressing"][0]["ipv4"] == new["status"]["podIP"]
    assert cep["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
    # managed (CEPs) < total non-host pods while old pods remain
    total = [p for p in env.list("pods") if not p["spec"].get("hostNetwork")
             and p["status"].get("phase") == "Running"]
    assert len(env.list("ciliumendpoints", group="cilium.io")) < len(total)


def test_unmanaged_pod_watcher_restarts_only_kube_dns(env, render):
    cilium_takes_over(env, render(tunnelPort=8473))   # unmanagedPodWatcher.restart: default true (15 s)
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    apps_before = {p["metadata"]["name"] for p in env.pods("whoami")}
    env.until(lambda: env.call(lambda: list(env.cil.watcher_restarts)), what="a kube-dns restart")
    dns = env.until(lambda: [p for p in env.pods("kube-system", "k8s-app=kube-dns")
                             if pod_ready(p) and sandbox(p) == "cilium"], what="kube-dns on cilium")
    assert dns
    for ns, name in env.call(lambda: list(env.cil.watcher_restarts)):
        assert ns == "kube-system" and name.startswith("coredns")
    assert {p["metadata"]["name"] for p in env.pods("whoami")} == apps_before


# ----------------------------------------------------------------------------- CRDs
def test_crds_registered_only_once_the_operator_is_ready(tmp_path, render):
    env = start(tmp_path, faults={"cilium_image_pull_fails": True})
    try:
        assert env.rtype("ciliumnodes", "cilium.io") is None   # "no such resource type"
        seen: list[tuple[str, bool]] = []

        def watch(etype, rtype, obj, old):
            if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions") and etype == "ADDED":
                seen.append((obj["metadata"]["name"], env.cil.operator_ready()))
        env.call(env.rt.store.subscribe, watch)
        env.apply(render(tunnelPort=8473))
        env.until(lambda: [p for p in env.pods("kube-system", "io.cilium/app=operator")
                           if waiting(p)[0] == "ImagePullBackOff"], what="operator ImagePullBackOff")
        seen_at = env.now()
        env.until(lambda: env.now() > seen_at + 30, what="time passing")
        assert env.rtype("ciliumnodes", "cilium.io") is None
        assert not seen

        env.t.set_fault("cilium_image_pull_fails", False)
        env.until(lambda: env.call(lambda: env.cil.crds_registered), what="CRDs registered")
        assert seen and all(ready for _, ready in seen)     # registered by a Ready operator
        names = {n for n, _ in seen}
        assert names == {f"{c.plural}.cilium.io" for c in CRDS}
        cn = env.rtype("ciliumnodes", "cilium.io")
        assert not cn.namespaced and "cn" in cn.short_names and cn.version == "v2"
        cep = env.rtype("ciliumendpoints", "cilium.io")
        assert cep.namespaced and "cep" in cep.short_names
        for version in ("v2", "v2alpha1"):
            assert env.call(env.rt.store.lookup, "cilium.io", version, "ciliumnodeconfigs") is not None
        assert env.call(env.rt.store.lookup, "cilium.io", "v2alpha1", "ciliuml2announcementpolicies")
        env.until(lambda: all_agents_ready(env), what="agents Ready after the CRDs")
    finally:
        env.t.stop()


# ----------------------------------------------------------------------------- faults
def test_image_pull_fault_keeps_agents_image_pull_backoff(tmp_path, render):
    env = start(tmp_path, faults={"cilium_image_pull_fails": True})
    try:
        env.apply(render(tunnelPort=8473))
        env.until(lambda: len([p for p in env.pods("kube-system", "k8s-app=cilium")
                               if waiting(p)[0] == "ImagePullBackOff"]) == 3, what="ImagePullBackOff")
        seen_at = env.now()
        env.until(lambda: env.now() > seen_at + 60, what="a minute of cluster time")
        for n in NODES:
            a = env.agent(n)
            assert not a.ready and a.waiting == "ImagePullBackOff" and "image pull" in a.reason
            assert env.cni(n) == "flannel"
        for p in env.pods("kube-system", "k8s-app=cilium"):
            assert p["status"]["phase"] == "Pending"
            assert 'Back-off pulling image "quay.io/cilium/cilium' in waiting(p)[1]
    finally:
        env.t.stop()


def test_kernel_too_old_keeps_agent_unready(tmp_path, render):
    env = start(tmp_path, kernels={AGENT1: "5.4.0-42-generic"})
    try:
        env.apply(render(tunnelPort=8473))
        env.until(lambda: all_agents_ready(env, (SERVER, AGENT2)), what="agents on new kernels")
        env.until(lambda: env.agent(AGENT1).waiting == "CrashLoopBackOff", what="crash loop")
        a = env.agent(AGENT1)
        assert not a.ready and "minimal supported kernel version is >= 5.10" in a.reason
        assert "5.4.0-42-generic" in a.reason
        assert env.cni(AGENT1) == "flannel"
    finally:
        env.t.stop()


def test_agent_needs_a_reachable_api_server(env, render):
    env.apply(render(tunnelPort=8473, k8sServiceHost="10.0.0.99", k8sServicePort=6443))
    env.until(lambda: all(env.agent(n).waiting == "CrashLoopBackOff" for n in NODES),
              what="crash loops")
    for n in NODES:
        assert "unable to reach the API server at 10.0.0.99:6443" in env.agent(n).reason
    assert env.rtype("ciliumnodes", "cilium.io") is None      # the operator cannot reach it either


def test_agent_reaches_the_server_internal_ip(env, render):
    env.apply(render(tunnelPort=8473, k8sServiceHost="10.0.0.2", k8sServicePort=6443))
    env.until(lambda: all_agents_ready(env), what="agents Ready via the server's InternalIP")
    assert env.agent(AGENT1).api == "10.0.0.2:6443"


# ----------------------------------------------------------------------------- uninstall
def test_uninstall_leaves_interfaces_and_conflist_until_reboot(env, render):
    switch_off_flannel(env)
    for n in NODES:
        env.sh(n, "sudo ip link delete flannel.1")
    docs = render(tunnelPort=0)
    env.apply(docs)
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    env.until(lambda: all(env.ready(n)[0] == "True" for n in NODES), what="nodes Ready")

    env.delete_release(docs)
    env.until(lambda: not env.pods("kube-system", "k8s-app=cilium"), what="agents gone")
    for n in NODES:
        assert {"cilium_host", "cilium_net", "cilium_vxlan"} <= env.interfaces(n)
        assert "CILIUM_INPUT" in env.iptables(n)
        assert env.call(env.node(n).exists, CILIUM_CONFLIST)
        assert env.cni(n) is None
    env.until(lambda: all(env.ready(n)[0] == "False" for n in NODES), what="nodes NotReady again")

    env.sh(AGENT1, "sudo reboot")
    env.until(lambda: env.node(AGENT1).boot_count == 2 and env.node(AGENT1).unit_state == "active",
              what="reboot done")
    assert not any(i.startswith("cilium_") for i in env.interfaces(AGENT1))
    assert "CILIUM" not in env.iptables(AGENT1)
    assert env.call(env.node(AGENT1).exists, CILIUM_CONFLIST)      # a file on disk stays
    assert {"cilium_host", "cilium_vxlan"} <= env.interfaces(AGENT2)   # other nodes untouched


def test_reboot_gives_pods_new_sandboxes_from_the_current_cni(env, render):
    cilium_takes_over(env, render(tunnelPort=8473))
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    before = [p for p in env.list("pods") if p["spec"].get("nodeName") == AGENT1
              and not p["spec"].get("hostNetwork") and sandbox(p) == "flannel"]
    assert before
    env.sh(AGENT1, "sudo reboot")
    env.until(lambda: env.node(AGENT1).boot_count == 2, what="reboot")
    env.until(lambda: env.agent_ready(AGENT1), what="agent Ready after the reboot")
    key = (before[0]["metadata"]["namespace"], before[0]["metadata"]["name"])
    pod = env.until(lambda: (lambda p: p if p and sandbox(p) == "cilium" and pod_ready(p) else None)(
        env.get("pods", *key)), what="pod re-sandboxed by cilium")
    assert env.reachable(pod)[0]


# ----------------------------------------------------------------------------- k3s down
def test_stopped_k3s_makes_the_node_unknown_but_a_restart_does_not(env):
    env.restart(AGENT1)               # a few seconds down: shorter than the grace period
    seen = env.now()
    env.until(lambda: env.now() > seen + 60, what="a minute of cluster time")
    assert env.ready(AGENT1)[0] == "True"

    env.sh(AGENT1, "sudo systemctl stop k3s-agent")
    env.until(lambda: env.ready(AGENT1)[0] == "Unknown", what="Ready Unknown")
    status, reason, message = env.ready(AGENT1)
    assert (reason, message) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    node = env.get("nodes", None, AGENT1)
    assert all(c["status"] == "Unknown" for c in node["status"]["conditions"]
               if c["type"] in ("MemoryPressure", "DiskPressure", "PIDPressure"))
    env.until(lambda: any(t["key"] == "node.kubernetes.io/unreachable"
                          for t in env.get("nodes", None, AGENT1)["spec"].get("taints") or ()),
              what="unreachable taint")
    env.sh(AGENT1, "sudo systemctl start k3s-agent")
    env.until(lambda: env.ready(AGENT1)[0] == "True", what="Ready again")
    node = env.get("nodes", None, AGENT1)
    assert all(c["status"] == "False" for c in node["status"]["conditions"]
               if c["type"] in ("MemoryPressure", "DiskPressure", "PIDPressure"))


# ----------------------------------------------------------------------------- rollback
def test_cilium_pods_are_unreachable_once_the_node_is_back_on_flannel(env, render):
    docs = render(tunnelPort=8473)
    cilium_takes_over(env, docs)
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    env.create(deployment("probe", 2))
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if pod_ready(p) and sandbox(p) == "cilium"]) == 2, what="probe pods on cilium")
    probe = env.pods("default", "app=probe")
    env.until(lambda: all(env.get("ciliumendpoints", "default", p["metadata"]["name"], "cilium.io")
                          for p in probe), what="their CiliumEndpoints")
    assert all(env.reachable(p)[0] for p in probe)

    env.delete_release(docs)
    switch_on_flannel(env)
    env.until(lambda: all(env.cni(n) == "flannel" for n in NODES), what="flannel again")
    for p in env.pods("default", "app=probe"):
        ok, why = env.reachable(p)
        assert not ok and "sandbox created by cilium" in why and "now runs flannel" in why
    # Deleting a pod removes its CiliumEndpoint with it (owner reference).
    gone = probe[0]["metadata"]["name"]
    env.delete("pods", "default", gone)
    env.until(lambda: env.get("ciliumendpoints", "default", gone, "cilium.io") is None, what="CEP gone")
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if pod_ready(p) and sandbox(p) == "flannel"]) == 1, what="replacement on flannel")


# ----------------------------------------------------------------------------- defect 5
def pinned(name: str, node: str, replicas: int) -> dict:
    return deployment(name, replicas, node=node)


def test_ipam_kubernetes_reuses_addresses_old_flannel_pods_hold(env, render):
    cilium_takes_over(env, render(tunnelPort=8473))     # Phase 22 values: ipam.mode kubernetes
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    env.create(pinned("probe", AGENT1, 4))
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if pod_ready(p) and sandbox(p) == "cilium"]) == 4, what="probe pods")
    node_cidr = env.get("nodes", None, AGENT1)["spec"]["podCIDR"]
    new_ips = {p["status"]["podIP"] for p in env.pods("default", "app=probe")}
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(node_cidr) for ip in new_ips)
    old_ips = {p["status"]["podIP"] for p in env.list("pods")
               if p["spec"].get("nodeName") == AGENT1 and sandbox(p) == "flannel"
               and p["status"].get("phase") == "Running"}
    assert new_ips & old_ips, "cilium should hand out an address an old flannel pod still holds"


def test_ipam_cluster_pool_uses_a_new_range(env, render):
    cilium_takes_over(env, render(tunnelPort=8473, **{"ipam.mode": "cluster-pool",
                                                      "ipam.operator.clusterPoolIPv4PodCIDRList": "{10.100.0.0/16}"}))
    env.until(lambda: all_agents_ready(env), what="agents Ready")
    env.create(pinned("probe", AGENT1, 3))
    env.until(lambda: len([p for p in env.pods("default", "app=probe")
                           if pod_ready(p) and sandbox(p) == "cilium"]) == 3, what="probe pods")
    cn = env.get("ciliumnodes", None, AGENT1, "cilium.io")
    (cidr,) = cn["spec"]["ipam"]["podCIDRs"]
    assert cidr.startswith("10.100.") and cidr.endswith("/24")
    for p in env.pods("default", "app=probe"):
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(cidr)
