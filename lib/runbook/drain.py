"""Cordon and drain one node the way ``kubectl drain --ignore-daemonsets`` does.

Pods leave through the Eviction API (``POST .../pods/<name>/eviction``), which refuses
(HTTP 429) an eviction that would break a PodDisruptionBudget; such a pod is tried
again ``retry`` seconds after the refusal, or as soon as its PDB changes (its allowed
disruptions, or the PDB gone), until the drain's ``timeout`` (F14 in
docs/node-by-node.md). The drain reads the cluster once: it LISTs every pod (each
controller's Ready pods are counted wherever they run) and every PDB at its start, and
then keeps that copy current from the API's watch (:class:`runbook.informer.Informers`,
as ``kubectl drain`` and client-go's informers do): two LISTs per drain however long it
runs, a re-LIST only when the watch's version is too old (410 Gone). Between rounds it
waits on those events rather than on a clock: it looks again as soon as a pod leaves or
a replacement turns Ready, and every :data:`POLL_SECONDS` anyway. Where no watch can be
opened the copy is re-LISTed instead, at most a :data:`LOOK_SHARE` of the time; an API
object without watches (a test's) is LISTed at each look, at the same bound. DaemonSet
pods, mirror (static) pods and finished pods stay, as with ``--ignore-daemonsets``.
Unlike ``kubectl drain``, pods of one controller leave one at a time: the next is
evicted only once the controller has as many Ready pods as before the last eviction, so
a workload whose replicas the earlier drains put on this node (and that has no PDB to
say so) keeps a Ready pod throughout. A pod behind a PDB the person listed in
``node_by_node.delete_instead_of_evict`` (an outage accepted in 01-preflight) is deleted
instead, each deletion journaled first. The drain ends when none of the pods it moves
is left on the node (their grace periods run out on the node, not here).

Example:
    >>> drain.cordon(c, "fast-skunk")                                  # doctest: +SKIP
    >>> drain.drain(c, "fast-skunk", timeout=300, retry=5, progress=print)  # doctest: +SKIP
    DrainResult(node='fast-skunk', evicted=7, deleted=0, seconds=21.4)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .cluster import pod_ready
from .errors import ClusterError, NodeError
from .informer import Informers, rest_after
from .node_by_node_gates import drain_moves, selector_matches
from .storage import LONGHORN_NS

if TYPE_CHECKING:
    from .cluster import Cluster
    from .journal import Journal

__all__ = ["cordon", "uncordon", "is_cordoned", "pods_to_move", "blocking_pdb", "drain",
           "DrainResult", "DrainTimeout", "POLL_SECONDS", "LOOK_SHARE"]

#: Seconds between two looks at the node's pods when no watch wakes the drain earlier
#: (``kubectl drain`` polls each evicted pod every second too).
POLL_SECONDS = 1.0
#: Seconds a burst of pod events (a ReplicaSet's replacements) may take to arrive before
#: the drain looks again: one look per burst, at most two LISTs of the pods a second
#: however busy the cluster (the watch sees every pod, the replacements on other nodes too).
SETTLE_SECONDS = 0.5
#: The shortest wait between two rounds (a retry already due is not a reason to spin).
MIN_PAUSE = 0.05
#: The most of its time the drain spends looking. Looking in the watched copy costs
#: milliseconds; a LIST of every pod of the cluster (where no watch can be opened) is the
#: API server's costliest read, a second or more on tens of thousands of pods. After a look
#: that took ``d`` seconds the next one waits at least ``d / LOOK_SHARE - d``, however many
#: events arrive: 3 s after a 1 s look; nothing more on a small cluster.
LOOK_SHARE = 0.25


#: What to say when longhorn-manager kept an instance manager's PDB (runbook.longhorn_drain).
LONGHORN_HINT = ("Longhorn keeps an instance manager's PDB while a volume is still attached to the node "
                 "or, under node-drain-policy block-if-contains-last-replica, while a replica there has "
                 "no healthy copy on another schedulable node: `kubectl -n longhorn-system get "
                 "volumes.longhorn.io` (a degraded volume needs its rebuild first) and longhorn-manager's "
                 "log on that node (\"removing ... PDB is blocked: ...\") say which; ")


class DrainTimeout(NodeError):
    """The drain did not empty the node in time (``pods``: what is left, and why)."""

    def __init__(self, message: str, *, node: str, pods: list[str], hint: str) -> None:
        super().__init__(message, node=node, hint=hint)
        self.pods = pods


@dataclass
class DrainResult:
    """What one drain did: pods evicted, pods deleted (accepted outages), time taken."""

    node: str
    evicted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    refusals: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"evicted": self.evicted, "deleted": self.deleted, "refusals": self.refusals,
                "seconds": round(self.seconds, 1)}

    def __repr__(self) -> str:
        return (f"DrainResult(node={self.node!r}, evicted={len(self.evicted)}, "
                f"deleted={len(self.deleted)}, seconds={self.seconds:.1f})")


def _key(pod: dict) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}"


def cordon(cluster: Cluster, node: str) -> bool:
    """Mark ``node`` unschedulable; returns whether it was schedulable before."""
    was = not is_cordoned(cluster, node)
    cluster.patch("nodes", node, {"spec": {"unschedulable": True}})
    return was


def uncordon(cluster: Cluster, node: str) -> None:
    """Mark ``node`` schedulable again."""
    cluster.patch("nodes", node, {"spec": {"unschedulable": None}})


def is_cordoned(cluster: Cluster, node: str) -> bool:
    obj = cluster.get("nodes", node) or {}
    return bool((obj.get("spec") or {}).get("unschedulable"))


def pods_to_move(pods: Sequence[dict], node: str) -> list[dict]:
    """The pods on ``node`` a drain moves (not DaemonSet, mirror or finished pods, and not
    already terminating)."""
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") == node and drain_moves(p)
            and not (p.get("metadata") or {}).get("deletionTimestamp")]


def blocking_pdb(pod: dict, pdbs: Sequence[dict]) -> str | None:
    """``namespace/name`` of the PDB that selects ``pod``, None when none does."""
    md = pod.get("metadata") or {}
    for b in pdbs:
        bmd = b.get("metadata") or {}
        if bmd.get("namespace") == md.get("namespace") and selector_matches(
                (b.get("spec") or {}).get("selector"), md.get("labels") or {}):
            return f"{bmd.get('namespace')}/{bmd.get('name')}"
    return None


def _owner(pod: dict) -> str | None:
    """The uid of the pod's controller (its ReplicaSet, StatefulSet ...), None without one."""
    ref = next((r for r in (pod.get("metadata") or {}).get("ownerReferences") or () if r.get("controller")), None)
    return (ref.get("uid") or f"{ref.get('kind')}/{ref.get('name')}") if ref else None


def _ready_by_owner(pods: Sequence[dict], leaving: set[str] = frozenset()) -> dict[str, int]:
    """Ready pods per controller, without the terminating ones and those whose uid is in
    ``leaving`` (evicted or deleted by the drain: a copy kept from the watch may not show
    it yet; by uid, since a StatefulSet's replacement has the evicted pod's name)."""
    out: dict[str, int] = {}
    for p in pods:
        owner = _owner(p)
        md = p.get("metadata") or {}
        if owner and not md.get("deletionTimestamp") and pod_ready(p) \
                and not (md.get("uid") and md["uid"] in leaving):
            out[owner] = out.get(owner, 0) + 1
    return out


def _evict(cluster: Cluster, pod: dict) -> str:
    """``evicted``, ``gone`` or ``refused`` (a PDB: 429; or the API's 500 for a pod behind
    two PDBs)."""
    md = pod["metadata"]
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": md["name"], "namespace": md["namespace"]}}
    try:
        res = cluster.request("POST", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/eviction",
                              body=body, ok_missing=True, raise_status=frozenset({429}))
    except ClusterError as e:
        if e.status in (429, 500):
            return "refused"
        raise
    return "gone" if res is None else "evicted"


def _pdb_state(pdbs: Sequence[dict], name: str | None) -> tuple[Any, ...] | None:
    """What a refused eviction's PDB looked like (None: no such PDB): a retry is due
    early once this changes."""
    for b in pdbs:
        md = b.get("metadata") or {}
        if name == f"{md.get('namespace')}/{md.get('name')}":
            st = b.get("status") or {}
            return md.get("resourceVersion"), st.get("disruptionsAllowed"), st.get("currentHealthy")
    return None


class _Listed:
    """Looks of an API object that serves no watch: each look LISTs pods (and PDBs)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def pods(self) -> list[dict]:
        return self.cluster.list("pods")

    def pdbs(self) -> list[dict]:
        return self.cluster.list("poddisruptionbudgets")

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        pass


class _Watched:
    """Looks in a copy of the cluster's pods and PDBs LISTed once and kept current from
    the watch (started at the first look); a wait returns at the next pod or PDB event."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen = Informers(cluster, ["pods", "poddisruptionbudgets"], settle=SETTLE_SECONDS,
                              poll=POLL_SECONDS, look_share=LOOK_SHARE)
        self.started = False

    def pods(self) -> list[dict]:
        if not self.started:
            self.started = True
            self.seen.start()
        return self.seen["pods"].items()

    def pdbs(self) -> list[dict]:
        return self.seen["poddisruptionbudgets"].items()

    def wait(self, timeout: float) -> None:
        self.seen.wait(timeout)

    def close(self) -> None:
        self.seen.close()


def _looks(cluster: Any) -> _Listed | _Watched:
    """How the drain sees the cluster: a watched copy when ``cluster`` serves watches (a
    :class:`~runbook.cluster.Cluster`), a LIST per look for an object that cannot."""
    if hasattr(cluster, "watch_stream") and hasattr(cluster, "pages"):
        return _Watched(cluster)
    return _Listed(cluster)


def drain(cluster: Cluster, node: str, *, timeout: float, retry: float = 5.0,
          delete_pdbs: Sequence[str] = (), journal: Journal | None = None,
          progress: Callable[[str], None] = print) -> DrainResult:
    """Evict every pod a drain moves off ``node`` (cordon it first), respecting PDBs.

    Args:
        timeout: seconds until the drain gives up (:class:`DrainTimeout`).
        retry: seconds before an eviction a PDB refused is asked again (sooner once
            that PDB changes).
        delete_pdbs: PDBs (``namespace/name``) whose pods are deleted instead of
            evicted: outages a person accepted (each deletion journaled first when a
            ``journal`` is given, as ``nbn-delete-pod``).
        progress: one line when the drain starts, then every ten seconds or so.

    Raises:
        DrainTimeout: pods left after ``timeout``; each with the PDB that refused it.

    Example:
        >>> drain(c, "fast-skunk", timeout=300, retry=5)   # doctest: +SKIP
    """
    looks = _looks(cluster)
    try:
        return _drain(cluster, node, timeout=timeout, retry=retry, delete_pdbs=delete_pdbs,
                      journal=journal, progress=progress, looks=looks)
    finally:
        looks.close()


def _drain(cluster: Cluster, node: str, *, timeout: float, retry: float, delete_pdbs: Sequence[str],
           journal: Journal | None, progress: Callable[[str], None], looks: Any) -> DrainResult:
    t0 = time.monotonic()
    out = DrainResult(node)
    last_report = -10.0
    asked: set[str] = set()
    #: uids of the pods evicted or deleted (not counted Ready, whatever the copy says yet)
    leaving: set[str] = set()
    refused_by: dict[str, str] = {}
    #: pod -> (when its eviction was refused, its PDB then): asked again once either is old
    refused_at: dict[str, tuple[float, tuple[Any, ...] | None]] = {}
    #: controller -> the Ready pods it had before its last eviction (wait for them again)
    inflight: dict[str, int] = {}
    first = True
    while True:
        look_started = time.monotonic()
        everywhere = looks.pods()
        moving = pods_to_move(everywhere, node)
        ready = _ready_by_owner(everywhere, leaving)
        for owner in [o for o, want in inflight.items() if ready.get(o, 0) >= want]:
            del inflight[owner]
        if first:
            progress(f"drain {node}: {len(moving)} pod(s) to move")
            first = False
        if not moving:
            out.seconds = time.monotonic() - t0
            progress(f"drain {node}: done in {out.seconds:.0f}s ({len(out.evicted)} evicted, "
                     f"{len(out.deleted)} deleted, {out.refusals} refusal(s) by a PDB)")
            return out
        pdbs = looks.pdbs()
        looked = time.monotonic()
        look_cost = looked - look_started
        for p in moving:
            key = _key(p)
            if key in asked:
                continue
            pdb = blocking_pdb(p, pdbs)
            if pdb is not None and pdb in delete_pdbs:
                md = p["metadata"]
                what = f"delete pod {key} instead of evicting it (PDB {pdb}: outage accepted)"
                if journal is not None:
                    journal.perform("nbn-delete-pod", what,
                                    lambda md=md: cluster.delete("pods", md["name"], md["namespace"]) and None,
                                    node=node, data={"pod": key, "pdb": pdb})
                else:
                    cluster.delete("pods", md["name"], md["namespace"])
                out.deleted.append(key)
                asked.add(key)
                leaving.add(md.get("uid") or "")
                continue
            owner = _owner(p)
            if owner is not None and owner in inflight:
                continue   # its sibling's replacement is not Ready yet
            if key in refused_at:
                when, state = refused_at[key]
                if time.monotonic() - when < retry and _pdb_state(pdbs, pdb) == state:
                    continue   # refused lately, and its PDB has not changed since
            verdict = _evict(cluster, p)
            if verdict == "refused":
                out.refusals += 1
                refused_by[key] = pdb or "a PodDisruptionBudget"
                refused_at[key] = (time.monotonic(), _pdb_state(pdbs, pdb))
                continue
            refused_by.pop(key, None)
            refused_at.pop(key, None)
            out.evicted.append(key)
            asked.add(key)
            leaving.add((p.get("metadata") or {}).get("uid") or "")
            if owner is not None:
                inflight[owner] = ready.get(owner, 0)
        waited = time.monotonic() - t0
        left = [_key(p) for p in moving]
        if waited >= timeout:
            lines = [f"{_key(p)}: " + (f"eviction refused by {refused_by[_key(p)]}" if _key(p) in refused_by
                                       else "evicted, still terminating" if _key(p) in asked
                                       else "waiting for a sibling's replacement to be Ready") for p in moving]
            longhorn = any(r.startswith(f"{LONGHORN_NS}/instance-manager-") for r in refused_by.values())
            raise DrainTimeout(
                f"drain of {node} did not finish in {timeout:.0f}s: {len(left)} pod(s) left "
                f"({'; '.join(lines[:8])})", node=node, pods=lines,
                hint=(LONGHORN_HINT if longhorn else "")
                + "a PDB that allows no disruption blocks the drain: scale its workload up, relax "
                     "the PDB, or list it in node_by_node.delete_instead_of_evict to accept its outage "
                     "(01-preflight's PDB gate names each); then re-run: the run continues with this "
                     f"node (it stays cordoned). To give up instead: `kubectl uncordon {node}` or 05-rollback.")
        if waited - last_report >= 10:
            blocked = sum(1 for k in left if k in refused_by)
            waiting = sum(1 for p in moving if _key(p) not in asked and _owner(p) in inflight)
            progress(f"drain {node}: {len(left)} pod(s) left after {waited:.0f}s"
                     + (f", {blocked} refused by a PDB (retried every {retry:g}s, sooner when it changes)"
                        if blocked else "")
                     + (f", {waiting} waiting for a sibling's replacement to be Ready" if waiting else ""))
            last_report = waited
        # a refused pod is asked again once its retry is due; an evicted one is only waited for
        for k in list(refused_by):
            asked.discard(k)
        for k in set(refused_at) - set(left):
            del refused_at[k]      # gone without its eviction (deleted by someone else)
        now = time.monotonic()
        due = min((when + retry - now for when, _ in refused_at.values()), default=POLL_SECONDS)
        pause = max(MIN_PAUSE, min(POLL_SECONDS, due, timeout - (now - t0)))
        looks.wait(pause)          # back at the next pod or PDB event (a watched copy)
        # a big cluster's LISTs are not repeated back to back, however busy its events
        rest = looked + rest_after(look_cost, LOOK_SHARE) - time.monotonic()
        if rest > 0:
            time.sleep(min(rest, max(0.0, timeout - (time.monotonic() - t0))))
