"""The twin's Cilium model: what the objects the real ``helm`` installs do on the nodes.

The chart (the stand-in or the official archive: both render the same names) creates
DaemonSets ``cilium`` and ``cilium-envoy``, Deployments ``cilium-operator``,
``hubble-relay`` and ``hubble-ui``, and the ``cilium-config`` ConfigMap; the workload
controllers turn them into pods. This component (``name = "cilium"``) decides what
happens to those pods (the network model's sandbox policy delegates every pod labelled
``app.kubernetes.io/part-of=cilium`` or with a Cilium ``k8s-app`` label to
:meth:`CiliumModel.decide`) and what a Ready agent does to its node.

Configuration is read as the agent reads it:

- from ``kube-system/cilium-config``: ``kube-proxy-replacement``, ``routing-mode``,
  ``tunnel-protocol``, ``tunnel-port`` (8472 for VXLAN when absent: flannel's port),
  ``ipam`` with ``cluster-pool-ipv4-cidr``/``cluster-pool-ipv4-mask-size``,
  ``enable-hubble``, ``unmanaged-pod-watcher-interval``;
- the API server address from ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` of
  the pod's ``cilium-agent`` (or ``cilium-operator``) container (a ``value`` or a
  ``configMapKeyRef``). Without them the in-cluster Service ``10.43.0.1:443`` is used,
  which only works while k3s's kube-proxy runs on the node.

A node's **agent** becomes Ready (after :data:`AGENT_READY_SECONDS`) only when, checked
in the order a real agent meets them:

1. the ``cilium_image_pull_fails`` fault is off (else ``ImagePullBackOff``, never Ready);
2. the node's kernel is >= 5.10 (else ``CrashLoopBackOff``, kernel message);
3. ``KUBERNETES_SERVICE_HOST:PORT`` reach the API server: a server's InternalIP with
   6443, or 127.0.0.1 with 6444 (k3s's apiserver proxy on every node), the server's k3s
   running (else ``CrashLoopBackOff`` "unable to reach the API server at H:P");
4. no other VXLAN device holds the tunnel port: ``flannel.1`` holds 8472, so with the
   default port the agent crash-loops with "failed to create vxlan device: address
   already in use (port 8472 is used by flannel.1)" until ``flannel.1`` is deleted;
5. the cilium.io CRDs exist (the operator registers them): until then the agent runs
   but is not Ready ("waiting for CRDs").

A crash-looping agent's ``restartCount`` grows with the kubelet's back-off
(10 s, 20 s, ... 300 s cluster time). Once Ready (per boot of the node) it stays Ready
until its pod goes or the node reboots.

**A Ready agent** writes ``/etc/cni/net.d/05-cilium.conflist``, creates ``cilium_host``,
``cilium_net`` and ``cilium_vxlan`` (VXLAN on the tunnel port) and the ``CILIUM_*``
iptables chains, publishes a ``CiliumNode`` (cluster-scoped, ``spec.addresses``,
``spec.ipam.podCIDRs``) and a ``CiliumEndpoint`` for each pod of its node whose sandbox
is Cilium's. Kube-proxy replacement is active only with ``kube-proxy-replacement:
"true"``; the ``KUBE-SVC-*`` chains k3s's kube-proxy left stay in ``iptables-save``.
``helm uninstall`` removes the pods; interfaces, chains and the conflist stay (as on a
node) until deleted; a reboot clears interfaces and chains, not the file.

**cilium-envoy** is Ready with the agent of its node. **The operator** (hostNetwork)
becomes Ready when it reaches the API server (same rule as the agent) and then registers
the cilium.io CRDs (:data:`CRDS`); before that ``kubectl get ciliumnodes`` has no such
resource type. **hubble-relay/hubble-ui** get their sandbox from the node's working CNI
like any pod and are Ready once some agent is Ready.

**Unmanaged-pod watcher**: while the operator is Ready and
``unmanaged-pod-watcher-interval`` is not ``"0"``, every interval it deletes ONE
``k8s-app=kube-dns`` pod that has no CiliumEndpoint on a node whose agent is Ready,
like the real operator (application pods are never restarted for you).

Not modelled: CiliumIdentity objects (identities are computed, not published),
CiliumNodeConfig overrides, ``cni-exclusive`` renaming other conflists in
``/etc/cni/net.d`` (flannel's lives under ``/var/lib/rancher``, so nothing to rename),
policy enforcement.

Example (inside the twin's loop)::

    cil = rt.component("cilium")
    cil.agent_status("fast-skunk")   # AgentStatus(ready=False, reason="failed to create vxlan ...")
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .base import Controller
from .kubelet import IPAllocator, PodFate, has_sandbox, node_internal_ip, SANDBOX_CNI_ANNOTATION
from .scheduler import _condition

log = logging.getLogger("twin.controllers.cilium")

NAMESPACE = "kube-system"
CONFIG_MAP = "cilium-config"
CILIUM_CONFLIST = "/etc/cni/net.d/05-cilium.conflist"
MIN_KERNEL = (5, 10)
FLANNEL_VXLAN_PORT = 8472
GENEVE_PORT = 6081
API_PORT = 6443
LOCAL_PROXY_PORT = 6444
K8S_SERVICE = ("10.43.0.1", 443)   # default/kubernetes in k3s's default service CIDR

IMAGE_PULL_SECONDS = 3.0      # pull + first start of a container
AGENT_READY_SECONDS = 5.0     # agent start until its /healthz passes
ENVOY_READY_SECONDS = 2.0
OPERATOR_READY_SECONDS = 3.0
CRASH_RUN_SECONDS = 2.0       # a crashing container runs this long before it exits
BACKOFF_BASE = 10.0           # kubelet CrashLoopBackOff: 10 s doubling, capped at 300 s
BACKOFF_MAX = 300.0
TICK_SECONDS = 1.0

AGENT_SELECTOR = ("k8s-app", "cilium")
CILIUM_APPS = {"cilium", "cilium-envoy", "hubble-relay", "hubble-ui"}

# What the real agent programs, per table: (chain, feeder parent) pairs.
CILIUM_CHAINS: dict[str, tuple[tuple[str, str], ...]] = {
    "filter": (("CILIUM_INPUT", "INPUT"), ("CILIUM_FORWARD", "FORWARD"), ("CILIUM_OUTPUT", "OUTPUT")),
    "nat": (("CILIUM_PRE_nat", "PREROUTING"), ("CILIUM_OUTPUT_nat", "OUTPUT"),
            ("CILIUM_POST_nat", "POSTROUTING")),
    "mangle": (("CILIUM_PRE_mangle", "PREROUTING"), ("CILIUM_POST_mangle", "POSTROUTING")),
    "raw": (("CILIUM_PRE_raw", "PREROUTING"), ("CILIUM_OUTPUT_raw", "OUTPUT")),
}


# --------------------------------------------------------------------------- CRDs
@dataclass(frozen=True)
class CRDSpec:
    """One cilium.io CRD the operator registers."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: str                    # Namespaced | Cluster
    versions: tuple[str, ...]     # served versions; the first is the storage version
    categories: tuple[str, ...] = ("cilium",)
    status: bool = True
    columns: tuple[dict, ...] = ()


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
CRDS: tuple[CRDSpec, ...] = (
    CRDSpec("CiliumIdentity", "ciliumidentities", ("ciliumid",), "Cluster", ("v2",),
            status=False, columns=(
                {"name": "Namespace", "type": "string",
                 "jsonPath": '.metadata.labels.io\\.kubernetes\\.pod\\.namespace'}, _AGE)),
    CRDSpec("CiliumEndpoint", "ciliumendpoints", ("cep", "ciliumep"), "Namespaced", ("v2",),
            columns=(
                {"name": "Cilium ID", "type": "integer", "jsonPath": ".status.id"},
                {"name": "Security Identity", "type": "integer", "jsonPath": ".status.identity.id"},
                {"name": "Endpoint State", "type": "string", "jsonPath": ".status.state"},
                {"name": "IPv4", "type": "string", "jsonPath": ".status.networking.addressing[0].ipv4"},
                {"name": "IPv6", "type": "string", "jsonPath": ".status.networking.addressing[0].ipv6"})),
    CRDSpec("CiliumNode", "ciliumnodes", ("cn", "ciliumn"), "Cluster", ("v2",), columns=(
        {"name": "CiliumInternalIP", "type": "string",
         "jsonPath": '.spec.addresses[?(@.type=="CiliumInternalIP")].ip'},
        {"name": "InternalIP", "type": "string",
         "jsonPath": '.spec.addresses[?(@.type=="InternalIP")].ip'}, _AGE)),
    CRDSpec("CiliumNetworkPolicy", "ciliumnetworkpolicies", ("cnp", "ciliumnp"), "Namespaced",
            ("v2",), categories=("cilium", "ciliumpolicy"), columns=(_AGE,)),
    CRDSpec("CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", ("ccnp",),
            "Cluster", ("v2",), categories=("cilium", "ciliumpolicy"), columns=(_AGE,)),
    CRDSpec("CiliumCIDRGroup", "ciliumcidrgroups", ("ccg",), "Cluster", ("v2", "v2alpha1"),
            status=False, columns=(_AGE,)),
    CRDSpec("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools",
            ("ippools", "ippool", "lbippool", "lbippools"), "Cluster", ("v2", "v2alpha1"),
            columns=({"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"}, _AGE)),
    CRDSpec("CiliumNodeConfig", "ciliumnodeconfigs", (), "Namespaced", ("v2", "v2alpha1"),
            status=False),
    CRDSpec("CiliumPodIPPool", "ciliumpodippools", ("cpip",), "Cluster", ("v2alpha1",),
            status=False),
    CRDSpec("CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies", ("l2announcement",),
            "Cluster", ("v2alpha1",)),
)
CRD_SCHEMA_VERSION = "1.33.4"


def crd_object(spec: CRDSpec) -> dict:
    """The CustomResourceDefinition the operator creates for ``spec``.

    Example:
        >>> crd_object(CRDS[2])["metadata"]["name"]
        'ciliumnodes.cilium.io'
    """
    versions = []
    for i, v in enumerate(spec.versions):
        ver: dict[str, Any] = {
            "name": v, "served": True, "storage": i == 0,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}}}
        if spec.status:
            ver["subresources"] = {"status": {}}
        if spec.columns:
            ver["additionalPrinterColumns"] = [dict(c) for c in spec.columns]
        versions.append(ver)
    names: dict[str, Any] = {"kind": spec.kind, "listKind": spec.kind + "List",
                             "plural": spec.plural, "singular": spec.kind.lower(),
                             "categories": list(spec.categories)}
    if spec.short_names:
        names["shortNames"] = list(spec.short_names)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{spec.plural}.cilium.io",
                         "labels": {"io.cilium.k8s.crd.schema.version": CRD_SCHEMA_VERSION}},
            "spec": {"group": "cilium.io", "names": names, "scope": spec.scope,
                     "versions": versions}}


# --------------------------------------------------------------------------- config
@dataclass
class CiliumConfig:
    """What the agent reads from ``kube-system/cilium-config`` (defaults as the agent's).

    Example:
        >>> c = CiliumConfig.from_data({"kube-proxy-replacement": "true", "ipam": "kubernetes"})
        >>> (c.kpr, c.tunnel_port, c.ipam)
        (True, 8472, 'kubernetes')
    """

    present: bool = False
    kpr: bool = False
    routing_mode: str = "tunnel"
    tunnel_protocol: str = "vxlan"
    tunnel_port: int = FLANNEL_VXLAN_PORT
    ipam: str = "cluster-pool"
    pool_cidrs: list[str] = field(default_factory=lambda: ["10.0.0.0/8"])
    pool_mask: int = 24
    hubble: bool = True
    hubble_listen: str = ":4244"
    unmanaged_watcher_seconds: float = 15.0

    @classmethod
    def from_data(cls, data: dict | None) -> "CiliumConfig":
        if data is None:
            return cls()
        d = {str(k): str(v) for k, v in data.items()}
        proto = d.get("tunnel-protocol", "vxlan").strip() or "vxlan"
        default_port = GENEVE_PORT if proto == "geneve" else FLANNEL_VXLAN_PORT
        try:
            port = int(d.get("tunnel-port") or default_port)
        except ValueError:
            port = default_port
        pools = d.get("cluster-pool-ipv4-cidr", "").replace(",", " ").split() or ["10.0.0.0/8"]
        try:
            mask = int(d.get("cluster-pool-ipv4-mask-size") or 24)
        except ValueError:
            mask = 24
        return cls(present=True,
                   kpr=d.get("kube-proxy-replacement", "false").strip().lower() == "true",
                   routing_mode=d.get("routing-mode", "tunnel").strip() or "tunnel",
                   tunnel_protocol=proto, tunnel_port=port,
                   ipam=d.get("ipam", "cluster-pool").strip() or "cluster-pool",
                   pool_cidrs=pools, pool_mask=mask,
                   hubble=d.get("enable-hubble", "false").strip().lower() == "true",
                   hubble_listen=d.get("hubble-listen-address", ":4244"),
                   unmanaged_watcher_seconds=parse_duration(d.get("unmanaged-pod-watcher-interval", "15")))

    @property
    def tunnel(self) -> bool:
        return self.routing_mode == "tunnel"


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration ("15s", "1m", "0", "15").

    >>> parse_duration("1m30s"), parse_duration("0"), parse_duration("15")
    (90.0, 0.0, 15.0)
    """
    text = str(text).strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|h|m|s)", text):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def kernel_tuple(release: str) -> tuple[int, int]:
    """``(major, minor)`` of a ``uname -r`` string.

    >>> kernel_tuple("6.8.0-51-generic"), kernel_tuple("5.4.0-42-generic")
    ((6, 8), (5, 4))
    """
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def api_reachable(host: str | None, port: str | int | None, *, node: Any,
                  servers: list[Any]) -> tuple[bool, str]:
    """Whether an agent/operator on ``node`` reaches the API server at ``host:port``.

    Args:
        host, port: from KUBERNETES_SERVICE_HOST/PORT (None when the env is absent).
        node: the NodeModel the pod runs on.
        servers: the NodeModels of the k3s servers.

    Returns:
        ``(ok, address)``: the address tried, for messages.
    """
    live_servers = [s for s in servers if s.up and s.unit_state == "active"]
    if host is None:
        # In-cluster Service: needs kube-proxy (or its chains) on the node.
        addr = f"{K8S_SERVICE[0]}:{K8S_SERVICE[1]}"
        svc_chains = any(c.startswith("KUBE-SVC-") for c in node.iptables.chains("nat"))
        return (bool(live_servers) and (bool((node.running or {}).get("kube_proxy")) or svc_chains),
                addr)
    addr = f"{host}:{port}"
    try:
        p = int(str(port))
    except (TypeError, ValueError):
        return False, addr
    if host in ("127.0.0.1", "localhost", "::1"):
        # k3s's apiserver load balancer on every node follows the live servers.
        return (p == LOCAL_PROXY_PORT and node.unit_state == "active" and bool(live_servers), addr)
    ok = p == API_PORT and any(str(s.spec.ip) == host for s in live_servers)
    return ok, addr


# --------------------------------------------------------------------------- facts
@dataclass
class AgentStatus:
    """What the Cilium model knows about one node's agent (for tests and checks).

    Attributes:
        node: node name.
        pod: the agent pod's name, None when there is none.
        ready: the agent is Ready (for the current boot of the node).
        reason: why it is not Ready (None when Ready or without a pod).
        waiting: the container's waiting reason (CrashLoopBackOff, ImagePullBackOff ...).
        restarts: the cilium-agent container's restartCount.
        kpr_active: kube-proxy replacement runs (Ready agent and the config asks for it).
        tunnel_port: the VXLAN/Geneve port in use (None in native routing).
        api: the API server address the agent uses.
    """

    node: str
    pod: str | None
    ready: bool
    reason: str | None
    waiting: str | None
    restarts: int
    kpr_active: bool
    tunnel_port: int | None
    api: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def pod_app(pod: dict) -> str | None:
    """Which Cilium component a pod is: cilium, cilium-envoy, operator, hubble-relay,
    hubble-ui, or None."""
    lab = _labels(pod)
    if lab.get("io.cilium/app") == "operator" or lab.get("name") == "cilium-operator":
        return "operator"
    app = lab.get("k8s-app")
    return app if app in CILIUM_APPS else None


def is_ready(pod: dict | None) -> bool:
    c = _condition(pod or {}, "Ready")
    return bool(c and c.get("status") == "True")


def container_env(pod: dict, container: str, var: str, configmaps: Any = None) -> str | None:
    """The value of ``var`` in ``container`` of a pod spec (``value`` or configMapKeyRef)."""
    for c in (pod.get("spec") or {}).get("containers") or ():
        if c.get("name") != container:
            continue
        for e in c.get("env") or ():
            if e.get("name") != var:
                continue
            if "value" in e:
                return str(e["value"])
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and configmaps is not None:
                cm = configmaps((pod.get("metadata") or {}).get("namespace"), ref.get("name"))
                if cm is not None:
                    v = (cm.get("data") or {}).get(ref.get("key"))
                    return None if v is None else str(v)
            return None
    return None


def identity_for(labels: dict, namespace: str) -> int:
    """A stable security identity for a label set (Cilium allocates from 256 up)."""
    key = ",".join(sorted(f"{k}={v}" for k, v in labels.items() if k != "pod-template-hash"))
    return 256 + int(hashlib.sha256(f"{namespace}/{key}".encode()).hexdigest()[:8], 16) % 65000


# --------------------------------------------------------------------------- controller
class _CiliumController(Controller):
    def __init__(self, model: "CiliumModel") -> None:
        super().__init__("cilium", model.rt.clock)
        self.model = model

    def reconcile(self, key: Any) -> None:
        self.model._reconcile(key)


class CiliumModel:
    """Runtime component ``cilium`` (start it after ``network``).

    Attributes:
        crds_registered: the operator has registered the cilium.io CRDs.
        watcher_restarts: ``(namespace, name)`` of pods the unmanaged-pod watcher deleted.
    """

    name = "cilium"

    def __init__(self) -> None:
        self.rt: Any = None
        self.store: Any = None
        self.kubelet: Any = None
        self.cache: Any = None
        self.ctrl: _CiliumController | None = None
        self.ipam = IPAllocator()
        self.crds_registered = False
        self.watcher_restarts: list[tuple[str, str]] = []
        self._agents: dict[str, tuple[str, str]] = {}        # node -> agent pod key
        self._ready_boot: dict[tuple[str, str], int] = {}    # agent pod key -> node boot
        self._apps: dict[tuple[str, str], tuple[str, str]] = {}   # pod key -> (app, node)
        self._crash: dict[tuple[str, str], list] = {}       # pod key -> [count, state, since]
        self._dns: set[tuple[str, str]] = set()
        self._pool_index: dict[str, int] = {}
        self._unsub: Any = None
        self._ticker: asyncio.Task | None = None
        self._watcher_due = 0.0
        self._pull_fault = False
        self._types: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        wc = rt.component("workloads")
        self.kubelet = wc.kubelet
        self.cache = wc.cache
        self.ctrl = _CiliumController(self)
        for pod in self.cache.all(("", "pods")):
            self._index_pod("ADDED", pod, None)
        self.crds_registered = self._rtype("cilium.io", "ciliumnodes") is not None
        self._pull_fault = bool(rt.faults.cilium_image_pull_fails)
        self._unsub = self.store.subscribe(self._on_change)
        self.ctrl.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="cilium-ticker")
        try:
            rt.component("network").invalidate()
        except KeyError:
            log.warning("cilium model started without the network model: pods are not delegated")
        rt.options["cilium"] = self

    async def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except (asyncio.CancelledError, Exception):
                pass
            self._ticker = None
        if self.ctrl is not None:
            await self.ctrl.stop()

    def describe(self) -> str:
        ready = sorted(n for n in self._agents if self.agent_ready(n))
        return (f"cilium model: agents Ready on {len(ready)}/{len(self.rt.nodes) if self.rt else 0} "
                f"nodes, CRDs {'registered' if self.crds_registered else 'absent'}")

    # ------------------------------------------------------------------ helpers
    def _rtype(self, group: str, plural: str) -> Any:
        for t in self.store.resource_types():
            if t.key == (group, plural):
                return t
        return None

    def _type(self, group: str, plural: str) -> Any:
        t = self._types.get((group, plural))
        if t is None or self.store.lookup(t.group, t.version, t.plural) is None:
            t = self._rtype(group, plural)
            if t is not None:
                self._types[(group, plural)] = t
        return t

    @property
    def network(self) -> Any:
        try:
            return self.rt.component("network")
        except KeyError:
            return None

    def config(self) -> CiliumConfig:
        """The current ``cilium-config`` (defaults when the ConfigMap is absent)."""
        cm = self._configmap(NAMESPACE, CONFIG_MAP)
        return CiliumConfig.from_data(cm.get("data") if cm else None)

    def _configmap(self, ns: str | None, name: str | None) -> dict | None:
        t = self._type("", "configmaps")
        if t is None or not name:
            return None
        return self.store.peek(t, ns or NAMESPACE, name)

    def _servers(self) -> list[Any]:
        return [n for n in self.rt.nodes.values() if n.role == "server"]

    def _agent_pod(self, node: str) -> dict | None:
        key = self._agents.get(node)
        return self.cache.get(("", "pods"), *key) if key else None

    # ------------------------------------------------------------------ public facts
    def owns(self, pod: dict) -> bool:
        """Whether ``pod`` belongs to the Cilium release (its fate is decided here)."""
        return pod_app(pod) is not None

    def agent_ready(self, node: str) -> bool:
        """The node's agent pod is Ready for the node's current boot."""
        pod = self._agent_pod(node)
        if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp") or not is_ready(pod):
            return False
        nm = self.rt.nodes.get(node)
        key = (pod["metadata"].get("namespace") or "", pod["metadata"]["name"])
        boot = self._ready_boot.get(key)
        return nm is None or boot is None or boot == nm.boot_count

    def agent_pending(self, node: str) -> bool:
        """An agent pod exists on ``node`` but is not Ready (yet)."""
        pod = self._agent_pod(node)
        return pod is not None and not (pod.get("metadata") or {}).get("deletionTimestamp") \
            and not self.agent_ready(node)

    def agent_status(self, node: str) -> AgentStatus:
        """Facts about the agent of ``node`` (see :class:`AgentStatus`)."""
        cfg = self.config()
        pod = self._agent_pod(node)
        ready = self.agent_ready(node)
        reason = waiting = api = None
        restarts = 0
        if pod is not None:
            for cs in (pod.get("status") or {}).get("containerStatuses") or ():
                if cs.get("name") == "cilium-agent":
                    restarts = int(cs.get("restartCount") or 0)
                    waiting = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            nm = self.rt.nodes.get(node)
            host = container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_HOST", self._configmap)
            port = container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_PORT", self._configmap)
            api = f"{host}:{port}" if host else f"{K8S_SERVICE[0]}:{K8S_SERVICE[1]}"
            if not ready and nm is not None:
                reason = self._problem(pod, nm, cfg, "cilium-agent", agent=True) or \
                    "agent starting (readiness probe not passed yet)"
        return AgentStatus(node=node, pod=pod["metadata"]["name"] if pod else None, ready=ready,
                           reason=reason, waiting=waiting, restarts=restarts,
                           kpr_active=ready and cfg.kpr,
                           tunnel_port=cfg.tunnel_port if cfg.tunnel else None, api=api)

    def operator_ready(self) -> bool:
        return any(is_ready(self.cache.get(("", "pods"), *k)) for k, (app, _) in self._apps.items()
                   if app == "operator")

    # ------------------------------------------------------------------ IPAM
    def node_pod_cidrs(self, node: dict, cfg: CiliumConfig | None = None) -> list[str]:
        """The pod CIDRs Cilium uses on ``node``: its podCIDR (ipam kubernetes) or its
        slice of the cluster pool (ipam cluster-pool, allocated by the operator)."""
        cfg = cfg or self.config()
        name = node["metadata"]["name"]
        if cfg.ipam == "cluster-pool":
            if name not in self._pool_index:
                self._pool_index[name] = len(self._pool_index)
            i = self._pool_index[name]
            for pool in cfg.pool_cidrs:
                try:
                    net = ipaddress.ip_network(pool, strict=False)
                except ValueError:
                    continue
                if net.version != 4 or cfg.pool_mask < net.prefixlen:
                    continue
                count = 2 ** (cfg.pool_mask - net.prefixlen)
                if i < count:
                    sub = ipaddress.ip_network(
                        (int(net.network_address) + i * 2 ** (32 - cfg.pool_mask), cfg.pool_mask))
                    return [str(sub)]
                i -= count
            return []
        spec = node.get("spec") or {}
        return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))

    def allocate_ip(self, uid: str, node: dict) -> str | None:
        """A pod IP from Cilium's own allocator. With ``ipam: kubernetes`` it covers the
        node's podCIDR without knowing flannel's leases, so an old flannel pod's address
        can be handed out again (defect 5)."""
        cidrs = self.node_pod_cidrs(node)
        return self.ipam.allocate("cilium/" + node["metadata"]["name"], cidrs[0] if cidrs else None, uid)

    def release_ip(self, uid: str) -> None:
        self.ipam.release(uid)

    # ------------------------------------------------------------------ pod fates
    def _problem(self, pod: dict, nm: Any, cfg: CiliumConfig, container: str, *,
                 agent: bool) -> str | None:
        """Why this agent/operator cannot become Ready now (None: it can)."""
        if self.rt.faults.cilium_image_pull_fails:
            return "image pull: " + _pull_message(pod)
        if agent:
            k = kernel_tuple(nm.kernel)
            if k < MIN_KERNEL:
                return (f"kernel version: NOT OK: minimal supported kernel version is >= "
                        f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]}; kernel version that is running is: {nm.kernel}")
        host = container_env(pod, container, "KUBERNETES_SERVICE_HOST", self._configmap)
        port = container_env(pod, container, "KUBERNETES_SERVICE_PORT", self._configmap)
        ok, addr = api_reachable(host, port, node=nm, servers=self._servers())
        if not ok:
            return f"unable to reach the API server at {addr}: dial tcp {addr}: connect: connection refused"
        if agent:
            if not cfg.present:
                return f"configmap {NAMESPACE}/{CONFIG_MAP} not found"
            if cfg.tunnel and cfg.tunnel_protocol in ("vxlan", "geneve"):
                for i in nm.interfaces.values():
                    if i.name.startswith("cilium_") or i.kind != "vxlan":
                        continue
                    if int(i.info.get("vxlan_port", FLANNEL_VXLAN_PORT)) == cfg.tunnel_port:
                        return (f"failed to create {cfg.tunnel_protocol} device: address already in use "
                                f"(port {cfg.tunnel_port} is used by {i.name})")
        return None

    def decide(self, pod: dict, node: dict) -> PodFate | None:
        """The fate of a Cilium pod on ``node`` (k3s runs there; see module doc)."""
        app = pod_app(pod)
        name = node["metadata"]["name"]
        nm = self.rt.nodes.get(name)
        md = pod["metadata"]
        key = (md.get("namespace") or "", md["name"])
        ip = node_internal_ip(node)
        cfg = self.config()
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        if app in ("hubble-relay", "hubble-ui") or not host_network or nm is None:
            net = self.network
            fate = net.generic_fate(pod, node) if net is not None else None
            if fate is None or fate.phase != "Running":
                return fate
            if self.rt.faults.cilium_image_pull_fails and not has_sandbox(pod):
                return PodFate("Pending", False, "ImagePullBackOff", _pull_message(pod), cni=None,
                               ip=None, delay=IMAGE_PULL_SECONDS)
            if not any(self.agent_ready(n) for n in self._agents):
                fate.ready = False
            return fate
        if self.rt.faults.cilium_image_pull_fails:
            self._crash.pop(key, None)
            return PodFate("Pending", False, "ImagePullBackOff", _pull_message(pod), cni="host",
                           ip=ip, delay=IMAGE_PULL_SECONDS)
        if app == "cilium-envoy":
            ok = self.agent_ready(name)
            return PodFate("Running", ok, cni="host", ip=ip,
                           delay=ENVOY_READY_SECONDS if ok else IMAGE_PULL_SECONDS)
        agent = app == "cilium"
        container = "cilium-agent" if agent else "cilium-operator"
        if agent and is_ready(pod):
            boot = self._ready_boot.get(key)
            if boot is None or boot == nm.boot_count:
                # A Ready agent holds its devices and its API connection: it stays Ready.
                return PodFate("Running", True, cni="host", ip=ip)
            # The node rebooted under it: the container restarts and starts over (the
            # stale boot stays recorded, so agent_ready() is False until it is Ready again).
            return PodFate("Running", False, cni="host", ip=ip)
        if not agent and is_ready(pod):
            return PodFate("Running", True, cni="host", ip=ip)
        problem = self._problem(pod, nm, cfg, container, agent=agent)
        if problem is None and agent and not self.crds_registered:
            self._crash.pop(key, None)
            # The agent blocks "Waiting until all Cilium CRDs are available".
            return PodFate("Running", False, cni="host", ip=ip, delay=IMAGE_PULL_SECONDS)
        if problem is None:
            self._crash.pop(key, None)
            return PodFate("Running", True, cni="host", ip=ip,
                           delay=AGENT_READY_SECONDS if agent else OPERATOR_READY_SECONDS)
        entry = self._crash.get(key)
        if entry is None:
            entry = self._crash[key] = [0, "crash", self.rt.clock.cluster_now(), name]
            delay = IMAGE_PULL_SECONDS
        else:
            entry[3] = name
            delay = 0.0
        if entry[1] == "running":
            # Between two crashes the container runs for a moment (not Ready).
            return PodFate("Running", False, cni="host", ip=ip, delay=delay)
        return PodFate("Running", False, "CrashLoopBackOff", problem, cni="host", ip=ip, delay=delay)

    # ------------------------------------------------------------------ events
    def node_event(self, nm: Any, event: str, info: dict) -> None:
        """Called by the network model on each node model event."""
        if self.ctrl is None:
            return
        self.ctrl.enqueue(("node", nm.name))
        if nm.role == "server" and event in ("k3s-started", "k3s-stopped", "rebooted"):
            # Every agent and the operator talk to the servers: re-check them all.
            self.ctrl.enqueue(("all",))

    def cni_changed(self, node: str, cni: str | None) -> None:
        """Called by the network model when a node's working CNI changes."""
        if self.ctrl is not None:
            self.ctrl.enqueue(("node", node))

    def _index_pod(self, etype: str, pod: dict, old: dict | None) -> None:
        md = pod.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        node = (pod.get("spec") or {}).get("nodeName") or ""
        app = pod_app(pod)
        if _labels(pod).get("k8s-app") == "kube-dns":
            if etype == "DELETED":
                self._dns.discard(key)
            else:
                self._dns.add(key)
        if app is None:
            return
        if etype == "DELETED":
            self._apps.pop(key, None)
            self._crash.pop(key, None)
            self._ready_boot.pop(key, None)
            if app == "cilium" and node and self._agents.get(node) == key:
                del self._agents[node]
                # A surge/rolling update may already have the next agent on this node.
                for other in self.cache.pods_on(node):
                    okey = (other["metadata"].get("namespace") or "", other["metadata"]["name"])
                    if okey != key and pod_app(other) == "cilium":
                        self._agents[node] = okey
            return
        self._apps[key] = (app, node)
        if app == "cilium" and node:
            cur = self._agents.get(node)
            if cur is None or cur == key or self.cache.get(("", "pods"), *cur) is None:
                self._agents[node] = key
            elif (self.cache.get(("", "pods"), *cur) or {}).get("metadata", {}).get("deletionTimestamp"):
                self._agents[node] = key

    def _on_change(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        # Synchronous store callback: index and queue only, never write here.
        k = rtype.key
        if k == ("", "pods"):
            self._on_pod(etype, obj, old)
        elif k == ("", "configmaps"):
            md = obj.get("metadata") or {}
            if md.get("name") == CONFIG_MAP and md.get("namespace") == NAMESPACE:
                self.ctrl.enqueue(("all",))
        elif k == ("apiextensions.k8s.io", "customresourcedefinitions"):
            if (obj.get("spec") or {}).get("group") == "cilium.io":
                registered = self._rtype("cilium.io", "ciliumnodes") is not None
                if registered != self.crds_registered:
                    self.crds_registered = registered
                    self.ctrl.enqueue(("all",))

    def _on_pod(self, etype: str, pod: dict, old: dict | None) -> None:
        self._index_pod(etype, pod, old)
        md = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName") or ""
        app = pod_app(pod)
        if app is not None:
            was = is_ready(old) if old is not None else False
            now = is_ready(pod) if etype != "DELETED" else False
            if app == "cilium" and now and not was:
                nm = self.rt.nodes.get(node)
                self._ready_boot[(md.get("namespace") or "", md["name"])] = nm.boot_count if nm else 0
            newly_bound = old is not None and not (old.get("spec") or {}).get("nodeName")
            if was != now or etype == "DELETED" or newly_bound:
                if app == "cilium" and node:
                    self.ctrl.enqueue(("node", node))
                    self.ctrl.enqueue(("hubble",))
                elif app == "operator" and now and not was:
                    self.ctrl.enqueue(("crds",))
            if (pod.get("spec") or {}).get("hostNetwork"):
                return
            # hubble-relay and hubble-ui are ordinary pods too: Cilium manages their endpoints.
        # An ordinary pod: a CiliumEndpoint follows its Cilium sandbox.
        ann = md.get("annotations") or {}
        if etype != "DELETED" and ann.get(SANDBOX_CNI_ANNOTATION) == "cilium" and node:
            old_ann = ((old or {}).get("metadata") or {}).get("annotations") or {}
            old_ip = ((old or {}).get("status") or {}).get("podIP")
            if old is None or old_ann.get(SANDBOX_CNI_ANNOTATION) != "cilium" or \
                    old_ip != (pod.get("status") or {}).get("podIP"):
                self.ctrl.enqueue(("cep", md.get("namespace") or "", md["name"]))
        elif etype == "DELETED" and md.get("uid"):
            self.ipam.release(md["uid"])

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, key: tuple) -> None:
        kind = key[0]
        if kind == "all":
            for node in self.rt.nodes:
                self._reconcile_node(node)
            self._reevaluate_hubble()
        elif kind == "node":
            self._reconcile_node(key[1])
        elif kind == "hubble":
            self._reevaluate_hubble()
        elif kind == "crds":
            self._register_crds()
        elif kind == "cep":
            self._sync_cep(key[1], key[2])

    def _reconcile_node(self, node: str) -> None:
        self.kubelet.reevaluate(node)
        net = self.network
        if net is not None:
            net.invalidate(node)
        nm = self.rt.nodes.get(node)
        if nm is None or not self.agent_ready(node):
            return
        cfg = self.config()
        self._ensure_node_artifacts(nm, cfg)
        n = self.cache.get(("", "nodes"), "", node)
        if n is not None:
            self._publish_cilium_node(n, nm, cfg)
        for pod in self.cache.pods_on(node):
            if ((pod.get("metadata") or {}).get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION) == "cilium":
                self._sync_cep(pod["metadata"].get("namespace") or "", pod["metadata"]["name"])

    def _reevaluate_hubble(self) -> None:
        nodes = {node for app, node in self._apps.values() if app in ("hubble-relay", "hubble-ui") and node}
        for node in nodes:
            self.kubelet.reevaluate(node)

    def _ensure_node_artifacts(self, nm: Any, cfg: CiliumConfig) -> None:
        """What a Ready agent creates on its node (idempotent: no event when present)."""
        conf = json.dumps({"cniVersion": "0.3.1", "name": "cilium", "plugins": [
            {"type": "cilium-cni", "enable-debug": False,
             "log-file": "/var/run/cilium/cilium-cni.log"}]}, indent=2) + "\n"
        try:
            current = nm.read_text(CILIUM_CONFLIST) if nm.exists(CILIUM_CONFLIST) else None
        except OSError:
            current = None
        if current != conf:
            nm.write(CILIUM_CONFLIST, conf, 0o644)
        nm.add_interface("cilium_net", "veth", 1500, peer="cilium_host")
        nm.add_interface("cilium_host", "veth", 1500, peer="cilium_net")
        if cfg.tunnel and cfg.tunnel_protocol == "vxlan":
            nm.add_interface("cilium_vxlan", "vxlan", 1500, info={"vxlan_port": cfg.tunnel_port})
        elif cfg.tunnel and cfg.tunnel_protocol == "geneve":
            nm.add_interface("cilium_geneve", "vxlan", 1500, info={"vxlan_port": cfg.tunnel_port})
        for table, chains in CILIUM_CHAINS.items():
            for chain, parent in chains:
                rules = [f'-A {parent} -m comment --comment "cilium-feeder: {chain}" -j {chain}']
                if chain == "CILIUM_FORWARD":
                    rules.append('-A CILIUM_FORWARD -o cilium_host -m comment --comment '
                                 '"cilium: any->cluster on cilium_host forward accept" -j ACCEPT')
                nm.add_chain(table, chain, rules)

    def _publish_cilium_node(self, node: dict, nm: Any, cfg: CiliumConfig) -> None:
        t = self._type("cilium.io", "ciliumnodes")
        if t is None:
            return
        name = node["metadata"]["name"]
        cidrs = self.node_pod_cidrs(node, cfg)
        router = self.ipam.allocate("cilium/" + name, cidrs[0] if cidrs else None, f"router/{name}")
        health = self.ipam.allocate("cilium/" + name, cidrs[0] if cidrs else None, f"health/{name}")
        addresses = [{"type": "InternalIP", "ip": node_internal_ip(node) or nm.spec.ip}]
        if router:
            addresses.append({"type": "CiliumInternalIP", "ip": router})
        spec = {"addresses": addresses, "alibaba-cloud": {}, "azure": {}, "encryption": {}, "eni": {},
                "health": {"ipv4": health} if health else {}, "ingress": {},
                "ipam": {"podCIDRs": cidrs, "pools": {}},
                "bootid": hashlib.sha256(f"{name}/{nm.boot_count}".encode()).hexdigest()[:32]}
        status = {"alibaba-cloud": {}, "azure": {}, "eni": {},
                  "ipam": {"operator-status": {}}}
        existing = self.store.peek(t, None, name)
        if existing is None:
            obj = {"apiVersion": f"cilium.io/{t.version}", "kind": "CiliumNode",
                   "metadata": {"name": name, "labels": dict(_labels(node)),
                                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                     "uid": node["metadata"].get("uid", "")}]},
                   "spec": spec, "status": status}
            self.store.create(obj, rtype=t)
            return
        if existing.get("spec") != spec:
            def put(o: dict) -> None:
                o["spec"] = spec
            self.store.mutate(t, None, name, put)

    def _sync_cep(self, ns: str, name: str) -> None:
        t = self._type("cilium.io", "ciliumendpoints")
        if t is None:
            return
        pod = self.cache.get(("", "pods"), ns, name)
        if pod is None:
            return   # the store's garbage collector removes the CEP with its owner pod
        md = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName") or ""
        st = pod.get("status") or {}
        if (md.get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION) != "cilium" or not st.get("podIP"):
            return
        if not self.agent_ready(node):
            return   # only a Ready agent publishes endpoints
        n = self.cache.get(("", "nodes"), "", node)
        labels = {k: v for k, v in _labels(pod).items() if k != "pod-template-hash"}
        ident = identity_for(labels, ns)
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        ep_id = int(hashlib.sha256(f"{md.get('uid')}".encode()).hexdigest()[:4], 16) % 4000 + 1
        status = {
            "id": ep_id,
            "identity": {"id": ident, "labels": sorted(
                [f"k8s:{k}={v}" for k, v in labels.items()]
                + [f"k8s:io.kubernetes.pod.namespace={ns}",
                   f"k8s:io.cilium.k8s.policy.serviceaccount={sa}",
                   "k8s:io.cilium.k8s.policy.cluster=default"])},
            "networking": {"addressing": [{"ipv4": st["podIP"]}],
                           "node": node_internal_ip(n) if n else ""},
            "state": "ready",
            "encryption": {},
            "external-identifiers": {"k8s-namespace": ns, "k8s-pod-name": name,
                                     "pod-name": f"{ns}/{name}", "cni-attachment-id": md.get("uid", "")},
        }
        existing = self.store.peek(t, ns, name)
        if existing is not None:
            refs = (existing.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == md.get("uid") for r in refs):
                if existing.get("status") != status:
                    def put(o: dict) -> None:
                        o["status"] = status
                    self.store.mutate(t, ns, name, put)
                return
            self.store.delete(t, ns, name)   # a CEP of an earlier pod of the same name
        obj = {"apiVersion": f"cilium.io/{t.version}", "kind": "CiliumEndpoint",
               "metadata": {"name": name, "namespace": ns,
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                                                 "uid": md.get("uid", ""), "blockOwnerDeletion": True}]},
               "status": status}
        self.store.create(obj, rtype=t)

    def _register_crds(self) -> None:
        """The operator registers the cilium.io CRDs once it is Ready."""
        if not self.operator_ready():
            return
        crd_t = self._rtype("apiextensions.k8s.io", "customresourcedefinitions")
        if crd_t is None:
            return
        for spec in CRDS:
            name = f"{spec.plural}.cilium.io"
            if self.store.peek(crd_t, None, name) is None:
                self.store.create(crd_object(spec), rtype=crd_t)
        self.crds_registered = self._rtype("cilium.io", "ciliumnodes") is not None
        self.ctrl.enqueue(("all",))

    # ------------------------------------------------------------------ time
    async def _tick(self) -> None:
        """Crash-loop back-off and the operator's unmanaged-pod watcher."""
        while True:
            await self.rt.clock.sleep(TICK_SECONDS)
            try:
                self._tick_once()
            except Exception:   # never let the ticker die
                log.exception("cilium ticker failed")

    def _tick_once(self) -> None:
        now = self.rt.clock.cluster_now()
        for key, entry in list(self._crash.items()):
            count, state, since, node = entry
            if state == "crash" and now - since >= min(BACKOFF_MAX, BACKOFF_BASE * 2 ** count):
                entry[1], entry[2] = "running", now
                self.kubelet.enqueue(key)
            elif state == "running" and now - since >= CRASH_RUN_SECONDS:
                entry[0], entry[1], entry[2] = count + 1, "crash", now
                self.kubelet.enqueue(key)
        fault = bool(self.rt.faults.cilium_image_pull_fails)
        if fault != self._pull_fault:
            # Fault switches have no events: notice a flip here and re-decide every pod.
            self._pull_fault = fault
            self.ctrl.enqueue(("all",))
        if self.crds_registered is False and self.operator_ready():
            self.ctrl.enqueue(("crds",))
        self._unmanaged_watcher(now)

    def _unmanaged_watcher(self, now: float) -> None:
        if not self._dns or not self.operator_ready():
            return
        cfg = self.config()
        if cfg.unmanaged_watcher_seconds <= 0:
            return
        if now < self._watcher_due:
            return
        self._watcher_due = now + cfg.unmanaged_watcher_seconds
        cep_t = self._type("cilium.io", "ciliumendpoints")
        pods_t = self._type("", "pods")
        for key in sorted(self._dns):
            pod = self.cache.get(("", "pods"), *key)
            if pod is None or (pod.get("spec") or {}).get("hostNetwork"):
                continue
            md = pod["metadata"]
            if md.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
                continue
            node = (pod.get("spec") or {}).get("nodeName") or ""
            if not self.agent_ready(node):
                continue
            if cep_t is not None and self.store.peek(cep_t, key[0], key[1]) is not None:
                continue
            log.info("unmanaged-pod watcher: restarting %s/%s", *key)
            try:
                self.store.delete(pods_t, key[0], key[1])
                self.watcher_restarts.append(key)
            except Exception:
                log.debug("restart of %s/%s failed", *key, exc_info=True)
            return   # one pod per cycle


def _pull_message(pod: dict) -> str:
    images = [c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or ()]
    image = images[0] if images else "quay.io/cilium/cilium"
    return f'Back-off pulling image "{image}"'


__all__ = ["AgentStatus", "CRDS", "CRDSpec", "CiliumConfig", "CiliumModel", "api_reachable",
           "crd_object", "kernel_tuple", "parse_duration", "pod_app"]
