"""NetworkPolicy enforcement on the twin's pod traffic: who enforces, and what they decide.

A pod's ingress is enforced by whatever owns its datapath now:

* **kube-router** (k3s' embedded policy controller) for a pod whose sandbox is flannel's,
  while the node's k3s runs with network policy on (no ``disable-network-policy``): it
  matches peers by pod IP (ipsets), so an ``ipBlock`` that covers pod addresses matches
  those pods too;
* **Cilium** for a pod whose sandbox is Cilium's while the node's agent is Ready and its
  ``enable-policy`` is not ``never`` (``policyEnforcementMode``): it matches peers by security identity (labels); an ``ipBlock`` matches only addresses
  outside the cluster (CIDR rules do not select Cilium-managed endpoints);
* **nobody** otherwise: the window of a migration where kube-router is off and the pod
  has not restarted under Cilium yet (the flow is open).

Traffic from a node (not a pod) is let through by both (Cilium allows the local host;
the twin does not model kube-router's host rules). Egress policies are not modelled.

:func:`decide` is pure (policies, pods and namespaces in, a verdict out);
:class:`~twin.controllers.reach.Reachability` calls it for every connection to a pod.

Example:
    >>> pol = {"metadata": {"namespace": "a", "name": "deny"}, "spec": {"podSelector": {},
    ...        "policyTypes": ["Ingress"]}}
    >>> dst = {"metadata": {"namespace": "a", "name": "web", "labels": {}}}
    >>> decide([pol], {}, None, dst, 80, "tcp", ipblock_matches_pods=True).allowed
    False
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..selectors import from_label_selector

__all__ = ["Verdict", "decide", "selects", "ENFORCER_KUBE_ROUTER", "ENFORCER_CILIUM"]

ENFORCER_KUBE_ROUTER = "kube-router"
ENFORCER_CILIUM = "cilium"


@dataclass(frozen=True)
class Verdict:
    """allowed, and why (naming the policies)."""

    allowed: bool
    why: str


def _md(o: dict | None) -> dict:
    return (o or {}).get("metadata") or {}


def _sel(selector: dict | None, labels: dict | None) -> bool:
    s = from_label_selector(selector if selector is not None else {})
    return s is not None and s.matches(labels or {})


def selects(pol: dict, pod: dict) -> bool:
    """The policy applies to ``pod``'s ingress (same namespace, podSelector, Ingress type)."""
    spec = pol.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
    return ("Ingress" in types and _md(pol).get("namespace") == _md(pod).get("namespace")
            and _sel(spec.get("podSelector"), _md(pod).get("labels")))


def _port_ok(rule: dict, dst: dict, port: int, proto: str) -> bool:
    ports = rule.get("ports") or []
    if not ports:
        return True
    for p in ports:
        if str(p.get("protocol", "TCP")).lower() != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str) and not want.isdigit():
            named = [cp.get("containerPort") for c in (dst.get("spec") or {}).get("containers") or ()
                     for cp in c.get("ports") or () if cp.get("name") == want]
            if port in named:
                return True
            continue
        end = p.get("endPort") or int(want)
        if int(want) <= port <= int(end):
            return True
    return False


def _peer_ok(peer: dict, pol_ns: str, src: dict | None, src_ip: str | None,
             namespaces: dict[str, dict], ipblock_matches_pods: bool) -> bool:
    block = peer.get("ipBlock")
    if block is not None:
        if src is not None and not ipblock_matches_pods:
            return False          # Cilium: CIDR rules do not select cluster endpoints
        if not src_ip:
            return False
        try:
            addr = ipaddress.ip_address(src_ip)
            if addr not in ipaddress.ip_network(block["cidr"], strict=False):
                return False
            return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or ())
        except (ValueError, KeyError):
            return False
    if src is None:
        return False
    src_ns = _md(src).get("namespace")
    if "namespaceSelector" in peer:
        if not _sel(peer.get("namespaceSelector"), _md(namespaces.get(src_ns)).get("labels")
                    or {"kubernetes.io/metadata.name": src_ns}):
            return False
    elif src_ns != pol_ns:
        return False
    return "podSelector" not in peer or _sel(peer.get("podSelector"), _md(src).get("labels"))


def decide(policies: list[dict], namespaces: dict[str, dict], src: dict | None, dst: dict,
           port: int, proto: str, *, src_ip: str | None = None,
           ipblock_matches_pods: bool) -> Verdict:
    """Is a connection from ``src`` (a pod, or None for a node/outside address at
    ``src_ip``) to ``dst``'s ``port`` allowed by the ingress policies? (pure)"""
    proto = proto.lower()
    mine = [p for p in policies if selects(p, dst)]
    if not mine:
        return Verdict(True, "no NetworkPolicy selects it")
    names = ", ".join(sorted(_md(p).get("name", "?") for p in mine))
    for pol in mine:
        for rule in (pol.get("spec") or {}).get("ingress") or ():
            peers = rule.get("from")
            if not _port_ok(rule, dst, port, proto):
                continue
            if not peers or any(_peer_ok(peer, _md(pol).get("namespace"), src, src_ip, namespaces,
                                         ipblock_matches_pods) for peer in peers):
                return Verdict(True, f"allowed by NetworkPolicy {_md(pol).get('name')}")
    return Verdict(False, f"denied: NetworkPolicy {names} select it and no ingress rule allows "
                          f"{proto.upper()} {port} from "
                          + (f"{_md(src).get('namespace')}/{_md(src).get('name')}" if src else src_ip or "there"))


def enforcer(dst_cni: str | None, kube_router_on: bool, cilium_ready: bool) -> str | None:
    """Who enforces policy on a pod now (see the module doc), or None (nobody)."""
    if dst_cni == "cilium":
        return ENFORCER_CILIUM if cilium_ready else None
    if dst_cni == "flannel" and kube_router_on:
        return ENFORCER_KUBE_ROUTER
    return None


def check(reach: Any, src: str | dict, dst: dict, port: int, proto: str) -> Verdict | None:
    """The verdict for a connection the reach model is about to deliver to ``dst``, or None
    when nothing enforces or nothing selects it (delivered as before)."""
    if not isinstance(src, dict):
        return None      # from a node: both enforcers let the host through
    store = reach.rt.store
    t = next((t for t in store.resource_types() if t.key == ("networking.k8s.io", "networkpolicies")), None)
    policies = list(store.iter_objects(t)) if t is not None else []
    if not policies:
        return None
    dnode = (dst.get("spec") or {}).get("nodeName") or ""
    nm = reach.net.node_model(dnode)
    running = (getattr(nm, "running", None) or reach.net._last_settings.get(dnode) or {}) if nm else {}
    cil = reach.net.cilium
    # With policyEnforcementMode=never (enable-policy: never, the migration's setting)
    # the agent enforces nothing.
    cilium_enforces = bool(cil is not None and cil.agent_ready(dnode)
                           and cil.agent_config(dnode).policy_mode != "never")
    who = enforcer(reach.sandbox_cni(dst), bool(running.get("network_policy")) and nm.unit_state == "active",
                   cilium_enforces)
    if who is None:
        return None
    nt = next((t for t in store.resource_types() if t.key == ("", "namespaces")), None)
    namespaces = {_md(n).get("name"): n for n in (store.iter_objects(nt) if nt is not None else ())}
    v = decide(policies, namespaces, src, dst, port, proto,
               src_ip=(src.get("status") or {}).get("podIP"),
               ipblock_matches_pods=who == ENFORCER_KUBE_ROUTER)
    return Verdict(v.allowed, f"{v.why} ({who} enforces)")
