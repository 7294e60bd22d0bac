"""kube-proxy's sync after a Service or endpoint change, on the node model alone.

The network model decides when (``tests/integration/twin_network/test_twin_network_kube_proxy.py``);
here: what one node's rules and :attr:`KubeProxy.services` become, and that only a
running kube-proxy syncs (a stopped k3s, or ``disable-kube-proxy``, keeps its last sync).
"""
from __future__ import annotations

import re

import pytest

from twin.node import KubeService
from twin.node.kube_proxy import service_ports, target_port
from twin_nodes_cases import run, sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

CIDR = "10.42.0.0/16"


def web(*endpoints: str) -> KubeService:
    return KubeService("default", "web", "http", "10.43.0.80", 80, list(endpoints))


def dnat(node) -> set[str]:
    """The endpoints the node's web Service DNATs to, read from iptables-save."""
    return set(re.findall(r'"default/web:http" -m tcp -j DNAT --to-destination (\S+)', node.iptables_save()))


def strip_stamps(text: str) -> str:
    return re.sub(r"(?m)^#.*\n", "", text)


def test_a_running_kube_proxy_rewrites_its_service_chains(nodes):
    a = nodes["agent-1"]
    assert a.resync_kube_services([web("10.42.1.5:8080", "10.42.2.6:8080")])
    assert dnat(a) == {"10.42.1.5:8080", "10.42.2.6:8080"}
    # the first endpoint went, a new one came: no rule of the old one is left
    assert a.resync_kube_services([web("10.42.2.6:8080", "10.42.1.9:8080")])
    save = a.iptables_save()
    assert dnat(a) == {"10.42.2.6:8080", "10.42.1.9:8080"} and "10.42.1.5" not in save
    assert a.kube_services == [web("10.42.2.6:8080", "10.42.1.9:8080")]
    # no endpoint: kube-proxy rejects in the filter table and has no KUBE-SVC chain for it
    assert a.resync_kube_services([web()])
    save = a.iptables_save()
    assert dnat(a) == set() and '"default/web:http has no endpoints"' in save
    assert not [c for c in a.iptables.chains("nat") if c.startswith(("KUBE-SVC-", "KUBE-SEP-"))]
    assert a.iptables.check() == []


def test_a_resync_leaves_the_base_chains_as_they_are(nodes):
    """A sync after a change is partial: only a full sync (k3s's start, the re-creation of
    deleted rules) puts kube-proxy's jumps back."""
    a = nodes["agent-1"]
    jump = '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    kept = "".join(line + "\n" for line in a.iptables_save().splitlines() if line != jump)
    assert run(a.exec("sudo iptables-restore", kept.encode())).rc == 0
    assert a.resync_kube_services([web("10.42.1.5:8080")])
    save = a.iptables_save()
    assert jump not in save and dnat(a) == {"10.42.1.5:8080"}


def test_a_stopped_k3s_keeps_the_rules_of_the_last_sync(nodes):
    a = nodes["agent-1"]
    assert a.resync_kube_services([web("10.42.1.5:8080")])
    assert sh(a, "sudo systemctl stop k3s-agent").rc == 0
    before = strip_stamps(a.iptables_save())
    assert not a.kube_proxy_running()
    assert not a.resync_kube_services([web("10.42.1.9:8080")])
    assert strip_stamps(a.iptables_save()) == before and dnat(a) == {"10.42.1.5:8080"}
    assert a.kube_services == [web("10.42.1.5:8080")]      # what the rules left behind hold
    # k3s's start syncs kube-proxy fully, from the Services it last knew
    assert sh(a, "sudo systemctl start k3s-agent").rc == 0
    assert a.kube_proxy_running() and dnat(a) == {"10.42.1.5:8080"}


def test_disable_kube_proxy_stops_the_syncs(nodes):
    s = nodes["server-1"]
    cfg = s.read_text("/etc/rancher/k3s/config.yaml")
    s.write("/etc/rancher/k3s/config.yaml", cfg.rstrip("\n") + "\ndisable-kube-proxy: true\n")
    assert s.resync_kube_services([web("10.42.1.5:8080")])
    assert sh(s, "sudo systemctl restart k3s").rc == 0
    assert s.service_active("k3s") and not s.kube_proxy_running()
    before = strip_stamps(s.iptables_save())
    assert not s.resync_kube_services([web("10.42.1.9:8080")])
    assert strip_stamps(s.iptables_save()) == before and dnat(s) == {"10.42.1.5:8080"}


def test_service_ports_of_a_service_object():
    pod = {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}
    svc = {"metadata": {"namespace": "shop", "name": "front"},
           "spec": {"clusterIP": "10.43.7.7", "type": "LoadBalancer",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                              {"name": "dns", "port": 53, "protocol": "UDP"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}, {"hostname": "x"}]}}}
    ports = service_ports(svc, lambda port: [f"10.42.3.{n}:{target_port(pod, port)}" for n in (9, 4)])
    assert ports == [
        KubeService("shop", "front", "http", "10.43.7.7", 80, ["10.42.3.4:8080", "10.42.3.9:8080"],
                    "TCP", 30080, ["10.0.0.200"]),
        KubeService("shop", "front", "dns", "10.43.7.7", 53, ["10.42.3.4:53", "10.42.3.9:53"],
                    "UDP", None, ["10.0.0.200"]),
    ]
    headless = {"metadata": {"namespace": "shop", "name": "db"},
                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}
    assert service_ports(headless, lambda port: ["10.42.3.4:5432"]) == []
