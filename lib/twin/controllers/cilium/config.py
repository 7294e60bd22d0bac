"""What a Cilium agent or operator reads, and the rules it applies to it (pure).

Configuration is read as the agent reads it:

- from ``kube-system/cilium-config``: ``kube-proxy-replacement``, ``routing-mode``,
  ``tunnel-protocol``, ``tunnel-port`` (8472 for VXLAN when absent: flannel's port),
  ``ipam`` with ``cluster-pool-ipv4-cidr``/``cluster-pool-ipv4-mask-size``,
  ``enable-hubble``, ``unmanaged-pod-watcher-interval``, and the CNI and datapath keys of
  Cilium's migration mode: ``write-cni-conf-when-ready`` (empty: the agent writes no CNI
  config, daemon/cmd/cni), ``cni-exclusive``, ``cni-chaining-mode``, ``custom-cni-conf``,
  ``cni-uninstall``, ``enable-policy``, ``enable-host-legacy-routing``
  (:class:`CiliumConfig`), overridden per node by CiliumNodeConfigs
  (:mod:`.node_config`);
- the API server address from ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` of
  the pod's ``cilium-agent`` (or ``cilium-operator``) container (a ``value`` or a
  ``configMapKeyRef``, :func:`container_env`). Without them the in-cluster Service
  ``10.43.0.1:443`` is used, which only works while k3s's kube-proxy runs on the node
  (:func:`api_reachable`).

Also which Cilium component a pod is (:func:`pod_app`) and the timings of the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..scheduler import _condition

NAMESPACE = "kube-system"
CONFIG_MAP = "cilium-config"
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
    bpf_lb_sock: bool = False
    write_cni_conf: str = ""
    cni_exclusive: bool = False
    cni_chaining_mode: str = "none"
    custom_cni_conf: bool = False
    cni_uninstall: bool = False
    policy_mode: str = "default"
    host_legacy_routing: bool = False
    bpf_masquerade: bool = False

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
                   unmanaged_watcher_seconds=parse_duration(d.get("unmanaged-pod-watcher-interval", "15")),
                   bpf_lb_sock=_true(d.get("bpf-lb-sock")),
                   # The agent's own defaults (daemon/cmd/cni cell.go, pkg/option) when absent.
                   write_cni_conf=d.get("write-cni-conf-when-ready", "").strip(),
                   cni_exclusive=_true(d.get("cni-exclusive")),
                   cni_chaining_mode=d.get("cni-chaining-mode", "none").strip() or "none",
                   custom_cni_conf=_true(d.get("custom-cni-conf")),
                   cni_uninstall=_true(d.get("cni-uninstall")),
                   policy_mode=d.get("enable-policy", "default").strip().lower() or "default",
                   host_legacy_routing=_true(d.get("enable-host-legacy-routing")),
                   bpf_masquerade=_true(d.get("enable-bpf-masquerade")))

    @property
    def tunnel(self) -> bool:
        return self.routing_mode == "tunnel"

    @property
    def socket_lb(self) -> bool:
        """The agent attaches its socket load balancer to the cgroup root: with
        kube-proxy replacement (which turns it on) or ``bpf-lb-sock: "true"``."""
        return self.kpr or self.bpf_lb_sock


def _true(value: str | None) -> bool:
    return str(value or "").strip().lower() == "true"


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
        # (the chains are read only without a running kube-proxy: reading them makes a
        # pending kube-proxy sync run, O(cluster endpoints))
        translated = bool((node.running or {}).get("kube_proxy")) or any(
            c.startswith("KUBE-SVC-") for c in node.iptables.chains("nat"))
        return bool(live_servers) and translated, addr
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


def labels_of(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def pod_app(pod: dict) -> str | None:
    """Which Cilium component a pod is: cilium, cilium-envoy, operator, hubble-relay,
    hubble-ui, or None."""
    lab = labels_of(pod)
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
