"""The node's service commands: ``systemctl``, ``journalctl`` and ``reboot``.

They act on the k3s unit (:mod:`twin.node.k3s_service`) and the node's reboot; starting,
stopping and rebooting need root and fail with systemd's messages otherwise. The oneshot
units in :data:`ONESHOT_UNITS` (``systemd-sysctl``, which applies ``/etc/sysctl.d`` and
which Cilium's ``sysctlfix`` restarts) are active and may be (re)started by root; the twin
keeps no kernel parameter values, so starting one changes nothing it could show.

Example:
    >>> await systemctl(node, ["is-active", "k3s"], Ctx(root=False, stdin=b""))  # doctest: +SKIP
    ExecResult(rc=0, stdout=b'active\\n', stderr=b'')
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel


#: oneshot units of every node that stay "active (exited)" once they ran at boot
ONESHOT_UNITS = ("systemd-sysctl",)


async def systemctl(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    k3s = node.k3s
    ops = [a for a in args if not a.startswith("-")]
    if ops == ["daemon-reload"]:
        return result(0) if ctx.root else result(1, err="Failed to reload daemon: Access denied\n")
    if ops == ["reboot"]:
        return await reboot(node, [], ctx)
    if len(ops) != 2:
        return result(1, err="systemctl: the twin supports systemctl start|stop|restart|"
                             "is-active|is-enabled|status UNIT\n")
    verb, unit = ops[0], ops[1].removesuffix(".service")
    if unit in ONESHOT_UNITS:
        return _oneshot(unit, verb, args, ctx)
    known = unit == k3s.unit
    if verb == "is-active":
        state = k3s.unit_state if known else "inactive"
        quiet = "-q" in args or "--quiet" in args
        return result(0 if state == "active" else 3, "" if quiet else state + "\n")
    if verb == "is-enabled":
        return result(0, "enabled\n") if known else result(
            1, err=f"Failed to get unit file state for {unit}.service: No such file or directory\n")
    if verb == "status":
        if not known:
            return result(4, err=f"Unit {unit}.service could not be found.\n")
        return result(0 if k3s.unit_state == "active" else 3, k3s.status_text())
    if verb not in ("start", "stop", "restart", "reload-or-restart", "try-restart"):
        return result(1, err=f'Unknown command verb {verb}.\n')
    if not ctx.root:
        return result(1, err=f"Failed to {verb} {unit}.service: Interactive authentication "
                             f"required.\nSee system logs and 'systemctl status {unit}.service' "
                             "for details.\n")
    if not known:
        return result(5, err=f"Failed to {verb} {unit}.service: Unit {unit}.service not found.\n")
    if verb == "stop":
        await k3s.stop()
        return result(0)
    if "--no-block" in args:
        # queue the job and return (systemd's --no-block): the unit may stay activating
        node.spawn(k3s.start() if verb == "start" else k3s.restart())
        return result(0)
    ok = await (k3s.start() if verb == "start" else k3s.restart())
    if not ok:
        return result(1, err=f"Job for {unit}.service failed because the control process exited "
                             f"with error code.\nSee \"systemctl status {unit}.service\" and "
                             f"\"journalctl -xeu {unit}.service\" for details.\n")
    return result(0)


def _oneshot(unit: str, verb: str, args: list[str], ctx: Ctx) -> ExecResult:
    if verb == "is-active":
        return result(0, "" if ("-q" in args or "--quiet" in args) else "active\n")
    if verb == "is-enabled":
        return result(0, "static\n")
    if verb == "status":
        return result(0, f"● {unit}.service\n     Active: active (exited)\n")
    if verb not in ("start", "restart", "reload-or-restart", "try-restart"):
        return result(1, err=f"Unknown command verb {verb}.\n") if verb != "stop" else result(0)
    if not ctx.root:
        return result(1, err=f"Failed to {verb} {unit}.service: Interactive authentication "
                             "required.\n")
    return result(0)


async def journalctl(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    lines = node.k3s.journal_lines
    if "-n" in args:
        try:
            lines = lines[-int(args[args.index("-n") + 1]):]
        except (IndexError, ValueError):
            return result(1, err="journalctl: -n needs a number\n")
    if "-u" in args:
        i = args.index("-u")
        unit = args[i + 1].removesuffix(".service") if i + 1 < len(args) else ""
        if unit != node.k3s.unit:
            return result(0, "-- No entries --\n")
    return result(0, "".join(f"{line}\n" for line in lines))


async def reboot(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    if not ctx.root:
        return result(1, err="Failed to set wall message, ignoring: Interactive authentication "
                             "required.\nCall to Reboot failed: Interactive authentication required.\n")

    async def later() -> None:
        await node.clock.sleep(0.5)   # the reply leaves before the node goes down
        await node.reboot()
    node.spawn(later())
    return result(0)
