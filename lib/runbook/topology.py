"""The cluster's topology, and whether the runbook handles it: checked in preflight.

k3s clusters differ in ways that change the migration: how many servers and which
datastore, flannel's backend, the pod CIDRs (one family or two), pods with ``hostPort``
(k3s' servicelb), NetworkPolicies (kube-router enforces them today) and the add-ons the
runbook pauses or backs up. This module reads those facts (:func:`gather`: the API plus
each server's k3s config over SSH, read-only), describes them (:class:`Topology`, pure
:func:`from_facts`) and turns them into preflight rows (:func:`rows`, pure,
golden-tested): ``ok`` (handled, and how), ``warn`` (handled, with a consequence to
read) or ``fail`` (refused before anything changes, with the reason and what to do).
docs/topologies.md lists each case with its primary sources.

The flannel backend in force also decides what flannel leaves on a node and what the
rollback waits for (:func:`flannel_device`, :func:`backend_of_config`).

Example:
    >>> topo = from_facts(nodes=[], server_configs={}, pods=[], netpols=[], addons={})
    >>> topo.backend, topo.dual_stack
    ('vxlan', False)
    >>> flannel_device("wireguard-native"), flannel_device("host-gw") is None
    ('flannel-wg', True)
"""
from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import yaml

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["HANDLED_BACKENDS", "FLANNEL_DEVICES", "Topology", "flannel_device", "backend_of_config",
           "merged_config", "from_facts", "from_cluster", "rows", "gather", "addon_installed", "server_settings",
           "ADDON_TYPES", "STATUS_FAIL"]

#: flannel backends the runbook migrates from: backend -> (its device, what that device holds)
FLANNEL_DEVICES: dict[str, str | None] = {"vxlan": "flannel.1", "host-gw": None,
                                          "wireguard-native": "flannel-wg"}
HANDLED_BACKENDS = tuple(FLANNEL_DEVICES)
K3S_DEFAULT_BACKEND = "vxlan"
K3S_DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
ETCD_LABEL = "node-role.kubernetes.io/etcd"
SERVER_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
SERVICELB_LABEL = "svccontroller.k3s.cattle.io/svcname"
STATUS_FAIL = "fail"
#: the k3s server keys the topology reads (plus whether ``server`` / ``datastore-endpoint`` is set)
TOPOLOGY_KEYS = ("flannel-backend", "cluster-cidr", "service-cidr", "disable", "disable-network-policy",
                 "disable-kube-proxy", "cluster-init")
_BACKEND_NOTES = {
    "vxlan": "flannel.1 (VXLAN, UDP 8472) and cni0: deleted by reconfigure's cleanup, re-created "
             "by k3s when the rollback starts it",
    "host-gw": "no tunnel device: one route per other node's podCIDR via that node's InternalIP, "
               "plus cni0 (the routes outlive flannel: the cleanup deletes them, the rollback waits for them)",
    "wireguard-native": "flannel-wg (WireGuard, UDP 51820) and cni0: deleted by the cleanup, "
                        "re-created by k3s (with new keys) when the rollback starts it",
}


def flannel_device(backend: str) -> str | None:
    """The device flannel's ``backend`` creates on every node (None: host-gw has none).

    >>> flannel_device("vxlan")
    'flannel.1'
    """
    return FLANNEL_DEVICES.get(backend, "flannel.1")


def merged_config(files: dict[str, str]) -> dict[str, Any]:
    """k3s' merged config: ``config.yaml`` then ``config.yaml.d/*.yaml`` (``key+:`` appends).

    >>> merged_config({"/c/config.yaml": "a: 1", "/c/config.yaml.d/x.yaml": "a: 2"})
    {'a': 2}
    """
    from .snapshot_hosts import effective_config

    return effective_config(files)


def backend_of_config(text: str | None) -> str:
    """The flannel backend a k3s server config selects (k3s' default: vxlan).

    >>> backend_of_config("flannel-backend: host-gw\\n"), backend_of_config("")
    ('host-gw', 'vxlan')
    """
    try:
        doc = yaml.safe_load(text or "") or {}
    except yaml.YAMLError:
        return K3S_DEFAULT_BACKEND
    return str(doc.get("flannel-backend") or K3S_DEFAULT_BACKEND) if isinstance(doc, dict) \
        else K3S_DEFAULT_BACKEND


def _as_list(v: Any) -> list[str]:
    if v in (None, ""):
        return []
    items = v if isinstance(v, list) else str(v).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


@dataclass
class Topology:
    """What shapes the migration, read from the cluster (pure data).

    Attributes:
        servers, agents: node names by role.
        datastore: ``sqlite`` (one server), ``embedded etcd`` or ``external``.
        etcd_members: servers that are etcd members (embedded etcd).
        backend: flannel's backend per the servers' k3s config (default vxlan).
        backends: server -> the backend its own config selects (they must agree).
        cluster_cidrs, service_cidrs: k3s' ``cluster-cidr`` / ``service-cidr`` (one per
            IP family; from the nodes' podCIDRs when the config has none).
        pod_cidrs: node -> its podCIDRs.
        dual_stack: an IPv6 pod or service CIDR exists.
        network_policy_enforced: kube-router enforces NetworkPolicies (k3s'
            ``disable-network-policy`` is not set).
        networkpolicies: ``namespace/name`` of each NetworkPolicy.
        hostport_pods: ``namespace/name: ports`` of non-hostNetwork pods with hostPorts.
        servicelb: k3s' servicelb (klipper-lb) serves LoadBalancer Services.
        traefik: k3s' packaged Traefik runs.
        addons: add-on -> installed (velero, argocd, longhorn).
    """

    servers: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    datastore: str = "sqlite"
    etcd_members: list[str] = field(default_factory=list)
    backend: str = K3S_DEFAULT_BACKEND
    backends: dict[str, str] = field(default_factory=dict)
    cluster_cidrs: list[str] = field(default_factory=lambda: [K3S_DEFAULT_CLUSTER_CIDR])
    service_cidrs: list[str] = field(default_factory=lambda: ["10.43.0.0/16"])
    pod_cidrs: dict[str, list[str]] = field(default_factory=dict)
    dual_stack: bool = False
    network_policy_enforced: bool = True
    networkpolicies: list[str] = field(default_factory=list)
    hostport_pods: list[str] = field(default_factory=list)
    servicelb: bool = False
    traefik: bool = False
    addons: dict[str, bool] = field(default_factory=dict)

    @property
    def quorum(self) -> int:
        """etcd members needed for the datastore (and so the API) to work."""
        return len(self.etcd_members) // 2 + 1


def _family(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def from_facts(*, nodes: list[dict], server_configs: dict[str, dict[str, Any]], pods: list[dict],
               netpols: list[dict], addons: dict[str, bool]) -> Topology:
    """The topology from what the API and the servers' configs show (pure).

    Args:
        nodes: the Node objects.
        server_configs: server name -> its merged k3s config (:func:`merged_config`).
        pods: the Pod objects; netpols: the NetworkPolicy objects.
        addons: add-on -> installed (``velero``, ``argocd``, ``longhorn``).
    """
    t = Topology(addons=dict(addons))
    for n in nodes:
        md = n.get("metadata") or {}
        labels = md.get("labels") or {}
        name = md.get("name", "?")
        (t.servers if any(labels.get(k) == "true" for k in SERVER_LABELS) else t.agents).append(name)
        if labels.get(ETCD_LABEL) == "true":
            t.etcd_members.append(name)
        spec = n.get("spec") or {}
        t.pod_cidrs[name] = list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    configs = [server_configs[s] for s in t.servers if s in server_configs]
    first = configs[0] if configs else {}
    t.backends = {s: str(c.get("flannel-backend") or K3S_DEFAULT_BACKEND)
                  for s, c in server_configs.items()}
    t.backend = next(iter(t.backends.values()), K3S_DEFAULT_BACKEND)
    if any("cluster-init" in c or (c.get("server") and s in t.servers) for s, c in server_configs.items()):
        t.etcd_members = t.etcd_members or list(t.servers)
    if any(c.get("datastore-endpoint") for c in configs):
        t.datastore = "external"
    elif t.etcd_members:
        t.datastore = "embedded etcd"
    cidrs = _as_list(first.get("cluster-cidr"))
    if not cidrs:
        fams: dict[int, str] = {}
        for cs in t.pod_cidrs.values():
            for c in cs:
                fams.setdefault(_family(c), c)
        # k3s' default, unless the podCIDRs lie outside it (then the config was not read)
        default = ipaddress.ip_network(K3S_DEFAULT_CLUSTER_CIDR)
        v4_in_default = all(ipaddress.ip_network(c, strict=False).subnet_of(default)  # type: ignore[arg-type]
                            for cs in t.pod_cidrs.values() for c in cs if _family(c) == 4)
        cidrs = [K3S_DEFAULT_CLUSTER_CIDR if v4_in_default or 4 not in fams else _covering(t.pod_cidrs, 4)]
        cidrs += [_covering(t.pod_cidrs, 6)] if 6 in fams else []
    t.cluster_cidrs = cidrs
    t.service_cidrs = _as_list(first.get("service-cidr")) or ["10.43.0.0/16"]
    t.dual_stack = any(_family(c) == 6 for c in t.cluster_cidrs + t.service_cidrs) or any(
        len({_family(c) for c in cs}) > 1 for cs in t.pod_cidrs.values())
    t.network_policy_enforced = not any(c.get("disable-network-policy") for c in configs)
    t.networkpolicies = sorted(f"{(p.get('metadata') or {}).get('namespace')}/{p['metadata']['name']}"
                               for p in netpols)
    disabled = set(_as_list(first.get("disable")))
    for p in pods:
        spec, md = p.get("spec") or {}, p.get("metadata") or {}
        if spec.get("hostNetwork"):
            continue
        ports = [f"{cp.get('hostPort')}/{cp.get('protocol', 'TCP')}" for c in spec.get("containers") or ()
                 for cp in c.get("ports") or () if cp.get("hostPort")]
        if ports:
            t.hostport_pods.append(f"{md.get('namespace')}/{md.get('name')}: {', '.join(ports)}")
        if SERVICELB_LABEL in (md.get("labels") or {}):
            t.servicelb = True
        if md.get("namespace") == "kube-system" and md.get("name", "").startswith("traefik-"):
            t.traefik = True
    t.traefik = t.traefik and "traefik" not in disabled
    return t


def _covering(pod_cidrs: dict[str, list[str]], family: int) -> str:
    """The smallest network holding every podCIDR of one family (what k3s was given)."""
    nets = [ipaddress.ip_network(c, strict=False) for cs in pod_cidrs.values() for c in cs
            if _family(c) == family]
    net = nets[0]
    while not all(n.subnet_of(net) for n in nets):   # type: ignore[arg-type]
        net = net.supernet()
    return str(net)


# ============================================================================ the rows (pure)
def rows(t: Topology, values: dict[str, Any], *, kpr: bool,
         switched_here: bool = False) -> list[tuple[str, str, str]]:
    """Preflight rows ``(check, status, detail)`` for this topology and these Cilium values.

    ``switched_here``: this run's own journal holds the k3s configs it rewrote (preflight
    run again after reconfigure), so a ``flannel-backend: none`` is this run's doing, not a
    cluster that never ran flannel."""
    out = [_control_plane(t), _backend(t, switched_here), _cidr(t, values), _dual_stack(t, values),
           _hostport(t, values, kpr), _netpols(t)]
    out += _addons(t)
    return out


def _names(items: Iterable[str], n: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _control_plane(t: Topology) -> tuple[str, str, str]:
    check = "control plane: servers and datastore"
    servers = len(t.servers)
    if t.datastore == "embedded etcd" and len(t.etcd_members) > 1:
        members, q = len(t.etcd_members), t.quorum
        if members - 1 < q:
            return (check, STATUS_FAIL,
                    f"{members} etcd members ({_names(t.etcd_members)}) need {q} up: restarting any one "
                    "server loses quorum and the API stops for every restart. Refused: add a server "
                    "(3 members tolerate one restart) or remove one member first")
        return (check, "ok",
                f"{servers} servers with embedded etcd ({_names(t.etcd_members)}): restarted one at a "
                f"time, each back before the next, so {members - 1} of {members} members keep quorum "
                f"({q} needed); the API answers through the other servers, and the agents' "
                "127.0.0.1:6444 load balancer follows the servers that answer")
    if t.datastore == "external":
        return (check, "ok", f"{servers} server(s) on an external datastore: restarted one at a time; "
                             "the API answers through the others while one restarts")
    if servers == 1 and not t.agents:
        return (check, "ok", f"single node ({t.servers[0]}): server only; the API and every pod are "
                             "away while its k3s restarts (the runbook waits for the API)")
    return (check, "ok", f"{servers} server(s) ({_names(t.servers)}), {t.datastore}: the API is away "
                         "while the server restarts; agents keep running and reconnect")


def _backend(t: Topology, switched_here: bool = False) -> tuple[str, str, str]:
    check = "flannel backend"
    seen = sorted(set(t.backends.values()))
    if len(seen) > 1:
        return (check, STATUS_FAIL, "the servers' configs disagree: "
                + ", ".join(f"{s}: {b}" for s, b in sorted(t.backends.items()))
                + ". Refused: k3s servers must share flannel-backend; fix the configs first")
    if t.backend == "none" and switched_here:
        return (check, "ok", "none: this run switched flannel off (its journal holds each node's "
                             "original k3s config, which the rollback restores)")
    if t.backend == "none":
        return (check, STATUS_FAIL, "flannel-backend is already none: flannel is not this cluster's CNI, "
                                    "so there is nothing to migrate from. Refused")
    if t.backend not in HANDLED_BACKENDS:
        return (check, STATUS_FAIL, f"flannel-backend {t.backend} is not one the runbook migrates from "
                                    f"({', '.join(HANDLED_BACKENDS)}): its leftovers are not known. Refused")
    return (check, "ok", f"{t.backend}: {_BACKEND_NOTES[t.backend]}")


def _cidr(t: Topology, values: dict[str, Any]) -> tuple[str, str, str]:
    check = "pod CIDR carried over"
    v4 = [c for c in t.cluster_cidrs if _family(c) == 4]
    cidr = v4[0] if v4 else K3S_DEFAULT_CLUSTER_CIDR
    net = ipaddress.ip_network(cidr, strict=False)
    mode = str((values.get("ipam") or {}).get("mode") or "cluster-pool")
    other = "" if cidr == K3S_DEFAULT_CLUSTER_CIDR else f" (not k3s' default {K3S_DEFAULT_CLUSTER_CIDR})"
    if mode == "kubernetes":
        detail = (f"cluster-cidr {cidr}{other}: ipam.mode kubernetes makes Cilium use each node's "
                  "podCIDR, so pods keep addresses from the same ranges")
    elif mode == "cluster-pool":
        pools = _as_list(((values.get("ipam") or {}).get("operator") or {}).get("clusterPoolIPv4PodCIDRList")) \
            or ["10.0.0.0/8"]
        if not any(ipaddress.ip_network(p, strict=False) == net for p in pools):
            return (check, STATUS_FAIL,
                    f"ipam.mode cluster-pool hands out {', '.join(pools)} while the nodes' podCIDRs are "
                    f"in {cidr}: set ipam.mode: kubernetes (or the pool to {cidr})")
        detail = f"cluster-cidr {cidr}{other}: Cilium's cluster pool is the same range"
    else:
        return (check, STATUS_FAIL, f"ipam.mode {mode} is not rehearsed by this runbook: use kubernetes")
    native = values.get("ipv4NativeRoutingCIDR")
    if str(values.get("routingMode", "tunnel")) == "native":
        if not native or not net.subnet_of(ipaddress.ip_network(str(native), strict=False)):  # type: ignore[arg-type]
            return (check, STATUS_FAIL, f"routingMode native needs ipv4NativeRoutingCIDR to cover {cidr} "
                                        f"(it is {native or 'unset'})")
    return (check, "ok", detail)


def _dual_stack(t: Topology, values: dict[str, Any]) -> tuple[str, str, str]:
    check = "IP families (dual-stack)"
    if not t.dual_stack:
        return (check, "ok", "IPv4 only")
    v6 = [c for c in t.cluster_cidrs + t.service_cidrs if _family(c) == 6]
    ipv6_on = bool((values.get("ipv6") or {}).get("enabled"))
    return (check, STATUS_FAIL,
            f"dual-stack cluster (IPv6: {', '.join(v6) or 'podCIDRs'}): the values "
            f"{'enable' if ipv6_on else 'do not enable'} ipv6, and this runbook has not rehearsed an "
            "IPv6 migration (flannel-v6.1 and IPv6 routes to clean, IPv6 podCIDRs for Cilium's IPAM, "
            "IPv6 Services through kube-proxy replacement). Refused before anything changes: migrate "
            "this cluster by hand following Cilium's dual-stack documentation, or make it IPv4-only first")


def _hostport(t: Topology, values: dict[str, Any], kpr: bool) -> tuple[str, str, str]:
    check = "hostPort pods (k3s servicelb)"
    if not t.hostport_pods:
        return (check, "ok", "no pod uses hostPort" + ("; servicelb is off or idle" if not t.servicelb else ""))
    pods = _names(t.hostport_pods, 3)
    lb = "k3s servicelb (klipper-lb) serves LoadBalancer IPs through them; " if t.servicelb else ""
    if kpr:
        return (check, "ok", f"{len(t.hostport_pods)} pod(s) with hostPort ({pods}): {lb}Cilium's "
                             "kube-proxy replacement (kubeProxyReplacement: true) maps hostPorts itself, "
                             "nothing to set; they work again once each pod restarts under Cilium")
    chaining = str((values.get("cni") or {}).get("chainingMode") or "none")
    if chaining == "portmap":
        return (check, "ok", f"{len(t.hostport_pods)} pod(s) with hostPort ({pods}): {lb}"
                             "cni.chainingMode portmap maps them (kube-proxy replacement is off)")
    return (check, STATUS_FAIL,
            f"{len(t.hostport_pods)} pod(s) with hostPort ({pods}): {lb}without kube-proxy replacement "
            "Cilium maps hostPorts only through the portmap CNI plugin: set cni.chainingMode: portmap "
            "(or kubeProxyReplacement: true), or they stop answering")


def _netpols(t: Topology) -> tuple[str, str, str]:
    check = "NetworkPolicies"
    if not t.networkpolicies:
        return (check, "ok", "none: nothing is enforced before or after")
    today = ("enforced today by k3s' kube-router (iptables chains and ipsets per pod IP)"
             if t.network_policy_enforced else
             "NOT enforced today (k3s disable-network-policy is set): they take effect under Cilium")
    return (check, "warn",
            f"{len(t.networkpolicies)} ({_names(t.networkpolicies)}): {today}. After the migration "
            "Cilium enforces them with its own semantics: by security identity (pod labels) instead of "
            "pod IPs; ipBlock rules match only addresses outside the cluster; a node's own traffic to "
            "its pods stays allowed; and a pod is unprotected from kube-router's removal until it "
            "restarts under Cilium. They make the verdict EXECUTE (the seed's rule); verify re-checks "
            "one allowed and one denied flow")


def _addons(t: Topology) -> list[tuple[str, str, str]]:
    out = []
    if not t.addons.get("velero", True):
        out.append(("add-on: Velero", "warn", "not installed (no velero.io CRDs): the pre-migration "
                    "backup is skipped. The rollback does not need it (it restores k3s configs and "
                    "flannel's files, not objects), but there is no object backup to restore from"))
    if not t.addons.get("argocd", True):
        out.append(("add-on: Argo CD", "ok", "not installed: nothing to pause before or resume after"))
    if not t.addons.get("longhorn", True):
        out.append(("add-on: Longhorn", "ok", "not installed: no Longhorn volume checks"))
    return out


# ============================================================================ the facts (read)
def _server_config(n: Node, path: str) -> dict[str, Any]:
    """One server's merged k3s config over SSH (read-only)."""
    files: dict[str, str] = {}
    if n.exists(path):
        files[path] = n.read_file(path)
    # k3s also reads <config>.d/*.yaml; look for that folder in the parent's listing first
    parent, base = posixpath.split(path)
    r = n.run("ls -1A %s", parent or "/", sudo=True)
    if r.ok and f"{base}.d" in {x.strip() for x in r.stdout.splitlines()}:
        d = path + ".d"
        listing = n.run("ls -1 %s", d, sudo=True)
        for name in sorted(x.strip() for x in listing.stdout.splitlines() if x.strip().endswith((".yaml", ".yml"))):
            files[posixpath.join(d, name)] = n.read_file(posixpath.join(d, name))
    return merged_config(files)


#: add-on -> the resource type whose presence says it is installed
ADDON_TYPES = {"velero": ("velero.io/v1", "backups"),
               "argocd": ("argoproj.io/v1alpha1", "applications"),
               "longhorn": ("longhorn.io/v1beta2", "volumes")}


def addon_installed(c: Any, name: str) -> bool:
    """Is add-on ``name`` (a key of :data:`ADDON_TYPES`) installed? (its CRD is served)

    Example:
        >>> topology.addon_installed(s.cluster, "velero")   # doctest: +SKIP
        False
    """
    api_version, plural = ADDON_TYPES[name]
    if plural in ("backups", "applications"):      # types the Cluster knows by name
        return bool(c.has_resource(plural))
    doc = c.request("GET", f"/apis/{api_version}", ok_missing=True)
    return isinstance(doc, dict) and any(r.get("name") == plural for r in doc.get("resources") or [])


def server_settings(n: Node, path: str) -> dict[str, Any] | None:
    """A server's merged k3s config over SSH (None on an agent: servers own the network keys)."""
    if n.role != "server":
        return None
    conf = _server_config(n, path)
    # only what the topology needs; never a secret (token, datastore credentials)
    out = {k: conf[k] for k in TOPOLOGY_KEYS if k in conf}
    if conf.get("datastore-endpoint"):
        out["datastore-endpoint"] = "set"
    if conf.get("server"):
        out["server"] = "set"
    return out


def from_cluster(c: Any, server_configs: dict[str, dict[str, Any]]) -> Topology:
    """The topology from the API (Nodes, Pods, NetworkPolicies, add-on CRDs) and the
    servers' merged configs (:func:`server_settings`, read with the node facts)."""
    return from_facts(nodes=c.list("nodes"), server_configs=server_configs, pods=c.list("pods"),
                      netpols=c.list("networkpolicies"),
                      addons={name: addon_installed(c, name) for name in ADDON_TYPES})


def gather(s: Session) -> Topology:
    """Read the topology: the API, and each server's merged k3s config over SSH (host keys
    verified). Read-only.

    Example:
        >>> topo = topology.gather(s)          # doctest: +SKIP
        >>> topo.backend, topo.servers         # doctest: +SKIP
        ('vxlan', ['set-hog'])
    """
    path = s.params.paths.k3s_config
    res = s.read_nodes(lambda n: _server_config(n, path), description="read the servers' k3s configs",
                       nodes=[n for n in s.nodes if n.role == "server"]).raise_for_failures()
    return from_cluster(s.cluster, {o.node: o.value for o in res.outcomes})
