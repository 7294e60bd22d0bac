"""04-verify's requests from a pod on every node (Cilium's "Validate the Setup").

From the probe pod on each node (:mod:`runbook.probe_daemonset`), three requests, each
proving one part of the data path the agents' readiness does not:

* **DNS through the kube-dns ClusterIP** (``nslookup``, :mod:`runbook.dns_probe`): the
  node translates a Service address (UDP) and the answer comes back from a CoreDNS pod,
  usually on another node;
* **a Service ClusterIP over TCP** (``verify.probe_service``, by default kube-dns's
  metrics port 9153, answered by CoreDNS over HTTP): Cilium's kube-proxy replacement (or
  kube-proxy, after a rollback) translates a TCP connection on the source node, and the
  backend's answer returns through the reverse translation. Any HTTP answer counts (an
  error status too): a server answered through the ClusterIP;
* **the probe pod on another node** (HTTP to its pod IP): pod-to-pod across nodes, over
  the tunnel (VXLAN on Cilium's ``tunnelPort``) or native routing. Each node requests
  the next ``verify.probe_targets_per_node`` nodes in name order (every other node on a
  small cluster), so each node is source and target; a failure names the pair
  (``set-hog -> fast-heron``).

The requests use busybox's ``wget`` (``-q -T 5 -O /dev/null``) and ``nslookup``, which
the probe image has; a probe pod is never a hostNetwork pod. In a dry run nothing is
created: the DNS lookup runs from pods that already run (:func:`runbook.verify_datapath.pod_dns`)
and the other two checks show SKIPPED, with the probe that would be created.

The parsers and the pairing are pure.

Example:
    >>> parse_wget(1, "", "wget: download timed out\\n")
    WgetOutcome(ok=False, answered=False, status=None, error='download timed out')
    >>> pairs(["a", "b", "c"], 1)
    [('a', 'b'), ('b', 'c'), ('c', 'a')]
"""
from __future__ import annotations

import concurrent.futures as cf
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from . import dns_probe, probe_daemonset
from .errors import ClusterError
from .verify import Check

if TYPE_CHECKING:
    from .session import Session

__all__ = ["WgetOutcome", "Request", "parse_wget", "pairs", "wget_argv", "service_url",
           "dns_check", "service_check", "cross_node_check", "ready_check", "removed_check",
           "skipped", "run"]

#: seconds busybox wget waits (connect and read) before "download timed out"
WGET_SECONDS = 5
_MISSING = (126, 127)
_STATUS = re.compile(r"server returned error: HTTP/\S+ (\d{3})")


@dataclass
class WgetOutcome:
    """What one busybox ``wget`` said.

    Attributes:
        ok: exit 0 (a 2xx answer). answered: a server answered (an error status too).
        status: the HTTP status of an error answer (None otherwise). error: wget's
            message without its ``wget:`` prefix ("" when ok).
    """

    ok: bool
    answered: bool
    status: int | None
    error: str


def parse_wget(rc: int, stdout: str, stderr: str) -> WgetOutcome:
    """Classify busybox ``wget -q``'s exit status and message (pure).

    >>> parse_wget(0, "", "")
    WgetOutcome(ok=True, answered=True, status=None, error='')
    >>> parse_wget(1, "", "wget: server returned error: HTTP/1.1 404 Not Found\\n").answered
    True
    >>> parse_wget(1, "", "wget: download timed out\\ncommand terminated with non-zero exit code: "
    ...            "error executing command [wget ...], exit code 1\\n").error
    'download timed out'
    >>> parse_wget(1, "", "wget: can't connect to remote host (10.42.1.7): Connection refused\\n").error
    "can't connect to remote host (10.42.1.7): Connection refused"
    >>> parse_wget(127, "", 'exec: "wget": executable file not found in $PATH').error
    'no wget in the probe image (exit 127): exec: "wget": executable file not found in $PATH'
    """
    text = " ".join((stderr or stdout or "").split())
    if rc == 0:
        return WgetOutcome(True, True, None, "")
    if rc in _MISSING:
        return WgetOutcome(False, False, None, f"no wget in the probe image (exit {rc}): {text[:160]}")
    # wget's own line; the API server's exit-status message may follow it
    own = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip().startswith("wget: ")]
    msg = own[0][len("wget: "):] if own else (text or f"exit {rc}, no message")
    m = _STATUS.search(msg)
    if m:
        return WgetOutcome(False, True, int(m.group(1)), msg[:200])
    return WgetOutcome(False, False, None, msg[:200])


def pairs(nodes: Sequence[str], per_node: int) -> list[tuple[str, str]]:
    """``(source, target)`` node pairs: each node with the next ``per_node`` nodes in name
    order, wrapping around (pure). Every node is a source and a target; with
    ``per_node >= len(nodes) - 1`` every ordered pair is there.

    >>> pairs(["c", "a", "b"], 5)
    [('a', 'b'), ('a', 'c'), ('b', 'c'), ('b', 'a'), ('c', 'a'), ('c', 'b')]
    >>> pairs(["a"], 3)
    []
    """
    ordered = sorted(set(nodes))
    k = min(max(per_node, 0), len(ordered) - 1)
    return [(src, ordered[(i + j) % len(ordered)]) for i, src in enumerate(ordered) for j in range(1, k + 1)]


def wget_argv(url: str) -> list[str]:
    """The request (pure): quiet, bounded, the body thrown away.

    >>> wget_argv("http://10.43.0.10:9153/")
    ['wget', '-q', '-T', '5', '-O', '/dev/null', 'http://10.43.0.10:9153/']
    """
    return ["wget", "-q", "-T", str(WGET_SECONDS), "-O", "/dev/null", url]


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def service_url(svc: dict | None, port: int) -> tuple[str | None, str]:
    """``(url, "")`` of a Service's ClusterIP and TCP ``port``, or ``(None, why not)`` (pure).

    >>> service_url({"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 9153, "protocol": "TCP"}]}}, 9153)
    ('http://10.43.0.10:9153/', '')
    >>> service_url({"spec": {"clusterIP": "None", "ports": []}}, 80)[1]
    'headless (no ClusterIP)'
    """
    if svc is None:
        return None, "no such Service"
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        return None, "headless (no ClusterIP)"
    if not any(int(p.get("port") or 0) == port and str(p.get("protocol", "TCP")).upper() == "TCP"
               for p in spec.get("ports") or ()):
        return None, f"no TCP port {port} (it has {', '.join(str(p.get('port')) for p in spec.get('ports') or ()) or 'none'})"
    return f"http://{_host(ip)}:{port}/", ""


@dataclass
class Request:
    """One request from a probe pod: the source node and pod, the target (a node name or
    a Service), the URL, and what came back."""

    source: str
    pod: str
    target: str
    url: str
    ok: bool
    answer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pod_ref(p: dict) -> str:
    return f"{p['metadata']['namespace']}/{p['metadata']['name']}"


def _wget(s: Session, node: str, pod: dict, target: str, url: str) -> Request:
    md = pod["metadata"]
    try:
        r = s.cluster.exec(md["namespace"], md["name"], wget_argv(url), container=probe_daemonset.CONTAINER,
                           timeout=WGET_SECONDS * 6)
    except ClusterError as e:
        return Request(node, _pod_ref(pod), target, url, False, f"exec failed: {e}")
    w = parse_wget(r.rc, r.stdout, r.stderr)
    seen = "HTTP 2xx" if w.ok else (f"answered HTTP {w.status}" if w.answered else w.error)
    return Request(node, _pod_ref(pod), target, url, w.answered, seen)


def _fan_out(s: Session, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the execs at once, ``limits.parallel_reads`` at most; results in job order."""
    if not jobs:
        return []
    workers = max(1, min(len(jobs), s.params.limits.parallel_reads))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as ex:
        return [f.result() for f in [ex.submit(j) for j in jobs]]


def _no_probe(probe: probe_daemonset.Probe) -> list[str]:
    return [f"{n}: no Ready probe pod ({why})" for n, why in sorted(probe.missing.items())]


def _frame(reqs: list[Request]) -> pd.DataFrame:
    return pd.DataFrame([r.to_dict() for r in reqs], columns=["source", "pod", "target", "url", "ok", "answer"])


# ------------------------------------------------------------------------------ checks
def ready_check(probe: probe_daemonset.Probe) -> Check:
    """A Ready probe pod on every node (the others' checks cannot run there)."""
    bad = _no_probe(probe)
    return Check("probe-ready", not bad,
                 f"a Ready probe pod ({probe.image}) on every node ({len(probe.pods)} of "
                 f"{len(probe.pods) + len(probe.missing)}, {probe.seconds:.0f}s)", bad, probe.frame(),
                 hint="a pod stuck in ContainerCreating has no pod network on that node (CNI); "
                      "ErrImagePull: set verify.probe_image to an image the nodes already have")


def dns_check(s: Session, probe: probe_daemonset.Probe) -> Check:
    """From the probe pod on every node, ``nslookup`` through the kube-dns ClusterIP answers
    the ``kubernetes`` Service's ClusterIP."""
    msg = "a DNS lookup through the kube-dns ClusterIP answers from a pod on every node"
    server = dns_probe.service_ip(s.cluster, "kube-system", "kube-dns")
    expect = dns_probe.service_ip(s.cluster, "default", "kubernetes")
    if not server or not expect:
        return Check("pod-dns", False, msg, ["Service kube-system/kube-dns or default/kubernetes not found"])
    pods = sorted(probe.pods.items())
    found = _fan_out(s, [lambda p=p: dns_probe.from_pod(s.cluster, p, server=server, expect=expect)
                         for _, p in pods])
    probes = [r or dns_probe.DnsProbe(_pod_ref(p), n, "none", False, "no nslookup or getent in the probe image")
              for (n, p), r in zip(pods, found)]
    table = pd.DataFrame([p.to_dict() for p in probes], columns=["source", "node", "tool", "ok", "answer"])
    bad = [f"{p.node} -> kube-dns {server}:53/udp ({p.source}, {p.tool}): {p.answer}" for p in probes if not p.ok]
    bad += _no_probe(probe)
    return Check("pod-dns", not bad, f"{msg} (from the probe pods, server {server})", bad, table,
                 hint="a timeout from one node only: that node's pods do not reach CoreDNS on the others "
                      "(see cilium-health above); from every node: no Service translation (kube-proxy "
                      "replacement) or CoreDNS down")


def service_check(s: Session, probe: probe_daemonset.Probe) -> Check:
    """From the probe pod on every node, an HTTP request to ``verify.probe_service``'s
    ClusterIP gets an answer."""
    ns, name, port = s.params.verify.service
    ref = f"{ns}/{name}:{port}"
    msg = f"a TCP request to the Service ClusterIP {ref} answers from a pod on every node"
    url, why = service_url(s.cluster.get("services", name, ns), port)
    if url is None:
        return Check("pod-service", False, msg, [f"Service {ref}: {why}"],
                     hint="set verify.probe_service to a Service with a ClusterIP and a TCP port whose "
                          "backend answers HTTP")
    reqs = _fan_out(s, [lambda n=n, p=p: _wget(s, n, p, f"service {ref}", url) for n, p in sorted(probe.pods.items())])
    bad = [f"{r.source} -> service {ref} ({url}): {r.answer}" for r in reqs if not r.ok] + _no_probe(probe)
    return Check("pod-service", not bad, f"{msg} ({url})", bad, _frame(reqs),
                 hint="every node failing: the ClusterIP is not translated (Cilium's kube-proxy "
                      "replacement, or kube-proxy after a rollback) or the Service has no Ready "
                      "backend; some nodes only: those nodes cannot reach the backend's node")


def cross_node_check(s: Session, probe: probe_daemonset.Probe) -> Check:
    """From the probe pod on every node, an HTTP request to the probe pod on other nodes
    (:func:`pairs`) gets an answer; fails naming the node pairs."""
    per = s.params.verify.probe_targets_per_node
    port = probe.port
    jobs = []
    for src, dst in pairs(list(probe.pods), per):
        ip = (probe.pods[dst].get("status") or {}).get("podIP") or ""
        jobs.append(lambda src=src, dst=dst, ip=ip: _wget(s, src, probe.pods[src], dst,
                                                          f"http://{_host(ip)}:{port}/"))
    reqs = _fan_out(s, jobs)
    bad = [f"{r.source} -> {r.target}: {r.url} from {r.pod}: {r.answer}" for r in reqs if not r.ok]
    bad += _no_probe(probe)
    failed = sorted({f"{r.source} -> {r.target}" for r in reqs if not r.ok})
    text = f"a pod on every node reaches a pod on the other nodes ({len(reqs)} pairs"
    text += f"; failing pairs: {', '.join(failed)})" if failed else ")"
    if not reqs and not bad and len(probe.pods) == 1:
        text = "a pod on every node reaches a pod on the other nodes: a single node, no other node to reach"
    return Check("pod-to-pod", (bool(reqs) or len(probe.pods) == 1) and not bad, text, bad, _frame(reqs),
                 hint="pods on the named nodes cannot reach each other: check that the tunnel port "
                      "(UDP 8473 with tunnelPort 8473; flannel's 8472 after a rollback) is open between "
                      "those nodes (firewall, security group), then re-run 04-verify; or run 05-rollback. "
                      "Every pair failing with one node in common: that node. Check too that no "
                      "NetworkPolicy in verify.probe_namespace denies the probe's port")


def removed_check(probe: probe_daemonset.Probe) -> Check:
    """The probe DaemonSet and its pods are gone again."""
    bad = [probe.removal_error] if probe.removal_error else []
    return Check("probe-removed", not bad, f"the probe {probe.ref} removed", bad,
                 hint=f"kubectl -n {probe.namespace} delete daemonset {probe.name}; or run 05-rollback, "
                      "which removes it (the journal records it)")


def skipped(name: str, message: str, plan: pd.DataFrame | None = None) -> Check:
    """A check a dry run does not make (it needs the probe DaemonSet): shown SKIPPED."""
    return Check(name, True, f"{message}: needs the probe DaemonSet, which only execute=True creates",
                 table=plan, skipped=True)


def run(s: Session, v: Any) -> list[Check]:
    """The probe checks, each added to the Verification ``v``: with execute, the probe
    DaemonSet's life (created, journaled, removed) around DNS, Service and pod-to-pod
    requests from every node; in a dry run, DNS from running pods and the rest SKIPPED.

    Example:
        >>> verify_probe.run(s, v)       # doctest: +SKIP
    """
    from .verify_datapath import pod_dns

    if not s.execute:
        plan = probe_daemonset.plan_frame(s)
        return [v.add(pod_dns(s)),
                v.add(skipped("pod-service", "a TCP request to a Service ClusterIP from a pod on every node", plan)),
                v.add(skipped("pod-to-pod", "a pod on every node reaches a pod on the other nodes", plan))]
    nodes = sorted({n["metadata"]["name"] for n in s.cluster.list("nodes")} | {n.name for n in s.nodes})
    out: list[Check] = []
    try:
        with probe_daemonset.probe_pods(s, nodes) as probe:
            out.append(v.add(ready_check(probe)))
            out.append(v.add(dns_check(s, probe)))
            out.append(v.add(service_check(s, probe)))
            out.append(v.add(cross_node_check(s, probe)))
    except ClusterError as e:
        if out:         # a check's own API error: the probe was removed, the error stands
            raise
        ref = f"{s.params.verify.probe_namespace}/{probe_daemonset.NAME}"
        out.append(v.add(Check("probe-ready", False, f"the probe DaemonSet {ref} created", [str(e)],
                               hint=e.hint or "does the namespace verify.probe_namespace exist, and may "
                                              "these credentials create DaemonSets there?")))
        return out
    out.append(v.add(removed_check(probe)))
    return out
