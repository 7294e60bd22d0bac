"""The node's network commands: ``ip link`` and ``iptables-save``/``iptables-restore``
(and their ``ip6tables`` twins).

``ip link delete`` and the iptables tools need root and fail with the real tools'
messages otherwise. After a restore, a running k3s puts its deleted rules back within
``RESYNC_SECONDS`` (flannel, kube-router and kube-proxy resync).

Example:
    >>> await iptables_save(node, ["-t", "nat"], Ctx(root=True, stdin=b""))  # doctest: +SKIP
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import routes
from .iptables import IPTABLES_VERSION, IptablesError
from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel


async def ip(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    opts = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    as_json = bool({"-j", "-json"} & set(opts))
    if rest and rest[0] in ("route", "r", "ro"):
        return _ip_route(node, rest[1:], as_json, ctx.root)
    if not rest or rest[0] not in ("link", "l"):
        return result(255, err="the twin supports `ip [-o|-j|-d] link show [dev] [IFACE]`, "
                               "`ip link delete [dev] IFACE` and `ip [-j] route [show] [dev IFACE]`, `ip route del CIDR`\n")
    verb = rest[1] if len(rest) > 1 else "show"
    names = [a for a in rest[2:] if a != "dev"]
    interfaces = node.links.interfaces
    if verb in ("show", "list", "ls"):
        if names:
            iface = interfaces.get(names[0])
            if iface is None:
                return result(1, err=f'Device "{names[0]}" does not exist.\n')
            sel = [iface]
        else:
            sel = sorted(interfaces.values(), key=lambda i: i.index)
        details = bool({"-d", "-details"} & set(opts))
        local = str(node.spec.ip)
        if as_json:
            docs = []
            for i in sel:
                d = i.as_json()
                info = i.link_info(local) if details else None
                if info:
                    d["linkinfo"] = info
                docs.append(d)
            return result(0, json.dumps(docs) + "\n")
        lines = [i.link_line() + (i.detail_suffix(local) if details else "") for i in sel]
        if "-o" in opts or "-oneline" in opts:
            return result(0, "".join(line + "\n" for line in lines))
        return result(0, "".join(line.replace("\\   ", "\n   ") + "\n" for line in lines))
    if verb in ("delete", "del", "d"):
        if not names:
            return result(255, err="Not enough information: \"dev\" argument is required.\n")
        if names[0] not in interfaces:
            return result(1, err=f"Cannot find device \"{names[0]}\"\n")
        if not ctx.root:
            return result(2, err="RTNETLINK answers: Operation not permitted\n")
        node.links.remove(names[0])
        return result(0)
    return result(255, err=f'Command "{verb}" is unknown, try "ip link help".\n')


def _ip_route(node: NodeModel, args: list[str], as_json: bool, ctx_root: bool = False) -> ExecResult:
    """``ip route [show|list] [dev IFACE]``: the routes of the devices that exist now;
    ``ip route del CIDR`` (root) removes a route flannel's host-gw backend added."""
    verb = args[0] if args else "show"
    if verb in ("del", "delete"):
        return _ip_route_del(node, args[1:], ctx_root)
    if verb not in ("show", "list", "ls", "dev"):
        return result(255, err=f'Command "{verb}" is unknown, try "ip route help".\n')
    rest = args[1:] if verb != "dev" else args
    dev = rest[rest.index("dev") + 1] if "dev" in rest and rest.index("dev") + 1 < len(rest) else None
    if dev is not None and dev not in node.links.interfaces:
        return result(1, err=f'Cannot find device "{dev}"\n')
    sel = [r for r in routes.table(node) if dev is None or r.dev == dev]
    if as_json:
        return result(0, json.dumps([r.as_json() for r in sel]) + "\n")
    return result(0, "".join(r.text() + " \n" for r in sel))


def _ip_route_del(node: NodeModel, args: list[str], root: bool) -> ExecResult:
    from .k3s_network import HOST_GW_ROUTES

    if not root:
        return result(2, err="RTNETLINK answers: Operation not permitted\n")
    dst = args[0] if args else ""
    eth0 = node.links.interfaces.get("eth0")
    have = list((eth0.info.get(HOST_GW_ROUTES) or ()) if eth0 is not None else ())
    keep = [r for r in have if r[0] != dst]
    if not dst or len(keep) == len(have):
        return result(2, err="RTNETLINK answers: No such process\n")
    eth0.info[HOST_GW_ROUTES] = keep
    return result(0)


def _not_root(tool: str) -> ExecResult:
    return result(1, err=f"{tool} {IPTABLES_VERSION} (nf_tables): Could not fetch rule set "
                         "generation id: Permission denied (you must be root)\n")


async def _save(node: NodeModel, args: list[str], ctx: Ctx, v6: bool) -> ExecResult:
    tool = "ip6tables-save" if v6 else "iptables-save"
    if not ctx.root:
        return _not_root(tool)
    table = None
    if "-t" in args:
        try:
            table = args[args.index("-t") + 1]
        except IndexError:
            return result(2, err=f"{tool}: option requires an argument -- 't'\n")
    counters = bool({"-c", "--counters"} & set(args))
    return result(0, (node.ip6tables if v6 else node.iptables).save(table, counters))


async def _restore(node: NodeModel, args: list[str], ctx: Ctx, v6: bool) -> ExecResult:
    tool = "ip6tables-restore" if v6 else "iptables-restore"
    if not ctx.root:
        return _not_root(tool)
    noflush = bool({"-n", "--noflush"} & set(args))
    table = args[args.index("-T") + 1] if "-T" in args and args.index("-T") + 1 < len(args) else None
    paths = [a for a in args if not a.startswith("-") and a != table]
    if paths:
        n = node.files.norm(paths[0], ctx.cwd)
        if not node.files.host_path(n).is_file():
            return result(1, err=f"{tool}: Can't open {paths[0]}: No such file or directory\n")
        text = node.files.read_text(n)
    else:
        text = (await ctx.read_stdin()).decode(errors="replace")
    ipt = node.ip6tables if v6 else node.iptables
    try:
        touched = ipt.restore(text, noflush=noflush, table=table)
    except IptablesError as e:
        return result(1, err=f"{e}\n")
    node.emit("iptables-changed", family=6 if v6 else 4, tables=touched)
    if node.k3s.running:
        node.spawn(node.k3s.resync_later())
    return result(0)


async def iptables_save(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return await _save(node, args, ctx, False)


async def ip6tables_save(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return await _save(node, args, ctx, True)


async def iptables_restore(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return await _restore(node, args, ctx, False)


async def ip6tables_restore(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return await _restore(node, args, ctx, True)
