"""NetworkPolicy verdicts of the twin (kube-router and Cilium semantics), pure."""
from __future__ import annotations

from twin.controllers import netpol


def _pod(ns, name, labels, ip):
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"podIP": ip}}


DENY = {"metadata": {"namespace": "web", "name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
ALLOW_NGINX = {"metadata": {"namespace": "web", "name": "allow-nginx"}, "spec": {
    "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                 "ports": [{"protocol": "TCP", "port": "http"}]}]}}
ALLOW_CIDR = {"metadata": {"namespace": "web", "name": "allow-cidr"}, "spec": {
    "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.9.0/24"]}}]}]}}
WEB = _pod("web", "web-1", {"app": "web"}, "10.42.1.5")
NGINX = _pod("ingress", "nginx-1", {"app": "nginx"}, "10.42.2.7")
OTHER = _pod("tools", "tool-1", {"app": "tool"}, "10.42.3.9")


def test_a_rule_lets_its_peer_in_on_its_port_only():
    pols = [DENY, ALLOW_NGINX]
    assert netpol.decide(pols, {}, NGINX, WEB, 80, "tcp", ipblock_matches_pods=True).allowed
    v = netpol.decide(pols, {}, NGINX, WEB, 8080, "tcp", ipblock_matches_pods=True)
    assert not v.allowed and "allow-nginx, deny" in v.why
    assert not netpol.decide(pols, {}, OTHER, WEB, 80, "tcp", ipblock_matches_pods=True).allowed
    assert netpol.decide(pols, {}, OTHER, NGINX, 80, "tcp", ipblock_matches_pods=True).allowed  # not selected


def test_ip_blocks_match_pods_under_kube_router_not_under_cilium():
    assert netpol.decide([ALLOW_CIDR], {}, OTHER, WEB, 80, "tcp", src_ip="10.42.3.9", ipblock_matches_pods=True).allowed
    assert not netpol.decide([ALLOW_CIDR], {}, OTHER, WEB, 80, "tcp", src_ip="10.42.3.9",
                             ipblock_matches_pods=False).allowed
    excepted = _pod("tools", "tool-2", {}, "10.42.9.4")
    assert not netpol.decide([ALLOW_CIDR], {}, excepted, WEB, 80, "tcp", src_ip="10.42.9.4",
                             ipblock_matches_pods=True).allowed


def test_who_enforces_follows_the_pods_sandbox():
    assert netpol.enforcer("flannel", True, False) == "kube-router"
    assert netpol.enforcer("flannel", False, True) is None        # the migration's window
    assert netpol.enforcer("cilium", False, True) == "cilium"
    assert netpol.enforcer("cilium", True, False) is None
