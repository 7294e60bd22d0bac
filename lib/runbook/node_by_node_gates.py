"""Preflight gates of the node-by-node strategy (pure: cluster objects in, verdicts out).

``docs/node-by-node.md`` derives the strategy: nodes move to Cilium one at a time,
each cordoned and drained first. Three things make that unsafe, and each has a gate:

* :func:`capacity`: while a node is drained, the other schedulable nodes must hold its
  pods, within what they can still allocate given the requests of what they already
  run. A pod that fits nowhere stays Pending (an outage), or, behind a PDB, blocks the
  drain forever;
* :func:`cidr`: the new pod CIDR must overlap neither the cluster CIDR, nor the
  service CIDR, nor any node's network (nor other ranges such as the LoadBalancer pool),
  and must have a per-node block for every node;
* :func:`pdb_blockers`: a PodDisruptionBudget that allows no disruption now (one
  replica behind ``minAvailable: 1``, ``maxUnavailable: 0``) makes every eviction of its
  pods fail, so drain waits forever; a pod behind two PDBs cannot be evicted at all.
  Each is listed with what to do about it.

Each returns a :class:`Verdict` (``ok``, a message, one line per offending item,
``actions`` a person can take). A notebook turns it into a gate::

    v = node_by_node_gates.capacity(nodes, pods, pdbs)
    s.gate(v.ok, v.message, details=v.details, hint=v.hint, name=v.name)

What the scheduler model leaves out (said in :func:`capacity`'s verdict too): node
and pod affinity, topology spread, host ports and volume topology. It honours requests,
allocatable CPU, memory and pod count, ``nodeSelector``, and NoSchedule/NoExecute
taints against tolerations.

Example:
    >>> cidr("10.44.0.0/16", cluster_cidrs=["10.42.0.0/16"], service_cidrs=["10.43.0.0/16"],
    ...      node_networks=["10.0.0.0/24"], nodes=3).ok
    True
    >>> cidr("10.42.128.0/17", cluster_cidrs=["10.42.0.0/16"], service_cidrs=[], nodes=3).details
    ['overlaps the cluster CIDR 10.42.0.0/16']
"""
from __future__ import annotations

import ipaddress
import math
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .storage import is_instance_manager_pdb

__all__ = ["Verdict", "capacity", "cidr", "pdb_blockers", "cpu_millis", "memory_bytes", "drain_moves",
           "pod_requests", "selector_matches"]


@dataclass
class Verdict:
    """One gate's outcome.

    Attributes:
        name: a short key (``nbn-capacity``, ``nbn-cidr``, ``nbn-pdb``).
        ok: whether the strategy may go on.
        message: the requirement, in words.
        details: one line per offending item (or, when ok, what was checked).
        actions: what a person can do about each problem.
        facts: the figures behind the verdict (for the evidence).
    """

    name: str
    ok: bool
    message: str
    details: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def hint(self) -> str | None:
        return "; ".join(self.actions) if self.actions else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ quantities
_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def _quantity(text: Any) -> float:
    """A Kubernetes quantity as a number of base units ("1Gi" -> 1073741824, "100m" -> 0.1)."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _QTY.match(str(text).strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = m.groups()
    if suffix in _BIN:
        return float(number) * _BIN[suffix]
    if suffix in _DEC and not ("e" in number.lower() and suffix):
        return float(number) * _DEC[suffix]
    raise ValueError(f"not a Kubernetes quantity: {text!r}")


def cpu_millis(text: Any) -> int:
    """CPU in millicores: ``cpu_millis("250m") == 250``, ``cpu_millis("1.5") == 1500``."""
    return int(math.ceil(_quantity(text) * 1000 - 1e-9))


def memory_bytes(text: Any) -> int:
    """Memory in bytes: ``memory_bytes("128Mi") == 134217728``."""
    return int(math.ceil(_quantity(text) - 1e-9))


def _md(o: dict) -> dict:
    return o.get("metadata") or {}


def _name(o: dict) -> str:
    return f"{_md(o).get('namespace')}/{_md(o).get('name')}"


def pod_requests(pod: dict) -> tuple[int, int]:
    """(CPU millicores, memory bytes) the scheduler reserves for ``pod``: the larger of the
    containers' sum and the largest init container, plus the pod overhead. A container
    with limits and no requests requests its limits (the API server's defaulting)."""
    spec = pod.get("spec") or {}

    def one(c: dict) -> tuple[int, int]:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})
        return cpu_millis(req.get("cpu", 0)), memory_bytes(req.get("memory", 0))

    main = [one(c) for c in spec.get("containers") or ()]
    init = [one(c) for c in spec.get("initContainers") or ()]
    cpu = max(sum(c for c, _ in main), max((c for c, _ in init), default=0))
    mem = max(sum(m for _, m in main), max((m for _, m in init), default=0))
    over = spec.get("overhead") or {}
    return cpu + cpu_millis(over.get("cpu", 0)), mem + memory_bytes(over.get("memory", 0))


# ------------------------------------------------------------------ pods and nodes
def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _controller(o: dict) -> dict | None:
    return next((r for r in _md(o).get("ownerReferences") or () if r.get("controller")), None)


def drain_moves(pod: dict) -> bool:
    """Whether ``kubectl drain --ignore-daemonsets`` evicts the pod for the scheduler to
    place elsewhere (DaemonSet and static/mirror pods stay; finished pods need no room)."""
    owner = _controller(pod)
    if _terminal(pod) or (owner and owner.get("kind") == "DaemonSet"):
        return False
    return "kubernetes.io/config.mirror" not in (_md(pod).get("annotations") or {})


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def _tolerates(pod: dict, taint: dict) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or ():
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _fits_rules(pod: dict, node: dict) -> str:
    """Why ``pod`` may not go to ``node`` by its nodeSelector or the node's taints ("" = may)."""
    labels = _md(node).get("labels") or {}
    sel = (pod.get("spec") or {}).get("nodeSelector") or {}
    miss = [f"{k}={v}" for k, v in sel.items() if labels.get(k) != v]
    if miss:
        return f"nodeSelector {', '.join(miss)}"
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, taint):
            return f"taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
    return ""


@dataclass
class _Room:
    name: str
    cpu: int
    mem: int
    pods: int


def _room(node: dict, running: list[dict]) -> _Room:
    alloc = (node.get("status") or {}).get("allocatable") or (node.get("status") or {}).get("capacity") or {}
    cpu, mem = cpu_millis(alloc.get("cpu", 0)), memory_bytes(alloc.get("memory", 0))
    for p in running:
        c, m = pod_requests(p)
        cpu, mem = cpu - c, mem - m
    return _Room(_md(node).get("name", ""), cpu, mem, int(alloc.get("pods", 110)) - len(running))


def _pods(n: int) -> str:
    return f"{n} pod{'' if n == 1 else 's'}"


def _gib(b: int) -> str:
    return f"{b / 2**30:.1f} GiB"


def capacity(nodes: list[dict], pods: list[dict], pdbs: Iterable[dict] = ()) -> Verdict:
    """Can the other nodes hold each node's pods while it is drained?

    Every node is tried as the drained one (the largest, by the requests of the pods a
    drain moves, is named in the message). Its movable pods are placed, largest first,
    on the other Ready, uncordoned nodes, each on the node with the most memory left
    that admits it (the default scheduler's least-allocated spread), within allocatable
    CPU, memory and pod count minus what already runs there. A pod that fits nowhere
    fails the gate; behind a PDB it would block the drain forever.

    Example:
        >>> n = lambda name: {"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2",
        ...     "memory": "4Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}}
        >>> p = lambda name, node, cpu: {"metadata": {"namespace": "a", "name": name},
        ...     "spec": {"nodeName": node, "containers": [{"resources": {"requests": {"cpu": cpu}}}]}}
        >>> capacity([n("x"), n("y")], [p("a", "x", "1500m"), p("b", "y", "1")]).ok
        False
    """
    live = [p for p in pods if not _terminal(p) and (p.get("spec") or {}).get("nodeName")]
    by_node: dict[str, list[dict]] = {}
    for p in live:
        by_node.setdefault(p["spec"]["nodeName"], []).append(p)
    protected = {_name(p) for b in pdbs for p in _selected(b, live)}
    usable = {(_md(n).get("name")): n for n in nodes
              if _ready(n) and not (n.get("spec") or {}).get("unschedulable")}
    details: list[str] = []
    per_node: dict[str, Any] = {}
    stuck_all: list[str] = []
    for node in sorted(nodes, key=lambda n: _md(n).get("name", "")):
        name = _md(node).get("name", "")
        moving = sorted((p for p in by_node.get(name, []) if drain_moves(p)),
                        key=lambda p: (pod_requests(p)[::-1], _name(p)), reverse=True)
        rooms = [_room(n, by_node.get(k, [])) for k, n in sorted(usable.items()) if k != name]
        stuck = []
        for p in moving:
            cpu, mem = pod_requests(p)
            fit = [r for r in rooms if r.cpu >= cpu and r.mem >= mem and r.pods >= 1
                   and not _fits_rules(p, usable[r.name])]
            if not fit:
                why = "; ".join(f"{r.name}: {_fits_rules(p, usable[r.name]) or _short(r, cpu, mem)}"
                                for r in rooms) or "no other schedulable node"
                behind = " (behind a PDB: the drain would wait forever)" if _name(p) in protected else \
                    " (it would stay Pending: an outage)"
                stuck.append(f"{_name(p)} requests {cpu}m CPU, {_gib(mem)}{behind}: {why}")
                continue
            r = max(fit, key=lambda r: (r.mem, r.cpu, r.name))
            r.cpu, r.mem, r.pods = r.cpu - cpu, r.mem - mem, r.pods - 1
        cpu_total = sum(pod_requests(p)[0] for p in moving)
        mem_total = sum(pod_requests(p)[1] for p in moving)
        per_node[name] = {"pods_to_move": len(moving), "cpu_m": cpu_total, "memory_bytes": mem_total,
                          "pods_that_fit_nowhere": len(stuck)}
        if stuck:
            details += [f"draining {name}: {s}" for s in stuck]
            stuck_all += stuck
    largest = max(per_node, key=lambda k: (per_node[k]["memory_bytes"], per_node[k]["cpu_m"]), default="")
    head = (f"the largest node, {largest}, moves {_pods(per_node[largest]['pods_to_move'])} requesting "
            f"{per_node[largest]['cpu_m']}m CPU and {_gib(per_node[largest]['memory_bytes'])}") if largest else "no node"
    ok = not stuck_all
    if ok:
        details = [f"{k}: {_pods(v['pods_to_move'])} ({v['cpu_m']}m CPU, {_gib(v['memory_bytes'])}) fit on the others"
                   for k, v in per_node.items()]
    actions = [] if ok else [
        "add a node or free capacity (scale down what can wait) before the migration",
        "lower over-sized requests of the pods listed",
        "or accept the outage of the pods listed (they stay Pending until their node is uncordoned)"]
    return Verdict("nbn-capacity", ok,
                   f"while each node is drained, the others hold its pods ({head}); the model honours "
                   "requests, allocatable, pod count, nodeSelector and taints, not affinity, "
                   "topology spread, host ports or volume topology",
                   details, actions, {"per_node": per_node, "largest": largest})


def _short(r: _Room, cpu: int, mem: int) -> str:
    out = []
    if r.cpu < cpu:
        out.append(f"{max(r.cpu, 0)}m CPU free")
    if r.mem < mem:
        out.append(f"{_gib(max(r.mem, 0))} free")
    if r.pods < 1:
        out.append("no pod slot free")
    return ", ".join(out) or "full"


# ------------------------------------------------------------------ CIDR
def _networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A CIDR, an address (a /32 or /128) or a range ``a-b`` as networks."""
    text = str(text).strip()
    if "-" in text and "/" not in text:
        a, b = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
        return list(ipaddress.summarize_address_range(a, b))
    return [ipaddress.ip_network(text, strict=False)]


def cidr(new: str, *, cluster_cidrs: Iterable[str], service_cidrs: Iterable[str],
         node_networks: Iterable[str] = (), others: dict[str, str] | None = None,
         nodes: int = 1, node_mask: int = 24) -> Verdict:
    """The new pod CIDR is free: it overlaps none of the ranges given, and holds a
    ``/node_mask`` block (cluster-pool's per-node size) for each of ``nodes`` nodes.

    Args:
        new: the CIDR Cilium's cluster-pool IPAM will hand out (``10.44.0.0/16``).
        cluster_cidrs: k3s's ``cluster-cidr`` (flannel's pods stay there during the migration).
        service_cidrs: k3s's ``service-cidr``.
        node_networks: the nodes' networks (CIDRs, or bare addresses).
        others: more named ranges that must stay clear (``{"LoadBalancer pool":
            "10.0.0.200-10.0.0.220"}``).
        nodes: how many nodes need a block.
        node_mask: the per-node block size (``ipam.operator.clusterPoolIPv4MaskSize``).
    """
    try:
        net = ipaddress.ip_network(str(new).strip(), strict=True)
    except ValueError as e:
        return Verdict("nbn-cidr", False, f"the new pod CIDR {new!r} is not a network address",
                       [str(e)], ["write it as network/prefix with no host bits, e.g. 10.44.0.0/16"])
    ranges: list[tuple[str, str]] = [("cluster CIDR", c) for c in cluster_cidrs] + \
        [("service CIDR", c) for c in service_cidrs] + [("node network", c) for c in node_networks] + \
        list((others or {}).items())
    details = []
    for label, text in ranges:
        for other in _networks(text):
            if other.version == net.version and net.overlaps(other):
                details.append(f"overlaps the {label} {text}")
                break
    mask = node_mask if net.version == 4 else max(node_mask, 64)
    blocks = 2 ** (mask - net.prefixlen) if mask >= net.prefixlen else 0
    if blocks < nodes:
        details.append(f"holds {blocks} per-node /{mask} blocks for {nodes} nodes")
    ok = not details
    actions = [] if ok else ["choose another private range that is unused everywhere "
                             "(for example the next free /16 after the cluster and service CIDRs)"]
    checked = [f"{label} {text}" for label, text in ranges]
    return Verdict("nbn-cidr", ok, f"the new pod CIDR {new} is distinct from every range in use and "
                   f"has a /{mask} block for each of the {nodes} nodes", details if not ok else
                   [f"clear of {c}" for c in checked] + [f"{blocks} /{mask} blocks for {nodes} nodes"],
                   actions, {"blocks": blocks, "checked": checked})


# ------------------------------------------------------------------ PDBs
def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A ``metav1.LabelSelector`` against labels (an empty selector matches everything,
    a missing one nothing, as for a PDB)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or ():
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _selected(pdb: dict, pods: list[dict]) -> list[dict]:
    ns = _md(pdb).get("namespace")
    sel = (pdb.get("spec") or {}).get("selector")
    return [p for p in pods if _md(p).get("namespace") == ns and not _terminal(p)
            and selector_matches(sel, _md(p).get("labels") or {})]


def _pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def _scaled(value: Any, total: int) -> int:
    """An IntOrString of a PDB against ``total`` (percentages round up, as the disruption
    controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        return int(math.ceil(total * float(value[:-1]) / 100.0))
    return int(value)


def _workload(pod: dict, workloads: list[dict]) -> tuple[str, str, int | None]:
    """(kind, name, replicas) of the pod's controller, a ReplicaSet resolved to its Deployment."""
    owner = _controller(pod) or {}
    kind, name = owner.get("kind") or "Pod", owner.get("name") or _md(pod).get("name")
    ns = _md(pod).get("namespace")
    find = {(w.get("kind"), _md(w).get("namespace"), _md(w).get("name")): w for w in workloads}
    if kind == "ReplicaSet":
        rs = find.get(("ReplicaSet", ns, name))
        up = _controller(rs) if rs else None
        if up and up.get("kind") == "Deployment":
            kind, name = "Deployment", up["name"]
    w = find.get((kind, ns, name))
    replicas = (w.get("spec") or {}).get("replicas", 1) if w is not None else None
    return kind, name, replicas


def pdb_blockers(pdbs: list[dict], pods: list[dict], workloads: list[dict] = ()) -> Verdict:
    """PDBs that make a drain wait forever, each with what to do.

    A PDB blocks when the disruptions it allows now are 0: ``minAvailable`` (or the
    expected count minus ``maxUnavailable``) is at least its healthy pods. The expected
    count is the controller's replicas when ``workloads`` (Deployments, ReplicaSets,
    StatefulSets) are given, else the pods it selects. A pod selected by more than one
    PDB cannot be evicted at all (the Eviction API refuses it).

    Example:
        >>> pdb = {"metadata": {"namespace": "a", "name": "web"}, "spec": {"minAvailable": 1,
        ...        "selector": {"matchLabels": {"app": "web"}}}}
        >>> pod = {"metadata": {"namespace": "a", "name": "web-0", "labels": {"app": "web"}},
        ...        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        >>> v = pdb_blockers([pdb], [pod])
        >>> v.ok, v.details[0]
        (False, 'PDB a/web (minAvailable: 1) allows no disruption: 1 healthy of 1 expected; Pod a/web-0, 1 replica')
    """
    live = [p for p in pods if not _terminal(p)]
    workloads = list(workloads)
    details, actions = [], []
    blocked: list[dict[str, Any]] = []
    covered: dict[str, list[str]] = {}
    pdbs = list(pdbs)
    managed = sum(1 for b in pdbs if is_instance_manager_pdb(b))
    for b in sorted(pdbs, key=_name):
        spec = b.get("spec") or {}
        sel = _selected(b, live)
        for p in sel:
            covered.setdefault(_name(p), []).append(_md(b).get("name", ""))
        if not sel or is_instance_manager_pdb(b):
            continue   # longhorn-manager removes its own once the drain may go (nbn-longhorn-drain)
        kinds = {_workload(p, workloads) for p in sel}
        expected = sum(r for _, _, r in kinds if r is not None) if all(r is not None for _, _, r in kinds) \
            else len(sel)
        healthy = sum(1 for p in sel if _pod_ready(p))
        if spec.get("minAvailable") is not None:
            rule, want = f"minAvailable: {spec['minAvailable']}", _scaled(spec["minAvailable"], expected)
        elif spec.get("maxUnavailable") is not None:
            rule, want = f"maxUnavailable: {spec['maxUnavailable']}", expected - _scaled(spec["maxUnavailable"], expected)
        else:
            continue
        allowed = max(0, healthy - want)
        if allowed > 0:
            continue
        ns, pdb_name = _md(b).get("namespace"), _md(b).get("name")
        for kind, name, replicas in sorted(kinds, key=lambda k: (k[0], k[1])):
            n = replicas if replicas is not None else sum(1 for p in sel if _workload(p, workloads)[:2] == (kind, name))
            details.append(f"PDB {ns}/{pdb_name} ({rule}) allows no disruption: {healthy} healthy of "
                           f"{expected} expected; {kind} {ns}/{name}, {n} replica{'s' if n != 1 else ''}")
            blocked.append({"pdb": f"{ns}/{pdb_name}", "workload": f"{kind} {ns}/{name}", "replicas": n,
                            "healthy": healthy, "expected": expected, "rule": rule})
            actions.append(_what_to_do(ns, pdb_name, kind, name, n, unhealthy=expected - healthy))
    for pod, names in sorted(covered.items()):
        if len(names) > 1:
            details.append(f"pod {pod} is selected by {len(names)} PDBs ({', '.join(sorted(names))}): "
                           "the Eviction API refuses to evict it")
            actions.append(f"make the PDBs {', '.join(sorted(names))} select disjoint pods")
    ok = not details
    return Verdict("nbn-pdb", ok, "no PodDisruptionBudget blocks a drain (each allows a disruption now, "
                   "and no pod is behind two)", details or [f"{len(pdbs) - managed} PDBs allow a disruption"
                                            + (f"; {managed} on Longhorn's instance managers, which "
                                               "longhorn-manager removes during a drain (nbn-longhorn-drain)"
                                               if managed else "")],
                   actions, {"blocked": blocked})


def _what_to_do(ns: str, pdb: str, kind: str, name: str, replicas: int, *, unhealthy: int = 0) -> str:
    q = shlex.quote
    first = (f"{ns}/{pdb}: {unhealthy} of its pods are not Ready: make them Ready first (a drain would "
             "wait for them too); then, if it still blocks: ") if unhealthy > 0 else f"{ns}/{pdb}: "
    ref = f"{kind.lower()}/{name}"
    scale = (f"scale {kind} {ns}/{name} to {replicas + 1} first "
             f"(kubectl -n {q(ns)} scale {q(ref)} --replicas={replicas + 1}), if it can run that many"
             if kind in ("Deployment", "StatefulSet", "ReplicaSet") else
             f"{kind} {ns}/{name} has no controller to scale")
    return (f"{first}{scale}; or relax the PDB for the migration (kubectl -n {q(ns)} patch pdb {q(pdb)} "
            "--type=merge -p '{\"spec\":{\"minAvailable\":null,\"maxUnavailable\":1}}') and restore it "
            "after; or accept its outage: the runbook deletes the pod instead of evicting it, journaled")
