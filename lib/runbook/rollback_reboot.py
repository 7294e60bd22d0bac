"""The rollback's reboot path (``rollback.reboot_nodes: true``): reboot instead of cleaning up.

A reboot clears everything Cilium left in the kernel (BPF programs, pinned maps, the
socket load balancer, devices and routes), every iptables rule, every ipset and ``/run``;
files stay, so the rollback removes Cilium's files and restores ``config.yaml`` and
flannel's files first (:mod:`runbook.rollback_datapath`, :func:`runbook.rollback.restore_files`),
then reboots each node k3s would have restarted:

* servers first, then agents, **one node at a time**: agents take flannel's settings from
  the server when k3s starts, so the server must be back first; and one node at a time
  keeps the rest of the cluster serving;
* each node must come back before the next goes down: a new boot id
  (``/proc/sys/kernel/random/boot_id``, read over SSH before and after), k3s active,
  ``flannel.1`` present, and the Node Ready in the API (for a server, the API answering
  again);
* each reboot is journaled (step ``reboot-node``, with the boot id before) so a rerun
  skips the nodes already rebooted in this rollback.

The kubelet re-creates every pod sandbox of a rebooted node with the CNI that works then
(flannel): no pod restart is needed on those nodes. The end state is the one of the
cleanup path: the same gates check it (:mod:`runbook.rollback_checks`).

Example:
    >>> rollback.reboot_nodes(s, plan)        # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from .cluster import node_ready
from .errors import ClusterError, NodeError, WaitTimeout
from .k3sconfig import unit_for
from .rollback_checks import nodes_named
from .rollback_plan import STEP_REBOOT, RollbackPlan

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["BOOT_ID", "boot_id", "reboot_nodes", "WINDOW"]

BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: the journal fact of the rollback's own outage window (same shape as the install's)
WINDOW = "rollback_window"


def boot_id(n: Node) -> str | None:
    """The node's boot id, None while it cannot be reached."""
    try:
        r = n.run("cat %s", BOOT_ID, timeout=10)
    except NodeError:
        return None
    return r.stdout.strip() if r.ok else None


def _back(s: Session, n: Node, before: str | None) -> tuple[bool, list[str]]:
    now = boot_id(n)
    if now is None:
        return False, [f"{n.name}: not reachable over SSH yet (rebooting)"]
    if before and now == before:
        return False, [f"{n.name}: still on the boot it had before (boot id {before[:8]})"]
    try:
        active = n.is_active(unit_for(n.role))
        flannel = "flannel.1" in {i.name for i in n.interfaces()}
    except NodeError as e:
        return False, [f"{n.name}: {e}"]
    try:
        obj = s.cluster.get("nodes", n.name)
    except ClusterError as e:
        return False, [f"{n.name}: the API does not answer yet ({e})"]
    pending = [m for m, bad in ((f"{n.name}: {unit_for(n.role)} not active yet", not active),
                                (f"{n.name}: flannel.1 not back yet", not flannel),
                                (f"{n.name}: Node not Ready yet", not (obj and node_ready(obj))))
               if bad]
    return not pending, pending


def _reboot_one(s: Session, n: Node) -> dict[str, Any]:
    before = boot_id(n)
    if before is None:
        raise NodeError(f"{n.name} cannot be reached over SSH: not rebooted", node=n.name,
                        hint="bring the node back (or reboot it from its console), then run the "
                             "rollback again: the nodes already rebooted are skipped")
    entry = s.journal.record(STEP_REBOOT, "systemctl reboot", node=n.name, data={"boot_id_before": before})
    t0 = time.monotonic()
    try:
        n.reboot()
        s.cluster.wait_for(lambda: _back(s, n, before), timeout=s.params.limits.timeouts.node_ready,
                           what=f"{n.name} back from its reboot, Ready on flannel", interval=1.0,
                           progress=s.progress)
    except WaitTimeout as e:
        s.journal.fail(entry, e)
        raise NodeError(f"{n.name} did not come back Ready on flannel within "
                        f"{s.params.limits.timeouts.node_ready:.0f}s after its reboot: "
                        + "; ".join(e.pending), node=n.name,
                        hint=f"read `journalctl -u {unit_for(n.role)}` on the node; the nodes after "
                             "it were not rebooted. Run the rollback again once it is back") from e
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    res = {"boot_id_after": boot_id(n), "seconds": round(time.monotonic() - t0, 1)}
    s.journal.complete(entry, result=res)
    return res


def reboot_nodes(s: Session, rp: RollbackPlan) -> pd.DataFrame | str | None:
    """Reboot the nodes k3s would restart, servers first, one at a time, each back Ready with
    ``flannel.1`` before the next (only with ``rollback.reboot_nodes``)."""
    if not rp.reboot_nodes:
        return "not chosen: rollback.reboot_nodes is false (Cilium's cleanup ran in a pod per node)"
    order = rp._restart_order(start=True)
    if not order or not s.require_execute("rebooting " + ", ".join(n.node for n in order)):
        return None
    rows = []
    for nr in order:                       # one node at a time, whatever the batch size
        n = nodes_named(s, [nr.node])[0]
        if STEP_REBOOT in nr.done:
            rows.append({"node": nr.node, "role": nr.role, "result": "already rebooted in this rollback"})
            continue
        if s.execute:   # the pods lose the network with the node (opened once, kept)
            s.journal.setdefault(WINDOW, {"opened_at": _now(), "closed_at": None, "seconds": None})
        res = _reboot_one(s, n)
        rows.append({"node": nr.node, "role": nr.role,
                     "result": f"rebooted; back Ready on flannel after {res['seconds']}s"})
    return pd.DataFrame(rows, columns=["node", "role", "result"])


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
