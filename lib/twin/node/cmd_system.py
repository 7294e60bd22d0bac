"""The node's small system commands: ``true false echo hostname uname``, ``k3s --version``
and what reaches the table of ``scp`` (the SSH server serves copies to the node itself).

Example:
    >>> await uname(node, ["-r"], Ctx(root=False, stdin=b""))  # doctest: +SKIP
    ExecResult(rc=0, stdout=b'5.15.0-105-generic\\n', stderr=b'')
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel


async def true(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return result(0)


async def false(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    return result(1)


async def echo(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    return result(0, " ".join(args) + ("\n" if newline else ""))


async def hostname(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if args and args[0] in ("-I", "-i"):
        return result(0, f"{node.spec.ip} \n")
    return result(0, node.name + "\n")


async def uname(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if not args or args == ["-s"]:
        return result(0, "Linux\n")
    if args == ["-r"]:
        return result(0, node.kernel + "\n")
    if args == ["-n"]:
        return result(0, node.name + "\n")
    if args == ["-m"]:
        return result(0, "x86_64\n")
    if args == ["-a"]:
        return result(0, f"Linux {node.name} {node.kernel} #1 SMP x86_64 x86_64 x86_64 GNU/Linux\n")
    return result(1, err=f"uname: invalid option -- '{args[0].lstrip('-')}'\n"
                         "Try 'uname --help' for more information.\n")


async def k3s(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if args in (["--version"], ["-v"], ["version"]):
        commit = hashlib.sha1(node.k3s_version.encode()).hexdigest()[:8]
        return result(0, f"k3s version {node.k3s_version} ({commit})\ngo version go1.22.8\n")
    return result(1, err="the twin's k3s binary supports only `k3s --version`; "
                         "configure k3s through /etc/rancher/k3s/config.yaml\n")


async def scp(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """What reaches the table of ``scp``: not the server side of a copy to this node (the
    SSH server runs ``scp -t``/``-f`` itself, as ubuntu, with SFTP's permissions), but
    ``sudo scp`` or a copy from this node to another host."""
    if ctx.root and {"-t", "-f"} & set(args):
        return result(1, err="scp: the twin runs the receiving side of scp as ubuntu only (writes "
                             "under /home/ubuntu and /tmp): copy to /tmp, then `sudo cp`\n")
    return result(1, err="ssh: connect to host: Network is unreachable (a twin node reaches no other "
                         "host)\nlost connection\n")
