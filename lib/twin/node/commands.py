"""The command table of a twin node: which program name runs which handler.

A handler is ``async (node, args, ctx) -> ExecResult`` and lives in the module of its
concern (``cmd_files``, ``cmd_net``, ``cmd_sockets``, ``cmd_bpf``, ``cmd_probe``,
``cmd_runtime``, ``cmd_service``, ``cmd_system``, ``cmd_time``). A new command is a
handler there and one row in :data:`COMMANDS`; a name not in the table answers as bash
does, ``command not found`` with exit 127 (``sudo: X: command not found``, exit 1, under
sudo). ``/usr/bin/X`` and the other standard directories name the same program as ``X``.
``sudo`` and ``timeout`` run another command through the table (``sudo -n timeout -k 5
60 iptables-save``, as the runbook sends every command).

Example:
    >>> rc, out, err = await exec_line(node, "sudo iptables-save -t nat")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from . import (cmd_bpf, cmd_files, cmd_net, cmd_probe, cmd_runtime, cmd_service, cmd_sockets,
               cmd_system, cmd_time)
from .shell import SHELL_REFUSED, SHELLS, Ctx, ExecResult, ShellRefused, expand, result, tokenize

if TYPE_CHECKING:
    from .model import NodeModel

Handler = Callable[["NodeModel", list[str], Ctx], Awaitable[ExecResult]]
BIN_DIRS = ("/usr/local/bin/", "/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/")


async def sudo(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """``sudo [-n] CMD``: CMD as root, no password."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--":
            i += 1
            break
        if args[i] not in ("-n", "-E", "-H", "-S", "--non-interactive", "--preserve-env"):
            return result(1, err=f"sudo: invalid option -- '{args[i].lstrip('-')[:1]}'\n"
                                 "usage: sudo [-n] command\n")
        i += 1
    if i >= len(args):
        return result(1, err="usage: sudo -h | -K | -k | -V\nusage: sudo [-n] command\n")
    ctx.root = True
    return await run(node, args[i:], ctx, via_sudo=True)


async def timeout(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    """``timeout [OPTION] DURATION CMD...``: CMD with a real-time limit (:mod:`.cmd_time`)."""
    return await cmd_time.timeout(node, args, ctx, run, lambda name: program(name) is not None)


COMMANDS: dict[str, Handler] = {
    "sudo": sudo,
    "timeout": timeout,
    "sleep": cmd_time.sleep,
    # files
    "cat": cmd_files.cat,
    "tee": cmd_files.tee,
    "cp": cmd_files.cp,
    "mv": cmd_files.mv,
    "rm": cmd_files.rm,
    "mkdir": cmd_files.mkdir,
    "chmod": cmd_files.chmod,
    "test": cmd_files.test,
    "ls": cmd_files.ls,
    "sha256sum": cmd_files.sha256sum,
    "stat": cmd_files.stat,
    # system
    "true": cmd_system.true,
    "false": cmd_system.false,
    "echo": cmd_system.echo,
    "hostname": cmd_system.hostname,
    "uname": cmd_system.uname,
    "k3s": cmd_system.k3s,
    "scp": cmd_system.scp,
    # services
    "systemctl": cmd_service.systemctl,
    "journalctl": cmd_service.journalctl,
    "reboot": cmd_service.reboot,
    # network
    "ip": cmd_net.ip,
    "iptables-save": cmd_net.iptables_save,
    "ip6tables-save": cmd_net.ip6tables_save,
    "iptables-restore": cmd_net.iptables_restore,
    "ip6tables-restore": cmd_net.ip6tables_restore,
    "ss": cmd_sockets.ss,
    "ipset": cmd_sockets.ipset,
    "bpftool": cmd_bpf.bpftool,
    # probes (answered by the network model)
    "curl": cmd_probe.curl,
    "nslookup": cmd_probe.nslookup,
    "dig": cmd_probe.dig,
    "getent": cmd_probe.getent,
    # container runtime
    "crictl": cmd_runtime.crictl,
}


def _name(cmd: str) -> str:
    """The program a command word names: ``/usr/bin/cat`` and friends are ``cat``."""
    if "/" not in cmd:
        return cmd
    for d in BIN_DIRS:
        if cmd.startswith(d) and "/" not in cmd[len(d):]:
            return cmd[len(d):]
    return cmd


def program(cmd: str) -> Handler | None:
    """The handler of the program ``cmd`` names, or None when the node has no such program
    (a shell counts as present: :func:`run` refuses it with its own message)."""
    name = _name(cmd)
    return run if name in SHELLS else COMMANDS.get(name)


async def run(node: NodeModel, argv: list[str], ctx: Ctx, via_sudo: bool = False) -> ExecResult:
    """Run one argument vector through the table."""
    cmd, args = _name(argv[0]), argv[1:]
    if cmd in SHELLS:
        return result(2, err=f"{SHELL_REFUSED} ({cmd} is refused)\n")
    handler = COMMANDS.get(cmd)
    if handler is None:
        if via_sudo:
            return result(1, err=f"sudo: {argv[0]}: command not found\n")
        return result(127, err=f"bash: line 1: {argv[0]}: command not found\n")
    return await handler(node, args, ctx)


async def exec_line(node: NodeModel, command_line: str,
                    stdin: bytes | Callable[[], Awaitable[bytes]] = b"") -> ExecResult:
    """Run one command line on ``node`` as user ``ubuntu``, without a shell (see
    :meth:`twin.node.model.NodeModel.exec`)."""
    if not node.up:
        return result(255, err="ssh: connect to host: Connection refused\n")
    try:
        words = tokenize(command_line)
    except ShellRefused as e:
        return result(2, err=f"{e}\n")
    ctx = Ctx(root=False, stdin=stdin)
    argv = expand(words, node.files.glob, ctx.cwd)
    if not argv:
        return result(0)
    try:
        return await run(node, argv, ctx)
    except PermissionError as e:   # e.g. a symlink leading out of the root
        return result(1, err=f"{argv[0]}: {e}: Permission denied\n")
    except OSError as e:
        return result(1, err=f"{argv[0]}: {e.strerror or e}\n")
    except ValueError as e:   # e.g. a NUL byte in a path
        return result(1, err=f"{argv[0]}: {e}\n")
