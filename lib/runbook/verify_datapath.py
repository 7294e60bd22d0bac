"""04-verify's proof of the data path, after Cilium's "Validate the Setup" (kubeproxy-free).

Readiness proves little: agents can be Ready while the tunnel port is blocked between
nodes (docs/cilium-on-k3s.md §8). These checks run in the agents, in pods, and on the nodes:

* :func:`agent_status`: ``cilium-dbg status --verbose`` in every agent: the agent ``Ok``,
  ``KubeProxyReplacement: True``, and its "Cluster health" line all nodes reachable;
* :func:`health`: ``cilium-health status -o json`` in every agent: each agent probes every
  node's host and its health endpoint, a pod on the pod network of that node (ICMP and an
  HTTP request across the tunnel). An unreachable one fails the check **naming the node
  pair** (``set-hog -> fast-heron: endpoint 10.42.2.9 HTTP ...``): that is a blocked tunnel
  port (UDP 8473 with ``tunnelPort: 8473``) or a firewall between the two;
* from a pod on every node (:mod:`runbook.verify_probe`, the probe DaemonSet of
  :mod:`runbook.probe_daemonset`): a lookup through the kube-dns ClusterIP, an HTTP
  request to a Service ClusterIP, and one to the probe pod on the other nodes. In a dry
  run (nothing created) :func:`pod_dns` makes the lookup from pods that already run;
* :func:`nodeport`: from the first node (SSH), ``curl`` to one Service's NodePort on every
  node's address: each node must translate it (Cilium's kube-proxy replacement, or
  kube-proxy after a rollback) and forward it to a backend.

The parsers are pure.

Example:
    >>> parse_status("Cilium:                  Ok   1.19.3 (v1.19.3)\\n"
    ...              "KubeProxyReplacement:    True   [eth0   10.0.0.11 (Direct Routing)]\\n")["KubeProxyReplacement"]
    'True   [eth0   10.0.0.11 (Direct Routing)]'
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import dns_probe
from .errors import ClusterError, NodeError
from .verify import Check, mode

if TYPE_CHECKING:
    from .session import Session

__all__ = ["parse_status", "status_problems", "parse_health", "agent_pods", "agent_status",
           "health", "pod_dns", "nodeport_target", "nodeport"]

AGENT_CONTAINER = "cilium-agent"
_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9 ]*?):\s+(.*)$")


def parse_status(text: str) -> dict[str, str]:
    """``cilium-dbg status`` as ``{field: value}`` (top-level lines only), pure."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        m = _LINE.match(line.rstrip())
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


def status_problems(node: str, fields: dict[str, str]) -> list[str]:
    """What is wrong in one agent's status (pure).

    >>> status_problems("a", {"Cilium": "Ok   1.19.3", "KubeProxyReplacement": "False",
    ...                       "Cluster health": "2/3 reachable"})
    ['a: KubeProxyReplacement is False, not True', 'a: cluster health 2/3 reachable']
    """
    bad = []
    if not fields.get("Cilium", "").startswith("Ok"):
        bad.append(f"{node}: agent not Ok: {fields.get('Cilium') or 'no status'}")
    if not fields.get("KubeProxyReplacement", "").startswith("True"):
        bad.append(f"{node}: KubeProxyReplacement is {fields.get('KubeProxyReplacement') or 'absent'}, not True")
    m = re.match(r"(\d+)/(\d+)", fields.get("Cluster health", ""))
    if m and m.group(1) != m.group(2):
        bad.append(f"{node}: cluster health {m.group(1)}/{m.group(2)} reachable")
    return bad


def parse_health(src: str, doc: dict) -> list[str]:
    """One line per unreachable probe of ``cilium-health status -o json`` run on ``src``,
    naming the node pair (pure).

    >>> parse_health("a", {"nodes": [{"name": "b", "host": {"primary-address": {"ip": "10.0.0.2",
    ...   "icmp": {"status": ""}, "http": {"status": ""}}}, "health-endpoint": {"primary-address":
    ...   {"ip": "10.42.1.9", "icmp": {"status": "Connection timed out"}, "http": {"status": ""}}}}]})
    ['a -> b: endpoint 10.42.1.9 ICMP: Connection timed out']
    """
    out = []
    for n in doc.get("nodes") or ():
        dst = str(n.get("name", "?")).split("/")[-1]
        for what, key in (("host", "host"), ("endpoint", "health-endpoint")):
            addr = (n.get(key) or {}).get("primary-address") or {}
            for proto in ("icmp", "http"):
                err = ((addr.get(proto) or {}).get("status")) or ""
                if err:
                    out.append(f"{src} -> {dst}: {what} {addr.get('ip', '?')} {proto.upper()}: {err}")
    return out


def agent_pods(s: Session) -> list[dict]:
    """The running Cilium agent pods (``k8s-app=cilium``), by node."""
    pods = s.cluster.list("pods", s.params.cilium.namespace, label_selector="k8s-app=cilium")
    pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]
    return sorted(pods, key=lambda p: (p.get("spec") or {}).get("nodeName") or "")


def _exec(s: Session, pod: dict, argv: list[str]) -> tuple[int, str, str]:
    try:
        r = s.cluster.exec(pod["metadata"]["namespace"], pod["metadata"]["name"], argv,
                           container=AGENT_CONTAINER, timeout=60)
    except ClusterError as e:
        return -1, "", str(e)
    return r.rc, r.stdout, r.stderr


def _not_cilium(name: str, message: str) -> Check:
    return Check(name, True, f"{message}: not applicable after a rollback (flannel serves the cluster)")


def agent_status(s: Session) -> Check:
    """``cilium-dbg status --verbose`` in every agent: Ok, KubeProxyReplacement True, every
    node reachable."""
    msg = "every Cilium agent Ok with KubeProxyReplacement True (cilium-dbg status --verbose)"
    if mode(s) == "flannel":
        return _not_cilium("cilium-status", msg)
    agents = agent_pods(s)
    rows, bad = [], []
    for p in agents:
        node = (p.get("spec") or {}).get("nodeName") or "?"
        rc, out, err = _exec(s, p, ["cilium-dbg", "status", "--verbose"])
        fields = parse_status(out)
        problems = status_problems(node, fields) if rc == 0 or fields else \
            [f"{node}: cilium-dbg status failed (rc={rc}): {(err or out).strip()[:200]}"]
        bad += problems
        rows.append({"node": node, "agent": p["metadata"]["name"], "cilium": fields.get("Cilium", "-"),
                     "kube-proxy replacement": fields.get("KubeProxyReplacement", "-"),
                     "cluster health": fields.get("Cluster health", "-"), "ok": not problems})
    missing = sorted({n.name for n in s.nodes} - {r["node"] for r in rows})
    bad += [f"{n}: no running Cilium agent" for n in missing]
    return Check("cilium-status", bool(rows) and not bad, msg, bad,
                 pd.DataFrame(rows, columns=["node", "agent", "cilium", "kube-proxy replacement",
                                             "cluster health", "ok"]),
                 hint="kubectl -n kube-system logs ds/cilium on the node named; KubeProxyReplacement "
                      "False means kubeProxyReplacement is off in the values")


def health(s: Session) -> Check:
    """``cilium-health status -o json`` in every agent: every node's host and health endpoint
    reachable from every node; fails naming the node pairs."""
    msg = "every node and every node's pod network reachable from every node (cilium-health status)"
    if mode(s) == "flannel":
        return _not_cilium("cilium-health", msg)
    rows, bad = [], []
    for p in agent_pods(s):
        node = (p.get("spec") or {}).get("nodeName") or "?"
        rc, out, err = _exec(s, p, ["cilium-health", "status", "-o", "json"])
        try:
            doc = json.loads(out) if rc == 0 else None
        except ValueError:
            doc = None
        if doc is None:
            problems = [f"{node}: cilium-health status failed (rc={rc}): {(err or out).strip()[:200]}"]
        else:
            problems = parse_health(node, doc)
        bad += problems
        rows.append({"from": node, "probed": len((doc or {}).get("nodes") or ()),
                     "unreachable": len(problems), "ok": not problems})
    pairs = sorted({b.split(":")[0] for b in bad if " -> " in b})
    return Check("cilium-health", bool(rows) and not bad,
                 msg + (f"; unreachable pairs: {', '.join(pairs)}" if pairs else ""), bad,
                 pd.DataFrame(rows, columns=["from", "probed", "unreachable", "ok"]),
                 hint="pods on the named nodes cannot reach each other across the tunnel: check that "
                      "UDP <tunnelPort> (8473) and TCP 4240 are open between those nodes (firewall, "
                      "security group), then re-run 04-verify; or run 05-rollback")


def pod_dns(s: Session) -> Check:
    """From a running pod on every node, a lookup through the kube-dns ClusterIP answers the
    ``kubernetes`` Service's ClusterIP."""
    msg = "a DNS lookup through the kube-dns ClusterIP answers from a pod on every node"
    server = dns_probe.service_ip(s.cluster, "kube-system", "kube-dns")
    expect = dns_probe.service_ip(s.cluster, "default", "kubernetes")
    if not server or not expect:
        return Check("pod-dns", False, msg, ["Service kube-system/kube-dns or default/kubernetes not found"])
    probes = dns_probe.probe_pods(s.cluster, [n.name for n in s.nodes], server=server, expect=expect)
    table = pd.DataFrame([p.to_dict() for p in probes], columns=["source", "node", "tool", "ok", "answer"])
    bad = [f"{p.source} on {p.node} ({p.tool}): {p.answer}" for p in probes if not p.ok]
    return Check("pod-dns", not bad, msg, bad, table,
                 hint="a timeout from one node only: that node's pods do not reach CoreDNS on the "
                      "others (see cilium-health above)")


def nodeport_target(services: list[dict]) -> tuple[str, int] | None:
    """``(namespace/name, nodePort)`` of the TCP NodePort to probe: a NodePort or
    LoadBalancer Service with a selector, port 80 or 443 first (pure).

    >>> nodeport_target([{"metadata": {"namespace": "a", "name": "x"}, "spec": {"type": "NodePort",
    ...   "selector": {"app": "x"}, "ports": [{"port": 8080, "nodePort": 30080}]}}])
    ('a/x', 30080)
    """
    found = []
    for svc in services:
        spec = svc.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer") or not spec.get("selector"):
            continue
        for p in spec.get("ports") or ():
            if p.get("nodePort") and str(p.get("protocol", "TCP")).upper() == "TCP":
                md = svc["metadata"]
                found.append((p.get("port") not in (80, 443), md["namespace"], md["name"], int(p["nodePort"])))
    if not found:
        return None
    _, ns, name, port = sorted(found)[0]
    return f"{ns}/{name}", port


def _internal_ip(node: dict) -> str:
    return next((a.get("address") for a in (node.get("status") or {}).get("addresses") or ()
                 if a.get("type") == "InternalIP"), "")


def nodeport(s: Session) -> Check:
    """A TCP NodePort answers on every node's address (curl from the first node, SSH)."""
    target = nodeport_target(s.cluster.list("services"))
    msg = "a NodePort answers on every node's address"
    if target is None:
        return Check("nodeport", True, f"{msg}: no NodePort or LoadBalancer Service with a selector to probe")
    svc, port = target
    src = s.nodes[0]
    rows, bad = [], []
    for n in s.cluster.list("nodes"):
        ip = _internal_ip(n)
        url = f"http://{ip}:{port}/"
        try:
            r = src.run("curl -sS -o /dev/null -m 5 -w %s %s", "%{http_code}", url, timeout=30)
            code, err = r.stdout.strip(), r.stderr.strip()
            ok = r.rc == 0 and code not in ("", "000")
        except NodeError as e:
            code, err, ok = "", f"not reached: {e}", False
        rows.append({"node": n["metadata"]["name"], "url": url, "http": code or "-", "ok": ok})
        if not ok:
            bad.append(f"{src.name} -> {n['metadata']['name']} {url} ({svc}): {err or 'no answer'}")
    return Check("nodeport", not bad, f"{msg} ({svc}, port {port}, from {src.name})", bad,
                 pd.DataFrame(rows, columns=["node", "url", "http", "ok"]),
                 hint="a node that does not answer its NodePort has no service translation (Cilium's "
                      "kube-proxy replacement not ready there) or cannot reach the backends")


def run_all(s: Session, v: Any) -> list[Check]:
    """The agents' own checks, the requests from a pod on every node (the probe
    DaemonSet, :mod:`runbook.verify_probe`) and the NodePorts, each added to the
    Verification ``v``."""
    from . import verify_probe

    return [v.add(agent_status(s)), v.add(health(s)), *verify_probe.run(s, v), v.add(nodeport(s))]
