"""Cilium's live migration on the twin (docs/node-by-node.md): Cilium installed in
migration mode next to a running flannel, a CiliumNodeConfig that takes effect on a
labelled node only when its agent pod is re-created, and both overlays side by side.

The chart's values are the ones the node-by-node strategy uses: the new pool
10.245.0.0/16, VXLAN on 8473, ``cni.customConf=true``, ``cni.uninstall=false``,
policy enforcement off, legacy host routing, and ``cni.confPath``/``cni.binPath`` set to
the folders k3s's containerd reads while flannel is on (F6, F7)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from twin.api import Twin
from twin.podexec import cilium_dbg
from twin_network_helpers import (AGENT1, AGENT2, NODES, SERVER, SPEED, Net, deployment,
                                  model_components, pod_ready, render_cilium, sandbox)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

K3S_CONF_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
K3S_BIN_DIR = "/var/lib/rancher/k3s/data/cni"
NEW_POOL = "10.245.0.0/16"
LABEL = "io.cilium.migration/cilium-default"
MIGRATION = {
    "tunnelPort": 8473, "kubeProxyReplacement": "false", "ipam.mode": "cluster-pool",
    "ipam.operator.clusterPoolIPv4PodCIDRList": "{" + NEW_POOL + "}",
    "cni.customConf": "true", "cni.uninstall": "false", "policyEnforcementMode": "never",
    "bpf.hostLegacyRouting": "true", "operator.unmanagedPodWatcher.restart": "false",
    "cni.confPath": K3S_CONF_DIR, "cni.binPath": K3S_BIN_DIR,
}


def node_config(version: str = "v2alpha1") -> dict:
    """The CiliumNodeConfig of the migration guide (F3)."""
    return {"apiVersion": f"cilium.io/{version}", "kind": "CiliumNodeConfig",
            "metadata": {"name": "cilium-default", "namespace": "kube-system"},
            "spec": {"nodeSelector": {"matchLabels": {LABEL: "true"}},
                     "defaults": {"write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
                                  "custom-cni-conf": "false", "cni-chaining-mode": "none",
                                  "cni-exclusive": "true"}}}


@pytest.fixture(scope="module", params=["stand-in", "official"])
def migration_docs(request, helm_bin, tmp_path_factory):
    """The chart's objects with the migration values: the stand-in chart, and the official
    archive when the suite has it (docs/charts.md)."""
    chart = request.getfixturevalue("cilium_chart") if request.param == "official" else None
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_CACHE_HOME=str(home / "k"),
               XDG_DATA_HOME=str(home / "d"))
    return render_cilium(helm_bin, env, chart, **MIGRATION)


@pytest.fixture
def env(tmp_path: Path):
    n = Net(Twin(tmp_path / "twin", speed=SPEED, components=model_components()).start())
    yield n
    n.t.stop()


def ls(env: Net, node: str, folder: str) -> list[str]:
    nm = env.node(node)
    return env.call(lambda: sorted(nm.listdir(folder)) if nm.is_dir(folder) else [])


def label(env: Net, node: str) -> None:
    t = env.rtype("nodes")

    def put(n: dict) -> None:
        n["metadata"].setdefault("labels", {})[LABEL] = "true"
    env.call(env.rt.store.mutate, t, None, node, put)


def agent_pod(env: Net, node: str) -> dict:
    return next(p for p in env.pods("kube-system", "k8s-app=cilium") if p["spec"].get("nodeName") == node
                and not p["metadata"].get("deletionTimestamp"))


def recreate_agent(env: Net, node: str) -> None:
    """Step 2.4: delete the node's agent pod; the DaemonSet creates the next one."""
    old = agent_pod(env, node)["metadata"]["name"]
    env.delete("pods", "kube-system", old)
    env.until(lambda: any(p["spec"].get("nodeName") == node and p["metadata"]["name"] != old
                          for p in env.pods("kube-system", "k8s-app=cilium")), what=f"new agent on {node}")
    env.until(lambda: env.agent_ready(node), timeout=30, what=f"agent Ready on {node}")


def pinned(env: Net, name: str, node: str, replicas: int = 1) -> list[dict]:
    env.create(deployment(name, replicas, node=node))
    return env.until(lambda: [p for p in env.pods("default", f"app={name}") if pod_ready(p)]
                     if len([p for p in env.pods("default", f"app={name}") if pod_ready(p)]) == replicas
                     else None, timeout=30, what=f"{name} Ready on {node}")


def reach(env: Net, src: dict | str, dst: dict, port: int = 80) -> tuple[bool, str]:
    return env.call(env.net.reach, src, dst["status"]["podIP"], port)


def in_pool(pod: dict, cidr: str) -> bool:
    return ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(cidr)


def migrate(env: Net, node: str) -> None:
    label(env, node)
    recreate_agent(env, node)
    env.until(lambda: env.cni(node) == "cilium", what=f"{node} gives new sandboxes from Cilium")


def test_migration_mode_writes_no_cni_config_and_takes_the_new_pool(env, migration_docs):
    env.apply(migration_docs)
    env.until(lambda: all(env.agent_ready(n) for n in NODES), timeout=30, what="agents Ready next to flannel")
    for n in NODES:
        assert env.cni(n) == "flannel"
        assert ls(env, n, K3S_CONF_DIR) == ["10-flannel.conflist"]
        assert "05-cilium.conflist" not in ls(env, n, "/etc/cni/net.d")
        assert "cilium-cni" in ls(env, n, K3S_BIN_DIR)          # install-cni-binaries -> cni.binPath
        cn = env.get("ciliumnodes", None, n, "cilium.io")
        (cidr,) = cn["spec"]["ipam"]["podCIDRs"]
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(NEW_POOL))
        assert {"flannel", "cilium"} == set(env.call(env.net.overlays, n))
        vx = env.call(lambda n=n: {i.name: i.info.get("vxlan_port") for i in env.node(n).interfaces.values()
                                   if i.kind == "vxlan"})
        assert vx == {"flannel.1": 8472, "cilium_vxlan": 8473}
    # A new pod anywhere still gets flannel's sandbox and an address of the cluster CIDR.
    (p,) = pinned(env, "before", AGENT1)
    assert sandbox(p) == "flannel" and in_pool(p, "10.42.0.0/16")


def test_node_config_applies_only_on_labelled_nodes_after_the_agent_restarts(env, migration_docs):
    env.apply(migration_docs)
    env.until(lambda: all(env.agent_ready(n) for n in NODES), timeout=30, what="agents Ready")
    env.create(node_config("v2alpha1"))
    assert env.get("ciliumnodeconfigs", "kube-system", "cilium-default", "cilium.io")["apiVersion"]
    label(env, AGENT1)
    # Created and labelled, but the running agent resolved its config when it started.
    t0 = env.now()
    env.until(lambda: env.now() > t0 + 5, what="5 cluster seconds")
    assert ls(env, AGENT1, K3S_CONF_DIR) == ["10-flannel.conflist"]
    assert env.call(env.cil.agent_overrides, AGENT1) == {}

    seen: list[list[str]] = []     # k3s's CNI folder at the moment the new agent turns Ready

    def watch(etype, rtype, obj, old):
        if rtype.key == ("", "pods") and obj["spec"].get("nodeName") == AGENT1 and \
                obj["metadata"].get("labels", {}).get("k8s-app") == "cilium" and pod_ready(obj) and \
                old is not None and not pod_ready(old):
            nm = env.node(AGENT1)
            seen.append(sorted(nm.listdir(K3S_CONF_DIR)))
    env.call(env.rt.store.subscribe, watch)
    recreate_agent(env, AGENT1)
    # The agent is Ready only once its CNI config is written (cilium PR #32168).
    assert seen and seen[-1] == ["05-cilium.conflist", "10-flannel.conflist.cilium_bak"], seen
    over = env.call(env.cil.agent_overrides, AGENT1)
    assert over["write-cni-conf-when-ready"] == "/host/etc/cni/net.d/05-cilium.conflist"
    env.until(lambda: ls(env, AGENT1, K3S_CONF_DIR) == ["05-cilium.conflist", "10-flannel.conflist.cilium_bak"],
              what="the agent wrote its conflist into k3s's folder and renamed flannel's (cni-exclusive)")
    env.until(lambda: env.cni(AGENT1) == "cilium", what="containerd on AGENT1 uses Cilium's conflist")
    # The unlabelled nodes keep flannel, even after their agents restart.
    recreate_agent(env, AGENT2)
    assert ls(env, AGENT2, K3S_CONF_DIR) == ["10-flannel.conflist"] and env.cni(AGENT2) == "flannel"
    assert env.call(env.cil.agent_overrides, AGENT2) == {}
    # `cilium-dbg status` in each agent says what its CNI config manager does.
    for node, line in ((AGENT1, "successfully wrote CNI configuration file to /host/etc/cni/net.d/05-cilium.conflist"),
                       (AGENT2, "CNI configuration management disabled")):
        rc, text = env.call(cilium_dbg.status_text, env.rt, agent_pod(env, node), False)
        assert rc == 0 and line in text, text
    # Deleting the CiliumNodeConfig changes nothing on AGENT1 until its agent restarts;
    # cni.uninstall=false: the next agent (no overrides, customConf) leaves the file.
    env.delete("ciliumnodeconfigs", "kube-system", "cilium-default", "cilium.io")
    assert env.call(env.cil.agent_overrides, AGENT1)["cni-exclusive"] == "true"
    recreate_agent(env, AGENT1)
    assert env.call(env.cil.agent_overrides, AGENT1) == {}
    assert "05-cilium.conflist" in ls(env, AGENT1, K3S_CONF_DIR)


def test_both_overlays_side_by_side(env, migration_docs):
    env.apply(migration_docs)
    env.until(lambda: all(env.agent_ready(n) for n in NODES), timeout=30, what="agents Ready")
    (old_a1,) = pinned(env, "old-a1", AGENT1)             # flannel sandbox, stays on a migrated node
    env.create(node_config("v2"))
    migrate(env, AGENT1)
    migrate(env, AGENT2)
    (cil_a1,) = pinned(env, "cil-a1", AGENT1)
    (cil_a2,) = pinned(env, "cil-a2", AGENT2)
    (fl_srv,) = pinned(env, "fl-srv", SERVER)             # the unlabelled node keeps flannel
    assert sandbox(cil_a1) == sandbox(cil_a2) == "cilium" and in_pool(cil_a1, NEW_POOL)
    assert sandbox(fl_srv) == "flannel" and in_pool(fl_srv, "10.42.0.0/16")
    assert sandbox(old_a1) == "flannel" and env.reachable(old_a1)[0]

    # Routes on a migrated node: flannel's for the cluster CIDR, Cilium's for its pool.
    routes = env.sh(AGENT1, "ip route").stdout.decode()
    assert "dev flannel.1" in routes and "dev cni0" in routes
    cn = env.get("ciliumnodes", None, AGENT2, "cilium.io")["spec"]["ipam"]["podCIDRs"][0]
    assert any(line.startswith(cn) and "dev cilium_host" in line for line in routes.splitlines())

    pairs = [(cil_a1, fl_srv), (fl_srv, cil_a1), (cil_a1, cil_a2), (old_a1, cil_a1), (cil_a1, old_a1),
             (old_a1, fl_srv), (SERVER, cil_a2), (AGENT1, fl_srv)]
    for src, dst in pairs:
        ok, why = reach(env, src, dst)
        assert ok, why

    # UDP 8473 dropped between AGENT1 and AGENT2: Cilium's tunnel between them breaks,
    # flannel's does not; a flannel pod on AGENT1 reaches a Cilium pod on AGENT2 through
    # Cilium's tunnel (the route of the pool is on cilium_host), so that breaks too, while
    # a Cilium pod reaching a flannel pod goes over flannel's (masqueraded both ways).
    env.call(env.rt.faults.set, "firewall", [{"node": AGENT2, "from": [AGENT1], "ports": ["udp/8473"]}])
    ok, why = reach(env, cil_a1, cil_a2)
    assert not ok and "UDP 8473" in why
    ok, why = reach(env, old_a1, cil_a2)
    assert not ok and "UDP 8473" in why
    assert reach(env, cil_a1, fl_srv)[0] and reach(env, old_a1, fl_srv)[0]
    assert reach(env, cil_a2, cil_a1)[0] is False      # the reply crosses the same firewall
    assert reach(env, cil_a2, old_a1)[0]               # to a flannel pod: flannel's tunnel
    # UDP 8472 dropped instead: flannel's overlay between SERVER and AGENT1 breaks.
    env.call(env.rt.faults.set, "firewall", [{"node": SERVER, "from": [AGENT1], "ports": ["udp/8472"]}])
    ok, why = reach(env, old_a1, fl_srv)
    assert not ok and "UDP 8472" in why
    ok, why = reach(env, cil_a1, fl_srv)        # Cilium pod -> flannel pod: flannel's overlay
    assert not ok and "UDP 8472" in why
    assert reach(env, cil_a1, cil_a2)[0]
    env.call(env.rt.faults.set, "firewall", [])


def first_node_migrated(env, migration_docs) -> None:
    """Migration-mode Cilium installed, every agent Ready, the CiliumNodeConfig created and
    AGENT1 moved to Cilium (the start of the tests below)."""
    env.apply(migration_docs)
    env.until(lambda: all(env.agent_ready(n) for n in NODES), timeout=30, what="agents Ready")
    env.create(node_config())
    migrate(env, AGENT1)


def test_services_reach_endpoints_on_either_overlay(env, migration_docs):
    first_node_migrated(env, migration_docs)
    web = [pinned(env, "web-a1", AGENT1)[0], pinned(env, "web-srv", SERVER)[0]]
    for i, name in enumerate(("web-a1", "web-srv")):
        env.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"app": name}, "clusterIP": f"10.43.200.{i + 1}",
                             "ports": [{"port": 80, "protocol": "TCP"}]}})
    (client_cil,) = pinned(env, "client-a1", AGENT1)
    (client_fl,) = pinned(env, "client-a2", AGENT2)
    assert {sandbox(w) for w in web} == {"cilium", "flannel"}
    for client in (client_cil, client_fl):
        for name in ("web-a1", "web-srv"):
            svc = env.get("services", "default", name)
            ok, why = env.call(env.net.reach, client, svc["spec"]["clusterIP"], 80)
            assert ok, why
            assert "kube-proxy" in why


def test_policy_enforcement_never_lets_flows_through_cilium_endpoints(env, migration_docs):
    first_node_migrated(env, migration_docs)
    (dst,) = pinned(env, "guarded", AGENT1)
    (dst_fl,) = pinned(env, "guarded-fl", SERVER)
    (src,) = pinned(env, "caller", AGENT2)
    env.create({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all", "namespace": "default"},
                "spec": {"podSelector": {"matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["guarded", "guarded-fl"]}]},
                    "policyTypes": ["Ingress"]}})
    assert sandbox(dst) == "cilium" and sandbox(dst_fl) == "flannel"
    ok, why = reach(env, src, dst)
    assert ok, why
    # k3s's kube-router still enforces it on the flannel pod (I5 of docs/node-by-node.md).
    ok, why = reach(env, src, dst_fl)
    assert not ok and "kube-router enforces" in why


def test_cni_uninstall_true_removes_ciliums_config_when_the_agents_go(env, helm_bin, tmp_path):
    home = tmp_path / "helm-home"
    tool_env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    tool_env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_CACHE_HOME=str(home / "k"),
                    XDG_DATA_HOME=str(home / "d"))
    values = dict(MIGRATION, **{"cni.customConf": "false", "cni.uninstall": "true"})
    docs = render_cilium(helm_bin, tool_env, **values)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cilium-config")
    assert cm["data"]["cni-uninstall"] == "true" and cm["data"]["cni-exclusive"] == "true"
    env.apply(docs)
    env.until(lambda: all(ls(env, n, K3S_CONF_DIR) == ["05-cilium.conflist", "10-flannel.conflist.cilium_bak"]
                          for n in NODES), timeout=30, what="every agent wrote its conflist (no CiliumNodeConfig)")
    env.delete_release(docs)
    env.until(lambda: not env.pods("kube-system", "k8s-app=cilium"), timeout=30, what="agents gone")
    env.until(lambda: all(ls(env, n, K3S_CONF_DIR) == ["10-flannel.conflist.cilium_bak"] for n in NODES),
              what="the preStop hook removed Cilium's conflist; flannel's backup stays")


def unlabel(env: Net, node: str) -> None:
    t = env.rtype("nodes")

    def put(n: dict) -> None:
        (n["metadata"].get("labels") or {}).pop(LABEL, None)
    env.call(env.rt.store.mutate, t, None, node, put)


def test_rolling_a_node_back_needs_the_agent_restarted_before_the_files(env, migration_docs):
    """cni-exclusive makes the running agent watch k3s's CNI folder: files put back under
    it are undone at once (daemon/cmd/cni/config.go). The node returns to flannel only
    when its agent was re-created without the CiliumNodeConfig first."""
    first_node_migrated(env, migration_docs)
    conf, bak = f"{K3S_CONF_DIR}/05-cilium.conflist", f"{K3S_CONF_DIR}/10-flannel.conflist.cilium_bak"
    # Wrong order: the files first, while the agent with the overrides still runs.
    env.sh(AGENT1, f"sudo rm -f {conf}")
    env.sh(AGENT1, f"sudo mv {bak} {K3S_CONF_DIR}/10-flannel.conflist")
    env.until(lambda: ls(env, AGENT1, K3S_CONF_DIR) == ["05-cilium.conflist", "10-flannel.conflist.cilium_bak"],
              what="the agent wrote its conflist again and renamed flannel's again")
    assert env.cni(AGENT1) == "cilium"
    # Right order: label off, agent re-created (no overrides: it writes nothing), then the files.
    unlabel(env, AGENT1)
    recreate_agent(env, AGENT1)
    env.sh(AGENT1, f"sudo rm -f {conf}")
    env.sh(AGENT1, f"sudo mv {bak} {K3S_CONF_DIR}/10-flannel.conflist")
    t0 = env.now()
    env.until(lambda: env.now() > t0 + 5, what="5 cluster seconds")
    assert ls(env, AGENT1, K3S_CONF_DIR) == ["10-flannel.conflist"]
    env.until(lambda: env.cni(AGENT1) == "flannel", what="containerd on AGENT1 back on flannel")
    (p,) = pinned(env, "after-rollback", AGENT1)
    assert sandbox(p) == "flannel" and in_pool(p, "10.42.0.0/16")


def test_bpf_host_routing_keeps_flannel_and_cilium_pods_apart(env, migration_docs):
    """The guide's bpf.hostLegacyRouting=true is what lets the two overlays meet in the
    host's routing table; with BPF host routing (KPR and BPF masquerading on, legacy
    routing off) a Cilium pod and a flannel pod no longer reach each other."""
    first_node_migrated(env, migration_docs)
    (cil,) = pinned(env, "cil", AGENT1)
    (fl,) = pinned(env, "fl", AGENT2)
    (fl_same,) = pinned(env, "fl-same", SERVER)
    assert reach(env, cil, fl)[0] and reach(env, fl, cil)[0]
    t = env.rtype("configmaps")

    def bpf_host_routing(cm: dict) -> None:
        cm["data"].update({"enable-host-legacy-routing": "false", "kube-proxy-replacement": "true",
                           "enable-bpf-masquerade": "true"})
    env.call(env.rt.store.mutate, t, "kube-system", "cilium-config", bpf_host_routing)
    for src, dst in ((cil, fl), (fl, cil), (fl_same, cil)):
        ok, why = reach(env, src, dst)
        assert not ok and "BPF host routing" in why, why
