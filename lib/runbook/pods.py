"""Restarting pods so their owners recreate them: the one implementation the install
(pods started under flannel move to Cilium) and the rollback (pods started under
Cilium move back to flannel) both use.

A pod keeps the network of the CNI that created its sandbox, so after a CNI swap the
only way onto the new network is a new pod. Deleting a pod is only safe when something
recreates it; who that is comes from the pod's ``ownerReferences`` (the controller
reference, else the first one):

* ``workload``: a built-in controller that recreates a deleted pod by itself
  (:data:`RECREATING_OWNERS`: ReplicaSet, StatefulSet, DaemonSet, Job,
  ReplicationController). Always restarted, in batches, kube-system first (everything
  needs DNS), waiting for each batch's replacements to be Ready.
* ``custom``: anything else, i.e. a custom resource (Longhorn's InstanceManager, any
  operator's pods). Whether such a pod may be deleted is the named policy's
  ``custom`` action: an operator may not recreate it, or may not want it gone under
  attached volumes.
* ``none``: no owner at all; nothing would recreate it. Never deleted.

A skipped pod is never lost from view: :class:`RestartResult` lists it with its owner
so the phase page can show it as a follow-up for a person.

Which policy each phase uses is the table :data:`PHASE_POLICY` (one line per phase).

Example:
    >>> pod = {"metadata": {"namespace": "longhorn-system", "name": "instance-manager-1",
    ...        "ownerReferences": [{"kind": "InstanceManager", "name": "im-1", "controller": True}]}}
    >>> owner_class(pod)
    'custom'
    >>> p = plan_restart([pod], policy=POLICIES["workloads-only"])
    >>> p.restart, [str(s) for s in p.skipped]
    ([], ['longhorn-system/instance-manager-1 (owned by InstanceManager/im-1: restart it through its operator)'])
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

import pandas as pd

from .cluster import pod_display_status, pod_ready
from .presentation import frame_html

if TYPE_CHECKING:
    from .cluster import Cluster
    from .journal import Journal

__all__ = ["RECREATING_OWNERS", "OwnerPolicy", "POLICIES", "PHASE_POLICY", "policy_for",
           "owner_of", "owner_class", "pod_key", "pod_problem", "SkippedPod", "RestartPlan",
           "plan_restart", "RestartResult", "restart", "wait_replacements", "STEP", "follow_up_text"]

#: the journal step of every restart batch (install and rollback)
STEP = "restart-pods"

#: built-in controllers that recreate a deleted pod by themselves
RECREATING_OWNERS = ("ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController")

OwnerClass = Literal["workload", "custom", "none"]
Action = Literal["restart", "skip"]

#: the least time a batch waits for its replacements when the run's budget is nearly spent
MIN_BATCH_WAIT = 30.0


@dataclass(frozen=True)
class OwnerPolicy:
    """What a restart does with a pod, by the class of its owner.

    Attributes:
        name: the policy's key in :data:`POLICIES`.
        custom: ``restart`` or ``skip`` for pods owned by a custom resource.
        why: one line for people (shown with the plan).

    ``workload`` pods are always restarted and ``none`` pods always skipped: these are
    facts of Kubernetes, not choices.
    """

    name: str
    custom: Action
    why: str

    def action(self, cls: OwnerClass) -> Action:
        """``restart`` or ``skip`` for a pod of owner class ``cls``.

        >>> POLICIES["any-owner"].action("custom"), POLICIES["workloads-only"].action("custom")
        ('restart', 'skip')
        """
        if cls == "workload":
            return "restart"
        if cls == "custom":
            return self.custom
        return "skip"


#: The named policies a phase can use.
POLICIES: dict[str, OwnerPolicy] = {
    "any-owner": OwnerPolicy(
        "any-owner", custom="restart",
        why="every pod with an owner is deleted; its owner (a workload controller or an "
            "operator) is trusted to recreate it"),
    "workloads-only": OwnerPolicy(
        "workloads-only", custom="skip",
        why="only pods of built-in workload controllers are deleted; a custom resource's "
            "pods are listed for a person to restart through their operator"),
}

#: Which policy each phase uses: the install and the rollback share one, never deleting a
#: custom resource's pod (its operator may not recreate it, or not want it gone under
#: attached volumes). Longhorn's own manager pods are the storage plan's business
#: (:mod:`runbook.storage`: recreated only while no volume is attached).
PHASE_POLICY: dict[str, str] = {
    "install": "workloads-only",
    "rollback": "workloads-only",
}


def policy_for(phase: str) -> OwnerPolicy:
    """The :class:`OwnerPolicy` of ``phase`` (from :data:`PHASE_POLICY`).

    >>> policy_for("rollback").name
    'workloads-only'
    """
    return POLICIES[PHASE_POLICY[phase]]


# ------------------------------------------------------------------------- owners (pure)
def owner_of(pod: dict) -> tuple[str | None, str | None]:
    """``(kind, name)`` of the pod's controller reference (else its first owner), or
    ``(None, None)`` for a pod without owner."""
    refs = pod["metadata"].get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return (ref.get("kind"), ref.get("name")) if ref else (None, None)


def owner_class(pod: dict) -> OwnerClass:
    """``workload``, ``custom`` or ``none`` (see the module's docstring)."""
    kind, _ = owner_of(pod)
    if kind is None:
        return "none"
    return "workload" if kind in RECREATING_OWNERS else "custom"


def pod_key(pod: dict) -> str:
    """``namespace/name``."""
    return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"


def pod_problem(pod: dict) -> str:
    """One line saying why a pod is not Ready: name, node, reason and message."""
    md, st = pod["metadata"], pod.get("status") or {}
    msg = ""
    for cs in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("message"):
            msg = waiting["message"]
            # A crash loop's waiting message is only the kubelet's back-off; why it
            # crashed is the last crash's termination message (FallbackToLogsOnError).
            crashed = ((cs.get("lastState") or {}).get("terminated") or {}).get("message")
            if waiting.get("reason") == "CrashLoopBackOff" and crashed:
                msg = f"{msg}; last crash: {crashed.strip().splitlines()[-1]}"
            break
    if not msg:
        for c in st.get("conditions") or []:
            if c.get("status") != "True" and c.get("message"):
                msg = c["message"]
                break
    node = (pod.get("spec") or {}).get("nodeName") or "<unscheduled>"
    return f"{md.get('namespace')}/{md['name']} on {node}: {pod_display_status(pod)}" + (f": {msg}" if msg else "")


@dataclass
class SkippedPod:
    """A pod the restart leaves alone, with its owner, for a person to follow up.

    Attributes:
        pod: ``namespace/name``; node: where it runs; owner_kind, owner_name: its
        controller (None: no owner); reason: why it was not deleted and what to do.
    """

    pod: str
    node: str | None
    owner_kind: str | None
    owner_name: str | None
    reason: str
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def owner(self) -> str:
        """``Kind/name`` or ``-``."""
        return f"{self.owner_kind}/{self.owner_name}" if self.owner_kind else "-"

    def __str__(self) -> str:
        return f"{self.pod} ({self.reason})"


def follow_up_text(skipped: list[SkippedPod], *, after: str, limit: int = 20) -> str | None:
    r"""The pods a restart left alone as one message for the report's "Needs attention"
    (one line per pod, with its owner and what to do), or None when none was left.

    Example:
        >>> follow_up_text([SkippedPod("ns/p", "n1", None, None, "no controller: recreate it by hand")],
        ...                after="the install")
        '1 pod was not restarted by the install; a person must:\nns/p (no controller: recreate it by hand)'
    """
    if not skipped:
        return None
    lines = [str(sk) for sk in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"... and {len(skipped) - limit} more (see the phase page)")
    n = len(skipped)
    return (f"{n} pod{' was' if n == 1 else 's were'} not restarted by {after}; a person must:\n"
            + "\n".join(lines))


def _skip(pod: dict) -> SkippedPod:
    kind, name = owner_of(pod)
    reason = (f"owned by {kind}/{name}: restart it through its operator" if kind
              else "no controller: delete and recreate it by hand")
    return SkippedPod(pod_key(pod), (pod.get("spec") or {}).get("nodeName"), kind, name, reason, pod)


@dataclass
class RestartPlan:
    """What :func:`restart` does: pods to delete (kube-system first) and pods left alone."""

    policy: OwnerPolicy
    restart: list[dict]
    skipped: list[SkippedPod]


def plan_restart(pods: list[dict], *, policy: OwnerPolicy) -> RestartPlan:
    """Split candidate pods by owner under ``policy`` (pure).

    The pods to restart are ordered kube-system first (DNS), then by namespace and
    name; the skipped ones keep the order they came in.
    """
    todo = [p for p in pods if policy.action(owner_class(p)) == "restart"]
    skipped = [_skip(p) for p in pods if policy.action(owner_class(p)) != "restart"]
    todo.sort(key=lambda p: (p["metadata"].get("namespace") != "kube-system",
                             p["metadata"].get("namespace"), p["metadata"]["name"]))
    return RestartPlan(policy, todo, skipped)


# ------------------------------------------------------------------------- the restart
@dataclass
class RestartResult:
    """What :func:`restart` did.

    Attributes:
        deleted: ``namespace/name`` of each pod deleted (in a dry run: each pod that
        would be); skipped: the pods left alone with their owners; batches: batches
        done; seconds: time taken; policy: the owner policy's name; owners: ``Kind/name``
        of each planned pod's owner (the one expected to recreate it).
    """

    deleted: list[str] = field(default_factory=list)
    skipped: list[SkippedPod] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    policy: str = ""
    owners: dict[str, str] = field(default_factory=dict)

    def follow_ups(self) -> list[str]:
        """One line per skipped pod: which pod, its owner, what a person should do."""
        return [str(s) for s in self.skipped]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"pod": p, "action": "restarted", "owner": self.owners.get(p, "-")}
                             for p in self.deleted] +
                            [{"pod": s.pod, "action": "skipped", "owner": s.owner} for s in self.skipped],
                            columns=["pod", "action", "owner"])

    def _repr_html_(self) -> str:
        head = (f"<p>Restarted <b>{len(self.deleted)}</b> pod(s) in {self.batches} batch(es) "
                f"in {self.seconds:.1f}s; skipped {len(self.skipped)}.</p>")
        follow = "".join(f"<li>{html.escape(line)}</li>" for line in self.follow_ups())
        return (head + frame_html(self.table(), max_rows=40)
                + (f"<p>Left for a person:</p><ul>{follow}</ul>" if follow else ""))


def restart(cluster: Cluster, plan: RestartPlan, *, action: str, batch_size: int = 10,
            execute: bool = False, journal: Journal | None = None, timeout: float = 600,
            timeout_scope: Literal["batch", "run"] = "batch",
            progress: Callable[[str], None] | None = None) -> RestartResult:
    """Delete the planned pods in batches and wait for each batch's replacements to be Ready.

    Each batch is journaled (step ``restart-pods``) BEFORE its pods are deleted; a batch
    that fails or times out is journaled failed with the reason, then the error is raised.

    Args:
        cluster: the API choke point.
        plan: from :func:`plan_restart`.
        action: the journal's words for a batch, with ``{n}`` for its size, e.g.
            ``"restart {n} pod(s) so they get a flannel sandbox"``.
        batch_size: pods deleted at once (``limits.pod_restart_batch``).
        execute: False returns what would be deleted, deleting nothing.
        journal: where each batch is recorded (None: not recorded).
        timeout: seconds; with ``timeout_scope="batch"`` each batch waits this long;
            with ``"run"`` it is the budget of the whole restart (each batch still
            gets at least 30 s).
        progress: called with one line per batch.

    Example:
        >>> p = plan_restart(candidates, policy=policy_for("rollback"))        # doctest: +SKIP
        >>> restart(c, p, action="restart {n} pod(s)", execute=True, journal=j)  # doctest: +SKIP
    """
    t0 = time.monotonic()
    todo = plan.restart
    res = RestartResult(skipped=list(plan.skipped), policy=plan.policy.name,
                        owners={pod_key(p): "/".join(str(x) for x in owner_of(p)) for p in todo})
    if not execute:
        res.deleted = [pod_key(p) for p in todo]
        return res
    size = max(1, batch_size)
    for i in range(0, len(todo), size):
        batch = todo[i:i + size]
        names = [pod_key(p) for p in batch]
        entry = journal.record(STEP, action.format(n=len(batch)), data=names) if journal else None
        try:
            for p in batch:
                cluster.delete("pods", p["metadata"]["name"], p["metadata"]["namespace"])
            res.deleted.extend(names)
            res.batches += 1
            if progress:
                progress(f"batch {res.batches}: restarted {len(batch)} pod(s) ({len(res.deleted)}/{len(todo)})")
            wait = timeout if timeout_scope == "batch" else max(MIN_BATCH_WAIT, timeout - (time.monotonic() - t0))
            wait_replacements(cluster, batch, timeout=wait)
        except Exception as e:
            # the journal must not keep an open intent: say the batch failed, and why
            if entry is not None:
                journal.fail(entry, e)  # type: ignore[union-attr]
            raise
        if entry is not None:
            journal.complete(entry, result={"restarted": len(batch)})  # type: ignore[union-attr]
    res.seconds = time.monotonic() - t0
    return res


def wait_replacements(cluster: Cluster, batch: list[dict], *, timeout: float) -> None:
    """Wait until each deleted pod's owner has its pods back and Ready.

    Raises:
        WaitTimeout: naming each owner still waiting and why (its pods' problems).
    """
    owners = {(p["metadata"]["namespace"], r["kind"], r["name"])
              for p in batch for r in p["metadata"].get("ownerReferences") or []}
    old_uids = {p["metadata"]["uid"] for p in batch}

    def check() -> tuple[bool, list[str]]:
        pending = []
        for ns, kind, name in sorted(owners):
            pods = [p for p in cluster.list("pods", ns)
                    if any(r.get("name") == name and r.get("kind") == kind
                           for r in p["metadata"].get("ownerReferences") or [])]
            if any(p["metadata"]["uid"] in old_uids for p in pods):
                pending.append(f"{ns}/{kind}/{name}: old pod still terminating")
                continue
            bad = [pod_problem(p) for p in pods if not pod_ready(p)]
            if bad or not pods:
                pending.append(f"{ns}/{kind}/{name}: " + ("; ".join(bad) if bad else "no pod yet"))
        return not pending, pending

    cluster.wait_for(check, timeout=timeout, what="restarted pods to be Ready", interval=0.5,
                     watch=sorted({("pods", ns) for ns, _, _ in owners}))
