"""What a node's (or a pod's) tools see of the cluster beyond their machine.

:class:`NodeView` is the ``cluster_view`` the network model hands every node model
(``NodeModel.cluster_view``) and what the in-pod commands (:mod:`twin.podexec.net`) use:

- :meth:`NodeView.trace`: one connection attempt (:mod:`.reach`);
- :meth:`NodeView.resolve`: a DNS lookup as the source's resolver would do it. A pod
  (``dnsPolicy: ClusterFirst``) asks the kube-dns ClusterIP with the search path of its
  namespace; a node and a hostNetwork pod ask the node's own resolver
  (systemd-resolved, ``127.0.0.53``), which does not know ``cluster.local``. Asking a
  server reaches it through :meth:`trace` first: a stale socket LB, a blocked tunnel or
  a dead backend make the lookup time out as it would;
- :meth:`NodeView.sandboxes`: the pod sandboxes and containers containerd has on a node
  (``crictl``), with the network each sandbox got;
- :meth:`NodeView.policy_ipsets`: the sets kube-router keeps for the NetworkPolicies;
- :meth:`NodeView.health`: what ``cilium-health status`` probes from one node.

Example (on the twin's loop)::

    view = rt.nodes["set-hog"].cluster_view
    view.resolve("set-hog", "kubernetes.default.svc.cluster.local", "10.43.0.10").addresses
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from .reach import Trace, firewall_blocks

NODE_RESOLVER = "127.0.0.53"
CLUSTER_DOMAIN = "cluster.local"
NDOTS = 5


@dataclass
class DnsAnswer:
    """One lookup: ``rcode`` NOERROR, NXDOMAIN, SERVFAIL, TIMEOUT or REFUSED."""

    server: str
    name: str
    rcode: str
    addresses: list[str] = field(default_factory=list)
    reason: str = ""


def _meta(o: dict | None) -> dict:
    return (o or {}).get("metadata") or {}


def _h16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def rtt(seed: str) -> str:
    """A stable, plausible round-trip time as Go prints a Duration (``412.7µs``)."""
    us = 150 + int(hashlib.sha256(seed.encode()).hexdigest()[:4], 16) % 700
    return f"{us}.{int(hashlib.sha256(seed.encode()).hexdigest()[4:6], 16) % 1000}µs"


class NodeView:
    """See the module doc. Bound to one :class:`~.network.NetworkModel`."""

    def __init__(self, net: Any) -> None:
        self.net = net

    @property
    def reach(self) -> Any:
        return self.net.reachability

    # ------------------------------------------------------------------ probes
    def trace(self, src: str | dict, ip: str, port: int, proto: str = "tcp") -> Trace:
        return self.reach.trace(src, ip, int(port), proto)

    def cluster_dns(self) -> str:
        fx = getattr(self.net.rt, "fixture", None)
        return str((getattr(fx, "cluster", None) or {}).get("cluster_dns", "10.43.0.10"))

    def resolver_of(self, src: str | dict) -> tuple[str, list[str]]:
        """The nameserver and search list of ``src``'s ``/etc/resolv.conf``."""
        if isinstance(src, dict):
            spec = src.get("spec") or {}
            policy = spec.get("dnsPolicy") or "ClusterFirst"
            host = bool(spec.get("hostNetwork"))
            if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host):
                ns = _meta(src).get("namespace") or "default"
                return self.cluster_dns(), [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        return NODE_RESOLVER, []

    def resolve(self, src: str | dict, name: str, server: str | None = None) -> DnsAnswer:
        """Look ``name`` up from ``src`` (see the module doc)."""
        default, search = self.resolver_of(src)
        server = server or default
        name = name.strip()
        if server == NODE_RESOLVER or server.startswith("127."):
            node = src if isinstance(src, str) else (src.get("spec") or {}).get("nodeName") or ""
            return self._node_resolver(node, name, server)
        t = self.trace(src, server, 53, "udp")
        if not t.ok:
            return DnsAnswer(server, name, "REFUSED" if t.failure == "refused" else "TIMEOUT",
                             reason=t.reason)
        labels = _meta(t.backend).get("labels") or {}
        if t.backend is None or labels.get("k8s-app") != "kube-dns":
            who = f"pod {_meta(t.backend).get('namespace')}/{_meta(t.backend).get('name')}" \
                if t.backend else f"{t.addr}"
            return DnsAnswer(server, name, "REFUSED", reason=f"{t.reason}; {who} does not serve DNS "
                                                             "(ICMP port unreachable)")
        for fqdn in self._candidates(name, search):
            addrs = self._lookup(fqdn)
            if addrs is not None:
                return DnsAnswer(server, fqdn, "NOERROR", addrs, t.reason)
        last = name.rstrip(".")
        if last.endswith(CLUSTER_DOMAIN) or any(last.endswith(s) for s in search):
            return DnsAnswer(server, last, "NXDOMAIN", reason=f"{t.reason}; no such name in the cluster")
        return DnsAnswer(server, last, "NXDOMAIN" if "." not in last else "SERVFAIL",
                         reason=f"{t.reason}; the twin models no DNS outside the cluster")

    @staticmethod
    def _candidates(name: str, search: list[str]) -> list[str]:
        if name.endswith("."):
            return [name.rstrip(".")]
        with_search = [f"{name}.{s}" for s in search]
        return ([name] + with_search) if name.count(".") >= NDOTS else (with_search + [name])

    def _lookup(self, fqdn: str) -> list[str] | None:
        parts = fqdn.lower().split(".")
        dom = CLUSTER_DOMAIN.split(".")
        if parts[-len(dom):] != dom:
            return None
        rest = parts[:-len(dom)]
        if len(rest) == 3 and rest[2] == "svc":
            for s in self.reach.services():
                md = _meta(s)
                if md.get("name") == rest[0] and md.get("namespace") == rest[1]:
                    spec = s.get("spec") or {}
                    if spec.get("clusterIP") and spec.get("clusterIP") != "None":
                        return [spec["clusterIP"]]
                    pods = [p for p in self.reach._pods() if _meta(p).get("namespace") == rest[1]]
                    sel = spec.get("selector") or {}
                    return sorted(p["status"]["podIP"] for p in pods if self.reach.pod_ready(p) and sel
                                  and all((_meta(p).get("labels") or {}).get(k) == v for k, v in sel.items()))
            return None
        if len(rest) == 3 and rest[2] == "pod":
            ip = rest[0].replace("-", ".")
            return [ip] if ip.count(".") == 3 else None
        return None

    def _node_resolver(self, node: str, name: str, server: str) -> DnsAnswer:
        nm = self.net.node_model(node)
        short = name.rstrip(".")
        hosts: dict[str, str] = {"localhost": "127.0.0.1"}
        if nm is not None:
            try:
                for line in nm.read_text("/etc/hosts").splitlines():
                    cols = line.split("#", 1)[0].split()
                    for h in cols[1:]:
                        hosts.setdefault(h, cols[0])
            except OSError:
                pass
        if short in hosts:
            return DnsAnswer(server, short, "NOERROR", [hosts[short]], "from /etc/hosts")
        why = ("the node's resolver (systemd-resolved) does not know the cluster domain: ask the "
               "cluster DNS (kube-dns ClusterIP) explicitly" if short.endswith(CLUSTER_DOMAIN)
               else "the twin models no DNS outside the cluster")
        return DnsAnswer(server, short, "NXDOMAIN", reason=why)

    # ------------------------------------------------------------------ containerd
    def sandboxes(self, node: str) -> list[dict[str, Any]]:
        """The pod sandboxes containerd runs on ``node``, newest first, each with its
        network (``host``, ``flannel``, ``cilium``) and its containers."""
        out = []
        for p in self.net.cache.pods_on(node) if self.net.cache else []:
            md, spec, st = _meta(p), p.get("spec") or {}, p.get("status") or {}
            host = bool(spec.get("hostNetwork"))
            cni = "host" if host else self.reach.sandbox_cni(p)
            if cni is None or st.get("phase") not in ("Running", "Pending"):
                continue
            sid = hashlib.sha256(f"{md.get('namespace')}/{md.get('name')}/{md.get('uid')}".encode()).hexdigest()
            statuses = {c.get("name"): c for c in st.get("containerStatuses") or ()}
            containers = []
            for c in spec.get("containers") or ():
                cs = statuses.get(c.get("name")) or {}
                state = "Running" if "running" in (cs.get("state") or {}) else \
                    ("Exited" if "terminated" in (cs.get("state") or {}) else "Created")
                containers.append({"id": hashlib.sha256((sid + c.get("name", "")).encode()).hexdigest(),
                                   "name": c.get("name"), "image": c.get("image", ""), "state": state,
                                   "attempt": int(cs.get("restartCount") or 0)})
            out.append({"id": sid, "name": md.get("name"), "namespace": md.get("namespace"),
                        "uid": md.get("uid"), "created": md.get("creationTimestamp") or "",
                        "ready": st.get("phase") == "Running" and not md.get("deletionTimestamp"),
                        "network": cni, "ip": "" if host else (st.get("podIP") or ""),
                        "labels": dict(md.get("labels") or {}), "containers": containers})
        return sorted(out, key=lambda s: s["created"], reverse=True)

    # ------------------------------------------------------------------ kube-router
    def policy_ipsets(self) -> dict[str, list[str]]:
        """``KUBE-DST-*`` (the pods a policy selects) and ``KUBE-SRC-*`` (its ingress peers)."""
        store = self.net.rt.store
        t = next((t for t in store.resource_types() if t.key == ("networking.k8s.io", "networkpolicies")), None)
        if t is None:
            return {}
        pods = self.reach._pods()
        out: dict[str, list[str]] = {}

        def ips(ns: str | None, sel: dict | None) -> list[str]:
            labels = (sel or {}).get("matchLabels") or {}
            return sorted(p["status"]["podIP"] for p in pods if self.reach.pod_live(p)
                          and (ns is None or _meta(p).get("namespace") == ns)
                          and all((_meta(p).get("labels") or {}).get(k) == v for k, v in labels.items()))
        for pol in store.iter_objects(t):
            ns, name = _meta(pol).get("namespace"), _meta(pol).get("name")
            spec = pol.get("spec") or {}
            out[f"KUBE-DST-{_h16(f'{ns}{name}ingress')}"] = ips(ns, spec.get("podSelector"))
            for i, rule in enumerate(spec.get("ingress") or ()):
                peers = [f for f in rule.get("from") or () if "podSelector" in f]
                if peers:
                    out[f"KUBE-SRC-{_h16(f'{ns}{name}ingressrule{i}')}"] = sorted(
                        {ip for f in peers for ip in ips(ns, f.get("podSelector"))})
        return out

    # ------------------------------------------------------------------ cilium-health
    def health(self, node: str) -> list[dict[str, Any]]:
        """What the agent on ``node`` finds probing every node: host (ICMP, HTTP 4240)
        and health endpoint (through the tunnel). Each status is "" when it answers."""
        cil = self.net.cilium
        out = []
        cfg = cil.config() if cil is not None else None
        for name in sorted(self.net.rt.nodes):
            nm = self.net.node_model(name)
            ip = self.reach.node_ip(name) or ""
            icmp = "" if nm is not None and nm.up else "Connection timed out"
            t = self.trace(node, ip, 4240, "tcp")
            http = "" if t.ok else (f'Get "http://{ip}:4240/hello": dial tcp {ip}:4240: '
                                    + ("connect: connection refused" if t.failure == "refused" else "i/o timeout"))
            ep_ip = self._health_ip(name)
            ep = ""
            if name != node:
                ok_cni = self.net.working_cni(node) == "cilium" and self.net.working_cni(name) == "cilium"
                port = cfg.tunnel_port if cfg is not None and cfg.tunnel else None
                blocked = port is not None and (firewall_blocks(self.net.rt.faults, node, name, "udp", port)
                                                or firewall_blocks(self.net.rt.faults, name, node, "udp", port))
                if not ok_cni or blocked or cil is None or not cil.agent_ready(name):
                    ep = "Connection timed out"
            out.append({"name": name, "ip": ip, "local": name == node, "host_icmp": icmp, "host_http": http,
                        "endpoint_ip": ep_ip, "endpoint_icmp": ep or icmp, "endpoint_http": ep or http,
                        "rtt": rtt(f"{node}->{name}")})
        return out

    def _health_ip(self, node: str) -> str:
        cil = self.net.cilium
        t = cil._type("cilium.io", "ciliumnodes") if cil is not None else None
        cn = self.net.rt.store.peek(t, None, node) if t is not None else None
        return str(((cn or {}).get("spec") or {}).get("health", {}).get("ipv4") or "")
