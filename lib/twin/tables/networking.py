"""Printers of Services, Endpoints, Ingresses and NetworkPolicies."""
from __future__ import annotations

from .cells import Column, _get, _map_selector, _name, _none, _selector_str, age


# --- services ----------------------------------------------------------------------------
def service_external_ip(obj: dict, _now: float = 0) -> str:
    """EXTERNAL-IP: load-balancer ingress IPs (``<pending>`` until assigned)."""
    spec = obj.get("spec") or {}
    stype = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if stype == "ExternalName":
        return spec.get("externalName") or "<none>"
    if stype == "LoadBalancer":
        ing = [i.get("ip") or i.get("hostname") for i in
               _get(obj, "status", "loadBalancer", "ingress", default=[]) or []]
        ips = [i for i in ing if i] + external
        return ",".join(ips) or "<pending>"
    return "<unknown>"


def service_ports(obj: dict, _now: float = 0) -> str:
    """PORT(S): ``80/TCP``, ``80:30080/TCP`` with a node port."""
    out = []
    for p in _get(obj, "spec", "ports", default=[]) or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            out.append(f"{p.get('port')}:{p.get('nodePort')}/{proto}")
        else:
            out.append(f"{p.get('port')}/{proto}")
    return ",".join(out) or "<none>"


SERVICE_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Type", "string", lambda o, n: _get(o, "spec", "type", default="ClusterIP")),
    Column("Cluster-IP", "string", lambda o, n: _none(_get(o, "spec", "clusterIP", default=""))),
    Column("External-IP", "string", service_external_ip),
    Column("Port(s)", "string", service_ports),
    Column("Age", "string", age),
    Column("Selector", "string", lambda o, n: _map_selector(_get(o, "spec", "selector")), priority=1),
)


# --- networking --------------------------------------------------------------------------
def _ingress_hosts(o: dict, _now: float) -> str:
    hosts = [r.get("host") for r in _get(o, "spec", "rules", default=[]) or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _lb_address(o: dict, _now: float) -> str:
    ing = [i.get("ip") or i.get("hostname") for i in
           _get(o, "status", "loadBalancer", "ingress", default=[]) or []]
    return ",".join(i for i in ing if i)


def _ingress_ports(o: dict, _now: float) -> str:
    return "80, 443" if _get(o, "spec", "tls") else "80"


INGRESS_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Class", "string", lambda o, n: _none(_get(o, "spec", "ingressClassName", default=""))),
    Column("Hosts", "string", _ingress_hosts),
    Column("Address", "string", _lb_address),
    Column("Ports", "string", _ingress_ports),
    Column("Age", "string", age),
)

NETWORKPOLICY_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Pod-Selector", "string",
           lambda o, n: _selector_str(_get(o, "spec", "podSelector")).replace("<none>", "")),
    Column("Age", "string", age),
)


def _endpoints(o: dict, _now: float) -> str:
    out = []
    for s in o.get("subsets") or []:
        ports = s.get("ports") or [{}]
        for a in s.get("addresses") or []:
            for p in ports:
                out.append(f"{a.get('ip')}:{p['port']}" if p.get("port") else str(a.get("ip")))
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


ENDPOINTS_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Endpoints", "string", _endpoints),
    Column("Age", "string", age),
)
