"""What k3s reads when its unit starts: ``config.yaml``, ``config.yaml.d/*.yaml`` and the
options a server or an agent accepts.

A key ending in ``+`` appends to the list of an earlier file. Server-only options count
only on a server; an agent skips them ("Unknown flag --KEY found in config.yaml,
skipping") and takes the network settings of its server. Functions here are pure reads of
the node's files; :class:`twin.node.k3s_service.K3sService` decides what runs.

Example:
    >>> cfg, error = read_config(node.files)  # doctest: +SKIP
    >>> unknown_keys("agent", {"flannel-backend": "none", "node-ip": "10.0.0.3"})
    ['flannel-backend']
"""
from __future__ import annotations

import copy
import functools
from typing import Any

import yaml

from .files import NodeFiles

CONFIG = "/etc/rancher/k3s/config.yaml"
CONFIG_DIR = "/etc/rancher/k3s/config.yaml.d"
FLANNEL_BACKENDS = ("vxlan", "host-gw", "wireguard-native", "none")
NETWORK_KEYS = ("flannel_backend", "flannel", "network_policy", "kube_proxy", "cluster_cidr",
                "service_cidr", "disable")   # the settings an agent takes from its server

# Flags `k3s agent` accepts in config.yaml (pkg/cli/cmds/agent.go). Anything else in an
# agent's config is skipped with "Unknown flag ... found in config.yaml, skipping".
AGENT_KEYS = frozenset("""
config debug v vmodule log alsologtostderr token token-file server data-dir node-name
with-node-id node-label node-taint image-credential-provider-bin-dir
image-credential-provider-config selinux lb-server-port protect-kernel-defaults snapshotter
private-registry system-default-registry container-runtime-endpoint pause-image
default-runtime disable-default-registry-endpoint nonroot-devices node-ip node-external-ip
node-internal-dns node-external-dns resolv-conf flannel-iface flannel-conf flannel-cni-conf
kubelet-arg kube-proxy-arg rootless prefer-bundled-bin docker vpn-auth vpn-auth-file
airgap-extra-registry disable-apiserver-lb enable-pprof
""".split())
# Server-only options; the network ones are what the Phase 22 procedure writes.
SERVER_ONLY_KEYS = frozenset("""
flannel-backend flannel-ipv6-masq flannel-external-ip egress-selector-mode
servicelb-namespace disable-network-policy disable-kube-proxy disable-cloud-controller
disable-helm-controller disable-scheduler disable cluster-cidr service-cidr
service-node-port-range cluster-dns cluster-domain cluster-init cluster-reset
cluster-reset-restore-path tls-san tls-san-security write-kubeconfig write-kubeconfig-mode
write-kubeconfig-group bind-address advertise-address advertise-port https-listen-port
supervisor-port apiserver-port apiserver-bind-address kube-apiserver-arg
kube-controller-manager-arg kube-scheduler-arg kube-cloud-controller-manager-arg
datastore-endpoint datastore-cafile datastore-certfile datastore-keyfile agent-token
agent-token-file secrets-encryption embedded-registry default-local-storage-path
helm-job-image kine-tls supervisor-metrics
""".split())
SERVER_KEYS = AGENT_KEYS | SERVER_ONLY_KEYS


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "t", "yes", "y", "on")
    return bool(v)


@functools.lru_cache(maxsize=256)
def _parse_yaml_cached(text: str) -> Any:
    return yaml.safe_load(text)


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a config file, cached by text (k3s reads its config several
    times per start, and the agents' configs are nearly the same); a deep copy, so
    callers may change it. A parse error raises each time, as it is not cached."""
    return copy.deepcopy(_parse_yaml_cached(text))


def read_config(files: NodeFiles) -> tuple[dict[str, Any], str | None]:
    """The merged k3s config (config.yaml then config.yaml.d/*.yaml, ``key+`` appends),
    and the parse error that stops k3s from starting (None when it parses)."""
    merged: dict[str, Any] = {}
    paths = [CONFIG]
    if files.is_dir(CONFIG_DIR):
        paths += [f"{CONFIG_DIR}/{n}" for n in files.listdir(CONFIG_DIR)
                   if n.endswith((".yaml", ".yml"))]
    for f in paths:
        if not files.exists(f):
            continue
        try:
            data = _parse_yaml(files.read_text(f)) or {}
        except yaml.YAMLError as e:
            return merged, f"failed to parse {f}: {str(e).splitlines()[0]}"
        if not isinstance(data, dict):
            return merged, f"failed to parse {f}: not a map of flags"
        for k, v in data.items():
            k = str(k)
            if k.endswith("+"):
                k = k[:-1]
                prev = merged.get(k, [])
                prev = prev if isinstance(prev, list) else [prev]
                merged[k] = prev + (v if isinstance(v, list) else [v])
            else:
                merged[k] = v
    return merged, None


def unknown_keys(role: str, cfg: dict[str, Any]) -> list[str]:
    """The keys of ``cfg`` that k3s (``server`` or ``agent``) skips as unknown flags."""
    allowed = SERVER_KEYS if role == "server" else AGENT_KEYS
    return [k for k in cfg if k not in allowed and not (role == "server" and k.startswith("etcd-"))]


def default_settings(cluster: dict) -> dict[str, Any]:
    """The network settings of a k3s server with an empty config."""
    return {"flannel_backend": "vxlan", "flannel": True, "network_policy": True,
            "kube_proxy": True, "disable": [],
            "cluster_cidr": cluster.get("cluster_cidr", "10.42.0.0/16"),
            "service_cidr": cluster.get("service_cidr", "10.43.0.0/16")}


def server_settings(cfg: dict[str, Any], cluster: dict, source: str) -> dict[str, Any]:
    """The network settings a server runs with, from its merged config."""
    backend = str(cfg.get("flannel-backend", "vxlan")).strip()
    disable = cfg.get("disable", [])
    disable = [disable] if isinstance(disable, str) else list(disable or [])
    return {
        "flannel_backend": backend,
        "flannel": backend != "none",
        "network_policy": not _bool(cfg.get("disable-network-policy", False)),
        "kube_proxy": not _bool(cfg.get("disable-kube-proxy", False)),
        "cluster_cidr": str(cfg.get("cluster-cidr", cluster.get("cluster_cidr", "10.42.0.0/16"))),
        "service_cidr": str(cfg.get("service-cidr", cluster.get("service_cidr", "10.43.0.0/16"))),
        "disable": [str(d) for d in disable],
        "source": source,
    }


def node_settings(net: dict[str, Any], cfg: dict[str, Any], node_ip: str, ignored: list[str],
                  error: str | None) -> dict[str, Any]:
    """``net`` completed with this node's own settings (``net`` is changed and returned).

    Which CNI folders containerd reads is not decided here: k3s writes containerd's
    config when it starts (:mod:`twin.node.containerd`) and the running settings take
    ``cni_conf_dir``/``cni_bin_dir`` from that file."""
    net.update(node_ip=str(cfg.get("node-ip", node_ip)), ignored_keys=ignored,
               config_error=error,
               write_kubeconfig_mode=str(cfg.get("write-kubeconfig-mode", "") or ""))
    return net


# The settings k3s's CriticalControlArgs hold (pkg/daemons/config/types.go), by their flag,
# as far as the twin's settings carry them: every server of a cluster must share them.
ETCD_DIR = "/var/lib/rancher/k3s/server/db/etcd"
CRITICAL = (("flannel-backend", "flannel_backend"), ("cluster-cidr", "cluster_cidr"),
            ("service-cidr", "service_cidr"), ("disable-network-policy", "network_policy"))
CRITICAL_DISABLES = ("servicelb", "coredns", "cloud-controller", "helm-controller")


def critical_mismatch(local: dict[str, Any], remote: dict[str, Any]) -> list[str]:
    """The critical flags on which a joining server's settings differ from the server it
    joins through (k3s ``compareConfig``: "critical configuration value mismatch").

    Example:
        >>> critical_mismatch({"flannel_backend": "none"}, {"flannel_backend": "vxlan"})
        ['flannel-backend']
    """
    out = [flag for flag, key in CRITICAL if local.get(key) != remote.get(key)]
    for d in CRITICAL_DISABLES:
        if (d in (local.get("disable") or ())) != (d in (remote.get("disable") or ())):
            out.append(f"disable={d}")
    return out


def embedded_etcd(cfg: dict[str, Any]) -> bool:
    """The server runs an embedded etcd member: it initialised the cluster
    (``cluster-init``) or joined another server (``server:``)."""
    return _bool(cfg.get("cluster-init", False)) or bool(cfg.get("server"))
