"""Starting several k3s servers (embedded etcd) together, as the rollback must.

A k3s server with embedded etcd is an etcd member; after a full stop, the first server
started waits for a quorum of members (``n/2 + 1``) before its API serves and before it
tells systemd it started (k3s' unit is ``Type=notify`` with ``TimeoutStartSec=0``), so
``systemctl start`` on it alone never returns. The rollback therefore queues the start
of every server (``systemctl --no-block start``, journaled), then waits until each is
active, then for the API (docs/topologies.md).

Example:
    >>> etcd_quorum.queue_start(s, node, "k3s", step="start-k3s", already=False)  # doctest: +SKIP
    'queued'
    >>> etcd_quorum.wait_active(s, ["set-hog", "sly-owl", "sly-fox"])  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .k3sconfig import unit_for

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["several_servers", "queue_start", "wait_active", "pending_reason"]


def several_servers(group: list) -> bool:
    """A group of the restart order that is several servers (an etcd cluster).

    >>> class N: role = "server"
    >>> several_servers([N(), N()]), several_servers([N()])
    (True, False)
    """
    return len(group) > 1 and all(getattr(n, "role", "") == "server" for n in group)


def queue_start(s: Session, node: Node, unit: str, *, step: str, already: bool) -> str:
    """``systemctl --no-block start unit`` on one server, journaled first (``step``)."""
    if already and node.is_active(unit):
        return "already running"
    entry = s.journal.record(step, f"systemctl --no-block start {unit}", node=node.name, data={"unit": unit})
    try:
        node.run("systemctl --no-block start %s", unit, sudo=True).check_output()
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result={"queued": True})
    return "queued"


def pending_reason(node: str, state: str, servers: int) -> str:
    """Why a queued server is not active yet, and what to read if it stays so.

    ``activating`` is both a member waiting for etcd's quorum and a k3s that fails and
    is restarted by systemd (``Restart=always``): only its journal tells them apart.

    >>> pending_reason("sly-fox", "activating", 3)
    "sly-fox: k3s activating (waiting for etcd's quorum, 2 of 3 servers; or failing and restarted by systemd: read `journalctl -u k3s` there)"
    >>> pending_reason("sly-fox", "inactive", 3)
    'sly-fox: k3s inactive (the queued start did not run: `systemctl status k3s` there)'
    """
    if state == "activating":
        return (f"{node}: k3s activating (waiting for etcd's quorum, {servers // 2 + 1} of {servers} "
                "servers; or failing and restarted by systemd: read `journalctl -u k3s` there)")
    if state == "failed":
        return f"{node}: k3s failed (read `journalctl -u k3s` there, then `systemctl start k3s`)"
    return f"{node}: k3s {state} (the queued start did not run: `systemctl status k3s` there)"


def wait_active(s: Session, names: list[str]) -> None:
    """Wait until k3s is active on every named server (over SSH), then for the API to
    serve each node object."""
    wanted = set(names)
    nodes = [n for n in s.nodes if n.name in wanted]

    def all_active() -> tuple[bool, list[str]]:
        res = s.read_nodes(lambda n: n.unit_state(unit_for(n.role)).state, description="k3s active",
                           nodes=nodes).raise_for_failures()
        waiting = {o.node: o.value for o in res.outcomes if o.value != "active"}
        return not waiting, [pending_reason(name, state, len(nodes)) for name, state in sorted(waiting.items())]

    s.cluster.wait_for(all_active, timeout=s.params.limits.timeouts.node_ready,
                       what="k3s active on every server", interval=1.0, progress=s.progress)
    for name in names:
        s.cluster.get("nodes", name)
