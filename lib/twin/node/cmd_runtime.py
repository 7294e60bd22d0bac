"""``crictl`` on a twin node: the pod sandboxes and containers containerd runs there.

k3s links ``crictl`` to itself and points it at its containerd
(``/run/k3s/containerd/containerd.sock``, root only). containerd keeps running, with its
pods, when the k3s unit stops (KillMode=process); it is gone while the node reboots and
until k3s starts it again.

- ``crictl pods [--name N] [--namespace NS] [-q] [-o json]``
- ``crictl ps [-a] [--name N] [-q] [-o json]``
- ``crictl inspectp ID``: the sandbox's state, IP and network namespace, and in
  ``info.cniResult`` the interfaces its CNI made: flannel's bridge ``cni0`` and a veth,
  or Cilium's ``lxc*`` device; a hostNetwork sandbox has none (namespace ``NODE``).

The sandboxes come from the network model (``node.cluster_view.sandboxes``).

Example:
    >>> await crictl(node, ["pods"], Ctx(root=True, stdin=b""))  # doctest: +SKIP
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel

SOCKET = "unix:///run/k3s/containerd/containerd.sock"


def _fatal(why: str) -> ExecResult:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result(1, err=f'time="{stamp}" level=fatal msg="validate service connection: validate CRI v1 '
                         f'runtime API for endpoint \\"{SOCKET}\\": rpc error: code = Unavailable desc = '
                         f'connection error: desc = \\"transport: Error while dialing: dial unix '
                         f'/run/k3s/containerd/containerd.sock: {why}\\""\n')


def _ago(stamp: str) -> str:
    try:
        t = _dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return "Unknown"
    s = max(0, int((_dt.datetime.now(_dt.timezone.utc) - t).total_seconds()))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if s >= size:
            n = s // size
            return f"{'About an' if n == 1 and unit == 'hour' else n} {unit}{'' if n == 1 else 's'} ago"
    return f"{s} seconds ago"


def _opt(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _inspect(s: dict[str, Any]) -> dict[str, Any]:
    host = s["network"] == "host"
    ifaces: dict[str, Any] = {}
    if s["network"] == "flannel":
        veth = "veth" + hashlib.sha256(s["id"].encode()).hexdigest()[:8]
        ifaces = {"cni0": {"IPConfigs": None, "Mac": "", "Sandbox": "", "PciID": ""},
                  veth: {"IPConfigs": None, "Mac": "", "Sandbox": "", "PciID": ""},
                  "eth0": {"IPConfigs": [{"IP": s["ip"], "Gateway": s["ip"].rsplit(".", 1)[0] + ".1"}],
                           "Mac": "", "Sandbox": f"/var/run/netns/cni-{s['id'][:8]}", "PciID": ""}}
    elif s["network"] == "cilium":
        lxc = "lxc" + hashlib.sha256(s["id"].encode()).hexdigest()[:12]
        ifaces = {lxc: {"IPConfigs": None, "Mac": "", "Sandbox": "", "PciID": ""},
                  "eth0": {"IPConfigs": [{"IP": s["ip"], "Gateway": ""}], "Mac": "",
                           "Sandbox": f"/var/run/netns/cni-{s['id'][:8]}", "PciID": ""}}
    return {"status": {
        "id": s["id"], "metadata": {"attempt": 0, "name": s["name"], "namespace": s["namespace"], "uid": s["uid"]},
        "state": "SANDBOX_READY" if s["ready"] else "SANDBOX_NOTREADY", "createdAt": s["created"],
        "network": {"additionalIps": [], "ip": s["ip"]},
        "linux": {"namespaces": {"options": {"ipc": "POD", "network": "NODE" if host else "POD",
                                             "pid": "CONTAINER", "targetId": "", "usernsOptions": None}}},
        "labels": s["labels"], "annotations": {}, "runtimeHandler": ""},
        "info": {"pid": int(s["id"][:4], 16), "processStatus": "running", "netNamespaceClosed": False,
                 "image": "rancher/mirrored-pause:3.6", "runtimeHandler": "", "runtimeType": "io.containerd.runc.v2",
                 "cniResult": None if host else {"Interfaces": ifaces, "DNS": [{}, {}], "Routes": None}}}


async def crictl(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if not ctx.root:
        return _fatal("connect: permission denied")
    if not node.up or node.k3s.cni_dirs is None:
        return _fatal("connect: no such file or directory")
    view = node.cluster_view
    sandboxes: list[dict[str, Any]] = view.sandboxes(node.name) if view is not None else []
    verb = args[0] if args else ""
    rest = args[1:]
    name, ns = _opt(rest, "--name"), _opt(rest, "--namespace")
    quiet = "-q" in rest or "--quiet" in rest
    as_json = _opt(rest, "-o") == "json" or _opt(rest, "--output") == "json"
    if verb == "pods":
        sel = [s for s in sandboxes if (name is None or name in s["name"]) and (ns is None or s["namespace"] == ns)]
        if quiet:
            return result(0, "".join(s["id"] + "\n" for s in sel))
        if as_json:
            return result(0, json.dumps({"items": [_inspect(s)["status"] for s in sel]}, indent=2) + "\n")
        out = f"{'POD ID':<20}{'CREATED':<20}{'STATE':<20}{'NAME':<41}{'NAMESPACE':<20}{'ATTEMPT':<20}RUNTIME\n"
        for s in sel:
            out += (f"{s['id'][:13]:<20}{_ago(s['created']):<20}{'Ready' if s['ready'] else 'NotReady':<20}"
                    f"{s['name']:<41}{s['namespace']:<20}{0:<20}(default)\n")
        return result(0, out)
    if verb == "ps":
        rows = [(c, s) for s in sandboxes for c in s["containers"]
                if ("-a" in rest or "--all" in rest or c["state"] == "Running")
                and (name is None or name in (c["name"] or ""))]
        if quiet:
            return result(0, "".join(c["id"] + "\n" for c, _ in rows))
        if as_json:
            return result(0, json.dumps({"containers": [
                {"id": c["id"], "podSandboxId": s["id"], "metadata": {"name": c["name"], "attempt": c["attempt"]},
                 "image": {"image": c["image"]}, "state": "CONTAINER_" + c["state"].upper(),
                 "labels": {"io.kubernetes.pod.name": s["name"], "io.kubernetes.pod.namespace": s["namespace"]}}
                for c, s in rows]}, indent=2) + "\n")
        out = (f"{'CONTAINER':<20}{'IMAGE':<20}{'CREATED':<20}{'STATE':<20}{'NAME':<26}{'ATTEMPT':<20}"
               f"{'POD ID':<20}{'POD':<41}NAMESPACE\n")
        for c, s in rows:
            image = hashlib.sha256(c["image"].encode()).hexdigest()[:13]
            out += (f"{c['id'][:13]:<20}{image:<20}{_ago(s['created']):<20}{c['state']:<20}{c['name']:<26}"
                    f"{c['attempt']:<20}{s['id'][:13]:<20}{s['name']:<41}{s['namespace']}\n")
        return result(0, out)
    if verb == "inspectp":
        ids = [a for a in rest if not a.startswith("-")]
        if not ids:
            return result(1, err='time="" level=fatal msg="ID cannot be empty"\n')
        found = [s for s in sandboxes if s["id"].startswith(ids[0])]
        if not found:
            return result(1, err=f'time="" level=fatal msg="getting the pod sandbox status for \\"{ids[0]}\\": '
                                 f'rpc error: code = NotFound desc = an error occurred when try to find sandbox: '
                                 f'not found"\n')
        return result(0, json.dumps(_inspect(found[0]), indent=2) + "\n")
    return result(1, err="the twin's crictl supports `crictl pods`, `crictl ps [-a]` and `crictl inspectp ID`\n")
