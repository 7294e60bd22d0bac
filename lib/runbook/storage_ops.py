"""Longhorn's part of the swap, the steps that change things (the plan and its reasons are
in :mod:`runbook.storage`): scale the volume users down and back, recreate Longhorn's
instance managers while no volume is attached, and the storage checks.

Every change is journaled before it is made. The replica counts live in the journal fact
:data:`FACT` (written once per workload, before its first scale-down, never overwritten by
a rerun), which is what 04-verify and 05-rollback scale back to.

The two storage waits of 04-verify (and of 05-rollback's end) share one deadline
(:class:`StorageBudget`): ``limits.timeouts.storage_healthy`` counts from the scale-up and
covers both the volume users' pods Ready and every volume healthy, so a cluster whose
volumes cannot heal is reported after one timeout, not two.

Example (in 02-reconfigure, then 04-verify)::

    storage_ops.scale_down(s)            # journals each count, scales to 0, waits detached
    storage_ops.scale_up(s)              # back to the journaled counts; the budget starts
    v.add(storage_ops.healthy_check(s))  # every volume healthy within what is left of it
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from . import argocd, storage
from .cluster import pod_ready, resource_path
from .errors import GateFailed, WaitTimeout
from .verify import Check

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FACT", "StorageBudget", "scale_down", "scale_up", "recycle_managers", "healthy_check",
           "restore_pending"]

#: journal fact: workload key -> {kind, namespace, name, replicas, owner, owner_paused}
FACT = "storage_scaled"
_RES = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
#: what a volume wait reads (storage.read_volumes): re-checked at each change of either
VOLUME_WATCH = [("volumes.longhorn.io", storage.LONGHORN_NS), ("replicas.longhorn.io", storage.LONGHORN_NS)]


class StorageError(GateFailed):
    """A storage step that cannot go on safely: the phase stops here (details name the
    volumes, the hint says what to do)."""


def _timeout(s: Session) -> float:
    return float(s.params.limits.timeouts.storage_healthy)


#: the part of the shared storage wait :func:`scale_up` makes
USERS_READY = "the Longhorn volume users' pods Ready (storage_ops.scale_up)"
#: the part :func:`healthy_check` makes
VOLUMES_HEALTHY = "every Longhorn volume healthy (storage_ops.healthy_check)"


@dataclass
class StorageBudget:
    """``limits.timeouts.storage_healthy`` spent once across the two storage waits that
    follow a scale-up: the volume users' pods Ready (:func:`scale_up`), then every volume
    healthy (:func:`healthy_check`). One deadline, counted from the scale-up; the session
    holds it (``Session.storage_budget``) from :func:`scale_up` until :func:`healthy_check`
    takes it.

    Attributes:
        limit: the budget in seconds (the param). started: ``time.monotonic()`` at the
        scale-up. waited: seconds each part waited, by part. ran_out: the part that was
        still waiting when the deadline passed (None: it has not passed). pending: what
        that part was still waiting for.

    Example:
        >>> b = StorageBudget(900.0, started=100.0)
        >>> b.remaining(now=980.0), b.remaining(now=1100.0)
        (20.0, 0.0)
    """

    limit: float
    started: float = field(default_factory=lambda: time.monotonic())
    waited: dict[str, float] = field(default_factory=dict)
    ran_out: str | None = None
    pending: list[str] = field(default_factory=list)

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the deadline (never below 0)."""
        return max(0.0, self.started + self.limit - (time.monotonic() if now is None else now))


def _take_budget(s: Session) -> StorageBudget | None:
    """The budget a scale-up of this session started, once: a later check (a re-run of
    the cell, or node-by-node's check before each node) waits the whole limit again."""
    budget, s.storage_budget = s.storage_budget, None
    return budget


def _wait_progress(s: Session, budget: StorageBudget | None, latest: list[str]) -> Callable[[str], None]:
    """The progress line of a long storage wait: the wait's own line, the first few of
    what it still waits for, and (under a budget) the seconds left of it."""
    def say(message: str) -> None:
        first = f" (first: {'; '.join(latest[:3])})" if latest else ""
        left = (f"; {budget.remaining():.0f}s left of limits.timeouts.storage_healthy "
                f"({budget.limit:.0f}s, shared by the scale-up and the volume check)") if budget else ""
        s.progress(f"{message}{first}{left}")
    return say


def _owner_path(kind: str, namespace: str, name: str) -> str:
    api, plural = storage.PAUSABLE_OWNERS[kind]
    return resource_path(api, plural, namespace, name)


def _merge(s: Session, path: str, body: dict) -> Any:
    return s.cluster.request("PATCH", path, body=body, content_type="application/merge-patch+json",
                             query={"fieldManager": "phase22-runbook"})


def scale_down(s: Session, *, where: str = "02-reconfigure") -> pd.DataFrame | None:
    """Scale every workload that mounts a Longhorn volume to 0 (Argo CD's auto-sync paused
    first, each count journaled first, an operator-owned StatefulSet's owner paused first),
    then wait until every volume is detached. Nothing to do without Longhorn; a dry run
    shows the plan."""
    p = storage.plan(s.cluster)
    if not p.installed:
        return None
    if not s.require_execute(f"scaling {len(p.workloads)} Longhorn volume user(s) to 0"):
        return p.workload_frame()
    recorded: dict[str, Any] = dict(s.journal.get(FACT) or {})
    if any(w.replicas for w in p.workloads):
        # Argo CD's self-heal would scale them straight back: paused first, as 01-preflight
        # does (the first recorded policies are kept; 04-verify / 05-rollback restore them)
        argocd.pause(s.cluster, s.journal, namespace=s.params.argocd.namespace, execute=True,
                     pause_parents=s.params.argocd.pause_parents)
    for w in p.workloads:
        if w.replicas == 0 and w.key not in recorded:
            continue
        paused_before = None
        if w.owner:
            obj = s.cluster.request("GET", _owner_path(w.owner[0], w.namespace, w.owner[1]), ok_missing=True) or {}
            paused_before = bool((obj.get("spec") or {}).get("paused"))
        if w.key in recorded and recorded[w.key].get("restored"):
            # scaled down again (05-rollback after 04-verify): the count journaled before
            # the migration is still the one to come back to
            recorded[w.key] = dict(recorded[w.key], restored=False)
            s.journal.set(FACT, recorded)
        if w.key not in recorded:
            recorded[w.key] = {"kind": w.kind, "namespace": w.namespace, "name": w.name,
                               "replicas": w.replicas, "volumes": w.volumes,
                               "owner": list(w.owner) if w.owner else None, "owner_paused": paused_before}
            s.journal.set(FACT, recorded)       # the count to come back to, before any change
        if w.owner and not paused_before:
            with s.journal.step("storage-pause-owner", f"pause {w.owner[0]} {w.namespace}/{w.owner[1]} "
                                f"(spec.paused) so its operator leaves {w.key} scaled down",
                                before={"paused": paused_before}):
                _merge(s, _owner_path(w.owner[0], w.namespace, w.owner[1]), {"spec": {"paused": True}})
        with s.journal.step("storage-scale-down", f"scale {w.key} from {w.replicas} to 0 before the "
                            f"network changes ({where})", before={"replicas": w.replicas}):
            s.cluster.patch(_RES[w.kind], w.name, {"spec": {"replicas": 0}}, w.namespace)
    s.figure("storage_workloads_scaled_down", len(recorded))
    _wait_volumes(s, lambda r: r.detached(), "every Longhorn volume detached",
                  hint="a volume still attached is used by a pod no workload scales (see the plan's "
                       "'left for a person'): stop it by hand, or roll back")
    return p.workload_frame()


def scale_up(s: Session) -> pd.DataFrame | None:
    """Scale each workload back to its journaled count (and unpause an owner the run
    paused), then wait up to ``limits.timeouts.storage_healthy`` for their pods to be Ready
    (a workload still not Ready is shown, and left to the checks that follow). Nothing
    recorded: nothing to do."""
    recorded: dict[str, Any] = dict(s.journal.get(FACT) or {})
    rows = [{"workload": k, "replicas": v["replicas"], "restored": bool(v.get("restored"))}
            for k, v in recorded.items()]
    frame = pd.DataFrame(rows, columns=["workload", "replicas", "restored"])
    todo = {k: v for k, v in recorded.items() if not v.get("restored")}
    _take_budget(s)          # an earlier scale-up's deadline is not this one's
    if not todo or not s.require_execute(f"scaling {len(todo)} Longhorn volume user(s) back up"):
        return frame
    budget = s.storage_budget = StorageBudget(_timeout(s))
    for key, v in todo.items():
        with s.journal.step("storage-scale-up", f"scale {key} back to its journaled {v['replicas']}",
                            before={"replicas": 0}, data={"replicas": v["replicas"]}):
            s.cluster.patch(_RES[v["kind"]], v["name"], {"spec": {"replicas": v["replicas"]}}, v["namespace"])
        if v.get("owner") and not v.get("owner_paused"):
            kind, name = v["owner"]
            with s.journal.step("storage-unpause-owner", f"unpause {kind} {v['namespace']}/{name} as it was"):
                _merge(s, _owner_path(kind, v["namespace"], name), {"spec": {"paused": False}})
        recorded[key] = dict(v, restored=True)
        s.journal.set(FACT, recorded)

    latest: list[str] = []

    def ready() -> tuple[bool, list[str]]:
        pending = []
        for key, v in recorded.items():
            obj = s.cluster.get(_RES[v["kind"]], v["name"], v["namespace"]) or {}
            have = int((obj.get("status") or {}).get("readyReplicas") or 0)
            if have < int(v["replicas"]):
                pending.append(f"{key}: {have}/{v['replicas']} Ready")
        latest[:] = pending
        return not pending, pending

    t0 = time.monotonic()
    try:
        s.cluster.wait_for(ready, timeout=budget.remaining(), what="the Longhorn volume users Ready again",
                           progress=_wait_progress(s, budget, latest), watch=["deployments", "statefulsets"])
        pending: list[str] = []
    except WaitTimeout as e:
        # not a stop: the checks that follow (every pod Running, every volume healthy) fail
        # naming what is wrong, next to the data path checks that often say why
        pending = list(e.pending)
        budget.ran_out, budget.pending = USERS_READY, pending
        s.progress(f"not all Longhorn volume users Ready within limits.timeouts.storage_healthy "
                   f"({budget.limit:.0f}s): {'; '.join(pending[:5])}. The budget is spent: the volume "
                   "check below looks once without waiting; kubectl describe these workloads' pods (a "
                   "volume that cannot attach or is faulted shows in their events)")
    finally:
        budget.waited[USERS_READY] = time.monotonic() - t0
    late = {p.split(":", 1)[0] for p in pending}
    return pd.DataFrame([dict(r, restored=True, ready=r["workload"] not in late) for r in rows],
                        columns=["workload", "replicas", "restored", "ready"])


def restore_pending(s: Session) -> bool:
    """Whether the journal holds counts not restored yet (a run stopped between the two)."""
    return any(not v.get("restored") for v in (s.journal.get(FACT) or {}).values())


def recycle_managers(s: Session, candidates: list[dict], *, why: str) -> pd.DataFrame | None:
    """Recreate Longhorn's manager pods among ``candidates`` (pods on the old CNI's network)
    while no volume is attached, so longhorn-manager starts them on the new network.

    Refuses (StorageError naming them) while a volume is attached: deleting an instance
    manager under an attached volume detaches it and Longhorn deletes its workload pods.
    """
    if not storage.installed(s.cluster):
        return None
    mine = [p for p in candidates if storage.is_manager_pod(p)]
    frame = pd.DataFrame([{"pod": f"{p['metadata']['namespace']}/{p['metadata']['name']}",
                           "node": (p.get("spec") or {}).get("nodeName"), "uid": p["metadata"].get("uid")}
                          for p in mine], columns=["pod", "node", "uid"])
    if not mine or not s.require_execute(f"recreating {len(mine)} Longhorn manager pod(s)"):
        return frame
    attached = [r.name for r in storage.read_volumes(s.cluster) if not r.detached()]
    if attached and any(r.get("kind") == "InstanceManager" for p in mine
                        for r in p["metadata"].get("ownerReferences") or ()):
        raise StorageError(f"{len(attached)} Longhorn volume(s) still attached: {', '.join(attached[:10])}",
                           hint="recreating an instance manager under an attached volume detaches it; "
                                "scale its users down first (storage_ops.scale_down) and re-run this step")
    old = {}
    for p in mine:
        md = p["metadata"]
        with s.journal.step("storage-recycle-manager", f"delete {md['namespace']}/{md['name']} ({why}); "
                            "longhorn-manager recreates it under the same name",
                            node=(p.get("spec") or {}).get("nodeName"),
                            before={"uid": md.get("uid"), "owner": storage.owner_text(p)}):
            s.cluster.delete("pods", md["name"], md["namespace"])
        old[(md["namespace"], md["name"])] = md.get("uid")

    cordoned = {n["metadata"]["name"] for n in s.cluster.list("nodes") if (n.get("spec") or {}).get("unschedulable")}
    skip = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in mine
            if (p.get("spec") or {}).get("nodeName") in cordoned}
    if skip:
        # longhorn-manager creates no instance manager on an unschedulable node (handlePod):
        # its replicas stay down until the node is uncordoned; 04-verify's storage check says so
        s.progress("not waiting for Longhorn's manager pods on cordoned node(s) "
                   f"{', '.join(sorted(cordoned))}: Longhorn recreates them once uncordoned")

    def back() -> tuple[bool, list[str]]:
        pending = []
        for (ns, name), uid in old.items():
            if name.startswith("share-manager-") or (ns, name) in skip:
                continue      # longhorn-manager starts a share manager only when a pod uses the volume
            p = s.cluster.get("pods", name, ns)
            if p is None or p["metadata"].get("uid") == uid or not pod_ready(p):
                pending.append(f"{ns}/{name}: " + ("not recreated yet" if p is None or p["metadata"].get("uid") == uid
                                                    else "not Ready"))
        return not pending, pending

    s.cluster.wait_for(back, timeout=float(s.params.limits.timeouts.pods_ready),
                       what="Longhorn's instance managers recreated and Ready", progress=s.progress,
                       watch=[("pods", storage.LONGHORN_NS)])
    return frame


def _wait_volumes(s: Session, ok: Any, what: str, *, hint: str) -> None:
    def check() -> tuple[bool, list[str]]:
        bad = [f"{r.name}: {r.state}, robustness {r.robustness}" for r in storage.read_volumes(s.cluster)
               if not ok(r)]
        return not bad, bad

    try:
        s.cluster.wait_for(check, timeout=_timeout(s), what=what, progress=s.progress, interval=2.0,
                           watch=VOLUME_WATCH)
    except WaitTimeout as e:
        raise StorageError(f"not within limits.timeouts.storage_healthy ({_timeout(s):.0f}s): {what}",
                           details=list(e.pending), hint=hint) from e


def healthy_check(s: Session) -> Check:
    """Every Longhorn volume ``healthy`` (or cleanly detached) within
    ``limits.timeouts.storage_healthy``; fails naming the volumes that are not.

    After :func:`scale_up` in the same session, it waits only for what is left of that
    budget (:class:`StorageBudget`, counted from the scale-up), and a failure says which
    of the two waits ran the budget out. Otherwise (node-by-node's check before each node,
    a re-run of the cell) it waits the whole limit.
    """
    budget = _take_budget(s)
    if not storage.installed(s.cluster):
        return Check("storage-healthy", True, "Longhorn volumes healthy: Longhorn is not installed")
    limit = _timeout(s)
    bad: list[str] = []

    def check() -> tuple[bool, list[str]]:
        bad[:] = storage.health_problems(storage.read_volumes(s.cluster))
        return not bad, list(bad)

    t0 = time.monotonic()
    wait = budget.remaining() if budget is not None else limit
    try:
        s.cluster.wait_for(check, timeout=wait if s.execute else 0.0, what="every Longhorn volume healthy",
                           progress=_wait_progress(s, budget, bad), interval=2.0, watch=VOLUME_WATCH)
    except WaitTimeout:
        if budget is not None and budget.ran_out is None:
            budget.ran_out, budget.pending = VOLUMES_HEALTHY, list(bad)
    if budget is not None:
        budget.waited[VOLUMES_HEALTHY] = time.monotonic() - t0
    rows = storage.read_volumes(s.cluster)
    table = pd.DataFrame([{"volume": r.name, "state": r.state, "robustness": r.robustness,
                           "replica nodes": ", ".join(r.replica_nodes)} for r in rows],
                         columns=["volume", "state", "robustness", "replica nodes"])
    message = f"every Longhorn volume healthy within limits.timeouts.storage_healthy ({limit:.0f}s, {len(rows)} volumes"
    if budget is not None:
        message += f"; shared with the volume users' scale-up, which waited {budget.waited.get(USERS_READY, 0.0):.0f}s"
    details = list(bad)
    if bad and budget is not None and budget.ran_out == USERS_READY:
        details += [f"volume user not Ready after the scale-up: {p}" for p in budget.pending]
    return Check("storage-healthy", not bad, message + ")", details, table, hint=_healthy_hint(budget, limit))


def _healthy_hint(budget: StorageBudget | None, limit: float) -> str:
    """What to do when volumes are not healthy: which part of a shared budget ran out
    first, then how to tell a rebuilding volume from a lost one."""
    first = ""
    if budget is not None and budget.ran_out == USERS_READY:
        first = (f"the {limit:.0f}s budget (shared by the scale-up and this check) ran out while the volume "
                 "users' pods were not Ready, so this check looked once without waiting; those pods wait for "
                 "their volumes (kubectl describe pod: attach errors in the events). ")
    elif budget is not None and budget.ran_out == VOLUMES_HEALTHY:
        first = (f"the {limit:.0f}s budget ran out here, after the scale-up took "
                 f"{budget.waited.get(USERS_READY, 0.0):.0f}s of it. ")
    return (first + "kubectl -n longhorn-system get volumes.longhorn.io,replicas.longhorn.io -o wide: a degraded "
            "volume is rebuilding (wait, then re-run this check: a re-run waits the whole limit again; or raise "
            "the timeout); a faulted one lost its replicas (Longhorn's 'recover volume' guide, or 05-rollback)")
