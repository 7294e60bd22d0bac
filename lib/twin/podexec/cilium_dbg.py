"""``cilium-dbg`` inside a Cilium agent container, answered from the twin's Cilium model.

The agent image ships ``cilium-dbg`` and, for older habits, ``cilium`` as the same
program. Served here: ``status [--verbose] [--brief]`` and ``service list``; any other
subcommand is refused with the program's own usage error. Outside a ``cilium-agent``
container (another image) the binary does not exist (:func:`twin.podexec.not_found`).

What ``status`` says comes from :class:`twin.controllers.cilium.status.AgentStatus`
and the agent's configuration (``kube-system/cilium-config``): the KubeProxyReplacement
line, routing (tunnel protocol), IPAM usage on the node, the Kubernetes connection,
controller health and the Cluster health line (what ``cilium-health status`` finds,
:mod:`twin.podexec.net`). ``post-uninstall-cleanup`` is routed to :mod:`twin.podexec.net`. ``service list`` prints the
load-balancer table the agent programs from Services and their endpoints: ClusterIP
always, NodePort and LoadBalancer frontends only with kube-proxy replacement.

Example:
    >>> is_agent_container({"metadata": {"labels": {"k8s-app": "cilium"}}}, "cilium-agent")
    True
"""
from __future__ import annotations

import re
from typing import Any

from . import not_found

AGENT_CONTAINER = "cilium-agent"
_USAGE = ("Error: unknown command \"{cmd}\" for \"cilium-dbg\"\n"
          "Run 'cilium-dbg --help' for usage.\n")


def is_agent_container(pod: dict, container: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return container == AGENT_CONTAINER and labels.get("k8s-app") == "cilium"


def _version(pod: dict) -> str:
    for c in (pod.get("spec") or {}).get("containers") or ():
        if c.get("name") == AGENT_CONTAINER:
            m = re.search(r":v?(\d+\.\d+\.\d+[\w.-]*)", (c.get("image") or "").split("@")[0])
            if m:
                return m.group(1)
    return "unknown"


def _model(rt: Any) -> Any:
    try:
        return rt.component("cilium")
    except (KeyError, AttributeError):
        return None


def _store_objects(rt: Any, group: str, plural: str, ns: str | None = None) -> list[dict]:
    t = rt.store.lookup(group, "v1", plural) if rt is not None and rt.store is not None else None
    if t is None:
        return []
    return [o for o in rt.store.iter_objects(t) if ns is None or o["metadata"].get("namespace") == ns]


def _node_ip(node: dict | None) -> str:
    for a in ((node or {}).get("status") or {}).get("addresses") or ():
        if a.get("type") == "InternalIP":
            return a.get("address", "")
    return ""


def _cluster_health(rt: Any, pod: dict, node_name: str) -> tuple[int, int]:
    """(reachable, total) nodes as this agent's health probes see them: the same answer as
    ``cilium-health status`` (:meth:`twin.controllers.network_view.NodeView.health`)."""
    from .net import view_for

    view = view_for(rt, pod)
    if view is None:
        nodes = _store_objects(rt, "", "nodes")
        return 0, len(nodes)
    nodes = view.health(node_name)
    ok = [n for n in nodes if not (n["host_icmp"] or n["host_http"] or n["endpoint_icmp"] or n["endpoint_http"])]
    return len(ok), len(nodes)


def status_text(rt: Any, pod: dict, verbose: bool) -> tuple[int, str]:
    """``cilium-dbg status`` for the agent pod ``pod``: (exit code, text)."""
    model = _model(rt)
    node_name = (pod.get("spec") or {}).get("nodeName") or ""
    if model is None:
        return 1, "Error: Unable to reach agent at unix:///var/run/cilium/cilium.sock\n"
    st = model.agent_status(node_name)
    cfg = model.agent_config(node_name)   # cilium-config with the node's CiliumNodeConfig keys
    node = next((n for n in _store_objects(rt, "", "nodes") if n["metadata"]["name"] == node_name), None)
    ip = _node_ip(node)
    ver = _version(pod)
    k8s_ok = st.ready or (st.reason or "").find("API") < 0
    from ..apiserver.discovery import K8S_VERSION
    kube = (f"Ok   {K8S_VERSION['major']}.{K8S_VERSION['minor']} ({K8S_VERSION['gitVersion']}) "
            f"[{K8S_VERSION['platform']}]") if k8s_ok else \
        f"Disabled   (cannot reach the API server at {st.api})"
    kpr = (f"True   [eth0   {ip} (Direct Routing)]" if cfg.kpr else "False")
    routing = (f"Network: Tunnel [{cfg.tunnel_protocol}]   Host: Legacy" if cfg.tunnel
               else "Network: Native   Host: Legacy")
    cidrs = model.node_pod_cidrs(node, cfg) if node is not None else []
    used = sum(1 for p in _store_objects(rt, "", "pods")
               if (p.get("spec") or {}).get("nodeName") == node_name
               and not (p.get("spec") or {}).get("hostNetwork")
               and (p.get("status") or {}).get("podIP"))
    ipam = f"IPv4: {used + 1}/254 allocated from {cidrs[0]}, " if cidrs else "IPv4: 0/0 allocated"
    ok_nodes, all_nodes = _cluster_health(rt, pod, node_name)
    controllers = 42
    failing = 0 if st.ready else 3
    cilium_line = (f"Ok   {ver} (v{ver})" if st.ready else
                   f"Failure   {ver} (v{ver}): {st.reason or 'agent not ready'}")
    lines = [
        ("KVStore", "Disabled   "),
        ("Kubernetes", kube),
        ("Kubernetes APIs", '["EndpointSliceOrEndpoint", "cilium/v2::CiliumClusterwideNetworkPolicy", '
                            '"cilium/v2::CiliumEndpoint", "cilium/v2::CiliumNetworkPolicy", '
                            '"cilium/v2::CiliumNode", "cilium/v2alpha1::CiliumCIDRGroup", '
                            '"core/v1::Namespace", "core/v1::Pods", "core/v1::Service", '
                            '"networking.k8s.io/v1::NetworkPolicy"]'),
        ("KubeProxyReplacement", kpr),
        ("Host firewall", "Disabled"),
        ("SRv6", "Disabled"),
        ("CNI Chaining", cfg.cni_chaining_mode),
        # daemon/cmd/cni/config.go: the status of the CNI config manager.
        ("CNI Config file", f"successfully wrote CNI configuration file to {cfg.write_cni_conf}"
                            if cfg.write_cni_conf else "CNI configuration management disabled"),
        ("Cilium", cilium_line),
        ("NodeMonitor", "Listening for events on 2 CPUs with 64x4096 of shared memory"),
        ("Cilium health daemon", "Ok   " if st.ready else "Failure   not started"),
        ("IPAM", ipam),
        ("IPv4 BIG TCP", "Disabled"),
        ("IPv6 BIG TCP", "Disabled"),
        ("BandwidthManager", "Disabled"),
        ("Routing", routing),
        ("Attach Mode", "TCX"),
        ("Device Mode", "veth"),
        ("Masquerading", "IPTables [IPv4: Enabled, IPv6: Disabled]"),
        ("Controller Status", f"{controllers - failing}/{controllers} healthy"),
        ("Proxy Status", "OK, ip 10.0.0.1, 0 redirects active on ports 10000-20000, Envoy: external"),
        ("Global Identity Range", "min 256, max 65535"),
        ("Hubble", "Ok   Current/Max Flows: 4095/4095 (100.00%), Flows/s: 3.20   Metrics: Disabled"
         if cfg.hubble else "Disabled"),
        ("Encryption", "Disabled"),
        ("Cluster health", f"{ok_nodes}/{all_nodes} reachable"),
        ("Name", "IP              Node   Endpoints"),
        ("Modules Health", f"Stopped(0) Degraded({failing}) OK({70 - failing})"),
    ]
    out = "".join(f"{k + ':':<25}{v}\n" for k, v in lines)
    if verbose:
        out += "Controller Status:\n"
        for name in ("cilium-health-ep", "dns-garbage-collector-job", "endpoint-gc",
                     "ipcache-inject-labels", "k8s-heartbeat", "sync-lb-maps-with-k8s-services"):
            state = "success" if st.ready or name != "k8s-heartbeat" else "failure"
            out += f"  {name:<40} 10s ago   never   0   no error   {state}\n"
        out += "Cluster health:\n"
        for n in _store_objects(rt, "", "nodes"):
            nm = n["metadata"]["name"]
            reachable = "Reachable" if model.agent_ready(nm) else "Unreachable"
            out += f"  {nm + (' (localhost)' if nm == node_name else ''):<28}{_node_ip(n):<16}{reachable}\n"
    return (0 if st.ready else 1), out


def _backends(rt: Any, svc: dict) -> list[str]:
    ns, name = svc["metadata"].get("namespace"), svc["metadata"]["name"]
    eps = next((e for e in _store_objects(rt, "", "endpoints", ns) if e["metadata"]["name"] == name), None)
    out = []
    for subset in (eps or {}).get("subsets") or ():
        for addr in subset.get("addresses") or ():
            for port in subset.get("ports") or ():
                out.append(f"{addr.get('ip')}:{port.get('port')}/{port.get('protocol', 'TCP')} (active)")
    return out


def service_list_text(rt: Any) -> str:
    """``cilium-dbg service list``: ID, frontend, type, backends."""
    model = _model(rt)
    kpr = bool(model and model.config().kpr)
    rows: list[tuple[str, str, list[str]]] = []
    node_ips = [_node_ip(n) for n in _store_objects(rt, "", "nodes")]
    for svc in sorted(_store_objects(rt, "", "services"),
                      key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        backends = _backends(rt, svc)
        for p in spec.get("ports") or ():
            proto = p.get("protocol", "TCP")
            rows.append((f"{ip}:{p.get('port')}/{proto}", "ClusterIP", backends))
            if kpr and p.get("nodePort"):
                rows.append((f"0.0.0.0:{p['nodePort']}/{proto}", "NodePort", backends))
                rows.extend((f"{nip}:{p['nodePort']}/{proto}", "NodePort", backends) for nip in node_ips if nip)
            if kpr and spec.get("type") == "LoadBalancer":
                for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ():
                    if ing.get("ip"):
                        rows.append((f"{ing['ip']}:{p.get('port')}/{proto}", "LoadBalancer", backends))
    out = f"{'ID':<5}{'Frontend':<26}{'Service Type':<15}Backend\n"
    for i, (front, kind, backends) in enumerate(rows, 1):
        first = f"1 => {backends[0]}" if backends else ""
        out += f"{i:<5}{front:<26}{kind:<15}{first}\n"
        for j, b in enumerate(backends[1:], 2):
            out += f"{'':<46}{j} => {b}\n"
    return out


def cmd_cilium_dbg(rt: Any, pod: dict, container: str, argv: list[str],
                   stdin: bytes) -> tuple[int, bytes, bytes]:
    from .net import CILIUM_DBG_SUBCOMMANDS

    if len(argv) > 1 and argv[1] in CILIUM_DBG_SUBCOMMANDS:
        # any container of the Cilium image has the binary (the cleanup runs in a
        # privileged hostNetwork pod once the agent is gone); the handler checks the image
        return CILIUM_DBG_SUBCOMMANDS[argv[1]](rt, pod, container, list(argv), stdin)
    if not is_agent_container(pod, container):
        return not_found(argv[0])
    args = [a for a in argv[1:] if a not in ("-o", "--output")]
    if not args or args[0] in ("-h", "--help", "help"):
        return 0, (b"CLI for interacting with the local Cilium Agent\n\nUsage:\n  cilium-dbg [command]\n\n"
                   b"Available Commands (served by the twin):\n  service list\n  status\n"), b""
    if args[0] == "status":
        verbose = "--verbose" in args[1:] or "-v" in args[1:]
        if "--brief" in args[1:]:
            rc, _text = status_text(rt, pod, False)
            return rc, (b"OK\n" if rc == 0 else b""), (b"" if rc == 0 else b"agent not ready\n")
        rc, text = status_text(rt, pod, verbose)
        return rc, text.encode(), b""
    if args[:2] == ["service", "list"]:
        return 0, service_list_text(rt).encode(), b""
    return 1, b"", _USAGE.format(cmd=" ".join(args[:2])).encode()


COMMANDS = {"cilium-dbg": cmd_cilium_dbg, "cilium": cmd_cilium_dbg}
