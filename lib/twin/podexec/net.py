"""Network commands that run inside a pod (``kubectl exec POD -- CMD``), as pure handlers.

Each handler has the team's signature ``handler(rt, pod, container, argv, stdin) ->
(rc, stdout, stderr)``; ``argv`` is the whole command, ``argv[0]`` the program. The exec
transport (``twin.podexec``) collects :data:`COMMANDS`; ``cilium-dbg``
(:mod:`twin.podexec.cilium_dbg`) routes the subcommands in :data:`CILIUM_DBG_SUBCOMMANDS` here.

- ``nslookup``, ``getent hosts``, ``curl``, ``wget``: probes from the pod, answered by the
  network model (:mod:`twin.controllers.network_view`, :mod:`twin.controllers.reach`):
  the pod's sandbox must belong to the CNI that works on its node, its DNS goes to the
  kube-dns ClusterIP (through whatever translates it on the node: kube-proxy, Cilium, or
  a socket LB Cilium left behind), cross-node traffic needs the overlay both nodes share
  and the nodes' firewalls to let its UDP port through. Output as the real tools print it
  (:mod:`twin.nettools`); a timeout returns at once here (the transport does not wait).
- ``cilium-health status [--succinct|--verbose] [-o json]``: in a Cilium image, what the
  node's agent finds probing every node (host over TCP 4240, health endpoint through the
  tunnel).
- ``cilium-dbg post-uninstall-cleanup [--all-state|--bpf-state] [-f]``: Cilium's cleanup
  (:mod:`twin.controllers.cilium.cleanup`), acting on the pod's node as far as the pod can
  reach: refused in a running agent (its pid file), complete in a privileged hostNetwork
  pod with the host's ``/sys/fs/bpf`` and ``/var/run/cilium`` mounted.

Example:
    >>> COMMANDS["nslookup"](rt, pod, "main", ["nslookup", "kubernetes.default"], b"")  # doctest: +SKIP
    (0, b'Server:\\t\\t10.43.0.10\\n...', b'')
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from .. import nettools
from ..controllers.cilium import cleanup as cilium_cleanup
from ..controllers.network_view import NodeView

Handler = Callable[[Any, dict, str, list[str], bytes], tuple[int, bytes, bytes]]


def view_for(rt: Any, pod: dict) -> NodeView | None:
    """The network view the pod's node answers from (None: the twin runs no network model)."""
    node = (pod.get("spec") or {}).get("nodeName") or ""
    nm = rt.nodes.get(node)
    if nm is not None and nm.cluster_view is not None:
        return nm.cluster_view
    try:
        return NodeView(rt.component("network"))
    except KeyError:
        return None


def _image(pod: dict, container: str) -> str:
    for c in (pod.get("spec") or {}).get("containers") or ():
        if c.get("name") == container:
            return str(c.get("image") or "")
    return ""


def _not_found(prog: str) -> tuple[int, bytes, bytes]:
    return 127, b"", (f'OCI runtime exec failed: exec failed: unable to start container process: exec: '
                      f'"{prog}": executable file not found in $PATH: unknown\n').encode()


def _no_model(prog: str) -> tuple[int, bytes, bytes]:
    return 2, b"", f"{prog}: the twin runs no network model, so it cannot tell what this pod reaches\n".encode()


def _probes(view: NodeView, pod: dict) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return (lambda ip, port, proto: view.trace(pod, ip, port, proto),
            lambda name, server: view.resolve(pod, name, server))


def nslookup(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    view = view_for(rt, pod)
    if view is None:
        return _no_model("nslookup")
    rc, out, err, _ = nettools.nslookup(argv[1:], _probes(view, pod)[1], view.resolver_of(pod)[0])
    return rc, out, err


def getent(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    view = view_for(rt, pod)
    if view is None:
        return _no_model("getent")
    rc, out, err, _ = nettools.getent(argv[1:], _probes(view, pod)[1])
    return rc, out, err


def curl(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    view = view_for(rt, pod)
    if view is None:
        return _no_model("curl")
    rc, out, err, _ = nettools.curl(argv[1:], *_probes(view, pod))
    return rc, out, err


def wget(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    view = view_for(rt, pod)
    if view is None:
        return _no_model("wget")
    rc, out, err, _ = nettools.wget(argv[1:], *_probes(view, pod))
    return rc, out, err


def _tabs(lines: list[str]) -> str:
    """Align tab-separated columns as Go's tabwriter does for cilium-health."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return "".join("".join(c.ljust(widths[i] + 2) if i < len(r) - 1 else c for i, c in enumerate(r)) + "\n"
                   for r in rows)


def cilium_health(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``cilium-health status [--succinct] [--verbose] [-o json] [--probe]`` in an agent pod."""
    if "cilium/cilium" not in _image(pod, container):
        return _not_found("cilium-health")
    args = argv[1:]
    if not args or args[0] != "status":
        return 1, b"", b"the twin's cilium-health supports `cilium-health status [--succinct] [-o json]`\n"
    node = (pod.get("spec") or {}).get("nodeName") or ""
    view = view_for(rt, pod)
    cil = view.net.cilium if view is not None else None
    if view is None or cil is None or not cil.agent_ready(node):
        return 1, b"", (b'Error: Cannot get status: Get "http://%2Fvar%2Frun%2Fcilium%2Fhealth.sock/v1beta/status": '
                        b"dial unix /var/run/cilium/health.sock: connect: no such file or directory\n")
    nodes = view.health(node)
    if "json" in args:
        def path(ip: str, icmp: str, http: str, latency: int) -> dict:
            return {"ip": ip, "icmp": {"status": icmp, "latency": latency}, "http": {"status": http, "latency": latency}}
        doc = {"local": {"name": node}, "nodes": [
            {"name": n["name"], "host": {"primary-address": path(n["ip"], n["host_icmp"], n["host_http"], 400000)},
             "health-endpoint": {"primary-address": path(n["endpoint_ip"], n["endpoint_icmp"], n["endpoint_http"],
                                                         500000)}} for n in nodes]}
        return 0, (json.dumps(doc, indent=2) + "\n").encode(), b""
    healthy = [n for n in nodes if not (n["host_icmp"] or n["host_http"] or n["endpoint_icmp"] or n["endpoint_http"])]
    ordered = [n for n in nodes if n["local"]] + [n for n in nodes if not n["local"]]
    if "--succinct" in args:
        lines = [f"Cluster health:\t{len(healthy)}/{len(nodes)} reachable\t(probed by {node})"]
        bad = [n for n in ordered if n not in healthy]
        if bad:
            lines.append("  Name\tIP\tNode\tEndpoints")
            for n in bad:
                lines.append(f"  {n['name']}{' (localhost)' if n['local'] else ''}\t{n['ip']}\t"
                             f"{0 if (n['host_icmp'] or n['host_http']) else 1}/1\t"
                             f"{0 if (n['endpoint_icmp'] or n['endpoint_http']) else 1}/1")
        return 0, _tabs(lines).encode(), b""

    def status(s: str, seed: str) -> str:
        return f"OK, RTT={seed}" if not s else s
    lines = [f"Probe time:\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", "Nodes:"]
    for n in ordered:
        lines.append(f"  {n['name']}{' (localhost)' if n['local'] else ''}:")
        lines += [f"    Host connectivity to {n['ip']}:", f"      ICMP to stack:\t{status(n['host_icmp'], n['rtt'])}",
                  f"      HTTP to agent:\t{status(n['host_http'], n['rtt'])}"]
        if n["endpoint_ip"]:
            lines += [f"    Endpoint connectivity to {n['endpoint_ip']}:",
                      f"      ICMP to stack:\t{status(n['endpoint_icmp'], n['rtt'])}",
                      f"      HTTP to agent:\t{status(n['endpoint_http'], n['rtt'])}"]
    return 0, _tabs(lines).encode(), b""


def post_uninstall_cleanup(rt: Any, pod: dict, container: str, argv: list[str],
                           stdin: bytes) -> tuple[int, bytes, bytes]:
    """``cilium-dbg post-uninstall-cleanup ...`` (argv from ``cilium-dbg``) in a container
    of the Cilium image, acting on the pod's node as far as the container reaches."""
    if "cilium/cilium" not in _image(pod, container):
        return _not_found("cilium-dbg")
    node = rt.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
    if node is None:
        return 1, b"", b"Error: the twin has no node model for this pod's node\n"
    view = cilium_cleanup.ContainerView.of(node, pod, container)
    args = argv[2:] if len(argv) > 1 and argv[1] == "post-uninstall-cleanup" else argv[1:]
    return cilium_cleanup.run(view, args, stdin)


COMMANDS: dict[str, Handler] = {
    "nslookup": nslookup,
    "getent": getent,
    "curl": curl,
    "wget": wget,
    "cilium-health": cilium_health,
}
CILIUM_DBG_SUBCOMMANDS: dict[str, Handler] = {
    "post-uninstall-cleanup": post_uninstall_cleanup,
}
