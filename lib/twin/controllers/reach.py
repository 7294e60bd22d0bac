"""Reachability on the twin: can a source (a node, or a pod) reach ``ip:port`` now?

One function decides every probe the twin answers (``curl``/``nslookup`` on a node or in a
pod, ``cilium-health``, the ingress's backends): :meth:`Reachability.trace`, exposed as
:meth:`twin.controllers.network.NetworkModel.reach`. It follows a packet as the kernel
would, in this order:

1. **the source**: a node's host network, or a pod whose sandbox's network still
   carries traffic on its node (an old flannel pod once flannel stopped has no network);
2. **service translation** of a ClusterIP, on the source node: first the socket load
   balancer on the cgroup root, if one is attached. While the Cilium agent that owns it
   runs it translates to the Service's current endpoints; once the agent is gone (a
   ``helm uninstall`` without ``cilium-dbg post-uninstall-cleanup``) it still translates,
   with the table it had then: the Cilium-era backends. Else kube-proxy's rules (k3s's
   embedded kube-proxy when it runs, current endpoints; rules it left behind, the
   endpoints of its last sync, :mod:`.kube_proxy_sync`), else Cilium's kube-proxy replacement. Nothing translating: the ClusterIP
   is a virtual address nobody answers (timeout);
3. **NodePorts**: a node's address with a Service's node port is translated on that node
   (kube-proxy or Cilium's KPR, whichever is in force there), then forwarded from it;
4. **delivery**: to a node's address (its firewall may drop the port); to a pod on the
   same node (between flannel's ``cni0`` and Cilium's ``cilium_host`` through the host's
   routes); to a pod on another node over the overlay of the destination's sandbox
   (flannel VXLAN on UDP 8472 via ``flannel.1`` for the cluster CIDR, Cilium's tunnel on
   its ``tunnel-port`` via ``cilium_host`` for its pool), which must run on the source
   node too: the migration's two overlays side by side. Between the two networks
   flannel's masquerading brings the reply back on the same overlay, so a node's
   firewall dropping that overlay's UDP port either way (fault ``firewall``) breaks it. A Cilium pod's traffic to or from a flannel pod passes the host's
   routing table only with legacy host routing (``bpf.hostLegacyRouting``, the
   migration guide's requirement; the agent falls back to it without kube-proxy
   replacement and BPF masquerading). Service traffic from a pod outside k3s's cluster
   CIDR is masqueraded by kube-proxy to the node's address.

The result is a :class:`Trace` (ok, why, how it failed, who answered).

Example (on the twin's loop)::

    net.reach("fast-skunk", "10.43.0.10", 53, "udp")
    (False, "socket LB on fast-skunk (left by Cilium) translated 10.43.0.10:53/udp to ...")
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..node.kube_proxy import target_port
from . import netpol
from .kubelet import SANDBOX_CNI_ANNOTATION, node_internal_ip
from .scheduler import node_ready_status

TUNNEL_PORTS = {"flannel": 8472}


@dataclass
class Trace:
    """How one connection attempt went.

    Attributes:
        ok: the destination answered.
        reason: why (every hop, in words a person can act on).
        failure: ``timeout`` (dropped, nobody answers), ``refused`` (a REJECT or nothing
            listening on a live host) or ``unreachable`` (no route); "" when ok.
        backend: the pod that answered (None for a host or on failure).
        addr: the ``ip:port`` that answered (after translation).
        hops: the steps, in order.
    """

    ok: bool
    reason: str
    failure: str = ""
    backend: dict | None = None
    addr: str = ""
    hops: list[str] = field(default_factory=list)


def _meta(o: dict | None) -> dict:
    return (o or {}).get("metadata") or {}


def pod_name(pod: dict) -> str:
    return f"{_meta(pod).get('namespace')}/{_meta(pod).get('name')}"


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def firewall_blocks(faults: Any, src: str, dst: str, proto: str, port: int) -> bool:
    """Whether ``dst``'s firewall drops ``proto/port`` coming from node ``src`` (fault
    ``firewall``: ``[{"node": N, "from": [..] | "*", "ports": ["udp/8473", ...]}]``)."""
    want = f"{proto.lower()}/{port}"
    for rule in getattr(faults, "firewall", None) or ():
        if rule.get("node") not in (dst, "*"):
            continue
        frm = rule.get("from", "*")
        if frm != "*" and src not in (frm if isinstance(frm, (list, tuple, set)) else [frm]):
            continue
        if want in [str(p).lower() for p in rule.get("ports") or ()]:
            return True
    return False


class Reachability:
    """The reach/trace engine of a :class:`~.network.NetworkModel` (see module doc)."""

    def __init__(self, net: Any) -> None:
        self.net = net

    # ------------------------------------------------------------------ cluster facts
    @property
    def rt(self) -> Any:
        return self.net.rt

    def _pods(self) -> list[dict]:
        return list(self.net.cache.all(("", "pods"))) if self.net.cache else []

    def services(self) -> list[dict]:
        t = self.net.types.get("services") or next(
            (t for t in self.rt.store.resource_types() if t.key == ("", "services")), None)
        if t is None:
            return []
        self.net.types["services"] = t
        return list(self.rt.store.iter_objects(t))

    @staticmethod
    def pod_live(pod: dict) -> bool:
        st = pod.get("status") or {}
        return (st.get("phase") == "Running" and not _meta(pod).get("deletionTimestamp")
                and bool(st.get("podIP")))

    @staticmethod
    def pod_ready(pod: dict) -> bool:
        return Reachability.pod_live(pod) and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or ())

    def endpoints(self, svc: dict, port: dict, pods: list[dict] | None = None, *,
                  ready: bool = False) -> list[tuple[dict, str]]:
        """The Ready pods behind one Service port, with their ``ip:targetPort``
        (``ready``: ``pods`` are known to be Ready pods of the Service's namespace)."""
        spec = svc.get("spec") or {}
        sel = spec.get("selector") or {}
        ns = _meta(svc).get("namespace")
        out: list[tuple[dict, str]] = []
        if not sel:
            if (ns, _meta(svc).get("name")) == ("default", "kubernetes"):
                for n in self.rt.nodes.values():
                    if n.role == "server":
                        out.append(({}, f"{n.spec.ip}:6443"))
            return out
        for p in pods if pods is not None else self._pods():
            if not ready and (_meta(p).get("namespace") != ns or not self.pod_ready(p)):
                continue
            if not _matches(sel, _meta(p).get("labels") or {}):
                continue
            out.append((p, f"{p['status']['podIP']}:{target_port(p, port)}"))
        return sorted(out, key=lambda e: e[1])

    def service_at(self, ip: str) -> dict | None:
        for s in self.services():
            spec = s.get("spec") or {}
            if ip in ([spec.get("clusterIP")] + list(spec.get("clusterIPs") or ())):
                return s
        return None

    def lb_snapshot(self) -> dict[str, list[str]]:
        """Every ClusterIP service port with its current backends: what a running Cilium
        agent keeps in its socket-LB table (frozen when the agent goes)."""
        pods = self._pods()
        table: dict[str, list[str]] = {}
        for s in self.services():
            spec = s.get("spec") or {}
            cip = spec.get("clusterIP")
            if not cip or cip == "None":
                continue
            for port in spec.get("ports") or ():
                key = f"{cip}:{int(port.get('port', 0))}/{str(port.get('protocol', 'TCP')).lower()}"
                table[key] = [addr for _, addr in self.endpoints(s, port, pods)]
        return table

    def pod_at(self, ip: str) -> dict | None:
        """The live, non-hostNetwork pod holding ``ip`` now (None: nobody has it). Two
        pods may hold one address (Cilium's ``ipam: kubernetes`` next to old flannel
        pods): the node's working CNI delivers to its own sandbox."""
        found = [p for p in self._pods() if (p.get("status") or {}).get("podIP") == ip
                 and not (p.get("spec") or {}).get("hostNetwork") and self.pod_live(p)]
        if len(found) > 1:
            found.sort(key=lambda p: not self.net.pod_reachable(p)[0])
        return found[0] if found else None

    def node_at(self, ip: str) -> Any:
        return next((n for n in self.rt.nodes.values() if str(n.spec.ip) == ip), None)

    def _cilium_cfg(self) -> Any:
        cil = self.net.cilium
        return cil.config() if cil is not None else None

    def kpr_on(self, node: str) -> bool:
        cil = self.net.cilium
        return bool(cil is not None and cil.agent_ready(node) and cil.config().kpr)

    def tunnel_port(self, cni: str, nm: Any) -> int | None:
        """The UDP port of the overlay ``cni`` uses from node ``nm`` (None: no tunnel)."""
        if cni == "flannel":
            dev = nm.interfaces.get("flannel.1")
            backend = str((nm.running or self.net._last_settings.get(nm.name) or {}).get("flannel_backend", "vxlan"))
            if backend != "vxlan":
                return None
            return int(dev.info.get("vxlan_port", 8472)) if dev is not None else 8472
        cfg = self._cilium_cfg()
        if cfg is None or not cfg.tunnel:
            return None
        return int(cfg.tunnel_port)

    # ------------------------------------------------------------------ trace
    def trace(self, src: str | dict, ip: str, port: int, proto: str = "tcp") -> Trace:
        """Follow one connection from ``src`` (node name or pod dict) to ``ip:port``."""
        proto = proto.lower()
        hops: list[str] = []
        if isinstance(src, dict):
            ok, why = self.net.pod_reachable(src)
            if not ok:
                return Trace(False, f"source pod {pod_name(src)}: {why}", "unreachable", hops=hops)
            node = (src.get("spec") or {}).get("nodeName") or ""
            label = f"pod {pod_name(src)} on {node}"
        else:
            node, label = src, f"node {src}"
        nm = self.net.node_model(node)
        if nm is None or not nm.up:
            return Trace(False, f"{label}: the node is down", "unreachable")
        svc = self.service_at(ip)
        if svc is not None:
            return self._via_service(svc, src, node, nm, ip, port, proto, label, hops)
        dst_node = self.node_at(ip)
        if dst_node is not None:
            nodeport = self._nodeport(port, proto)
            if nodeport is not None:
                return self._via_nodeport(nodeport, node, dst_node, port, proto, label, hops)
        return self._deliver(src, node, ip, port, proto, label, hops)

    def _via_service(self, svc: dict, src: str | dict, node: str, nm: Any, ip: str, port: int,
                     proto: str, label: str, hops: list[str]) -> Trace:
        name = pod_name(svc)
        sport = next((p for p in (svc.get("spec") or {}).get("ports") or ()
                      if int(p.get("port", 0)) == port and str(p.get("protocol", "TCP")).lower() == proto), None)
        if sport is None:
            return Trace(False, f"{label}: service {name} ({ip}) has no {proto.upper()} port {port}: "
                                "nothing translates it and nothing answers on a virtual address",
                         "timeout", hops=hops)
        backends: list[str] | None = None
        kube_proxy = False
        if nm.bpf.socket_lb_active():
            if nm.bpf.lb_live:
                backends = [a for _, a in self.endpoints(svc, sport)]
                hops.append(f"Cilium's socket LB on {node} translated {ip}:{port}/{proto} (current endpoints)")
            else:
                stale = nm.bpf.translate(ip, port, proto)
                if stale is not None:
                    backends = list(stale)
                    hops.append(f"the socket LB Cilium left on {node}'s cgroup root translated "
                                f"{ip}:{port}/{proto} to the backends it had when its agent stopped "
                                f"({', '.join(stale) or 'none'}); only `cilium-dbg post-uninstall-cleanup` "
                                "or a reboot removes it")
        if backends is None:
            if nm.running.get("kube_proxy"):
                backends = [a for _, a in self.endpoints(svc, sport)]
                kube_proxy = True
                hops.append(f"kube-proxy (in k3s) on {node} translated {ip}:{port}/{proto}")
            elif self.kpr_on(node):
                backends = [a for _, a in self.endpoints(svc, sport)]
                hops.append(f"Cilium's kube-proxy replacement on {node} translated {ip}:{port}/{proto}")
            else:
                left = next((s for s in nm.kube_proxy.services
                             if s.cluster_ip == ip and s.port == port and s.protocol.lower() == proto), None)
                if left is not None and any(c.startswith("KUBE-SVC-") for c in nm.iptables.chains("nat")):
                    backends = list(left.endpoints)
                    kube_proxy = True
                    hops.append(f"kube-proxy rules left on {node} (kube-proxy no longer runs) translated "
                                f"{ip}:{port}/{proto} to the endpoints of its last sync "
                                f"({', '.join(left.endpoints) or 'none'})")
        if backends is None:
            return Trace(False, f"{label}: nothing translates service {name} ({ip}:{port}/{proto}) on {node}: "
                                "no kube-proxy, no Cilium kube-proxy replacement, no socket LB; "
                                "the ClusterIP is a virtual address nobody answers", "timeout", hops=hops)
        if not backends:
            return Trace(False, f"{label}: service {name} has no endpoints ({ip}:{port}/{proto} is rejected)",
                         "refused", hops=hops)
        target = sorted(backends)[0]
        tip, tport = target.rsplit(":", 1)
        t = self._deliver(src, node, tip, int(tport), proto, label, hops,
                          masq=kube_proxy and self._outside_cluster_cidr(src))
        t.reason = (f"{'; '.join(hops)}; " if hops else "") + t.reason
        return t

    def _outside_cluster_cidr(self, src: str | dict) -> bool:
        """A pod whose address is outside k3s's cluster CIDR (Cilium's migration pool):
        kube-proxy, started with ``--cluster-cidr``, masquerades its Service traffic to the
        node's address, so the reply comes back to the node (I6 of docs/node-by-node.md)."""
        if not isinstance(src, dict):
            return False
        pip = (src.get("status") or {}).get("podIP")
        try:
            cidr = str(self.rt.fixture.cluster.get("cluster_cidr", "10.42.0.0/16"))
            return bool(pip) and ipaddress.ip_address(pip) not in ipaddress.ip_network(cidr, strict=False)
        except (ValueError, AttributeError):
            return False

    def _nodeport(self, port: int, proto: str) -> tuple[dict, dict] | None:
        for s in self.services():
            for p in (s.get("spec") or {}).get("ports") or ():
                if p.get("nodePort") and int(p["nodePort"]) == port and \
                        str(p.get("protocol", "TCP")).lower() == proto:
                    return s, p
        return None

    def _via_nodeport(self, found: tuple[dict, dict], node: str, dst: Any, port: int, proto: str,
                      label: str, hops: list[str]) -> Trace:
        svc, sport = found
        if not dst.up:
            return Trace(False, f"{label}: node {dst.name} is down", "timeout", hops=hops)
        if dst.name != node and firewall_blocks(self.rt.faults, node, dst.name, proto, port):
            return Trace(False, f"{label}: {dst.name}'s firewall drops {proto.upper()} {port} from {node}",
                         "timeout", hops=hops)
        where = f"NodePort {dst.spec.ip}:{port} on {dst.name}"
        if dst.running.get("kube_proxy"):
            how = "kube-proxy (in k3s)"
        elif self.kpr_on(dst.name):
            how = "Cilium's kube-proxy replacement"
        else:
            return Trace(False, f"{label}: nothing serves {where} (no kube-proxy, no Cilium kube-proxy "
                                "replacement on that node)", "refused", hops=hops)
        eps = [a for _, a in self.endpoints(svc, sport)]
        hops.append(f"{how} on {dst.name} took {where} for service {pod_name(svc)}")
        if not eps:
            return Trace(False, f"{label}: {'; '.join(hops)}; the service has no endpoints", "refused", hops=hops)
        tip, tport = sorted(eps)[0].rsplit(":", 1)
        t = self._deliver(dst.name, dst.name, tip, int(tport), proto, f"node {dst.name}", hops)
        t.reason = f"{'; '.join(hops)}; " + t.reason
        return t

    # ------------------------------------------------------------------ delivery
    def _deliver(self, src: str | dict, node: str, ip: str, port: int, proto: str, label: str,
                 hops: list[str], masq: bool = False) -> Trace:
        dst_node = self.node_at(ip)
        if dst_node is not None:
            return self._to_host(node, dst_node, port, proto, label, hops)
        pod = self.pod_at(ip)
        if pod is None:
            try:
                in_cluster = ipaddress.ip_address(ip) in ipaddress.ip_network(
                    str(self.rt.fixture.cluster.get("cluster_cidr", "10.42.0.0/16")), strict=False)
            except (ValueError, AttributeError):
                in_cluster = False
            if in_cluster:
                return Trace(False, f"{label}: no pod holds {ip} now (connection to {ip}:{port} times out)",
                             "timeout", hops=hops)
            return Trace(False, f"{label}: {ip} is outside the cluster: the twin models no such host",
                         "unreachable", hops=hops)
        ok, why = self.net.pod_reachable(pod)
        if not ok:
            return Trace(False, f"{label}: destination pod {pod_name(pod)}: {why}", "timeout", hops=hops)
        dnode = (pod.get("spec") or {}).get("nodeName") or ""
        policy = netpol.check(self, src, pod, port, proto)
        if policy is not None and not policy.allowed:
            return Trace(False, f"{label} to pod {pod_name(pod)} ({ip}:{port}): {policy.why}", "timeout",
                         hops=hops)
        src_net = self._source_network(src, masq)
        dst_net = self.sandbox_cni(pod) or ""
        mixed = self._mixed_overlays(src_net, dst_net, node, dnode)
        if mixed is not None:
            return Trace(False, f"{label} to pod {pod_name(pod)} ({ip}:{port}): {mixed}", "timeout", hops=hops)
        if dnode == node:
            via = "" if src_net in ("", dst_net) else f" (from {src_net} to {dst_net} through the host's routes)"
            return Trace(True, f"{label} reached pod {pod_name(pod)} ({ip}:{port}) on the same node{via}",
                         backend=pod, addr=f"{ip}:{port}", hops=hops)
        # The source node routes the destination's pod CIDR into the overlay of the
        # destination's sandbox (flannel.1 for 10.42.0.0/16, cilium_host for Cilium's
        # pool). Between the two networks flannel's FLANNEL-POSTRTG masquerades the
        # source to the egress device's address (a flannel pod towards Cilium's pool, a
        # Cilium pod towards a remote flannel subnet), so the reply comes back on the
        # same overlay: each direction of a connection crosses the destination's tunnel.
        if dst_net not in self.net.overlays(node):
            if not self.net.overlays(node) and self.net.working_cni(node) is None:
                return Trace(False, f"{label}: no pod network on {node} (no working CNI) to reach {ip}",
                             "unreachable", hops=hops)
            return Trace(False, f"{label}: {node} carries pods over {self._over(node)}, {dnode}'s pod "
                                f"{pod_name(pod)} is on {dst_net}: no route from {node} into {dst_net}'s "
                                "network, no overlay joins them", "timeout", hops=hops)
        tport = self.tunnel_port(dst_net, self.net.node_model(node))
        if tport is not None:
            for a, b in ((node, dnode), (dnode, node)):
                if firewall_blocks(self.rt.faults, a, b, "udp", tport):
                    return Trace(False, f"{label}: {dst_net}'s VXLAN (UDP {tport}) from {a} to {b} is dropped "
                                        f"by {b}'s firewall: pod {pod_name(pod)} on {dnode} is unreachable",
                                 "timeout", hops=hops)
        over = f" over {dst_net} VXLAN UDP {tport}" if tport else f" over {dst_net}"
        if src_net and src_net != dst_net:
            over += f" (from {src_net}, masqueraded to {node}'s {dst_net} address by flannel's rules)"
        return Trace(True, f"{label} reached pod {pod_name(pod)} ({ip}:{port}) on {dnode}{over}",
                     backend=pod, addr=f"{ip}:{port}", hops=hops)

    def _over(self, node: str) -> str:
        return " and ".join(self.net.overlays(node)) or "nothing"

    def _source_network(self, src: str | dict, masq: bool) -> str:
        """The pod network of the source's address ("" for a node's host network, a
        hostNetwork pod, or a pod whose Service traffic kube-proxy masqueraded to its
        node's address)."""
        if not isinstance(src, dict) or (src.get("spec") or {}).get("hostNetwork") or masq:
            return ""
        return self.sandbox_cni(src) or ""

    def _mixed_overlays(self, src_net: str, dst_net: str, node: str, dnode: str) -> str | None:
        """Why traffic between a flannel pod and a Cilium pod fails, or None. It leaves
        Cilium's datapath through the host's routing table only with legacy host routing
        (``bpf.hostLegacyRouting=true``, which the migration guide requires; Cilium falls
        back to it on its own without kube-proxy replacement and BPF masquerading)."""
        if not src_net or src_net == dst_net:
            return None
        cil = self.net.cilium
        cilium_node = node if src_net == "cilium" else dnode
        if cil is None:
            return None
        cfg = cil.agent_config(cilium_node)
        if cfg.host_legacy_routing or not (cfg.kpr and cfg.bpf_masquerade):
            return None
        return (f"Cilium on {cilium_node} routes its pods with BPF host routing "
                f"(enable-host-legacy-routing is not true): traffic between {src_net} and {dst_net} "
                "pods never reaches the host's routing table")

    def _to_host(self, node: str, dst: Any, port: int, proto: str, label: str, hops: list[str]) -> Trace:
        addr = f"{dst.spec.ip}:{port}"
        if not dst.up:
            return Trace(False, f"{label}: node {dst.name} is down", "timeout", hops=hops)
        if dst.name != node and firewall_blocks(self.rt.faults, node, dst.name, proto, port):
            return Trace(False, f"{label}: {dst.name}'s firewall drops {proto.upper()} {port} from {node}",
                         "timeout", hops=hops)
        if port in (6443, 6444) and proto == "tcp":
            if (dst.role != "server" and port == 6443) or dst.unit_state != "active":
                return Trace(False, f"{label}: nothing listens on {addr} (k3s {dst.unit_state})",
                             "refused", hops=hops)
            if dst.role != "server" and not any(n.role == "server" and n.up and n.unit_state == "active"
                                                for n in self.rt.nodes.values()):
                # an agent's 6444 is k3s' load balancer: it forwards to whichever server answers
                return Trace(False, f"{label}: k3s' load balancer on {addr} has no server to forward to "
                                    "(every server's k3s is down)", "refused", hops=hops)
        if port in (4240, 4244) and proto == "tcp":
            cil = self.net.cilium
            if cil is None or not cil.agent_ready(dst.name):
                return Trace(False, f"{label}: no Cilium agent listens on {addr}", "refused", hops=hops)
        return Trace(True, f"{label} reached node {dst.name} ({addr})", addr=addr, hops=hops)

    # ------------------------------------------------------------------ node readiness view
    def node_ready(self, name: str) -> bool:
        n = self.net.cache.get(("", "nodes"), "", name) if self.net.cache else None
        return n is not None and node_ready_status(n) == "True"

    def node_ip(self, name: str) -> str | None:
        n = self.net.cache.get(("", "nodes"), "", name) if self.net.cache else None
        nm = self.net.node_model(name)
        return (node_internal_ip(n) if n else None) or (str(nm.spec.ip) if nm else None)

    @staticmethod
    def sandbox_cni(pod: dict) -> str | None:
        return (_meta(pod).get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION)
