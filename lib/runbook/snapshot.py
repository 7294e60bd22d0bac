"""``runbook snapshot``: one archive of a cluster, read through the API and over SSH.

A snapshot is read-only. It goes through the library's choke points only: the
Kubernetes API (:class:`runbook.cluster.Cluster`, paged raw JSON) for the objects
(:mod:`runbook.snapshot_objects`), and SSH with host keys checked
(:meth:`runbook.nodes.Node.run`, many nodes at once) for what only the nodes know
(:mod:`runbook.snapshot_hosts`). It works against a real cluster and against a twin
(whose params make the library refuse every address off loopback).

The archive (``docs/snapshot-format.md``, written with :mod:`snapshot_format`) rebuilds
the cluster as a twin (``runbook twin up --from-snapshot``) and is evidence: preflight
writes one into the run folder. Secrets are recorded by name and type only; tokens,
keys and the k3s join token are masked.

Example:
    >>> from runbook import params, snapshot
    >>> p = params.load(".twin/params.yaml")                         # doctest: +SKIP
    >>> res = snapshot.take(p, "minicloud.tar.gz")                   # doctest: +SKIP
    >>> res.counts["Pod"], res.path                                   # doctest: +SKIP
    (111, PosixPath('minicloud.tar.gz'))
"""
from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import snapshot_format

from .errors import NodeError, ParamsError
from .redact import redact
from .snapshot_hosts import effective_config, host_record, unreachable
from .snapshot_objects import (BUILTIN, addon_types, missing_owner_types, read_secrets,
                               read_type)

#: What the archive's manifest says was masked (``manifest.masked``).
MASKED = (
    "Secrets: namespace, name, type, labels and key count only; never data",
    "k3s config files: token, agent-token, etcd-s3 keys and passwords in URLs",
    "container environment values whose name looks secret (PASSWORD, TOKEN, KEY ...)",
    "ConfigMap values: token-, key- and password-shaped text; binaryData values",
    "every text: bearer tokens, JWTs, k3s join tokens, PEM private keys, helm release payloads",
    "metadata.managedFields and the last-applied-configuration annotation (dropped)",
)
#: How many nodes are read over SSH at once (reads only: no batch limits apply).
READ_PARALLEL = 16
K3S_DEFAULTS = {"cluster-cidr": "10.42.0.0/16", "service-cidr": "10.43.0.0/16",
                "cluster-dns": "10.43.0.10", "flannel-backend": "vxlan"}


@dataclass
class SnapshotResult:
    """What :func:`take` wrote.

    Attributes:
        path: the archive; manifest: its manifest; counts: objects by kind;
        nodes_read: nodes read over SSH; seconds: how long it took; warnings: what the
        archive lacks and why (nodes not in the params, types not served ...).
    """

    path: Path
    manifest: dict
    counts: dict[str, int]
    nodes_read: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in
                          ("Node", "Pod", "Service", "Ingress", "PersistentVolumeClaim", "Secret"))
        return (f"snapshot {self.path} ({self.path.stat().st_size // 1024} KiB, format "
                f"{self.manifest['version']}): {kinds}; {self.nodes_read} nodes read over SSH "
                f"in {self.seconds:.1f}s" + "".join(f"\n  warning: {w}" for w in self.warnings))

    def __repr__(self) -> str:
        return self.summary()


def default_name(cluster: str) -> str:
    """``<cluster>-<UTC time>.snapshot.tar.gz`` (the CLI's default ``--out``).

    >>> default_name("minicloud").startswith("minicloud-") and default_name("x").endswith(".snapshot.tar.gz")
    True
    """
    return f"{cluster}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.snapshot.tar.gz"


# --------------------------------------------------------------------------- nodes
def _role(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(k in labels for k in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")):
        return "server"
    return "agent"


def node_entry(node: dict, host: dict) -> dict:
    """One ``nodes.json`` entry from a Node object and its host record."""
    md, spec, st = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    labels = md.get("labels") or {}
    anns = md.get("annotations") or {}
    info = st.get("nodeInfo") or {}
    addrs = st.get("addresses") or []
    ready = next((c.get("status") == "True" for c in st.get("conditions") or [] if c.get("type") == "Ready"),
                 False)
    return {
        "name": md.get("name"),
        "role": _role(node),
        "roles": sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")),
        "labels": labels,
        "taints": spec.get("taints") or [],
        "unschedulable": bool(spec.get("unschedulable")),
        "addresses": addrs,
        "internal_ip": next((a["address"] for a in addrs if a.get("type") == "InternalIP"), None),
        "pod_cidr": spec.get("podCIDR"),
        "pod_cidrs": spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []),
        "capacity": st.get("capacity") or {},
        "allocatable": st.get("allocatable") or {},
        "kernel": info.get("kernelVersion"),
        "os_image": info.get("osImage"),
        "architecture": info.get("architecture"),
        "k3s_version": info.get("kubeletVersion"),
        "container_runtime": info.get("containerRuntimeVersion"),
        "ready": ready,
        "flannel": {"backend_type": anns.get("flannel.alpha.coreos.com/backend-type"),
                    "public_ip": anns.get("flannel.alpha.coreos.com/public-ip")},
        "host": host,
    }


def read_hosts(p: Any, names: list[str], *, nodes: list[Any] | None = None,
               progress: Callable[[str], None] = print,
               command_log: str | None = None) -> tuple[dict[str, dict], list[str]]:
    """Each node's host record, read over SSH ``READ_PARALLEL`` nodes at a time.

    Nodes the API knows but the params do not name are recorded as unreachable (with
    the reason) and warned about; a node the params name that cannot be read stops the
    snapshot (:class:`NodeError` naming every failed node): a snapshot that silently
    lacks a node would rebuild the wrong cluster.
    """
    from .fleet import Fleet
    from .nodes import Node

    nodes = nodes if nodes is not None else Node.from_params(p, command_log=command_log)
    by_name = {n.name: n for n in nodes}
    warnings = []
    records: dict[str, dict] = {}
    for name in names:
        if name not in by_name:
            records[name] = unreachable("not in the params file's nodes: not read over SSH")
            warnings.append(f"node {name} is not in the params: its host facts are missing")
    wanted = [by_name[n] for n in names if n in by_name]
    cni_dirs = [p.paths.cni_dir, p.paths.k3s_cni_dir]
    done = [0]

    def one(n: Any) -> dict:
        try:
            rec = host_record(n, k3s_config=p.paths.k3s_config, cni_dirs=cni_dirs)
        finally:
            n.close()      # one connection per node at a time, not one per node for the whole read
        done[0] += 1
        if done[0] % 25 == 0 or done[0] == len(wanted):
            progress(f"  nodes read over SSH: {done[0]}/{len(wanted)}")
        return rec

    fleet = Fleet([_AsReader(n) for n in wanted], batch_size=READ_PARALLEL)
    result = fleet.apply(lambda r: one(r.node), description="snapshot: read nodes")
    failed = [o for o in result.outcomes if o.status != "ok"]
    if failed:
        raise NodeError("snapshot incomplete: cannot read " + "; ".join(
            f"{o.node}: {o.error}" for o in failed[:10]),
            hint="fix SSH to these nodes (address, key, known_hosts) and take the snapshot again")
    for o in result.outcomes:
        records[o.node] = o.value  # type: ignore[assignment]
    return records, warnings


@dataclass
class _AsReader:
    """A node seen by the fleet as an agent: reads need no server-first ordering."""

    node: Any

    @property
    def name(self) -> str:
        return self.node.name

    role = "agent"


# --------------------------------------------------------------------------- cluster facts
def _lb_ips(svc: dict) -> list[str]:
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if i.get("ip")]


def cluster_facts(name: str, nodes: list[dict], snap: snapshot_format.Snapshot,
                  version: dict | None) -> dict:
    """``cluster.json``: the facts a twin needs, each with where it came from.

    The k3s settings come from the first server's merged config files (k3s' defaults
    when a key is absent); addresses and add-ons from the objects.
    """
    derived: dict[str, str] = {}
    servers = [n for n in nodes if n["role"] == "server"] or nodes
    first = servers[0] if servers else {}
    host = first.get("host") or {}
    config = effective_config(host.get("k3s_config_files") or {}) if host.get("reachable") else {}

    def setting(key: str) -> Any:
        if key in config:
            derived[key] = f"k3s config of {first.get('name')}"
            return config[key]
        derived[key] = "k3s default (not set in the server's config)" if host.get("reachable") \
            else "k3s default (the server's config was not read)"
        return K3S_DEFAULTS.get(key)

    def as_list(v: Any) -> list[str]:
        if v in (None, ""):
            return []
        items = v if isinstance(v, list) else str(v).split(",")
        return [str(x).strip() for x in items if str(x).strip()]

    cidrs = [ipaddress.ip_network(c, strict=False) for n in nodes for c in n.get("pod_cidrs") or []]
    dns = next((s for s in snap.items("Service") if s["metadata"].get("namespace") == "kube-system"
                and s["metadata"]["name"] == "kube-dns"), None)
    cluster_dns = (dns or {}).get("spec", {}).get("clusterIP") or setting("cluster-dns")
    derived["cluster_dns"] = "kube-system/kube-dns Service" if dns else derived.get("cluster-dns", "")
    pools = [{"name": o["metadata"]["name"], "namespace": o["metadata"].get("namespace"),
              "addresses": (o.get("spec") or {}).get("addresses") or []}
             for o in snap.items("IPAddressPool", "metallb.io")]
    ingresses = snap.items("Ingress")
    ing_ips = Counter(ip for i in ingresses for ip in _lb_ips(i))
    hosts = [r.get("host") for i in ingresses for r in (i.get("spec") or {}).get("rules") or [] if r.get("host")]
    suffixes = Counter(h.split(".", 1)[1] for h in hosts if "." in h)
    classes = [{"name": c["metadata"]["name"], "controller": (c.get("spec") or {}).get("controller")}
               for c in snap.items("IngressClass")]
    crd_groups = {(c.get("spec") or {}).get("group") for c in snap.items("CustomResourceDefinition")}
    daemonsets = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in snap.items("DaemonSet")}
    disable = as_list(setting("disable"))
    kube_system = next((n for n in snap.items("Namespace") if n["metadata"]["name"] == "kube-system"), {})
    server_ip = first.get("internal_ip")
    return {
        "name": name,
        "k3s_version": first.get("k3s_version"),
        "kubernetes_version": (version or {}).get("gitVersion"),
        "cluster_cidr": _cluster_cidr(str(setting("cluster-cidr")).split(",")[0], cidrs, derived),
        "service_cidr": _service_cidr(str(setting("service-cidr")).split(",")[0], snap.items("Service"),
                                      derived),
        "cluster_dns": cluster_dns,
        "server_url": f"https://{server_ip}:6443" if server_ip else None,
        "servers": [n["name"] for n in servers if n.get("role") == "server"],
        "node_cidr_mask_size": min((c.prefixlen for c in cidrs), default=24),
        "flannel_backend": str(setting("flannel-backend")),
        "disable": disable,
        "disable_network_policy": bool(setting("disable-network-policy")),
        "disable_kube_proxy": bool(setting("disable-kube-proxy")),
        "container_runtime": first.get("container_runtime"),
        "installed_at": (kube_system.get("metadata") or {}).get("creationTimestamp"),
        "max_pods": int((first.get("capacity") or {}).get("pods") or 110),
        "lb_pools": pools,
        "lb_pool": next((a for p in pools for a in p["addresses"]), None),
        "ingress_ip": ing_ips.most_common(1)[0][0] if ing_ips else None,
        "ingress_domain": suffixes.most_common(1)[0][0] if suffixes else None,
        "ingress_classes": classes,
        "addons": {
            "argocd": "argoproj.io" in crd_groups, "velero": "velero.io" in crd_groups,
            "metallb": "metallb.io" in crd_groups, "longhorn": "longhorn.io" in crd_groups,
            "cilium": any(n == "cilium" for _, n in daemonsets),
            "ingress_nginx": any(c["controller"] == "k8s.io/ingress-nginx" for c in classes),
            "traefik": "traefik" not in disable, "servicelb": "servicelb" not in disable,
        },
        "derived": derived,
    }


def _covering(key: str, configured: str, nets: list[Any], derived: dict[str, str], what: str,
              widest: int = 32) -> str:
    """The configured (or default) network when it holds every one of ``nets``, else the
    smallest network that does, no longer than ``/widest`` (what the objects prove)."""
    v4 = [n for n in nets if n.version == 4]
    net = ipaddress.ip_network(configured, strict=False)
    if not v4 or all(n.subnet_of(net) for n in v4):
        return str(net)
    wide = v4[0]
    while wide.prefixlen > widest or not all(n.subnet_of(wide) for n in v4):
        wide = wide.supernet()
    derived[key] = (f"the smallest network holding {what} ({configured}, from "
                    f"{derived.get(key, 'k3s')}, does not)")
    return str(wide)


def _cluster_cidr(configured: str, pod_cidrs: list[Any], derived: dict[str, str]) -> str:
    """The cluster CIDR: what the nodes' podCIDRs prove when the setting does not hold them."""
    return _covering("cluster-cidr", configured, pod_cidrs, derived, "every node's podCIDR")


def _service_cidr(configured: str, services: list[dict], derived: dict[str, str]) -> str:
    """The service CIDR: at least a /16 holding every Service's cluster IP."""
    ips = [ipaddress.ip_network(ip) for s in services
           for ip in (s.get("spec") or {}).get("clusterIPs") or [(s.get("spec") or {}).get("clusterIP")]
           if ip and ip != "None"]
    return _covering("service-cidr", configured, ips, derived, "every Service's cluster IP", widest=16)


def params_document(p: Any) -> dict:
    """``params.json``: the params the snapshot was taken with (no local paths to
    credentials, no twin section) and the Cilium values text, masked."""
    data = p.model_dump(mode="json", exclude_none=True)
    data.get("target", {}).pop("kubeconfig", None)
    for key in ("key_path", "known_hosts"):
        data.get("ssh", {}).pop(key, None)
    data.pop("twin", None)
    values = None
    try:
        values = redact(Path(p.values_path).read_text(encoding="utf-8"))
    except OSError:
        pass
    return {"params": data, "values_file": Path(str(p.cilium.values_file)).name, "values": values}


# --------------------------------------------------------------------------- the whole thing
def take(p: Any, out: str | Path, *, cluster: Any = None, nodes: list[Any] | None = None,
         progress: Callable[[str], None] = print, command_log: str | None = None,
         overwrite: bool = False, ssh: bool = True) -> SnapshotResult:
    """Read the cluster of params ``p`` and write the archive ``out`` (mode 0600).

    Args:
        p: validated params (:func:`runbook.params.load`).
        out: the archive to write (``.tar.gz``).
        cluster, nodes: an open :class:`~runbook.cluster.Cluster` and the params'
            :class:`~runbook.nodes.Node` list (a session's); made from ``p`` when None.
        progress: one line per step (types read, nodes read).
        command_log: where each SSH command is logged (the run's ``commands.jsonl``).
        overwrite: replace an existing ``out`` (refused by default).
        ssh: read the nodes over SSH (``--api-only`` turns it off: every node's host
            record then says so, and a twin built from the archive gives the nodes its
            default k3s config, recorded as an assumption).

    Raises:
        ParamsError: ``out`` exists and ``overwrite`` is off.
        ClusterError, NodeError, HostKeyError: a read failed (nothing is written).

    Example:
        >>> snapshot.take(s.params, s.run_dir / "cluster-snapshot.tar.gz",
        ...               cluster=s.cluster, nodes=s.nodes)          # doctest: +SKIP
    """
    from .cluster import Cluster

    out = Path(out)
    if out.exists() and not overwrite:
        raise ParamsError(f"{out} exists; choose another --out or remove it first", field="--out")
    t0 = time.monotonic()
    cluster = cluster or Cluster.from_params(p)
    version = cluster.version()
    progress(f"snapshot of {p.target.name} ({p.target.kind}, Kubernetes {version.get('gitVersion')})")
    snap = snapshot_format.Snapshot(cluster={}, nodes=[])
    read: dict[tuple[str, str], list[dict]] = {}
    warnings: list[str] = []

    def read_all(types: list[tuple[str, str, str, bool]]) -> None:
        for rt in types:
            if (rt[0], rt[1]) in read:
                continue
            items = read_type(cluster, rt, progress)
            read[(rt[0], rt[1])] = items
            snap.add_objects(rt[0], rt[1], rt[2], rt[3], items)
            if items:
                progress(f"  {rt[2]}: {len(items)}")

    read_all(list(BUILTIN))
    crds = read[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]
    read_all(addon_types(crds))
    for _ in range(5):     # owners of owners (a CR owning a CR owning a StatefulSet)
        owners = missing_owner_types(read, crds)
        if not owners:
            break
        read_all(owners)
    snap.secrets = read_secrets(cluster)
    progress(f"  secrets: {len(snap.secrets)} (names and types only)")
    node_objs = read[("v1", "Node")]
    names = [n["metadata"]["name"] for n in node_objs]
    if ssh:
        progress(f"reading {len(names)} nodes over SSH (host keys checked), {READ_PARALLEL} at a time")
        hosts, more = read_hosts(p, names, nodes=nodes, progress=progress, command_log=command_log)
        warnings += more
    else:
        hosts = {n: unreachable("--api-only: the nodes were not read over SSH") for n in names}
        warnings.append("--api-only: no node was read over SSH (k3s configs, links, iptables, CNI folders)")
    snap.nodes = [node_entry(n, hosts[n["metadata"]["name"]]) for n in node_objs]
    snap.cluster = cluster_facts(p.target.name, snap.nodes, snap, version)
    snap.params = params_document(p)
    snap.manifest = {"source": {"target": p.target.name, "kind": p.target.kind,
                                "api_server_version": version.get("gitVersion"),
                                "tool": "runbook snapshot"},
                     "masked": list(MASKED)}
    try:
        manifest = snapshot_format.write(out, snap)
    except snapshot_format.SnapshotFormatError as e:
        raise ParamsError(e.problem, file=e.path, field="--out") from e
    res = SnapshotResult(out, manifest, manifest["counts"], sum(1 for h in hosts.values() if h.get("reachable")),
                         time.monotonic() - t0, warnings)
    progress(res.summary())
    return res
