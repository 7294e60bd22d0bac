"""Unit tests of the network and Cilium models' pure parts: configuration parsing, API
address rules, kernel check, CRD definitions (accepted by a real store), Ready
condition rules, IPAM slicing, and what the models read from the rendered charts."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from twin.controllers.cilium import (CRDS, CiliumConfig, CiliumModel, api_reachable,
                                     container_env, crd_object, identity_for, kernel_tuple,
                                     parse_duration, pod_app)
from twin.controllers.network import (NOT_READY_MESSAGE, NodeNetwork, desired_ready,
                                      flannel_works)
from twin.node import Iptables
from twin.store import Store

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------- config
def test_config_defaults_when_the_configmap_is_absent():
    c = CiliumConfig.from_data(None)
    assert not c.present and not c.kpr and c.tunnel_port == 8472


def test_config_tunnel_port_defaults_to_flannels_port():
    c = CiliumConfig.from_data({"routing-mode": "tunnel", "tunnel-protocol": "vxlan"})
    assert c.present and c.tunnel and c.tunnel_port == 8472


def test_config_reads_the_keys_the_model_uses():
    c = CiliumConfig.from_data({
        "kube-proxy-replacement": "true", "routing-mode": "tunnel", "tunnel-protocol": "vxlan",
        "tunnel-port": "8473", "ipam": "cluster-pool", "cluster-pool-ipv4-cidr": "10.100.0.0/16 10.101.0.0/16",
        "cluster-pool-ipv4-mask-size": "25", "enable-hubble": "true",
        "unmanaged-pod-watcher-interval": "0"})
    assert (c.kpr, c.tunnel_port, c.ipam, c.pool_cidrs, c.pool_mask, c.hubble) == \
        (True, 8473, "cluster-pool", ["10.100.0.0/16", "10.101.0.0/16"], 25, True)
    assert c.unmanaged_watcher_seconds == 0


def test_config_geneve_and_native_routing():
    assert CiliumConfig.from_data({"tunnel-protocol": "geneve"}).tunnel_port == 6081
    native = CiliumConfig.from_data({"routing-mode": "native"})
    assert not native.tunnel


@pytest.mark.parametrize("kpr", ["false", "False", ""])
def test_kpr_only_when_true(kpr):
    assert not CiliumConfig.from_data({"kube-proxy-replacement": kpr}).kpr


@pytest.mark.parametrize("text,seconds", [("15s", 15), ("15", 15), ("0", 0), ("1m30s", 90),
                                          ("500ms", 0.5), ("", 0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("release,ok", [("6.8.0-51-generic", True), ("5.10.0-28-amd64", True),
                                        ("5.4.0-42-generic", False), ("4.19.0", False)])
def test_kernel_check(release, ok):
    assert (kernel_tuple(release) >= (5, 10)) is ok


# ----------------------------------------------------------------------------- API address
def _node(ip: str, role: str, active: bool = True, kube_proxy: bool = False, svc_chain: bool = False):
    ipt = Iptables(4)
    if svc_chain:
        ipt.ensure_chain("nat", "KUBE-SVC-ABCDEFGHIJKLMNOP")
    return SimpleNamespace(up=True, unit_state="active" if active else "inactive", role=role,
                           spec=SimpleNamespace(ip=ip), running={"kube_proxy": kube_proxy} if active else {},
                           iptables=ipt)


@pytest.mark.parametrize("host,port,ok", [
    ("127.0.0.1", "6444", True),       # k3s's apiserver proxy on every node
    ("127.0.0.1", "6443", False),
    ("10.0.0.2", "6443", True),        # the server's InternalIP
    ("10.0.0.2", "6444", False),
    ("10.0.0.4", "6443", False),       # an agent is no API server
    ("10.0.0.99", 6443, False),
])
def test_api_reachable_addresses(host, port, ok):
    server = _node("10.0.0.2", "server")
    agent = _node("10.0.0.4", "agent")
    assert api_reachable(host, port, node=agent, servers=[server])[0] is ok


def test_api_unreachable_while_the_server_is_stopped():
    server = _node("10.0.0.2", "server", active=False)
    agent = _node("10.0.0.4", "agent")
    for host, port in (("127.0.0.1", 6444), ("10.0.0.2", 6443)):
        ok, addr = api_reachable(host, port, node=agent, servers=[server])
        assert not ok and addr == f"{host}:{port}"


def test_in_cluster_service_needs_kube_proxy():
    server = _node("10.0.0.2", "server")
    assert api_reachable(None, None, node=_node("10.0.0.4", "agent", kube_proxy=True), servers=[server])[0]
    assert api_reachable(None, None, node=_node("10.0.0.4", "agent", svc_chain=True), servers=[server])[0]
    ok, addr = api_reachable(None, None, node=_node("10.0.0.4", "agent"), servers=[server])
    assert not ok and addr == "10.43.0.1:443"


# ----------------------------------------------------------------------------- CRDs
def test_every_crd_is_accepted_by_the_store():
    store = Store()
    for spec in CRDS:
        store.create(crd_object(spec))
    expect = {
        "ciliumnodes": (False, ("v2",), "cn"),
        "ciliumendpoints": (True, ("v2",), "cep"),
        "ciliumidentities": (False, ("v2",), "ciliumid"),
        "ciliumnetworkpolicies": (True, ("v2",), "cnp"),
        "ciliumclusterwidenetworkpolicies": (False, ("v2",), "ccnp"),
        "ciliumcidrgroups": (False, ("v2", "v2alpha1"), "ccg"),
        "ciliumloadbalancerippools": (False, ("v2", "v2alpha1"), "ippools"),
        "ciliumnodeconfigs": (True, ("v2", "v2alpha1"), None),
        "ciliumpodippools": (False, ("v2alpha1",), "cpip"),
        "ciliuml2announcementpolicies": (False, ("v2alpha1",), "l2announcement"),
    }
    assert {c.plural for c in CRDS} == set(expect)
    for plural, (namespaced, versions, short) in expect.items():
        for v in versions:
            t = store.lookup("cilium.io", v, plural)
            assert t is not None, (plural, v)
            assert t.namespaced is namespaced
            if short:
                assert short in t.short_names
            assert "cilium" in t.categories


def test_crd_printer_columns_of_ciliumendpoints():
    crd = crd_object(next(c for c in CRDS if c.kind == "CiliumEndpoint"))
    cols = {c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Security Identity", "Endpoint State", "IPv4"} <= cols


# ----------------------------------------------------------------------------- node readiness
def _facts(**kw) -> NodeNetwork:
    base = dict(node="n", k3s_active=True, up=True, cni="flannel", flannel_running=True,
                flannel_device=True, flannel_conf=True, cilium_agent_ready=False, cilium_conf=False)
    base.update(kw)
    return NodeNetwork(**base)


def test_ready_rules():
    assert desired_ready(_facts()) == ("True", "KubeletReady", "kubelet is posting ready status")
    assert desired_ready(_facts(cni=None)) == ("False", "KubeletNotReady", NOT_READY_MESSAGE)
    assert desired_ready(_facts(k3s_active=False))[:2] == ("Unknown", "NodeStatusUnknown")
    assert desired_ready(_facts(up=False))[2] == "Kubelet stopped posting node status."


@pytest.mark.parametrize("settings,ifaces,conf,works", [
    ({"flannel": True, "flannel_backend": "vxlan"}, {"flannel.1"}, True, True),
    ({"flannel": True, "flannel_backend": "vxlan"}, set(), True, False),     # flannel.1 deleted
    ({"flannel": True, "flannel_backend": "vxlan"}, {"flannel.1"}, False, False),
    ({"flannel": False, "flannel_backend": "none"}, {"flannel.1"}, True, False),   # leftovers only
    ({"flannel": True, "flannel_backend": "host-gw"}, set(), True, True),
])
def test_flannel_works(settings, ifaces, conf, works):
    assert flannel_works(settings, ifaces, conf)[1] is works


# ----------------------------------------------------------------------------- pods
def test_pod_app_from_chart_labels():
    assert pod_app({"metadata": {"labels": {"k8s-app": "cilium"}}}) == "cilium"
    assert pod_app({"metadata": {"labels": {"io.cilium/app": "operator", "name": "cilium-operator"}}}) == "operator"
    assert pod_app({"metadata": {"labels": {"k8s-app": "hubble-relay"}}}) == "hubble-relay"
    assert pod_app({"metadata": {"labels": {"k8s-app": "kube-dns"}}}) is None


def test_container_env_value_and_configmap_ref():
    pod = {"metadata": {"namespace": "kube-system"}, "spec": {"containers": [
        {"name": "other", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "wrong"}]},
        {"name": "cilium-agent", "env": [
            {"name": "KUBERNETES_SERVICE_HOST", "valueFrom": {"configMapKeyRef": {"name": "api", "key": "host"}}},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "6444"}]}]}}
    cms = {("kube-system", "api"): {"data": {"host": "127.0.0.1"}}}
    lookup = lambda ns, name: cms.get((ns, name))  # noqa: E731
    assert container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_HOST", lookup) == "127.0.0.1"
    assert container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_PORT") == "6444"
    assert container_env(pod, "cilium-operator", "KUBERNETES_SERVICE_PORT") is None


def test_identity_is_stable_and_ignores_the_template_hash():
    a = identity_for({"app": "web", "pod-template-hash": "abc"}, "demo")
    b = identity_for({"app": "web", "pod-template-hash": "xyz"}, "demo")
    assert a == b and 256 <= a
    assert identity_for({"app": "api"}, "demo") != a      # another label set, another identity


def test_cluster_pool_slices_per_node():
    model = CiliumModel()
    cfg = CiliumConfig.from_data({"ipam": "cluster-pool", "cluster-pool-ipv4-cidr": "10.100.0.0/16",
                                  "cluster-pool-ipv4-mask-size": "24"})
    n1 = {"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}}
    n2 = {"metadata": {"name": "b"}, "spec": {"podCIDR": "10.42.1.0/24"}}
    assert model.node_pod_cidrs(n1, cfg) == ["10.100.0.0/24"]
    assert model.node_pod_cidrs(n2, cfg) == ["10.100.1.0/24"]
    assert model.node_pod_cidrs(n1, cfg) == ["10.100.0.0/24"]      # stable
    kube = CiliumConfig.from_data({"ipam": "kubernetes"})
    assert model.node_pod_cidrs(n2, kube) == ["10.42.1.0/24"]


# ----------------------------------------------------------------------------- charts
def _render(helm: str, chart: str, tmp_path: Path, *sets: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "c"),
               XDG_CACHE_HOME=str(tmp_path / "k"), XDG_DATA_HOME=str(tmp_path / "d"))
    args = [helm, "template", "cilium", chart, "-n", "kube-system",
            "-f", str(REPO / "params" / "cilium-values.yaml")]
    for s in sets:
        args += ["--set", s]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


@pytest.mark.parametrize("which", ["stand-in", "official"])
def test_what_the_model_reads_from_the_rendered_chart(which, helm_bin, tmp_path, request):
    chart = str(REPO / "lib" / "twin" / "charts" / "cilium") if which == "stand-in" else \
        str(request.getfixturevalue("cilium_chart"))
    docs = _render(helm_bin, chart, tmp_path, "tunnelPort=0")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cilium-config")
    cfg = CiliumConfig.from_data(cm["data"])
    assert cfg.kpr and cfg.tunnel and cfg.tunnel_protocol == "vxlan"
    assert cfg.tunnel_port == 8472 and cfg.ipam == "kubernetes" and cfg.hubble
    ds = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    tpl = ds["spec"]["template"]
    assert tpl["spec"]["hostNetwork"] and pod_app(tpl) == "cilium"
    pod = {"metadata": {"namespace": "kube-system"}, "spec": tpl["spec"]}
    assert container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_HOST") == "127.0.0.1"
    assert container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_PORT") == "6444"
    op = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cilium-operator")
    assert pod_app(op["spec"]["template"]) == "operator" and op["spec"]["template"]["spec"]["hostNetwork"]
    for name, app in (("hubble-relay", "hubble-relay"), ("hubble-ui", "hubble-ui")):
        d = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        assert pod_app(d["spec"]["template"]) == app
        assert not d["spec"]["template"]["spec"].get("hostNetwork")
    envoy = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium-envoy")
    assert pod_app(envoy["spec"]["template"]) == "cilium-envoy"
    with_port = _render(helm_bin, chart, tmp_path, "tunnelPort=8473")
    cm2 = next(d for d in with_port if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cilium-config")
    assert CiliumConfig.from_data(cm2["data"]).tunnel_port == 8473
