"""DNS lookups through the kube-dns ClusterIP, from a node and from a pod on it.

A lookup through a ClusterIP proves more than DNS: the query goes to a Service address,
so it only answers when the node's service translation (kube-proxy's rules, or a socket
load balancer left by Cilium) sends it to a CoreDNS pod that is really there. After a
rollback that skipped Cilium's cleanup, exactly this fails (docs/cilium-on-k3s.md §4).

* from a node (:func:`from_node`, over SSH): ``dig @<kube-dns ClusterIP> NAME +short``
  (bounded: 2 s, 2 tries), else ``nslookup NAME <ClusterIP>``; the node's own resolver
  knows no ``cluster.local``, so the server is always named;
* from a pod (:func:`from_pod`, ``kubectl exec`` through :meth:`runbook.cluster.Cluster.exec`):
  ``nslookup NAME <ClusterIP>``, else ``getent hosts NAME`` (the pod's resolv.conf points
  at the same ClusterIP). Images without either tool are skipped for another pod.

The answer must hold the ``kubernetes`` Service's ClusterIP. The parsers are pure.

Example:
    >>> parse_nslookup("Server:\\t10.43.0.10\\nAddress:\\t10.43.0.10#53\\n\\nName:\\tkubernetes.default.svc."
    ...                "cluster.local\\nAddress: 10.43.0.1\\n")
    ['10.43.0.1']
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable

from .errors import ClusterError, NodeError

if TYPE_CHECKING:
    from .cluster import Cluster
    from .nodes import Node

__all__ = ["NAME", "DnsProbe", "parse_nslookup", "parse_dig_short", "parse_getent", "from_node",
           "from_pod", "probe_pods", "service_ip"]

#: the name looked up (fully qualified: a node's resolver knows no search path)
NAME = "kubernetes.default.svc.cluster.local"
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$|^[0-9a-fA-F:]+:[0-9a-fA-F:]*$")
_MISSING = (126, 127)


@dataclass
class DnsProbe:
    """One lookup: where it ran (a node, or ``namespace/pod``), on which node, with which
    tool, whether the expected address came back, and what came back instead."""

    source: str
    node: str
    tool: str
    ok: bool
    answer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_nslookup(text: str) -> list[str]:
    """The addresses after the ``Name:`` line of bind's or busybox's ``nslookup`` (pure).

    >>> parse_nslookup("Server: 10.43.0.10\\nAddress 1: 10.43.0.10 kube-dns\\n\\nName: kubernetes\\n"
    ...                "Address 1: 10.43.0.1 kubernetes.default.svc.cluster.local\\n")
    ['10.43.0.1']
    """
    out, named = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Name:"):
            named = True
        elif named and line.startswith("Address"):
            value = line.split(":", 1)[1].split() if ":" in line else []
            if value and _IP.match(value[0].split("#")[0]):
                out.append(value[0].split("#")[0])
    return out


def parse_dig_short(text: str) -> list[str]:
    """``dig +short`` lines that are addresses (pure).

    >>> parse_dig_short("10.43.0.1\\n;; connection timed out; no servers could be reached\\n")
    ['10.43.0.1']
    """
    return [ln.strip() for ln in text.splitlines() if _IP.match(ln.strip())]


def parse_getent(text: str) -> list[str]:
    """The addresses of ``getent hosts`` (pure).

    >>> parse_getent("10.43.0.1       kubernetes.default.svc.cluster.local\\n")
    ['10.43.0.1']
    """
    return [ln.split()[0] for ln in text.splitlines() if ln.split() and _IP.match(ln.split()[0])]


def service_ip(cluster: Cluster, namespace: str, name: str) -> str | None:
    """A Service's ClusterIP (None when the Service is absent)."""
    svc = cluster.request("GET", f"/api/v1/namespaces/{namespace}/services/{name}", ok_missing=True)
    return ((svc or {}).get("spec") or {}).get("clusterIP")


def _short(text: str) -> str:
    return " ".join(text.split())[:200] or "(no output)"


def from_node(n: Node, *, server: str, expect: str, name: str = NAME) -> DnsProbe:
    """Look ``name`` up through ``server`` (the kube-dns ClusterIP) from node ``n`` (SSH)."""
    try:
        r = n.run("dig @%s %s +short +time=2 +tries=2", server, name, timeout=30)
        tool, parse = "dig", parse_dig_short
        if r.rc in _MISSING:
            r = n.run("nslookup %s %s", name, server, timeout=30)
            tool, parse = "nslookup", parse_nslookup
    except NodeError as e:
        return DnsProbe(n.name, n.name, "ssh", False, f"not reached: {e}")
    if r.rc in _MISSING:
        return DnsProbe(n.name, n.name, "none", False,
                        "neither dig nor nslookup on the node (install dnsutils / bind9-dnsutils)")
    got = parse(r.stdout)
    return DnsProbe(n.name, n.name, tool, expect in got,
                    ", ".join(got) if got else _short(r.stdout + " " + r.stderr))


def _candidates(pods: Iterable[dict], node: str) -> list[dict]:
    out = []
    for p in pods:
        spec, st, md = p.get("spec") or {}, p.get("status") or {}, p.get("metadata") or {}
        if spec.get("nodeName") != node or spec.get("hostNetwork") or md.get("deletionTimestamp"):
            continue
        if st.get("phase") != "Running" or spec.get("dnsPolicy", "ClusterFirst") != "ClusterFirst":
            continue
        if not all((cs.get("state") or {}).get("running") for cs in st.get("containerStatuses") or [{}]):
            continue
        out.append(p)
    return sorted(out, key=lambda p: (p["metadata"]["namespace"] != "kube-system", p["metadata"]["name"]))


def from_pod(cluster: Cluster, pod: dict, *, server: str, expect: str, name: str = NAME) -> DnsProbe | None:
    """Look ``name`` up from ``pod``; None when its first container has neither nslookup nor
    getent (try another pod)."""
    md = pod["metadata"]
    container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name")
    source = f"{md['namespace']}/{md['name']}"
    node = (pod.get("spec") or {}).get("nodeName") or ""
    for tool, argv, parse in (("nslookup", ["nslookup", name, server], parse_nslookup),
                              ("getent", ["getent", "hosts", name], parse_getent)):
        try:
            r = cluster.exec(md["namespace"], md["name"], argv, container=container, timeout=30)
        except ClusterError as e:
            return DnsProbe(source, node, tool, False, f"exec failed: {e}")
        if r.rc in _MISSING:
            continue
        got = parse(r.stdout)
        return DnsProbe(source, node, tool, expect in got,
                        ", ".join(got) if got else _short(r.stdout + " " + r.stderr))
    return None


def probe_pods(cluster: Cluster, nodes: Iterable[str], *, server: str, expect: str,
               tries: int = 12) -> list[DnsProbe]:
    """One lookup from a running pod on each of ``nodes`` (up to ``tries`` pods per node are
    tried until one has a lookup tool); a node without such a pod gets a failed row saying so."""
    pods = cluster.list("pods")
    out = []
    for node in nodes:
        probe = None
        cands = _candidates(pods, node)
        for p in cands[:tries]:
            probe = from_pod(cluster, p, server=server, expect=expect)
            if probe is not None:
                break
        out.append(probe or DnsProbe("-", node, "none", False,
                                     f"no running pod on {node} with nslookup or getent "
                                     f"({len(cands)} candidate(s)): run a lookup by hand from a pod there"))
    return out
