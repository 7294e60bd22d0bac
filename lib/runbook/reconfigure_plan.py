"""Reconfigure's plan: what each node's config becomes and which k3s must restart.

Read-only: it reads the nodes' ``config.yaml`` and leftovers and the run journal, and
changes nothing. :func:`config_plans` turns each node's ``config.yaml`` into a
:class:`runbook.k3sconfig.NodePlan` (server-only keys on servers, defect 1;
``disable-kube-proxy`` with kube-proxy replacement, defect 2; masked secrets);
:func:`gather_leftovers` plans the cleanup (:mod:`runbook.leftovers`);
:func:`restart_needed` and :func:`restart_order` decide from the journal which k3s
restart this run still owes; :func:`changes_table` says per node what the journal
records. :mod:`runbook.reconfigure` carries the plan out (and re-exports these names).

Example:
    >>> plans = reconfigure.config_plans(s)                        # doctest: +SKIP
    >>> reconfigure.restart_order(s, plans)                        # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pandas as pd

from . import k3sconfig
from .leftovers import STEP_CLEANUP, LeftoverPlan, flannel_present, gather_node, plan_leftovers
from .k3sconfig import unit_for

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["STEP_RESTART", "STEP_WRITE", "read_configs", "config_plans", "PlanView",
           "gather_leftovers", "config_written", "restart_needed", "restart_order",
           "changes_table"]

STEP_RESTART = "restart-k3s"
STEP_WRITE = "write-file"


# =========================================================================== configs
def read_configs(s: Session) -> dict[str, str]:
    """Each node's current ``config.yaml`` (holds the join token: never print it)."""
    path = s.params.paths.k3s_config
    res = s.read_nodes(lambda n: n.read_file(path) if n.exists(path) else "",
                       description=f"read {path}").raise_for_failures()
    return {o.node: o.value or "" for o in res.outcomes}


def config_plans(s: Session, configs: dict[str, str] | None = None) -> list[k3sconfig.NodePlan]:
    """The ``config.yaml`` plan of every node (servers first), secrets masked in diffs."""
    configs = read_configs(s) if configs is None else configs
    return k3sconfig.plan(configs, s.params, s.values)


class PlanView:
    """The config plans as a notebook shows them: one diff per node, masked."""

    def __init__(self, plans: list[k3sconfig.NodePlan]) -> None:
        self.plans = plans

    def __repr__(self) -> str:
        return "\n\n".join(str(p) for p in self.plans)

    def _repr_html_(self) -> str:
        return "".join(p._repr_html_() for p in self.plans)


# =========================================================================== leftovers
def gather_leftovers(s: Session, nodes: Iterable[Node] | None = None) -> list[LeftoverPlan]:
    """Read each node's leftovers over SSH and plan their cleanup (read-only)."""
    paths = s.params.paths
    kpr = s.params.disable_kube_proxy(s.values)
    res = s.read_nodes(lambda n: gather_node(n, paths), description="gather leftovers",
                       nodes=None if nodes is None else list(nodes))
    res.raise_for_failures()
    return [plan_leftovers(o.value, kpr=kpr, backup_dir=paths.backup_dir, run_id=s.run_id)
            for o in res.outcomes]


# =========================================================================== restarts
def config_written(s: Session, node: str) -> bool:
    """True when this run wrote ``node``'s k3s config (journal: write-file done)."""
    path = s.params.paths.k3s_config
    return any((e.data or {}).get("path") == path
               for e in s.journal.entries(step=STEP_WRITE, node=node, status="done"))


def restart_needed(s: Session, n: Node, *, flannel_leftovers: bool | None = None) -> bool:
    """Whether ``n``'s k3s must restart to run with the new settings.

    Never when the journal records its restart as done in this run. Otherwise yes when
    this run changed its config or a server's (agents inherit the server's settings at
    start), or, with ``flannel_leftovers`` (flannel's device or CNI config still on the
    node while flannel is to be off), when k3s may still run flannel: e.g. a previous,
    abandoned run edited the config but never restarted the node. An extra restart of a
    node that did restart is harmless; a node left running flannel is not.
    """
    if s.journal.is_done(STEP_RESTART, node=n.name):
        return False
    if config_written(s, n.name):
        return True
    if n.role != "server" and any(config_written(s, sp.name) for sp in s.params.servers):
        return True
    return bool(flannel_leftovers) and s.params.k3s.flannel_backend == "none"


def restart_order(s: Session, plans: list[k3sconfig.NodePlan] | None = None) -> pd.DataFrame:
    """The restart plan: servers one at a time, then agents in batches.

    ``state`` is ``done`` (journal), ``planned`` (this run changes the node's config or
    a server's, which agents inherit at start) or ``not needed``.
    """
    changing = {p.node for p in plans or [] if not p.noop}
    server_changes = any(sp.name in changing for sp in s.params.servers)
    rows = []
    seen: dict[str, int] = {}    # batches counted within each role, as the restart tables count them
    for batch in s.fleet().batches():
        role = "server" if batch[0].role == "server" else "agent"
        seen[role] = b = seen.get(role, 0) + 1
        for n in batch:
            if s.journal.is_done(STEP_RESTART, node=n.name):
                state = "done"
            elif (restart_needed(s, n, flannel_leftovers=flannel_present(n, s.params.paths))
                  or n.name in changing or (n.role != "server" and server_changes)):
                state = "planned"
            else:
                state = "not needed"
            rows.append({"batch": b, "node": n.name, "role": n.role,
                         "command": f"systemctl restart {unit_for(n.role)}", "state": state})
    return pd.DataFrame(rows)


def changes_table(s: Session) -> pd.DataFrame:
    """Per node, from the journal: config written, k3s restarted, leftovers cleaned."""

    def state(step: str, node: str) -> str:
        es = s.journal.entries(step=step, node=node)
        if step == STEP_WRITE:
            es = [e for e in es if (e.data or {}).get("path") == s.params.paths.k3s_config]
        if not es:
            return "untouched"
        return {"done": "done", "failed": "FAILED", "intent": "started (unknown)"}.get(
            es[-1].status, es[-1].status)

    rows = [{"node": n.name, "role": n.role, "config": state(STEP_WRITE, n.name),
             "restart": state(STEP_RESTART, n.name), "cleanup": state(STEP_CLEANUP, n.name)}
            for n in s.params.servers + s.params.agents]
    return pd.DataFrame(rows, columns=["node", "role", "config", "restart", "cleanup"])
