"""The node's probing commands: ``curl``, ``nslookup``, ``dig``, ``getent``.

They run on the node's host network, as an operator's probe over SSH does: the answers
come from the network model (``node.cluster_view``, see
:mod:`twin.controllers.network_view`), the output from :mod:`twin.nettools`. The node's
resolver is systemd-resolved (``127.0.0.53``): a cluster name resolves only when the
cluster DNS is asked explicitly (``nslookup NAME 10.43.0.10``, ``dig @10.43.0.10 NAME``),
and that query goes through whatever translates the kube-dns ClusterIP on this node (a
socket LB Cilium left behind included). A probe that times out takes its time (in
cluster seconds: ``--connect-timeout``/``-m``, ``+time``/``+tries``, or the kernel's).

Example:
    >>> await curl(node, ["-sS", "--connect-timeout", "3", "http://10.43.0.10:53/"], ctx)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import nettools
from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel

NO_VIEW = ("{tool}: the twin runs no network model here, so it cannot tell what this node "
           "reaches (start the twin with its network component)\n")
MAX_WAIT = 130.0


def _bound(node: NodeModel) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    view = node.cluster_view
    if view is None:
        return None
    return (lambda ip, port, proto: view.trace(node.name, ip, port, proto),
            lambda name, server: view.resolve(node.name, name, server))


async def _finish(node: NodeModel, res: tuple[int, bytes, bytes, float]) -> ExecResult:
    rc, out, err, wait = res
    if wait > 0:
        await node.clock.sleep(min(wait, MAX_WAIT))
    return result(rc, out, err)


async def curl(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    probes = _bound(node)
    if probes is None:
        return result(2, err=NO_VIEW.format(tool="curl"))
    return await _finish(node, nettools.curl(args, *probes))


async def nslookup(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    probes = _bound(node)
    if probes is None:
        return result(2, err=NO_VIEW.format(tool="nslookup"))
    return await _finish(node, nettools.nslookup(args, probes[1], "127.0.0.53"))


async def dig(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    probes = _bound(node)
    if probes is None:
        return result(2, err=NO_VIEW.format(tool="dig"))
    return await _finish(node, nettools.dig(args, probes[1], "127.0.0.53"))


async def getent(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    probes = _bound(node)
    if probes is None:
        return result(2, err=NO_VIEW.format(tool="getent"))
    return await _finish(node, nettools.getent(args, probes[1]))
