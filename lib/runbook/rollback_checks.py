"""After a rollback: is every node back on flannel, every config identical, every pod well?

Read-only checks the rollback notebook shows and gates on. A node the rollback left
alone (the journal never names it) and cannot reach is reported as not read rather than
failing the check: the rollback must not depend on a node it did not change.

Example:
    >>> t = rollback.node_table(s, plan)          # doctest: +SKIP
    >>> rollback.node_problems(t)                 # doctest: +SKIP
    []
"""
from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from . import datapath, dns_probe, topology
from .cluster import node_ready, pod_display_status, pod_ready
from .datapath import NodeDatapath
from .errors import NodeError
from .pods import pod_key
from .rollback_plan import CILIUM_CNI_FILE, CILIUM_INTERFACES, NodeRollback, RollbackPlan

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["nodes_named", "flannel_device_back", "wait_flannel", "flannel_problems", "pods_health", "node_table",
           "node_problems",
           "datapath_after", "datapath_frame", "datapath_problems", "DATAPATH_HINT", "dns_checks",
           "dns_problems", "DNS_HINT"]


def nodes_named(s: Session, names: Iterable[str]) -> list[Node]:
    """The session's nodes called ``names``, in the session's order (servers first)."""
    wanted = set(names)
    return [n for n in s.nodes if n.name in wanted]


def wait_flannel(s: Session, rp: RollbackPlan, *, wait: bool = True) -> pd.DataFrame:
    """Wait (execute) until every node is Ready; then per node: Ready, flannel's device
    back (``flannel.1`` for vxlan, ``flannel-wg`` for wireguard-native, the routes for
    host-gw: the backend the restored server config selects), Cilium interfaces absent
    (over SSH)."""
    backend = _backend_in_force(s)
    dev = topology.flannel_device(backend) or "host-gw routes"
    if wait and s.execute and rp.touched_nodes:
        def check() -> tuple[bool, list[str]]:
            bad = [n["metadata"]["name"] for n in s.cluster.list("nodes") if not node_ready(n)]
            res = s.read_nodes(lambda n: _flannel_back(n, backend, _interfaces(n, rp.node(n.name)),
                                                          alone=len(s.nodes) == 1),
                               description="read interfaces",
                               nodes=nodes_named(s, [r.node for r in rp.nodes if r.restart]))
            res.raise_for_failures()
            missing = [o.node for o in res.outcomes if not o.value]
            return not bad and not missing, ([f"node {b} not Ready" for b in bad]
                                             + [f"{m}: {dev} not back yet" for m in missing])
        s.cluster.wait_for(check, timeout=s.params.limits.timeouts.node_ready,
                           what=f"nodes Ready with {dev}", interval=1.0, progress=s.progress,
                           watch=["nodes"])
    ready = {n["metadata"]["name"]: node_ready(n) for n in s.cluster.list("nodes")}

    def one(n: Node) -> dict[str, Any]:
        row: dict[str, Any] = {"node": n.name, "role": n.role, "Ready": ready.get(n.name, False)}
        ifaces = _interfaces(n, rp.node(n.name))
        if ifaces is None:
            row.update({"flannel.1": None, "cilium interfaces": None,
                        "checked": "no: unreachable, and the rollback left it alone"})
        else:
            row.update({"flannel.1": _flannel_back(n, backend, ifaces, alone=len(s.nodes) == 1),
                        "cilium interfaces": ", ".join(sorted(i for i in ifaces if i.startswith("cilium_"))) or "none",
                        "checked": "yes"})
        return row

    res = s.read_nodes(one, description="read interfaces").raise_for_failures()
    return pd.DataFrame([o.value for o in res.outcomes],
                        columns=["node", "role", "Ready", "flannel.1", "cilium interfaces", "checked"])


def _backend_in_force(s: Session) -> str:
    """The flannel backend the servers' (restored) configs select: what comes back."""
    server = next((n for n in s.nodes if n.role == "server"), None)
    try:
        conf = topology.server_settings(server, s.params.paths.k3s_config) if server else None
    except NodeError:
        conf = None
    return str((conf or {}).get("flannel-backend") or topology.K3S_DEFAULT_BACKEND)


def _flannel_back(n: Node, backend: str, ifaces: set[str] | None, *, alone: bool = False) -> bool:
    """flannel's device for ``backend`` is on the node; host-gw has none: its routes to
    the other nodes are (a node alone has no route to add: Ready is the proof)."""
    dev = topology.flannel_device(backend)
    if dev is not None:
        return ifaces is not None and dev in ifaces
    if alone:
        return True
    from .leftovers import FLANNEL_SUBNET_ENV, host_gw_routes
    return bool(host_gw_routes(n.run("ip -j route show").stdout, n.run("cat %s", FLANNEL_SUBNET_ENV).stdout))


def flannel_device_back(s: Session, n: Node) -> bool:
    """Whether flannel's device for the backend the servers' configs select is on ``n``
    (host-gw: its routes; a node alone: True)."""
    return _flannel_back(n, _backend_in_force(s), {i.name for i in n.interfaces()}, alone=len(s.nodes) == 1)


def _interfaces(n: Node, nr: NodeRollback) -> set[str] | None:
    """The node's interfaces; None when a node the rollback left alone cannot be reached
    (scenario 2: its SSH is down; the rollback must not depend on it)."""
    try:
        return {i.name for i in n.interfaces()}
    except NodeError:
        if nr.touched:
            raise
        return None


def flannel_problems(table: pd.DataFrame) -> list[str]:
    """One line per node of :func:`wait_flannel`'s table that is not back on flannel."""
    out = []
    for r in table.to_dict("records"):
        if r.get("checked", "yes") != "yes":
            if not r["Ready"]:
                out.append(f"{r['node']}: not Ready")
            continue
        why = [w for w, bad in (("not Ready", not r["Ready"]), ("no flannel.1", not r["flannel.1"]),
                                (f"cilium interfaces: {r['cilium interfaces']}", r["cilium interfaces"] != "none"))
               if bad]
        if why:
            out.append(f"{r['node']}: " + ", ".join(why))
    return out


def pods_health(s: Session) -> pd.DataFrame:
    """Pods that are not Running/Succeeded, or Running but not Ready (with their status)."""
    rows = []
    for p in s.cluster.list("pods"):
        phase = (p.get("status") or {}).get("phase")
        if phase == "Succeeded" or (phase == "Running" and pod_ready(p)):
            continue
        rows.append({"pod": pod_key(p), "node": (p.get("spec") or {}).get("nodeName"),
                     "status": pod_display_status(p)})
    return pd.DataFrame(rows, columns=["pod", "node", "status"])


def node_table(s: Session, rp: RollbackPlan) -> pd.DataFrame:
    """Per node: config sha256 now vs pre-run, flannel.1 present, Cilium interfaces and
    05-cilium absent; ``ok`` when all hold. A node the rollback left alone and cannot
    reach is reported as not read (it was not changed by this run)."""
    cni = posixpath.join(s.params.paths.cni_dir, CILIUM_CNI_FILE)
    path = s.params.paths.k3s_config
    backend = _backend_in_force(s)    # "flannel.1 present": its device for this backend

    def one(n: Node) -> dict[str, Any]:
        nr = rp.node(n.name)
        ifaces = _interfaces(n, nr)
        if ifaces is None:
            return {"node": n.name, "role": n.role, "config sha256 now": "not read (unreachable)",
                    "pre-run sha256": "not changed by this run", "config identical": True,
                    "flannel.1 present": None, "cilium interfaces absent": None,
                    "05-cilium absent": None, "ok": True}
        now = n.sha256(path)
        pre = nr.restore_config["sha256"] if nr.restore_config else None
        cil = sorted(i for i in ifaces if i in CILIUM_INTERFACES)
        same = (now == pre) if pre else True
        row = {"node": n.name, "role": n.role, "config sha256 now": (now or "absent")[:16],
               "pre-run sha256": pre[:16] if pre else "not changed by this run",
               "config identical": same, "flannel.1 present": _flannel_back(n, backend, ifaces,
                                                                                  alone=len(s.nodes) == 1),
               "cilium interfaces absent": not cil, "05-cilium absent": not n.exists(cni)}
        row["ok"] = bool(row["config identical"] and row["flannel.1 present"]
                         and row["cilium interfaces absent"] and row["05-cilium absent"])
        return row

    res = s.read_nodes(one, description="check nodes after the rollback").raise_for_failures()
    return pd.DataFrame([o.value for o in res.outcomes])


def node_problems(table: pd.DataFrame) -> list[str]:
    """One line per node of :func:`node_table` that is not ``ok``, naming what differs."""
    out = []
    for r in table.to_dict("records"):
        if r["ok"]:
            continue
        why = [k for k in ("config identical", "flannel.1 present", "cilium interfaces absent",
                           "05-cilium absent") if not r[k]]
        out.append(f"{r['node']}: NOT " + ", NOT ".join(why)
                   + (f" (sha256 now {r['config sha256 now']}, pre-run {r['pre-run sha256']})"
                      if not r["config identical"] else ""))
    return out


# =========================================================================== Cilium's datapath gone
def datapath_after(s: Session, rp: RollbackPlan) -> list[NodeDatapath]:
    """What Cilium left on every node (over SSH, with ``bpftool``): after the rollback it
    must be nothing. A node the rollback left alone and cannot reach is not read."""
    files = rp.cilium_files or datapath.cilium_files(s.values)
    out = []
    for n in s.nodes:
        try:
            out.append(datapath.gather(n, files=files))
        except NodeError:
            if rp.node(n.name).touched:
                raise
    return out


def datapath_frame(dps: list[NodeDatapath]) -> pd.DataFrame:
    """One row per node: Cilium's programs, maps, devices, files and folders left."""
    return pd.DataFrame([d.row() for d in dps])


def datapath_problems(dps: list[NodeDatapath]) -> list[str]:
    """One line per node with anything of Cilium's left (the gate's details)."""
    return [f"{d.node}: " + "; ".join(d.problems()) for d in dps if d.problems()]


DATAPATH_HINT = ("run 05-rollback again with the same run: Cilium's cleanup runs in a pod on every "
                 "node where anything is left (`sudo bpftool net show`, `sudo bpftool cgroup tree` "
                 "show what). Or reboot that node: a reboot clears the kernel state (programs, "
                 "maps, devices); a file left over is moved to the backup folder by hand")


# =========================================================================== ClusterIP DNS
def dns_checks(s: Session, rp: RollbackPlan) -> pd.DataFrame:
    """A lookup of ``kubernetes.default.svc.cluster.local`` through the kube-dns ClusterIP,
    from every node (SSH) and from a running pod on every node (``kubectl exec``); each must
    answer the ``kubernetes`` Service's ClusterIP. A node the rollback left alone whose SSH
    cannot be reached is reported as not checked (``ok`` None), as in :func:`node_table`."""
    server = dns_probe.service_ip(s.cluster, "kube-system", "kube-dns")
    expect = dns_probe.service_ip(s.cluster, "default", "kubernetes")
    cols = ["from", "node", "tool", "ok", "answer"]
    if not server or not expect:
        return pd.DataFrame([{"from": "-", "node": "-", "tool": "-", "ok": False,
                              "answer": "Service kube-system/kube-dns or default/kubernetes not found"}],
                            columns=cols)
    rows = [dns_probe.from_node(n, server=server, expect=expect) for n in s.nodes]
    rows += dns_probe.probe_pods(s.cluster, [n.name for n in s.nodes], server=server, expect=expect)
    out = []
    for r in rows:
        row = {"from": r.source, "node": r.node, "tool": r.tool, "ok": r.ok, "answer": r.answer}
        if r.tool == "ssh" and not rp.node(r.node).touched:
            row.update(ok=None, answer="not checked: unreachable, and the rollback left it alone")
        out.append(row)
    return pd.DataFrame(out, columns=cols)


def dns_problems(table: pd.DataFrame) -> list[str]:
    """One line per lookup that did not answer the expected address."""
    return [f"{r['from']} (node {r['node']}, {r['tool']}): {r['answer']}"
            for r in table.to_dict("records") if not _unchecked(r["ok"]) and not bool(r["ok"])]


def _unchecked(ok: Any) -> bool:
    return ok is None or (isinstance(ok, float) and ok != ok)


DNS_HINT = ("a Cilium socket load balancer left on the node (`cil_sock*` in `sudo bpftool cgroup "
            "tree`) sends ClusterIP traffic to Cilium-era pods: the datapath gate above names it. "
            "Otherwise: are the coredns pods Running and Ready, and does the node have its "
            "KUBE-SVC chains back (`sudo iptables-save | grep KUBE-SVC`)?")
