"""Preflight: facts, blast radius, the execute-or-defer decision, and prerequisites.

Read-only except :func:`backup`, :func:`pause_argocd` and the snapshots, which the
notebook calls only with ``execute``.

Example:
    >>> facts = preflight.node_facts(s)             # doctest: +SKIP
    >>> radius = preflight.blast_radius(s.cluster)   # doctest: +SKIP
    >>> preflight.decide(radius, s.params.decision)  # doctest: +SKIP
    Decision(verdict='DEFER', ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import argocd, params as params_mod, velero
from . import containerd, datapath, topology
from .checks import flag
from .cluster import Cluster
from .errors import DeferredStop, GateFailed
from .presentation import frame_html

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

CILIUM_MIN_KERNEL = (5, 4, 0)
CILIUM_KPR_KERNEL = (5, 10, 0)
FLANNEL_VXLAN_PORT = 8472
K3S_LOCAL_PROXY = ("127.0.0.1", 6444)


def _node_fact_row(n: Node, k3s_config: str = "/etc/rancher/k3s/config.yaml") -> dict[str, Any]:
    kernel = n.kernel()
    ifaces = [i.name for i in n.interfaces()]
    ipt = n.iptables_chains()   # only the chain counts: the rules are not read
    return {"node": n.name, "role": n.role, "k3s": n.k3s_version().raw, "kernel": kernel.raw,
            "kernel_ok": kernel.parsed.at_least(*CILIUM_KPR_KERNEL),
            "flannel.1": "flannel.1" in ifaces, "cni0": "cni0" in ifaces,
            "cilium_*": sorted(i for i in ifaces if i.startswith("cilium_")),
            "KUBE-SVC": ipt.chains.get("KUBE-SVC", 0), "KUBE-ROUTER": ipt.chains.get("KUBE-ROUTER", 0),
            "FLANNEL": ipt.chains.get("FLANNEL", 0), "CILIUM": ipt.chains.get("CILIUM", 0),
            "cni_template": containerd.template_fact(n), "bpftool": containerd.has_bpftool(n),
            "k3s_settings": topology.server_settings(n, k3s_config)}


def node_facts(s: Session) -> pd.DataFrame:
    """Per node (over SSH, host keys verified): k3s version, kernel, CNI interfaces, chains.

    Every node is read at once (``limits.parallel_reads`` at a time)."""
    res = s.read_nodes(lambda n: _node_fact_row(n, s.params.paths.k3s_config),
                       description="gather node facts").raise_for_failures()
    return pd.DataFrame([o.value for o in res.outcomes])


def node_configs(s: Session) -> dict[str, str]:
    """Each node's current k3s ``config.yaml`` (secrets stay in memory; show them masked)."""
    path = s.params.paths.k3s_config
    res = s.read_nodes(lambda n: n.read_file(path), description=f"read {path}").raise_for_failures()
    return {o.node: o.value for o in res.outcomes}


@dataclass
class BlastRadius:
    """What the migration puts at risk, counted from the live cluster."""

    pods: pd.DataFrame
    services: pd.DataFrame
    ingresses: pd.DataFrame
    pvcs: pd.DataFrame
    statefulsets: pd.DataFrame
    apps: list[argocd.App]
    networkpolicies: int
    namespaces_with_services: int
    figures: dict[str, Any] = field(default_factory=dict)

    KEY_FIGURES = ("pods_total", "pods_affected", "lb_services", "ingress_hosts", "pvcs", "argocd_apps")

    def summary(self, s: Session) -> pd.DataFrame:
        """Record the key figures in the session (for the report index) and return
        the "What we'd risk" table."""
        for key in self.KEY_FIGURES:
            s.figure(key, self.figures[key])
        return self.table()

    def table(self) -> pd.DataFrame:
        """The "What we'd risk" table, from the cluster itself."""
        f = self.figures
        rows = [
            ("Pods that lose networking during the swap (non-hostNetwork)", f["pods_affected"],
             "restarted under Cilium at the end of install"),
            ("hostNetwork pods (keep running)", f["pods_host_network"], "no pod sandbox to replace"),
            ("LoadBalancer services", f["lb_services"], ", ".join(f["lb_ips"]) or "-"),
            ("Ingress hosts", f["ingress_hosts"], "probed over HTTPS in verify"),
            ("PVCs (bound to PVs)", f"{f['pvcs']} ({f['pvcs_bound']} bound)",
             "data is not touched; its pods restart"),
            ("Stateful workloads", f["statefulsets"], ", ".join(f["statefulset_names"][:8])),
            ("Argo CD apps with auto-sync", f"{f['argocd_auto']} of {f['argocd_apps']}",
             "would fight the change: paused, then restored exactly"),
            ("NetworkPolicies", f["networkpolicies"],
             "flannel does not enforce them; Cilium will" if f["networkpolicies"] else "none to migrate"),
        ]
        return pd.DataFrame(rows, columns=["at risk", "count", "how the runbook handles it"])

    def pvcs_by_namespace(self) -> pd.DataFrame:
        if self.pvcs.empty:
            return self.pvcs
        return (self.pvcs.groupby("namespace").agg(pvcs=("name", "count"),
                                                   bound=("phase", lambda x: int((x == "Bound").sum())))
                .reset_index())


def blast_radius(cluster: Cluster, argocd_namespace: str = "argocd") -> BlastRadius:
    """Count pods, LoadBalancers, Ingresses, PVCs, stateful workloads, Argo CD apps, policies."""
    pods = cluster.snapshot("pods")
    services = cluster.snapshot("services")
    ingresses = cluster.snapshot("ingresses")
    pvcs = cluster.snapshot("pvcs")
    sts = cluster.snapshot("statefulsets")
    apps = argocd.list_apps(cluster, argocd_namespace) if cluster.has_resource("applications") else []
    netpols = len(cluster.list("networkpolicies"))
    lbs = services[services["type"] == "LoadBalancer"] if len(services) else services
    hosts = sorted({h for hs in ingresses.get("hosts", []) for h in str(hs).split(",") if h})
    ns_with_services = services[services["type"] != "ExternalName"]["namespace"].nunique() if len(services) else 0
    figures = {
        "pods_total": int(len(pods)),
        "pods_host_network": int(pods["host_network"].sum()) if len(pods) else 0,
        "pods_affected": int((~pods["host_network"]).sum()) if len(pods) else 0,
        "lb_services": int(len(lbs)),
        "lb_ips": sorted({ip for v in lbs.get("lb_ips", []) for ip in str(v).split(",") if ip}),
        "ingresses": int(len(ingresses)), "ingress_hosts": len(hosts),
        "pvcs": int(len(pvcs)), "pvcs_bound": int((pvcs["phase"] == "Bound").sum()) if len(pvcs) else 0,
        "statefulsets": int(len(sts)), "statefulset_names": [f"{r.namespace}/{r.name}" for r in sts.itertuples()],
        "argocd_apps": len(apps), "argocd_auto": sum(1 for a in apps if a.auto_sync),  # `automated: {}` is on; enabled: false is off
        "networkpolicies": netpols,
    }
    return BlastRadius(pods=pods, services=services, ingresses=ingresses, pvcs=pvcs, statefulsets=sts,
                       apps=apps, networkpolicies=netpols, namespaces_with_services=int(ns_with_services),
                       figures=figures)


@dataclass
class Decision:
    """EXECUTE or DEFER, with every criterion and whether it holds."""

    verdict: str
    criteria: pd.DataFrame

    @property
    def reasons(self) -> list[str]:
        return [f"{r.criterion}: {r.observed}" for r in self.criteria.itertuples()]

    def _repr_html_(self) -> str:
        color = "#116611" if self.verdict == "EXECUTE" else "#b36b00"
        return (f"<p style='font-size:1.3em'>Verdict: <b style='color:{color}'>{self.verdict}</b></p>"
                + frame_html(self.criteria))


def decide(radius: BlastRadius, decision: Any) -> Decision:
    """The Phase 22 "when to execute" criteria, evaluated on live data.

    Any one criterion that holds makes the migration worth its risk now (EXECUTE):
    the pod count reaching the threshold where flannel + iptables kube-proxy become the
    bottleneck, NetworkPolicies being required (flannel enforces none), multi-service
    traffic that needs Hubble's visibility, or a fresh cluster where a CNI swap risks
    nothing. When none holds, the verdict is DEFER.
    """
    f = radius.figures
    fresh = f["pods_affected"] <= decision.fresh_cluster_max_pods
    rows = [
        ("pods reach the threshold", f"{f['pods_total']} pods vs threshold {decision.pod_threshold}",
         f["pods_total"] >= decision.pod_threshold),
        ("NetworkPolicies required", f"required: {decision.networkpolicies_required}; "
         f"present in cluster: {f['networkpolicies']}",
         bool(decision.networkpolicies_required or f["networkpolicies"] > 0)),
        ("multi-service traffic needs observability", f"params say {decision.multi_service_traffic}",
         bool(decision.multi_service_traffic)),
        ("fresh cluster (nothing to lose)", f"{f['pods_affected']} pods would lose networking "
         f"(fresh means <= {decision.fresh_cluster_max_pods})", fresh),
    ]
    df = pd.DataFrame([{"criterion": c, "observed": o, "holds": h} for c, o, h in rows])
    return Decision("EXECUTE" if df["holds"].any() else "DEFER", df)


#: the parameter (and CLI flag) that goes on despite a DEFER verdict
PROCEED = "proceed_despite_deferral"


def execute_or_defer(s: Session, decision: Decision, proceed_despite_deferral: bool = False) -> Any:
    """The execute-or-defer gate.

    EXECUTE passes. DEFER stops the phase with a short message saying how to go on
    (:class:`runbook.errors.DeferredStop`: a stop, not a fault, so no traceback in a
    notebook; a headless run is marked stopped). DEFER with
    ``proceed_despite_deferral=True`` (``runbook run --proceed-despite-deferral``) goes
    on, shown as OVERRIDDEN in its own colour and listed under "Needs attention".

    Example:
        >>> preflight.execute_or_defer(s, decision, proceed_despite_deferral)   # doctest: +SKIP
        GATE OVERRIDDEN: the verdict is DEFER; the run goes on because proceed_despite_deferral=True
    """
    if decision.verdict == "EXECUTE":
        return s.gate(True, "the execute criteria hold", name="execute-or-defer",
                      details=[r for r, h in zip(decision.reasons, decision.criteria["holds"]) if h])
    if proceed_despite_deferral:
        view = s.gate(True, f"the verdict is DEFER; the run goes on because {PROCEED}=True",
                      name="execute-or-defer", overridden=True, details=decision.reasons)
        s.attention("deferral-overridden", "preflight's verdict is DEFER (no execute criterion holds) and "
                    f"the run went on because {PROCEED}=True (--proceed-despite-deferral): fine for a "
                    "rehearsal, not for the real cluster without a reason written down")
        return view
    try:
        s.gate(False, "the verdict is DEFER: no execute criterion holds", name="execute-or-defer",
               details=decision.reasons)
    except GateFailed:
        raise DeferredStop(
            "the verdict is DEFER: no execute criterion holds, so this run stops here before "
            "anything changes", details=decision.reasons,
            hint=f"To go on anyway (a rehearsal): set {PROCEED} = True in the parameters cell and run "
                 "all cells again, or `runbook run ... --proceed-despite-deferral`. For the real "
                 "cluster, the criteria say: migrate later.") from None


def prerequisites(s: Session, facts: pd.DataFrame, radius: BlastRadius) -> pd.DataFrame:
    """Check the prerequisites and the Cilium values against the cluster.

    Columns: check, status (ok | warn | fail), detail. ``fail`` rows stop preflight.
    """
    p, values = s.params, s.values
    rows: list[tuple[str, str, str]] = []
    old = facts[~facts["kernel_ok"]] if len(facts) else facts
    rows.append(("kernel >= 5.10 on every node (Cilium KPR)", "ok" if old.empty else "fail",
                 ", ".join(f"{r.node}: {r.kernel}" for r in facts.itertuples())))
    host, port = str(values.get("k8sServiceHost", "")), int(values.get("k8sServicePort") or 0)
    servers = {n.address for n in p.servers}
    ips = {str(ip) for ip in s.cluster.snapshot("nodes").query("roles.str.contains('control-plane')",
                                                                engine="python")["internal_ip"]}
    if (host, port) == K3S_LOCAL_PROXY:
        rows.append(("k8sServiceHost reaches the API", "ok",
                     "127.0.0.1:6444 answers on every node: on a server its own kube-apiserver, on an "
                     "agent k3s's load balancer towards the servers; no single control-plane IP"))
    elif host in servers or host in ips:
        rows.append(("k8sServiceHost reaches the API", "warn" if port == 6443 else "fail",
                     f"{host}:{port} is one server's address: a single point of failure with several "
                     "servers (defect 13); 127.0.0.1:6444 avoids it"))
    else:
        rows.append(("k8sServiceHost reaches the API", "fail",
                     f"{host}:{port} is neither a server address ({', '.join(sorted(servers | ips))}) "
                     "nor 127.0.0.1:6444: the agents could not reach the API without kube-proxy"))
    kpr = params_mod.kpr_enabled(values)
    dkp = p.disable_kube_proxy(values)
    rows.append(("disable-kube-proxy consistent with kubeProxyReplacement",
                 "ok" if kpr == dkp else "fail",
                 f"kubeProxyReplacement={kpr}, k3s disable-kube-proxy will be {dkp}"))
    tunnel_port = int(values.get("tunnelPort") or FLANNEL_VXLAN_PORT)
    flannel_nodes = facts[facts["flannel.1"]]["node"].tolist() if len(facts) else []
    if values.get("routingMode", "tunnel") == "tunnel" and tunnel_port == FLANNEL_VXLAN_PORT:
        rows.append(("VXLAN port differs from flannel's 8472", "warn",
                     f"tunnel port {tunnel_port} is flannel's: flannel.1 must be deleted first (reconfigure "
                     f"does it) on {', '.join(flannel_nodes) or 'no node'}"))
    else:
        rows.append(("VXLAN port differs from flannel's 8472", "ok",
                     f"Cilium uses {tunnel_port}; flannel.1 cannot block it"))
    for f in params_mod.check_values(p, values):
        rows.append((f"values: {f.field}", "fail" if f.severity == "error" else "warn", f.message))
    risks = argocd.risks(radius.apps)
    handled = p.argocd.pause_parents
    for r in risks:
        rows.append((f"Argo CD {r.kind}: {r.app}", "ok" if handled else "fail",
                     r.detail + ("; it is paused first and restored last" if handled else
                                 "; set argocd.pause_parents: true")))
    if s.cluster.has_resource("ciliumnodes"):
        rows.append(("no Cilium already installed", "warn", "cilium.io CRDs exist: a previous attempt?"))
    else:
        rows.append(("no Cilium already installed", "ok", "no cilium.io CRDs"))
    # servers, flannel backend, CIDRs, hostPorts, policies, add-ons (docs/topologies.md)
    settings = facts["k3s_settings"] if "k3s_settings" in facts else []
    topo = topology.from_cluster(s.cluster, {n: c for n, c in zip(facts["node"], settings) if isinstance(c, dict)})
    switched_here = any(b.run_step == "k3s-config" for b in s.journal.backups())
    rows += topology.rows(topo, values, kpr=kpr, switched_here=switched_here)
    if topo.addons.get("velero", True):
        bsl = s.cluster.request("GET", f"/apis/velero.io/v1/namespaces/{p.velero.namespace}/backupstoragelocations/"
                                f"{p.velero.storage_location}", ok_missing=True)
        phase = ((bsl or {}).get("status") or {}).get("phase")
        rows.append(("Velero backup location available", "ok" if phase == "Available" else "fail",
                     f"{p.velero.namespace}/{p.velero.storage_location}: {phase or 'absent'}"))
    if "cni_template" in facts:     # node facts of this runbook version (over SSH)
        rows += containerd.preflight_rows(dict(zip(facts["node"], facts["cni_template"])),
                                          datapath.cni_dirs(values))
    if "bpftool" in facts:
        rows.append(containerd.bpftool_row(dict(zip(facts["node"], facts["bpftool"]))))
    rows.append(("firewall: TCP 4240 (health), 4244 (Hubble), UDP 8473 (VXLAN)", "warn",
                 "not verifiable from the API: confirm the host firewalls allow them between nodes"))
    for check, status, detail in rows:
        if status == "warn":
            flag(s, "preflight-warning", f"{check}: {detail}")
    return pd.DataFrame(rows, columns=["check", "status", "detail"])


def backup(s: Session) -> velero.VeleroResult | None:
    """Create the pre-migration Velero backup and wait for Completed (journaled).

    In a dry run it says so and returns None. Records the item count as a key figure.
    """
    if not topology.addon_installed(s.cluster, "velero"):  # docs/topologies.md
        print("skipped: Velero is not installed (no velero.io CRDs), so there is no backup to take; "
              "the rollback restores k3s configs and flannel's files, not objects")
        return None
    if not s.require_execute("the Velero backup"):
        return None
    name = s.params.velero.backup_name(s.run_id)
    if s.journal.is_done("velero-backup"):
        prev = s.journal.entries(step="velero-backup", status="done")[-1]
        name = (prev.data or {}).get("name", name)
    else:
        # A rerun after a failed backup (PartiallyFailed ...) must not wait on that same
        # Backup again: it would fail forever. Take a new one, named after the attempt.
        failed = {(e.data or {}).get("name") for e in s.journal.entries(step="velero-backup", status="failed")}
        if name in failed:
            name = f"{name}-r{len(failed) + 1}"
    entry = s.journal.record("velero-backup", f"create Velero backup {name}", data={"name": name})
    try:
        res = velero.backup(s.cluster, name, namespace=s.params.velero.namespace,
                            storage_location=s.params.velero.storage_location,
                            include_cluster_resources=s.params.velero.include_cluster_resources,
                            timeout=s.timeouts.velero, progress=s.progress)
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result=velero.as_row(res))
    s.journal.set("velero_backup", name)
    s.figure("velero_items", res.items)
    return res


SNAPSHOT_FILE = "cluster-snapshot.tar.gz"
ASSUMED_FILE = "assumed.json"


def cluster_snapshot(s: Session) -> Any:
    """The whole cluster as one archive in the run folder: evidence of what was there.

    Read-only, in a dry run too: every object through the API (Secrets by name and type
    only) and each node's k3s config, links, iptables chains and CNI folders over SSH
    (:mod:`runbook.snapshot`, ``docs/snapshot-format.md``). The report index links it;
    ``runbook rehearse --from-snapshot <run>/cluster-snapshot.tar.gz`` rehearses on a
    twin of it. When the target is itself a twin built from a snapshot, what that twin
    assumed goes next to it (``assumed.json``, listed on the index as "Assumed").

    A failure here loses this evidence (shown as EVIDENCE LOST) and does not stop the
    phase: the checks above already gate on the nodes and the API.

    Example:
        >>> preflight.cluster_snapshot(s)        # doctest: +SKIP
        snapshot reports/r1/cluster-snapshot.tar.gz (98 KiB, format 1.0): 3 Node, 111 Pod ...
    """
    import json
    import os

    from . import evidence, snapshot
    from .errors import RunbookError

    twin = s.params.twin
    if twin is not None and (twin.snapshot or twin.assumptions):
        path = s.run_dir / ASSUMED_FILE
        path.write_text(json.dumps({"snapshot": twin.snapshot, "assumptions": twin.assumptions},
                                   indent=1) + "\n")
        os.chmod(path, 0o600)
    def terse(line: str) -> None:
        # the cell shows the result: keep the steps and the SSH progress, not every type read
        if line.startswith(("snapshot of", "reading")) or "over SSH:" in line:
            s.progress(line)

    try:
        return snapshot.take(s.params, s.run_dir / SNAPSHOT_FILE, cluster=s.cluster, nodes=s.nodes,
                             progress=terse, overwrite=True)
    except RunbookError as e:
        return evidence.evidence_lost("cluster-snapshot", e, into=s.evidence_lost)


class ConfigView:
    """Node configs shown with secrets masked (the join token never reaches an output)."""

    def __init__(self, configs: dict[str, str]) -> None:
        from .k3sconfig import mask_config_text

        self.masked = {n: mask_config_text(t) for n, t in configs.items()}

    def __repr__(self) -> str:
        return "\n".join(f"--- {n}\n{t}" for n, t in self.masked.items())

    def _repr_html_(self) -> str:
        import html

        return "".join(f"<p><b>{html.escape(n)}</b></p><pre>{html.escape(t)}</pre>"
                       for n, t in self.masked.items())
