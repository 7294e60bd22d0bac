"""The values check: the Cilium helm values against the params and the known k3s pitfalls.

:func:`check_values` returns findings (errors, warnings, notes); :func:`validate`
refuses params whose values contradict them. The check reads only what a params file
says about the cluster (the servers' addresses and InternalIPs, the k3s options), so
it gives the same answer for a real cluster and for its twin.

Example:
    >>> from runbook import params
    >>> p = params.from_dict({"target": {"name": "c"}, "nodes": [
    ...     {"name": "s1", "role": "server", "address": "10.0.0.2"}]})
    >>> [str(f) for f in check_values(p, {"kubeProxyReplacement": "strict"})][0]  # doctest: +ELLIPSIS
    "ERROR kubeProxyReplacement: 'strict' is not accepted by the 1.19 chart ..."
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ValuesMismatch
from ..safety import is_loopback
from .schema import Params, kpr_enabled

__all__ = ["Finding", "check_values", "validate", "FLANNEL_VXLAN_PORT",
           "K3S_LOCAL_APISERVER_PORT"]

#: flannel's VXLAN UDP port, which is also Cilium's default when ``tunnelPort`` is unset.
FLANNEL_VXLAN_PORT = 8472
#: 127.0.0.1:6444 answers on every k3s node: on a server it is k3s's own kube-apiserver
#: (bound to loopback, behind the supervisor on 6443); on an agent, k3s's client load
#: balancer towards the servers.
K3S_LOCAL_APISERVER_PORT = 6444


@dataclass
class Finding:
    """One observation about the values against the params.

    Attributes:
        severity: ``error`` (refuse to run), ``warning`` (run, but read it) or ``info``.
        field: the values key (dotted) or params field concerned.
        message: what is wrong and why it matters.
        hint: how to fix it.
    """

    severity: Literal["error", "warning", "info"]
    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.field}: {self.message}" + (
            f" (fix: {self.hint})" if self.hint else "")


def _get(values: dict[str, Any], dotted: str, default: Any = None) -> Any:
    cur: Any = values
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def check_values(params: Params, values: dict[str, Any]) -> list[Finding]:
    """Compare the Cilium values with the params and the known k3s/Cilium pitfalls.

    Args:
        params: the loaded params.
        values: the helm values (``params.values()``).

    Returns:
        Findings, errors first. Errors are contradictions that would break the cluster;
        :func:`validate` refuses them.

    Example:
        >>> [str(f) for f in check_values(p, {"kubeProxyReplacement": "strict"})]  # doctest: +SKIP
        ['ERROR kubeProxyReplacement: "strict" is gone since Cilium 1.14 ...']
    """
    out: list[Finding] = []
    add = out.append
    kpr_raw = values.get("kubeProxyReplacement")
    kpr = kpr_enabled(values)
    if kpr_raw is not None and not isinstance(kpr_raw, bool) and str(kpr_raw).lower() not in (
            "true", "false"):
        add(Finding("error", "kubeProxyReplacement",
                    f"{kpr_raw!r} is not accepted by the 1.19 chart (only true or false; "
                    "'strict'/'partial' were removed)", "use kubeProxyReplacement: true"))
    dkp = params.k3s.disable_kube_proxy
    if kpr and dkp is False:
        add(Finding("error", "k3s.disable_kube_proxy",
                    "kube-proxy replacement is on but the params keep k3s' embedded kube-proxy "
                    "(disable_kube_proxy: false): both would program services (defect 2)",
                    "set k3s.disable_kube_proxy: auto (or true)"))
    if not kpr and dkp is True:
        add(Finding("error", "k3s.disable_kube_proxy",
                    "disable-kube-proxy would be set but kube-proxy replacement is off: "
                    "nothing would implement Services",
                    "set kubeProxyReplacement: true, or k3s.disable_kube_proxy: auto"))
    host = values.get("k8sServiceHost")
    port = values.get("k8sServicePort")
    if values.get("k8sServiceHostRef") and host:
        add(Finding("error", "k8sServiceHostRef",
                    "k8sServiceHostRef cannot be set together with k8sServiceHost",
                    "keep only k8sServiceHost"))
    if kpr and not host:
        add(Finding("error", "k8sServiceHost",
                    "kube-proxy replacement needs k8sServiceHost: without kube-proxy the "
                    "agents cannot reach the API through the kubernetes Service",
                    "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
    if host:
        host_s = str(host).strip()
        # The agents dial k8sServiceHost from the nodes, so it is compared with the servers'
        # InternalIPs (node_ip, else the SSH address). The same rules hold for every target:
        # a twin's params carry its nodes' InternalIPs like a real cluster's do.
        server_ips = list(dict.fromkeys(n.node_ip or n.address for n in params.servers))
        servers = list(dict.fromkeys([*server_ips, *(n.address for n in params.servers)]))
        # a server reached by host name, without node_ip, cannot be compared with an IP
        unverifiable = [n.name for n in params.servers if not n.node_ip and not _is_ip(n.address)]
        try:
            port_i = int(port) if port is not None else None
        except (TypeError, ValueError):
            port_i = None
            add(Finding("error", "k8sServicePort", f"{port!r} is not a port number",
                        "k8sServicePort: 6444"))
        if host_s == "auto":
            add(Finding("error", "k8sServiceHost", "'auto' works only on kubeadm clusters",
                        "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
        elif host_s in ("127.0.0.1", "localhost"):
            if port_i != K3S_LOCAL_APISERVER_PORT:
                add(Finding("error", "k8sServicePort",
                            f"127.0.0.1:{port} is not served on k3s agents; 127.0.0.1:6444 is "
                            "(a server's own kube-apiserver, an agent's load balancer "
                            "towards the servers)",
                            "k8sServicePort: 6444"))
        elif host_s in servers or is_loopback(host_s):
            add(Finding("warning", "k8sServiceHost",
                        f"{host_s} is a single server: Cilium loses the API when that "
                        "server is down (defect 13)",
                        "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
        elif unverifiable:
            add(Finding("warning", "k8sServiceHost",
                        f"cannot tell whether {host_s} is a server: "
                        f"{', '.join(unverifiable)} is addressed by name",
                        "set nodes[].node_ip, or use k8sServiceHost: 127.0.0.1 with port 6444"))
        else:
            add(Finding("error", "k8sServiceHost",
                        f"{host_s} is neither a server node's InternalIP "
                        f"({', '.join(server_ips)}) nor 127.0.0.1",
                        "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
    if "tunnel" in values:
        add(Finding("error", "tunnel", "the old 'tunnel' key is rejected by the 1.19 chart",
                    "use routingMode: tunnel and tunnelProtocol: vxlan"))
    routing = str(values.get("routingMode") or "tunnel")
    proto = str(values.get("tunnelProtocol") or "vxlan")
    tport = values.get("tunnelPort") or FLANNEL_VXLAN_PORT  # 0/absent = protocol default
    if routing == "tunnel" and proto == "vxlan" and str(tport) == str(FLANNEL_VXLAN_PORT):
        flannel_off = params.k3s.flannel_backend.strip().lower() == "none"
        add(Finding("warning" if flannel_off else "error", "tunnelPort",
                    f"Cilium's VXLAN would use UDP {FLANNEL_VXLAN_PORT}, flannel's port: it "
                    "collides while flannel.1 exists (defect 4)"
                    + ("; tolerated because the runbook deletes flannel.1 before the install"
                       if flannel_off else "; flannel stays on (k3s.flannel_backend is not none)"),
                    "tunnelPort: 8473"))
    hubble_on = _get(values, "hubble.enabled", True) is not False
    relay_on = _get(values, "hubble.relay.enabled", False) is True
    ui_on = _get(values, "hubble.ui.enabled", False) is True
    if relay_on and not hubble_on:
        add(Finding("error", "hubble.enabled", "hubble.relay needs hubble.enabled",
                    "hubble.enabled: true"))
    if ui_on and not relay_on:
        add(Finding("error", "hubble.relay.enabled", "hubble.ui needs hubble.relay",
                    "hubble.relay.enabled: true"))
    name = _get(values, "cluster.name")
    if name is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", str(name)):
        add(Finding("error", "cluster.name", f"{name!r} must be DNS-like, 1-32 characters",
                    "cluster.name: default"))
    if str(_get(values, "ipam.mode", "cluster-pool")) == "kubernetes":
        add(Finding("info", "ipam.mode",
                    "ipam kubernetes reuses flannel's podCIDRs: old pods keep addresses Cilium "
                    "may hand out again until they restart (defect 5)",
                    "the install phase restarts every non-hostNetwork pod promptly"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])


def validate(params: Params, values: dict[str, Any] | None = None) -> Params:
    """Refuse params whose values contradict them; returns ``params`` for chaining.

    Raises:
        ValuesFileError: the values file is missing or malformed (a ParamsError).
        ValuesMismatch: :func:`check_values` found an error; the message names the values
            file and the field, and lists every error on one line.
        runbook.errors.LoopbackViolation: a twin target points off loopback.
    """
    params.check_loopback()
    if values is None:
        values = params.values()
    errors = [f for f in check_values(params, values) if f.severity == "error"]
    if errors:
        first = errors[0]
        text = "; ".join(f"{f.field}: {f.message}" for f in errors)
        text = text.removeprefix(f"{first.field}: ")
        # A contradiction has two sides: the error names the values file (``file``) and
        # the text names the params file, so the operator knows both places to look.
        if params.source:
            text += f" (params file: {params.source})"
        raise ValuesMismatch(text, file=str(params.values_path), field=first.field,
                             hint=first.hint or None)
    return params
