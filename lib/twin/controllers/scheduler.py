"""Scheduling predicates, the scheduler and the node lifecycle controller of the twin.

Pure helpers (no store, unit-tested):

- :func:`tolerates` / :func:`untolerated_taints`: taints vs tolerations, as the
  scheduler's TaintToleration plugin and the NoExecute taint manager read them;
- :func:`matches_node_selector` / :func:`matches_required_affinity`: ``nodeSelector`` and
  ``requiredDuringSchedulingIgnoredDuringExecution`` nodeSelectorTerms (In, NotIn,
  Exists, DoesNotExist, Gt, Lt; ``matchFields`` on ``metadata.name``);
- :func:`node_fits`: the whole filter, returning the reason a node is refused in the
  real scheduler's words, so Pending pods read like on a cluster.

Controllers:

- :class:`Scheduler` binds pods without ``spec.nodeName`` to the fitting node with the
  fewest pods, or leaves them Pending with ``PodScheduled=False``/``Unschedulable``.
- :class:`NodeLifecycle` mirrors kube-controller-manager's node lifecycle controller:
  the ``node.kubernetes.io/not-ready`` (Ready=False) and ``unreachable`` (Ready=Unknown)
  taints, NoSchedule + NoExecute, follow the node's Ready condition; pods on a node
  with a NoExecute taint they do not tolerate are evicted (deleted) once their
  ``tolerationSeconds`` have passed (300 cluster seconds for not-ready/unreachable
  when the pod has no such toleration: the DefaultTolerationSeconds admission plugin
  gives every pod that default).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .base import Cache, Controller, ObjKey

log = logging.getLogger("twin.controllers.scheduler")

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
DEFAULT_TOLERATION_SECONDS = 300
_DEFAULTED_KEYS = (TAINT_NOT_READY, TAINT_UNREACHABLE)


# --------------------------------------------------------------------------- pure
def toleration_matches(tol: dict, taint: dict) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes semantics).

    An empty ``effect`` matches every effect; operator ``Exists`` with an empty key
    matches every taint; ``Equal`` (the default) compares values.
    """
    effect = tol.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = tol.get("key") or ""
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return not key or key == taint.get("key")
    if key != taint.get("key"):
        return False
    return (tol.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: list[dict] | None, taint: dict) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations or ())


def untolerated_taints(tolerations: list[dict] | None, taints: list[dict] | None,
                       effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> list[dict]:
    """The node taints with one of ``effects`` that no toleration matches."""
    return [t for t in taints or () if t.get("effect") in effects and not tolerates(tolerations, t)]


def _labels(node: dict) -> dict:
    return (node.get("metadata") or {}).get("labels") or {}


def matches_node_selector(selector: dict | None, node: dict) -> bool:
    """``spec.nodeSelector``: every key must be present with the same value."""
    labels = _labels(node)
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _match_requirement(req: dict, values_of: dict) -> bool:
    key = req.get("key")
    op = req.get("operator")
    vals = req.get("values") or []
    present = key in values_of
    val = values_of.get(key)
    if op == "In":
        return present and val in vals
    if op == "NotIn":
        return not present or val not in vals
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            a, b = int(val), int(vals[0])
        except (TypeError, ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def match_node_selector_term(term: dict, node: dict) -> bool:
    """One nodeSelectorTerm: all its matchExpressions and matchFields must hold.

    A term with no requirement at all matches nothing (as in Kubernetes).
    """
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = _labels(node)
    if not all(_match_requirement(r, labels) for r in exprs):
        return False
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    return all(_match_requirement(r, node_fields) for r in fields)


def matches_required_affinity(affinity: dict | None, node: dict) -> bool:
    """``requiredDuringSchedulingIgnoredDuringExecution``: the terms are ORed."""
    req = (((affinity or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not req:
        return True
    terms = req.get("nodeSelectorTerms") or []
    return any(match_node_selector_term(t, node) for t in terms)


def node_fits(pod_spec: dict, node: dict, *, ignore_unschedulable: bool = False) -> str | None:
    """Why ``node`` cannot run a pod with ``pod_spec``, or None when it fits.

    The reasons are the real scheduler's per-node messages, e.g.
    ``"node(s) had untolerated taint {node.kubernetes.io/not-ready: }"``.
    """
    tolerations = pod_spec.get("tolerations") or []
    spec = node.get("spec") or {}
    if spec.get("unschedulable") and not ignore_unschedulable:
        taint = {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}
        if not tolerates(tolerations, taint):
            return "node(s) were unschedulable"
    if not matches_node_selector(pod_spec.get("nodeSelector"), node) or \
            not matches_required_affinity(pod_spec.get("affinity"), node):
        return "node(s) didn't match Pod's node affinity/selector"
    bad = untolerated_taints(tolerations, spec.get("taints"))
    if bad:
        t = bad[0]
        return f"node(s) had untolerated taint {{{t.get('key')}: {t.get('value') or ''}}}"
    return None


def unschedulable_message(reasons: list[str], total: int) -> str:
    """The scheduler's FailedScheduling message from the per-node reasons."""
    if total == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reasons)
    parts = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
    return (f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are "
            f"available: {total} Preemption is not helpful for scheduling.")


def ready_condition(node: dict) -> dict | None:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c
    return None


def node_ready_status(node: dict) -> str:
    """"True", "False" or "Unknown" (no Ready condition reads as Unknown)."""
    c = ready_condition(node)
    return str(c.get("status")) if c else "Unknown"


def eviction_delay(pod_spec: dict, taint: dict) -> float | None:
    """Cluster seconds a pod may stay on a node with this NoExecute taint.

    None means forever (a matching toleration without ``tolerationSeconds``); 0 means
    evict now. For not-ready/unreachable the DefaultTolerationSeconds admission plugin
    gives pods without a matching toleration 300 s.
    """
    # Like the taint manager's getMinTolerationTime: the smallest tolerationSeconds of
    # the matching tolerations; forever only when none of them sets a limit.
    matching = [t for t in pod_spec.get("tolerations") or () if toleration_matches(t, taint)]
    if matching:
        limits = [float(t["tolerationSeconds"]) for t in matching
                  if t.get("tolerationSeconds") is not None]
        return max(0.0, min(limits)) if limits else None
    if taint.get("key") in _DEFAULTED_KEYS:
        return float(DEFAULT_TOLERATION_SECONDS)
    return 0.0


def _is_active_pod(pod: dict) -> bool:
    md = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not md.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def now_rfc3339() -> str:
    import datetime as _dt
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- scheduler
class Scheduler(Controller):
    """Binds unscheduled pods (``schedulerName`` default-scheduler or unset)."""

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("scheduler", clock)
        self.store = store
        self.cache = cache
        self.types = types
        self.unschedulable: set[ObjKey] = set()
        self.bound = 0
        self.events: Any = None      # an EventRecorder (the workloads component sets it)

    def wants(self, pod: dict) -> bool:
        spec = pod.get("spec") or {}
        return (not spec.get("nodeName") and _is_active_pod(pod)
                and spec.get("schedulerName", "default-scheduler") == "default-scheduler")

    def on_event(self, event_type: str, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        if kind == ("", "pods"):
            key = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
            if event_type == "DELETED":
                self.unschedulable.discard(key)
            elif self.wants(obj):
                if key not in self.unschedulable or event_type == "ADDED" or \
                        (old is not None and (old.get("spec") != obj.get("spec"))):
                    self.enqueue(key)
            else:
                self.unschedulable.discard(key)
        elif kind == ("", "nodes"):
            # A node change may make waiting pods fit (taint removed, node added ...).
            if event_type == "DELETED" or old is None or _sched_view(old) != _sched_view(obj):
                for key in list(self.unschedulable):
                    self.enqueue(key)

    def reconcile(self, key: ObjKey) -> None:
        pod = self.cache.get(("", "pods"), *key)
        if pod is None or not self.wants(pod):
            self.unschedulable.discard(key)
            return
        spec = pod.get("spec") or {}
        nodes = list(self.cache.all(("", "nodes")))
        best, best_load, reasons = None, None, []
        for node in nodes:
            why = node_fits(spec, node)
            if why is not None:
                reasons.append(why)
                continue
            name = node["metadata"]["name"]
            load = len(self.cache.pods_by_node.get(name) or ())
            if best is None or load < best_load or (load == best_load and name < best):
                best, best_load = name, load
        pods_rt = self.types["pods"]
        if best is None:
            message = unschedulable_message(reasons, len(nodes))
            self.unschedulable.add(key)
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message}
            cur = _condition(pod, "PodScheduled")
            if (pod.get("status") or {}).get("phase") == "Pending" and cur and \
                    cur.get("status") == "False" and cur.get("message") == message:
                return

            def mark(p: dict) -> None:
                st = p.setdefault("status", {})
                st["phase"] = "Pending"
                _set_condition(st, cond)
            self.store.mutate(pods_rt, key[0] or None, key[1], mark, subresource="status")
            if self.events is not None:
                self.events.record(pod, "Warning", "FailedScheduling", message,
                                   component="default-scheduler")
            return
        self.unschedulable.discard(key)

        def bind(p: dict) -> None:
            # One write, like the binding subresource: nodeName and PodScheduled together.
            p.setdefault("spec", {})["nodeName"] = best
            st = p.setdefault("status", {})
            st.setdefault("phase", "Pending")
            _set_condition(st, {"type": "PodScheduled", "status": "True"})
        bound = self.store.mutate(pods_rt, key[0] or None, key[1], bind)
        self.bound += 1
        if self.events is not None:
            self.events.record(bound, "Normal", "Scheduled",
                               f"Successfully assigned {key[0]}/{key[1]} to {best}",
                               component="default-scheduler")


def _sched_view(node: dict) -> tuple:
    spec = node.get("spec") or {}
    return (repr(spec.get("taints")), spec.get("unschedulable"),
            repr((node.get("metadata") or {}).get("labels")))


def _condition(obj: dict, ctype: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == ctype:
            return c
    return None


def _set_condition(status: dict, cond: dict) -> None:
    """Set a condition, keeping lastTransitionTime unless the status flips."""
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == cond["type"]:
            if c.get("status") != cond["status"] or not c.get("lastTransitionTime"):
                c["lastTransitionTime"] = now_rfc3339()
            c["status"] = cond["status"]
            for k in ("reason", "message"):
                if cond.get(k) is not None:
                    c[k] = cond[k]
                else:
                    c.pop(k, None)
            c.setdefault("lastProbeTime", None)
            return
    new = {"type": cond["type"], "status": cond["status"], "lastProbeTime": None,
           "lastTransitionTime": now_rfc3339()}
    for k in ("reason", "message"):
        if cond.get(k) is not None:
            new[k] = cond[k]
    conds.append(new)


# --------------------------------------------------------------------------- node lifecycle
class NodeLifecycle(Controller):
    """Ready condition -> not-ready/unreachable taints, and NoExecute evictions.

    It acts only on what the node model writes (the Ready condition, taints); the time a
    taint was first seen is kept in cluster seconds, so evictions follow the clock's
    speed factor.
    """

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict,
                 kubelet: Any | None = None) -> None:
        super().__init__("node-lifecycle", clock)
        self.store = store
        self.cache = cache
        self.types = types
        self.kubelet = kubelet
        self._taint_seen: dict[tuple[str, str, str], float] = {}
        self._noexec: set[str] = set()     # nodes that carry a NoExecute taint
        self.evicted: list[tuple[str, str, str]] = []   # (namespace, name, node), for describe/tests
        self.events: Any = None      # an EventRecorder (the workloads component sets it)
        self._ready_seen: dict[str, str] = {}     # node -> last Ready status reported

    def on_event(self, event_type: str, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        if kind == ("", "nodes"):
            name = obj["metadata"]["name"]
            if event_type == "DELETED":
                for k in [k for k in self._taint_seen if k[0] == name]:
                    del self._taint_seen[k]
                self._noexec.discard(name)
                # Pods bound to a node that no longer exists are collected (PodGC).
                self.enqueue(name)
                return
            ospec = (old.get("spec") or {}) if old else {}
            nspec = obj.get("spec") or {}
            if old is None or node_ready_status(old) != node_ready_status(obj) or \
                    ospec.get("taints") != nspec.get("taints") or \
                    bool(ospec.get("unschedulable")) != bool(nspec.get("unschedulable")):
                self.enqueue(name)
        elif kind == ("", "pods") and event_type == "ADDED":
            node = (obj.get("spec") or {}).get("nodeName")
            if node and node in self._noexec_nodes():
                self.enqueue(node)
        elif kind == ("", "pods") and event_type == "MODIFIED" and old is not None:
            node = (obj.get("spec") or {}).get("nodeName")
            if node and not (old.get("spec") or {}).get("nodeName") and node in self._noexec_nodes():
                self.enqueue(node)

    def _noexec_nodes(self) -> set[str]:
        return self._noexec

    def reconcile(self, name: str) -> None:
        node = self.cache.get(("", "nodes"), "", name)
        if node is None:
            for pod in self.cache.pods_on(name):
                md = pod["metadata"]
                try:
                    self.store.delete(self.types["pods"], md.get("namespace"), md["name"])
                except Exception:
                    log.debug("collecting %s failed", md["name"], exc_info=True)
            return
        status = node_ready_status(node)
        self._report_readiness(node, status)
        want: list[dict] = []
        if status == "False":
            want = [{"key": TAINT_NOT_READY, "effect": e} for e in ("NoSchedule", "NoExecute")]
        elif status == "Unknown":
            want = [{"key": TAINT_UNREACHABLE, "effect": e} for e in ("NoSchedule", "NoExecute")]
        if (node.get("spec") or {}).get("unschedulable"):
            # TaintNodesByCondition: a cordoned node carries the unschedulable taint.
            want.append({"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"})
        taints = (node.get("spec") or {}).get("taints") or []
        managed = {(TAINT_NOT_READY, "NoSchedule"), (TAINT_NOT_READY, "NoExecute"),
                   (TAINT_UNREACHABLE, "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute"),
                   (TAINT_UNSCHEDULABLE, "NoSchedule")}
        have = {(t.get("key"), t.get("effect")) for t in taints if (t.get("key"), t.get("effect")) in managed}
        want_set = {(t["key"], t["effect"]) for t in want}
        if have != want_set:
            def fix(n: dict) -> None:
                spec = n.setdefault("spec", {})
                kept = [t for t in spec.get("taints") or []
                        if (t.get("key"), t.get("effect")) not in managed]
                for t in want:
                    t = dict(t)
                    if t["effect"] == "NoExecute":
                        t["timeAdded"] = now_rfc3339()
                    kept.append(t)
                if kept:
                    spec["taints"] = kept
                else:
                    spec.pop("taints", None)
            node = self.store.mutate(self.types["nodes"], None, name, fix)
            if status == "Unknown":
                self._mark_pods_not_ready(name)
        self._evict(node)

    def _report_readiness(self, node: dict, status: str) -> None:
        """Event NodeNotReady / NodeReady on a change of the node's Ready condition (the
        node lifecycle controller's "Node X status is now: ...")."""
        name = node["metadata"]["name"]
        before = self._ready_seen.get(name)
        self._ready_seen[name] = status
        if self.events is None or before is None or before == status:
            return
        word = "NodeReady" if status == "True" else "NodeNotReady"
        self.events.record(node, "Normal", word, f"Node {name} status is now: {word}",
                           component="node-controller")

    def _mark_pods_not_ready(self, node: str) -> None:
        """Like MarkPodsNotReady: nobody else updates pods of a node whose kubelet is gone."""
        for pod in self.cache.pods_on(node):
            cond = _condition(pod, "Ready")
            if not _is_active_pod(pod) or (cond is not None and cond.get("status") == "False"):
                continue

            def unready(p: dict) -> None:
                st = p.setdefault("status", {})
                _set_condition(st, {"type": "Ready", "status": "False"})
                for cs in st.get("containerStatuses") or ():
                    cs["ready"] = False
            try:
                self.store.mutate(self.types["pods"], pod["metadata"].get("namespace"),
                                  pod["metadata"]["name"], unready, subresource="status")
                if self.events is not None:
                    self.events.record(pod, "Warning", "NodeNotReady", "Node is not ready",
                                       component="node-controller")
            except Exception:  # the pod may be gone meanwhile
                log.debug("marking %s not ready failed", pod["metadata"]["name"], exc_info=True)

    def _evict(self, node: dict) -> None:
        name = node["metadata"]["name"]
        now = self.clock.cluster_now()
        noexec = [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == "NoExecute"]
        current = set()
        for t in noexec:
            k = (name, t.get("key") or "", "NoExecute")
            current.add(k)
            self._taint_seen.setdefault(k, now)
        for k in [k for k in self._taint_seen if k[0] == name and k not in current]:
            del self._taint_seen[k]
        if not noexec:
            self._noexec.discard(name)
            return
        self._noexec.add(name)
        soonest: float | None = None
        for pod in self.cache.pods_on(name):
            if not _is_active_pod(pod):
                continue
            spec = pod.get("spec") or {}
            deadline: float | None = None
            for t in noexec:
                delay = eviction_delay(spec, t)
                if delay is None:
                    continue
                d = self._taint_seen[(name, t.get("key") or "", "NoExecute")] + delay
                deadline = d if deadline is None else min(deadline, d)
            if deadline is None:
                continue
            if deadline <= now + 1e-6:
                md = pod["metadata"]
                log.info("evicting %s/%s from %s", md.get("namespace"), md["name"], name)
                if self.events is not None:
                    self.events.record(pod, "Normal", "TaintManagerEviction",
                                       f"Marking for deletion Pod {md.get('namespace')}/{md['name']}",
                                       component="taint-eviction-controller")
                try:
                    self.store.delete(self.types["pods"], md.get("namespace"), md["name"])
                    self.evicted.append((md.get("namespace") or "", md["name"], name))
                except Exception:
                    log.debug("evicting %s failed", md["name"], exc_info=True)
            else:
                soonest = deadline if soonest is None else min(soonest, deadline)
        if soonest is not None:
            self.requeue_after(name, soonest - now)
