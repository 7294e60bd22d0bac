"""The topology facts and the preflight rows each topology gets (pure)."""
from __future__ import annotations

import pytest

from runbook import leftovers, topology

MINI_VALUES = {"k8sServiceHost": "127.0.0.1", "k8sServicePort": 6444, "kubeProxyReplacement": True,
               "ipam": {"mode": "kubernetes"}, "routingMode": "tunnel", "tunnelPort": 8473}


def _node(name, cidrs, *, server=False, etcd=False):
    labels = {"kubernetes.io/hostname": name}
    if server:
        labels.update({"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"})
    if etcd:
        labels["node-role.kubernetes.io/etcd"] = "true"
    return {"metadata": {"name": name, "labels": labels}, "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}


def _topo(nodes=None, configs=None, pods=(), netpols=(), addons=None):
    nodes = nodes if nodes is not None else [_node("s1", ["10.42.0.0/24"], server=True),
                                             _node("a1", ["10.42.1.0/24"])]
    return topology.from_facts(nodes=nodes, server_configs=configs if configs is not None else {"s1": {}},
                               pods=list(pods), netpols=list(netpols),
                               addons=addons or {"velero": True, "argocd": True, "longhorn": True})


def _rows(t, values=MINI_VALUES, kpr=True):
    return {c: (st, d) for c, st, d in topology.rows(t, values, kpr=kpr)}


def test_minicloud_shape_is_handled_without_a_warning():
    t = _topo()
    assert (t.servers, t.agents, t.datastore, t.backend, t.cluster_cidrs) == \
        (["s1"], ["a1"], "sqlite", "vxlan", ["10.42.0.0/16"])
    rows = _rows(t)
    assert {st for st, _ in rows.values()} == {"ok"}
    assert rows["flannel backend"][1].startswith("vxlan: flannel.1 (VXLAN, UDP 8472)")
    assert "add-on: Velero" not in rows


def test_three_etcd_servers_keep_quorum_two_refuse():
    servers = [_node(f"s{i}", [f"10.42.{i}.0/24"], server=True, etcd=True) for i in range(3)]
    t = _topo(servers + [_node("a1", ["10.42.9.0/24"])], {"s0": {"cluster-init": True}, "s1": {}, "s2": {}})
    assert (t.datastore, t.quorum) == ("embedded etcd", 2)
    st, detail = _rows(t)["control plane: servers and datastore"]
    assert st == "ok" and "2 of 3 members keep quorum (2 needed)" in detail and "127.0.0.1:6444" in detail
    two = _topo(servers[:2], {"s0": {"cluster-init": True}, "s1": {}})
    st, detail = _rows(two)["control plane: servers and datastore"]
    assert st == "fail" and "loses quorum" in detail and "Refused" in detail


def test_single_node_is_handled():
    t = _topo([_node("s1", ["10.42.0.0/24"], server=True)])
    st, detail = _rows(t)["control plane: servers and datastore"]
    assert st == "ok" and detail.startswith("single node (s1)")


@pytest.mark.parametrize("backend, device", [("host-gw", None), ("wireguard-native", "flannel-wg")])
def test_other_backends_are_handled_and_name_their_leftovers(backend, device):
    t = _topo(configs={"s1": {"flannel-backend": backend}})
    st, detail = _rows(t)["flannel backend"]
    assert st == "ok" and detail.startswith(backend)
    assert topology.flannel_device(backend) == device
    assert ("UDP 51820" in detail) == (backend == "wireguard-native")
    assert ("route per other node's podCIDR" in detail) == (backend == "host-gw")


@pytest.mark.parametrize("configs, why", [
    ({"s1": {"flannel-backend": "ipsec"}}, "is not one the runbook migrates from"),
    ({"s1": {"flannel-backend": "none"}}, "nothing to migrate from"),
    ({"s1": {"flannel-backend": "vxlan"}, "s2": {"flannel-backend": "host-gw"}}, "disagree"),
])
def test_unknown_or_inconsistent_backends_are_refused(configs, why):
    st, detail = _rows(_topo(configs=configs))["flannel backend"]
    assert st == "fail" and why in detail


def test_flannel_off_by_this_runs_own_reconfigure_is_not_refused():
    """Preflight run again after reconfigure (a notebook re-run, nbval): the journal holds
    the configs this run rewrote, so ``flannel-backend: none`` is not a foreign cluster."""
    t = _topo(configs={"s1": {"flannel-backend": "none"}})
    rows = {c: (st, d) for c, st, d in topology.rows(t, MINI_VALUES, kpr=True, switched_here=True)}
    st, detail = rows["flannel backend"]
    assert st == "ok" and "this run switched flannel off" in detail
    assert _rows(t)["flannel backend"][0] == "fail"      # the same cluster, no journal: refused


def test_other_cluster_cidr_is_carried_over_by_kubernetes_ipam():
    nodes = [_node("s1", ["10.52.0.0/24"], server=True), _node("a1", ["10.52.1.0/24"])]
    t = _topo(nodes, {"s1": {"cluster-cidr": "10.52.0.0/16"}})
    st, detail = _rows(t)["pod CIDR carried over"]
    assert st == "ok" and "10.52.0.0/16 (not k3s' default 10.42.0.0/16)" in detail
    # without the config key, the CIDR is the one covering every node's podCIDR
    assert _topo(nodes, {"s1": {}}).cluster_cidrs == ["10.52.0.0/23"]
    pool = dict(MINI_VALUES, ipam={"mode": "cluster-pool", "operator": {"clusterPoolIPv4PodCIDRList": ["10.42.0.0/16"]}})
    st, detail = _rows(t, pool)["pod CIDR carried over"]
    assert st == "fail" and "set ipam.mode: kubernetes" in detail
    native = dict(MINI_VALUES, routingMode="native", ipv4NativeRoutingCIDR="10.42.0.0/16")
    assert _rows(t, native)["pod CIDR carried over"][0] == "fail"


def test_dual_stack_is_refused_with_the_reason():
    nodes = [_node("s1", ["10.42.0.0/24", "2001:db8:42::/64"], server=True)]
    t = _topo(nodes, {"s1": {"cluster-cidr": "10.42.0.0/16,2001:db8:42::/56"}})
    assert t.dual_stack and t.cluster_cidrs == ["10.42.0.0/16", "2001:db8:42::/56"]
    st, detail = _rows(t)["IP families (dual-stack)"]
    assert st == "fail" and "2001:db8:42::/56" in detail and "Refused before anything changes" in detail
    # two podCIDRs on a node are enough to see it, config or not
    assert _topo(nodes, {"s1": {}}).dual_stack


def _svclb_pod(node):
    return {"metadata": {"namespace": "kube-system", "name": f"svclb-traefik-abc-{node}",
                         "labels": {"svccontroller.k3s.cattle.io/svcname": "traefik"}},
            "spec": {"nodeName": node, "containers": [
                {"name": "lb-tcp-80", "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}]}]}}


def test_servicelb_hostports_need_kpr_or_portmap_chaining():
    t = _topo(pods=[_svclb_pod("s1"), _svclb_pod("a1")])
    assert t.servicelb and len(t.hostport_pods) == 2
    st, detail = _rows(t)["hostPort pods (k3s servicelb)"]
    assert st == "ok" and "klipper-lb" in detail and "nothing to set" in detail
    no_kpr = dict(MINI_VALUES, kubeProxyReplacement=False)
    st, detail = _rows(t, no_kpr, kpr=False)["hostPort pods (k3s servicelb)"]
    assert st == "fail" and "cni.chainingMode: portmap" in detail
    chained = dict(no_kpr, cni={"chainingMode": "portmap"})
    assert _rows(t, chained, kpr=False)["hostPort pods (k3s servicelb)"][0] == "ok"


def test_network_policies_are_listed_and_explained():
    pols = [{"metadata": {"namespace": "whoami", "name": n}} for n in ("deny", "allow-nginx")]
    st, detail = _rows(_topo(netpols=pols))["NetworkPolicies"]
    assert st == "warn" and "whoami/allow-nginx, whoami/deny" in detail
    assert "kube-router" in detail and "security identity" in detail and "EXECUTE" in detail
    st, detail = _rows(_topo(configs={"s1": {"disable-network-policy": True}}, netpols=pols))["NetworkPolicies"]
    assert "NOT enforced today" in detail


def test_missing_addons_are_skipped_with_a_reason():
    rows = _rows(_topo(addons={"velero": False, "argocd": False, "longhorn": False}))
    assert rows["add-on: Velero"][0] == "warn" and "backup is skipped" in rows["add-on: Velero"][1]
    assert rows["add-on: Argo CD"][0] == "ok" and rows["add-on: Longhorn"][0] == "ok"


def test_host_gw_routes_are_a_leftover_only_inside_the_cluster_cidr():
    env = "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n"
    routes = ('[{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},'
              ' {"dst": "10.42.1.0/24", "gateway": "10.0.0.4", "dev": "eth0"},'
              ' {"dst": "10.42.2.0/24", "gateway": "10.42.2.0", "dev": "flannel.1"},'
              ' {"dst": "192.168.5.0/24", "gateway": "10.0.0.9", "dev": "eth0"},'
              ' {"dst": "10.42.0.0/24", "dev": "cni0"}]')
    assert leftovers.host_gw_routes(routes, env) == ["10.42.1.0/24"]
    assert leftovers.host_gw_routes(routes, "") == []      # flannel never ran: nothing of its own
    left = leftovers.NodeLeftovers("s1", "server", ["eth0", "cni0"], [], None, 0, "", ["10.42.1.0/24"])
    plan = leftovers.plan_leftovers(left, kpr=True, backup_dir="/b", run_id="r")
    assert plan.routes == ["10.42.1.0/24"] and not plan.noop and plan.to_dict()["routes"] == ["10.42.1.0/24"]


def test_server_settings_never_carry_a_secret():
    class FakeNode:
        role = "server"

        def exists(self, path):
            return True

        def read_file(self, path):
            return ("token: K10abc::server:secret\ndatastore-endpoint: postgres://u:pw@db/k3s\n"
                    "flannel-backend: host-gw\nserver: https://10.0.0.2:6443\n")

        def run(self, *a, **kw):
            return type("R", (), {"ok": False, "stdout": ""})()

    got = topology.server_settings(FakeNode(), "/etc/rancher/k3s/config.yaml")
    assert got == {"flannel-backend": "host-gw", "datastore-endpoint": "set", "server": "set"}


def test_server_settings_merge_the_drop_in_folder():
    files = {"/etc/rancher/k3s/config.yaml": "flannel-backend: vxlan\ndisable:\n  - traefik\n",
             "/etc/rancher/k3s/config.yaml.d/10-net.yaml": "flannel-backend: host-gw\ndisable+:\n  - servicelb\n"}

    class FakeNode:
        role = "server"

        def exists(self, path):
            return path in files

        def read_file(self, path):
            return files[path]

        def run(self, cmd, path, **kw):
            names = {"/etc/rancher/k3s": "config.yaml\nconfig.yaml.d\n",
                     "/etc/rancher/k3s/config.yaml.d": "10-net.yaml\nREADME\n"}
            return type("R", (), {"ok": path in names, "stdout": names.get(path, "")})()

    got = topology.server_settings(FakeNode(), "/etc/rancher/k3s/config.yaml")
    assert got == {"flannel-backend": "host-gw", "disable": ["traefik", "servicelb"]}
