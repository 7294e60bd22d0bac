"""Workload controllers of the twin: Deployment, ReplicaSet, DaemonSet, StatefulSet.

They follow kube-controller-manager closely enough that ``kubectl rollout status`` and
``helm --wait`` read their status fields as on a cluster:

- **Deployment** -> ReplicaSet ``<deploy>-<pod-template-hash>`` (hash of the pod
  template, label ``pod-template-hash``, annotation ``deployment.kubernetes.io/revision``
  on both). A template change creates a new ReplicaSet at full size and scales the old
  ones down as new pods become Ready (a simplified RollingUpdate: surge first, never
  fewer Ready pods than wanted); ``Recreate`` scales the old ones to 0 first. Old
  ReplicaSets beyond ``revisionHistoryLimit`` (default 10) are deleted. The current
  ReplicaSet is found by comparing templates (ignoring ``pod-template-hash``), as the
  real controller does, so a fixture with another hash function is not rolled out.
- **ReplicaSet** -> pods ``<rs>-<5 chars>`` with a controlling ownerReference.
- **DaemonSet** -> one pod per eligible node (nodeSelector, required node affinity,
  taints vs the template's tolerations plus the automatic DaemonSet tolerations),
  ``spec.nodeName`` set directly. RollingUpdate honours ``maxUnavailable`` (default 1):
  old pods are deleted at most that many unavailable at a time and recreated with the
  new template; ``OnDelete`` leaves them. Pods on nodes with an untolerated NoExecute
  taint or no longer matching the selector are deleted; an untolerated NoSchedule taint
  only stops new pods (``numberMisscheduled``).
- **StatefulSet** -> pods ``<sts>-0..N-1``; with ``OrderedReady`` (default) pod i+1 is
  created only once pod i is Running and Ready; ``Parallel`` creates them all.
  ``volumeClaimTemplates`` become PVCs ``<tpl>-<sts>-<i>`` that are Bound at once
  (no provisioner is modelled). RollingUpdate replaces pods from the highest ordinal
  down, one at a time, honouring ``partition``.

Also: ``progressDeadlineSeconds`` (cluster time) gives ``ProgressDeadlineExceeded``;
orphans matching a selector are adopted (a StatefulSet only claims its own pod names);
objects created without the apps/v1 spec defaults (``updateStrategy`` ...) get them
(:func:`workload_defaults`), because kubectl and helm read them.

Not modelled: ``minReadySeconds`` (a Ready pod counts as available), maxSurge (a new
ReplicaSet is sized at once), ControllerRevision objects, Jobs. Garbage collection of
dependents (ownerReferences) is the store's job.
"""
from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
import math
import random
import re
from typing import Any

from ..selectors import from_label_selector
from .base import CACHED_KINDS, Cache, Controller, ObjKey, controller_ref, obj_key
from .kubelet import Kubelet, SandboxPolicy
from .scheduler import (NodeLifecycle, Scheduler, TAINT_NOT_READY, TAINT_UNREACHABLE,
                        TAINT_UNSCHEDULABLE, _condition, now_rfc3339,
                        untolerated_taints, matches_node_selector, matches_required_affinity)

log = logging.getLogger("twin.controllers.workloads")

POD = ("", "pods")
NODE = ("", "nodes")
RS = ("apps", "replicasets")
DEPLOY = ("apps", "deployments")
DS = ("apps", "daemonsets")
STS = ("apps", "statefulsets")

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
REVISION_HASH_LABEL = "controller-revision-hash"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # k8s rand.SafeEncodeString alphabet
MAX_CREATES_PER_PASS = 500


# --------------------------------------------------------------------------- pure helpers
def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Map each character onto the vowel-free alphabet Kubernetes uses in names."""
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def pod_template_hash(template: dict | None, collision_count: int = 0) -> str:
    """Stable short hash of a pod template, like the Deployment controller's.

    FNV-32a over a canonical rendering of the template (plus the collision count),
    written in decimal and safe-encoded: e.g. ``"5d8c7b6f9"``. The
    ``pod-template-hash`` label itself is ignored, so an RS template hashes like its
    Deployment's.

    Example:
        >>> pod_template_hash({"spec": {"containers": [{"name": "a", "image": "x"}]}}) == \\
        ...     pod_template_hash({"spec": {"containers": [{"image": "x", "name": "a"}]}})
        True
    """
    data = canonical(strip_hash(template)) + (f"/{collision_count}" if collision_count else "")
    return safe_encode(str(_fnv32a(data.encode())))


def _prune(value: Any) -> Any:
    """Drop None, {} and [] recursively: a typed client (kubectl rollout undo) sends
    ``resources: {}`` and ``creationTimestamp: null`` where the original had nothing."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _prune(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def strip_hash(template: dict | None) -> dict:
    """A pruned copy of a pod template without the ``pod-template-hash`` label."""
    # _prune builds new dicts and lists (leaves are immutable), so it is already a copy.
    t = _prune(template or {})
    md = t.get("metadata")
    if isinstance(md, dict):
        labels = md.get("labels")
        if isinstance(labels, dict):
            labels.pop(HASH_LABEL, None)
            if not labels:
                md.pop("labels", None)
        md.pop("creationTimestamp", None)
        if not md:
            t.pop("metadata", None)
    return t


def templates_equal(a: dict | None, b: dict | None) -> bool:
    return canonical(strip_hash(a)) == canonical(strip_hash(b))


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(SAFE_ALPHABET) for _ in range(n))


def pod_ready(pod: dict) -> bool:
    c = _condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_active(pod: dict) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool, default: int) -> int:
    """An intOrString field such as maxUnavailable ("25%" or 2) against ``total``."""
    if value is None:
        return default
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = float(value[:-1])
        except ValueError:
            return default
        x = total * pct / 100.0
        return int(math.ceil(x) if round_up else math.floor(x))
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def daemonset_tolerations(pod_spec: dict) -> list[dict]:
    """The template tolerations plus those the DaemonSet controller always adds."""
    tols = list(pod_spec.get("tolerations") or [])
    auto = [(TAINT_NOT_READY, "NoExecute"), (TAINT_UNREACHABLE, "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            (TAINT_UNSCHEDULABLE, "NoSchedule")]
    if pod_spec.get("hostNetwork"):
        auto.append(("node.kubernetes.io/network-unavailable", "NoSchedule"))
    for key, effect in auto:
        if not any(t.get("key") == key and t.get("effect") == effect and
                   (t.get("operator") or "Equal") == "Exists" for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": effect})
    return tols


def daemonset_node_decision(pod_spec: dict, node: dict) -> tuple[bool, bool]:
    """``(should_run, should_continue_running)`` of a DaemonSet pod on ``node``."""
    if not matches_node_selector(pod_spec.get("nodeSelector"), node) or \
            not matches_required_affinity(pod_spec.get("affinity"), node):
        return False, False
    taints = (node.get("spec") or {}).get("taints")
    tols = daemonset_tolerations(pod_spec)
    if untolerated_taints(tols, taints, ("NoExecute",)):
        return False, False
    if untolerated_taints(tols, taints, ("NoSchedule",)):
        return False, True
    return True, True


def workload_defaults(kind: str, obj: dict) -> bool:
    """Fill the apps/v1 spec defaults a real API server adds; True when something changed.

    kubectl (``rollout status``) and helm (``--wait``) read ``updateStrategy.type``: a
    DaemonSet or StatefulSet without it is "not RollingUpdate" to them. The controllers
    apply this as a fallback on objects created without the defaults; the API server
    can call it at create time so ``generation`` stays 1. The pod template is never
    touched (it feeds the template hash).
    """
    spec = obj.setdefault("spec", {})
    before = canonical(spec)
    if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        spec.setdefault("replicas", 1)
    if kind == "Deployment":
        strat = spec.setdefault("strategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "DaemonSet":
        strat = spec.setdefault("updateStrategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
    elif kind == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strat = spec.setdefault("updateStrategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            strat.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("revisionHistoryLimit", 10)
    return canonical(spec) != before


def default_tolerations(tolerations: list[dict] | None) -> list[dict]:
    """Add the DefaultTolerationSeconds admission tolerations (300 s) when absent."""
    tols = list(tolerations or [])
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        if not any((t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"))
                   and t.get("effect") in (None, "", "NoExecute") for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300})
    return tols


def new_pod(template: dict, *, name: str, namespace: str, owner: dict,
            extra_labels: dict | None = None, node_name: str | None = None,
            daemonset: bool = False) -> dict:
    """A pod from a pod template, with the defaults the API server would add."""
    tmd = template.get("metadata") or {}
    labels = dict(tmd.get("labels") or {})
    labels.update(extra_labels or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy",
                     "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
        c.setdefault("resources", {})
    if daemonset:
        spec["tolerations"] = daemonset_tolerations(spec)
    spec["tolerations"] = default_tolerations(spec.get("tolerations"))
    if node_name:
        spec["nodeName"] = node_name
    md: dict = {"name": name, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": owner.get("apiVersion", "apps/v1"),
                                     "kind": owner["kind"], "name": owner["metadata"]["name"],
                                     "uid": owner["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}]}
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec,
            "status": {"phase": "Pending", "qosClass": _qos(spec)}}


def _qos(spec: dict) -> str:
    from .kubelet import qos_class
    return qos_class(spec)


def owner_ref_for(obj: dict, kind: str, api_version: str = "apps/v1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _set_cond(conds: list[dict], ctype: str, status: str, reason: str, message: str,
              now: str, *, with_update_time: bool = True) -> None:
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            if c.get("status") != status or c.get("reason") != reason or c.get("message") != message:
                if with_update_time:
                    c["lastUpdateTime"] = now
            c.update(status=status, reason=reason, message=message)
            return
    c = {"type": ctype, "status": status, "reason": reason, "message": message,
         "lastTransitionTime": now}
    if with_update_time:
        c["lastUpdateTime"] = now
    conds.append(c)


def deployment_status(deploy: dict, new_rs: dict | None, rses: list[dict], now: str,
                      created: bool = False) -> dict:
    """The ``status`` of a Deployment from its ReplicaSets (what rollout status reads)."""
    spec = deploy.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    prev = deploy.get("status") or {}

    def st(rs: dict, f: str) -> int:
        return int((rs.get("status") or {}).get(f) or 0)
    replicas = sum(st(r, "replicas") for r in rses)
    updated = st(new_rs, "replicas") if new_rs else 0
    ready = sum(st(r, "readyReplicas") for r in rses)
    available = sum(st(r, "availableReplicas") for r in rses)
    total_spec = sum(int((r.get("spec") or {}).get("replicas") or 0) for r in rses)
    status: dict = {"observedGeneration": (deploy.get("metadata") or {}).get("generation", 1),
                    "replicas": replicas, "updatedReplicas": updated,
                    "readyReplicas": ready, "availableReplicas": available,
                    "unavailableReplicas": max(0, total_spec - available)}
    if not ready:
        status.pop("readyReplicas")
    if not available:
        status.pop("availableReplicas")
    for k in ("replicas", "updatedReplicas"):
        if not status[k]:
            status.pop(k)
    if not status["unavailableReplicas"]:
        status.pop("unavailableReplicas")
    strategy = spec.get("strategy") or {}
    max_unavail = 0
    if (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
        max_unavail = resolve_int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                             desired, round_up=False, default=desired // 4)
    conds = [dict(c) for c in prev.get("conditions") or ()]
    if available >= desired - max_unavail:
        _set_cond(conds, "Available", "True", "MinimumReplicasAvailable",
                  "Deployment has minimum availability.", now)
    else:
        _set_cond(conds, "Available", "False", "MinimumReplicasUnavailable",
                  "Deployment does not have minimum availability.", now)
    if new_rs is not None:
        rs_name = new_rs["metadata"]["name"]
        complete = (updated == desired and replicas == desired and available >= desired
                    and st(new_rs, "availableReplicas") >= desired)
        if complete:
            _set_cond(conds, "Progressing", "True", "NewReplicaSetAvailable",
                      f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        elif created:
            _set_cond(conds, "Progressing", "True", "NewReplicaSetCreated",
                      f'Created new replica set "{rs_name}"', now)
        else:
            _set_cond(conds, "Progressing", "True", "ReplicaSetUpdated",
                      f'ReplicaSet "{rs_name}" is progressing.', now)
    order = {"Available": 0, "Progressing": 1}
    conds.sort(key=lambda c: order.get(c.get("type"), 9))
    status["conditions"] = conds
    if prev.get("collisionCount") is not None:
        status["collisionCount"] = prev["collisionCount"]
    return status


def replicaset_status(rs: dict, pods: list[dict]) -> dict:
    """The ``status`` of a ReplicaSet from its active pods."""
    tlabels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    fully = sum(1 for p in pods
                if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v
                       for k, v in tlabels.items()))
    ready = sum(1 for p in pods if pod_ready(p))
    status: dict = {"replicas": len(pods), "fullyLabeledReplicas": fully, "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": (rs.get("metadata") or {}).get("generation", 1)}
    for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if not status[k]:
            status.pop(k)
    prev = rs.get("status") or {}
    if prev.get("conditions"):
        status["conditions"] = prev["conditions"]
    return status


def _revision(obj: dict) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def _ctime(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""


def _selector_matches(selector: dict | None, obj: dict) -> bool:
    sel = _compiled(selector)
    return sel is not None and sel.matches_object(obj)


def _compiled(selector: dict | None) -> Any:
    """A parsed selector, cached by its canonical text; None selects nothing.

    An empty selector adopts nothing here (apps/v1 forbids it anyway).
    """
    text = canonical(selector)
    if text in _SELECTORS:
        return _SELECTORS[text]
    try:
        sel = from_label_selector(selector)
    except Exception:
        sel = None
    if sel is not None and sel.empty:
        sel = None
    if len(_SELECTORS) > 10000:
        _SELECTORS.clear()
    _SELECTORS[text] = sel
    return sel


_SELECTORS: dict[str, Any] = {}


# --------------------------------------------------------------------------- base for workload ctrls
class _Workload(Controller):
    kind_key: tuple[str, str] = ("", "")

    def __init__(self, name: str, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__(name, clock)
        self.store = store
        self.cache = cache
        self.types = types

    def first_sight(self, obj: dict) -> None:
        """Hook run before defaulting (revision bookkeeping of converged objects)."""

    def _rt(self, kind: tuple[str, str]) -> Any:
        return self.types[kind[1]]

    def _write_status(self, kind: tuple[str, str], obj: dict, status: dict) -> None:
        if canonical(obj.get("status") or {}) == canonical(status):
            return
        md = obj["metadata"]

        def put(o: dict) -> None:
            o["status"] = status
        self.store.mutate(self._rt(kind), md.get("namespace"), md["name"], put, subresource="status")

    def _owned_pods(self, owner: dict, adopt_kind: str,
                    may_adopt: Any = None) -> list[dict]:
        """Active pods controlled by ``owner``, adopting matching orphans first.

        ``may_adopt(pod)`` narrows adoption (a StatefulSet only claims its own names).
        """
        md = owner["metadata"]
        orphans = self.cache.orphans_in(POD, md.get("namespace") or "")
        sel = _compiled((owner.get("spec") or {}).get("selector")) if orphans else None
        for orphan in orphans:
            if sel is not None and pod_active(orphan) and sel.matches_object(orphan) and \
                    (may_adopt is None or may_adopt(orphan)) and \
                    not (orphan.get("metadata") or {}).get("deletionTimestamp"):
                self._adopt(POD, orphan, owner, adopt_kind)
        return [p for p in self.cache.owned(POD, md["uid"]) if pod_active(p)]

    def _adopt(self, kind: tuple[str, str], obj: dict, owner: dict, owner_kind: str) -> None:
        ref = owner_ref_for(owner, owner_kind)

        def add(o: dict) -> None:
            refs = o["metadata"].setdefault("ownerReferences", [])
            if not any(r.get("controller") for r in refs):
                refs.append(ref)
        try:
            self.store.mutate(self._rt(kind), obj["metadata"].get("namespace"),
                              obj["metadata"]["name"], add)
        except Exception:
            log.debug("adopting %s failed", obj["metadata"]["name"], exc_info=True)

    def _create_pod(self, pod: dict, fixed_name: bool = False) -> dict | None:
        from ..store import AlreadyExists
        base = pod["metadata"]["name"]
        for attempt in range(8):
            try:
                return self.store.create(pod, rtype=self.types["pods"])
            except AlreadyExists:
                if fixed_name:
                    return None
                pod["metadata"]["name"] = base[:-5] + random_suffix()
        return None

    def _delete(self, kind: tuple[str, str], obj: dict) -> None:
        from ..store import NotFound
        try:
            self.store.delete(self._rt(kind), obj["metadata"].get("namespace"), obj["metadata"]["name"])
        except NotFound:
            pass

    def _live(self, key: ObjKey) -> dict | None:
        """The live object, or None when gone/deleting or just defaulted (requeued)."""
        obj = self.cache.get(self.kind_key, *key)
        if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        self.first_sight(obj)
        probe = {"spec": copy.deepcopy(obj.get("spec") or {})}
        if workload_defaults(obj.get("kind") or "", probe):
            # Created without the API server's defaults: add them (the MODIFIED event
            # brings the object back through the queue).
            self.store.mutate(self._rt(self.kind_key), key[0] or None, key[1],
                              lambda o: workload_defaults(o.get("kind") or "", o))
            return None
        return obj


# --------------------------------------------------------------------------- ReplicaSet
class ReplicaSetController(_Workload):
    kind_key = RS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("replicaset", store, cache, clock, types)

    def reconcile(self, key: ObjKey) -> None:
        rs = self._live(key)
        if rs is None:
            return
        pods = self._owned_pods(rs, "ReplicaSet")
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = want - len(pods)
        if diff > 0:
            n = min(diff, MAX_CREATES_PER_PASS)
            template = (rs.get("spec") or {}).get("template") or {}
            for _ in range(n):
                name = f"{rs['metadata']['name']}-{random_suffix()}"
                self._create_pod(new_pod(template, name=name, namespace=key[0], owner=rs))
            if diff > n:
                self.enqueue(key)
        elif diff < 0:
            # Delete the least useful pods first: unscheduled, pending, not ready, newest.
            def rank(p: dict) -> tuple:
                spec = p.get("spec") or {}
                phase = (p.get("status") or {}).get("phase")
                return (bool(spec.get("nodeName")), phase == "Running", pod_ready(p),
                        _neg(_ctime(p)))
            for victim in sorted(pods, key=rank)[: -diff]:
                self._delete(POD, victim)
        rs = self.cache.get(RS, *key)
        if rs is None:
            return
        pods = [p for p in self.cache.owned(POD, rs["metadata"]["uid"]) if pod_active(p)]
        self._write_status(RS, rs, replicaset_status(rs, pods))


def _neg(ts: str) -> tuple:
    # Newest first when sorting ascending.
    return tuple(-ord(c) for c in ts)


# --------------------------------------------------------------------------- Deployment
class DeploymentController(_Workload):
    kind_key = DEPLOY

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("deployment", store, cache, clock, types)
        self._progress: dict[ObjKey, tuple[tuple, float]] = {}   # key -> (progress signature, since)

    def _owned_rses(self, d: dict) -> list[dict]:
        md = d["metadata"]
        orphans = self.cache.orphans_in(RS, md.get("namespace") or "")
        sel = _compiled((d.get("spec") or {}).get("selector")) if orphans else None
        for orphan in orphans:
            if sel is not None and sel.matches_object(orphan):
                self._adopt(RS, orphan, d, "Deployment")
        return [r for r in self.cache.owned(RS, md["uid"])
                if not (r.get("metadata") or {}).get("deletionTimestamp")]

    def reconcile(self, key: ObjKey) -> None:
        d = self._live(key)
        if d is None:
            if self.cache.get(DEPLOY, *key) is None:
                self._progress.pop(key, None)
            return
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        desired = int(spec.get("replicas", 1))
        rses = self._owned_rses(d)
        new_rs = next((r for r in sorted(rses, key=_revision, reverse=True)
                       if templates_equal((r.get("spec") or {}).get("template"), template)), None)
        olds = [r for r in rses if r is not new_rs]
        max_rev = max((_revision(r) for r in rses), default=0)
        strategy = (spec.get("strategy") or {}).get("type") or "RollingUpdate"
        old_pods = sum(int((r.get("status") or {}).get("replicas") or 0) for r in olds)
        rs_rt = self._rt(RS)
        created = False
        if not spec.get("paused"):
            if new_rs is None:
                created = True
                new_rs = self._create_rs(d, template, max_rev + 1,
                                         0 if strategy == "Recreate" and old_pods else desired)
            else:
                if _revision(new_rs) < max_rev:
                    # A rollback to an older template: that RS becomes the newest revision.
                    rev = str(max_rev + 1)
                    new_rs = self.store.mutate(rs_rt, key[0], new_rs["metadata"]["name"], lambda o: o[
                        "metadata"].setdefault("annotations", {}).__setitem__(REVISION_ANNOTATION, rev))
                target = 0 if strategy == "Recreate" and old_pods else desired
                self._scale(new_rs, target, desired)
            new_rs = self.cache.get(RS, key[0], new_rs["metadata"]["name"]) or new_rs
            new_ready = int((new_rs.get("status") or {}).get("readyReplicas") or 0)
            if strategy == "Recreate":
                budget = 0
            else:
                # Keep at least `desired` Ready pods overall: old pods go as new ones are Ready.
                budget = max(0, desired - new_ready)
            for r in sorted(olds, key=_revision, reverse=True):
                cur = int((r.get("spec") or {}).get("replicas") or 0)
                keep = min(cur, budget)
                budget -= keep
                if keep != cur:
                    self._scale(r, keep, desired)
            self._cleanup(d, olds)
            rev = str(_revision(new_rs))
            if ((d["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)) != rev:
                def ann(o: dict) -> None:
                    o["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = rev
                d = self.store.mutate(self._rt(DEPLOY), key[0], key[1], ann)
        d = self.cache.get(DEPLOY, *key)
        if d is None:
            return
        rses = [r for r in self.cache.owned(RS, d["metadata"]["uid"])]
        if new_rs is not None:
            new_rs = self.cache.get(RS, key[0], new_rs["metadata"]["name"])
        status = deployment_status(d, new_rs, rses, now_rfc3339(), created)
        self._progress_deadline(key, d, new_rs, status)
        self._write_status(DEPLOY, d, status)

    def _progress_deadline(self, key: ObjKey, d: dict, new_rs: dict | None, status: dict) -> None:
        """ProgressDeadlineExceeded after progressDeadlineSeconds (cluster time) without progress.

        Progress is any change of the new ReplicaSet or of the replica counts, as the
        real controller refreshes ``lastUpdateTime`` on each.
        """
        uid = d["metadata"]["uid"]
        prog = next((c for c in status.get("conditions") or () if c.get("type") == "Progressing"), None)
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        if prog is None or prog.get("reason") == "NewReplicaSetAvailable" or deadline is None \
                or (d.get("spec") or {}).get("paused"):
            if self._progress.pop(key, None) is not None:
                self.forget(key)
            return
        sig = (uid, (new_rs or {}).get("metadata", {}).get("name"), status.get("updatedReplicas"),
               status.get("readyReplicas"), status.get("availableReplicas"), status.get("replicas"))
        now = self.clock.cluster_now()
        cur = self._progress.get(key)
        if cur is None or cur[0] != sig:
            cur = self._progress[key] = (sig, now)
        waited = now - cur[1]
        if waited >= float(deadline):
            prev = next((c for c in (d.get("status") or {}).get("conditions") or ()
                         if c.get("type") == "Progressing"), None)
            if prev is not None and prev.get("reason") == "ProgressDeadlineExceeded":
                # Already reported: keep it byte for byte (no write, no event loop).
                status["conditions"] = [dict(prev) if c.get("type") == "Progressing" else c
                                        for c in status["conditions"]]
                return
            rs_name = sig[1] or d["metadata"]["name"]
            _set_cond(status["conditions"], "Progressing", "False", "ProgressDeadlineExceeded",
                      f'ReplicaSet "{rs_name}" has timed out progressing.', now_rfc3339())
        else:
            self.requeue_after(key, float(deadline) - waited + 0.01)

    def _create_rs(self, d: dict, template: dict, revision: int, replicas: int) -> dict:
        from ..store import AlreadyExists
        md = d["metadata"]
        collision = 0
        while True:
            h = pod_template_hash(template, collision)
            tpl = copy.deepcopy(template)
            tpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            sel = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
            sel.setdefault("matchLabels", {})[HASH_LABEL] = h
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels[HASH_LABEL] = h
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": f"{md['name']}-{h}", "namespace": md.get("namespace"),
                               "labels": labels,
                               "annotations": {REVISION_ANNOTATION: str(revision),
                                               "deployment.kubernetes.io/desired-replicas":
                                                   str((d.get("spec") or {}).get("replicas", 1)),
                                               "deployment.kubernetes.io/max-replicas":
                                                   str((d.get("spec") or {}).get("replicas", 1))},
                               "ownerReferences": [owner_ref_for(d, "Deployment")]},
                  "spec": {"replicas": replicas, "selector": sel, "template": tpl,
                           **({"minReadySeconds": d["spec"]["minReadySeconds"]}
                              if (d.get("spec") or {}).get("minReadySeconds") else {})},
                  "status": {"replicas": 0}}
            try:
                return self.store.create(rs, rtype=self._rt(RS))
            except AlreadyExists:
                existing = self.cache.get(RS, md.get("namespace") or "", f"{md['name']}-{h}")
                ref = controller_ref(existing) if existing else None
                if existing is not None and ref and ref.get("uid") == md["uid"]:
                    # Ours already, with another template (an edited RS): take it over.
                    def fix(o: dict) -> None:
                        o["spec"]["template"] = tpl
                        o["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)
                    return self.store.mutate(self._rt(RS), md.get("namespace"), f"{md['name']}-{h}", fix)
                collision += 1
                if collision > 5:
                    raise

    def _scale(self, rs: dict, replicas: int, desired: int) -> None:
        cur = (rs.get("spec") or {}).get("replicas")
        ann = (rs.get("metadata") or {}).get("annotations") or {}
        if cur == replicas and ann.get("deployment.kubernetes.io/desired-replicas") == str(desired):
            return

        def put(o: dict) -> None:
            o["spec"]["replicas"] = replicas
            a = o["metadata"].setdefault("annotations", {})
            a["deployment.kubernetes.io/desired-replicas"] = str(desired)
            a["deployment.kubernetes.io/max-replicas"] = str(desired)
        self.store.mutate(self._rt(RS), rs["metadata"].get("namespace"), rs["metadata"]["name"], put)

    def _cleanup(self, d: dict, olds: list[dict]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit", 10)
        if limit is None:
            return
        idle = [r for r in olds
                if not int((r.get("spec") or {}).get("replicas") or 0)
                and not int((r.get("status") or {}).get("replicas") or 0)]
        idle.sort(key=_revision)
        for r in idle[: max(0, len(idle) - int(limit))]:
            self._delete(RS, r)


# --------------------------------------------------------------------------- DaemonSet
class DaemonSetController(_Workload):
    kind_key = DS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("daemonset", store, cache, clock, types)
        self._revisions: dict[str, tuple[str, str]] = {}   # ds uid -> (template fingerprint, hash)

    def current_hash(self, ds: dict, pods: list[dict]) -> str:
        """The revision hash of the DaemonSet's current template.

        At first sight of a converged DaemonSet (observedGeneration == generation) whose
        pods all carry one ``controller-revision-hash``, that value is kept, so a
        fixture built with another hash function is not rolled out at start.
        """
        md = ds["metadata"]
        template = (ds.get("spec") or {}).get("template") or {}
        fp = canonical(strip_hash(template))
        known = self._revisions.get(md["uid"])
        if known is not None and known[0] == fp:
            return known[1]
        h = pod_template_hash(template)
        observed = (ds.get("status") or {}).get("observedGeneration")
        if known is None and observed in (None, md.get("generation")):
            seen = {((p.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL) for p in pods}
            if len(seen) == 1 and None not in seen:
                h = seen.pop()
        self._revisions[md["uid"]] = (fp, h)
        return h

    def first_sight(self, obj: dict) -> None:
        if obj["metadata"]["uid"] not in self._revisions:
            pods = [p for p in self.cache.owned(POD, obj["metadata"]["uid"]) if pod_active(p)]
            self.current_hash(obj, pods)

    def reconcile(self, key: ObjKey) -> None:
        ds = self._live(key)
        if ds is None:
            return
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        tspec = template.get("spec") or {}
        pods = self._owned_pods(ds, "DaemonSet")
        cur_hash = self.current_hash(ds, pods)
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
        nodes = {n["metadata"]["name"]: n for n in self.cache.all(NODE)}
        decisions = {name: daemonset_node_decision(tspec, n) for name, n in nodes.items()}
        created = 0
        for name, (run, cont) in decisions.items():
            here = by_node.get(name) or []
            if run and not here and created < MAX_CREATES_PER_PASS:
                pod = new_pod(template, name=f"{ds['metadata']['name']}-{random_suffix()}",
                              namespace=key[0], owner=ds, node_name=name, daemonset=True,
                              extra_labels={REVISION_HASH_LABEL: cur_hash,
                                            "pod-template-generation": str(ds["metadata"].get("generation", 1))})
                self._create_pod(pod)
                created += 1
            elif here and not cont:
                for p in here:
                    self._delete(POD, p)
            elif len(here) > 1:
                keep = sorted(here, key=lambda p: (_hash_of(p) != cur_hash, not pod_ready(p), _ctime(p)))[0]
                for p in here:
                    if p is not keep:
                        self._delete(POD, p)
        for name, here in by_node.items():
            if name and name not in nodes:
                for p in here:
                    self._delete(POD, p)
        if created >= MAX_CREATES_PER_PASS:
            self.enqueue(key)
        self._rolling_update(ds, cur_hash, decisions)
        ds = self.cache.get(DS, *key)
        if ds is not None:
            self._write_status(DS, ds, self._status(ds, cur_hash, decisions))

    def _rolling_update(self, ds: dict, cur_hash: str, decisions: dict) -> None:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return
        pods = [p for p in self.cache.owned(POD, ds["metadata"]["uid"]) if pod_active(p)]
        on_run_nodes = [p for p in pods if decisions.get((p.get("spec") or {}).get("nodeName"), (False,))[0]]
        desired = sum(1 for run, _ in decisions.values() if run)
        max_unavail = resolve_int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                             desired, round_up=True, default=1)
        max_unavail = max(1, max_unavail)
        have_nodes = {(p.get("spec") or {}).get("nodeName") for p in on_run_nodes}
        unavailable = (desired - len(have_nodes)) + sum(1 for p in on_run_nodes if not pod_ready(p))
        old = [p for p in on_run_nodes if _hash_of(p) != cur_hash]
        # Old pods that are not Ready cost nothing to replace; Ready ones only within budget.
        for p in [p for p in old if not pod_ready(p)]:
            self._delete(POD, p)
        budget = max_unavail - unavailable
        for p in sorted([p for p in old if pod_ready(p)], key=lambda p: (p.get("spec") or {}).get("nodeName") or ""):
            if budget <= 0:
                break
            self._delete(POD, p)
            budget -= 1

    def _status(self, ds: dict, cur_hash: str, decisions: dict) -> dict:
        pods = [p for p in self.cache.owned(POD, ds["metadata"]["uid"]) if pod_active(p)]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
        desired = current = mis = ready = updated = 0
        for name, (run, _cont) in decisions.items():
            here = by_node.get(name) or []
            if run:
                desired += 1
                if here:
                    current += 1
                    if any(pod_ready(p) for p in here):
                        ready += 1
                    if any(_hash_of(p) == cur_hash for p in here):
                        updated += 1
            elif here:
                mis += 1
        status = {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
                  "numberMisscheduled": mis, "numberReady": ready, "numberAvailable": ready,
                  "updatedNumberScheduled": updated,
                  "numberUnavailable": max(0, desired - ready),
                  "observedGeneration": ds["metadata"].get("generation", 1)}
        if not status["numberAvailable"]:
            status.pop("numberAvailable")
        if not status["numberUnavailable"]:
            status.pop("numberUnavailable")
        if not status["updatedNumberScheduled"]:
            status.pop("updatedNumberScheduled")
        return status


def _hash_of(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL)


# --------------------------------------------------------------------------- StatefulSet
_ORDINAL = re.compile(r"^(.*)-(\d+)$")


class StatefulSetController(_Workload):
    kind_key = STS

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("statefulset", store, cache, clock, types)
        self._revisions: dict[str, tuple[str, str]] = {}

    def update_revision(self, sts: dict) -> str:
        """``<sts>-<hash>`` of the current template (a converged fixture's value is kept)."""
        md = sts["metadata"]
        template = (sts.get("spec") or {}).get("template") or {}
        fp = canonical(strip_hash(template))
        known = self._revisions.get(md["uid"])
        if known is not None and known[0] == fp:
            return known[1]
        rev = f"{md['name']}-{pod_template_hash(template)}"
        st = sts.get("status") or {}
        if known is None and st.get("updateRevision") and \
                st.get("observedGeneration") in (None, md.get("generation")):
            rev = st["updateRevision"]
        self._revisions[md["uid"]] = (fp, rev)
        return rev

    def first_sight(self, obj: dict) -> None:
        if obj["metadata"]["uid"] not in self._revisions:
            self.update_revision(obj)

    def reconcile(self, key: ObjKey) -> None:
        sts = self._live(key)
        if sts is None:
            return
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        replicas = int(spec.get("replicas", 1))
        update_rev = self.update_revision(sts)
        ordered = (spec.get("podManagementPolicy") or "OrderedReady") == "OrderedReady"
        def member(p: dict) -> bool:
            m = _ORDINAL.match(p["metadata"]["name"])
            return bool(m and m.group(1) == name)
        pods = self._owned_pods(sts, "StatefulSet", member)
        by_ord: dict[int, dict] = {}
        for p in pods:
            m = _ORDINAL.match(p["metadata"]["name"])
            if m and m.group(1) == name:
                by_ord[int(m.group(2))] = p
            else:
                self._delete(POD, p)   # not one of ours by identity
        for i in range(replicas):
            p = by_ord.get(i)
            if p is None:
                self._ensure_claims(sts, i)
                self._create_pod(self._pod(sts, i, update_rev), fixed_name=True)
                if ordered:
                    break
            elif ordered and not ((p.get("status") or {}).get("phase") == "Running" and pod_ready(p)):
                break
        extra = sorted((i for i in by_ord if i >= replicas), reverse=True)
        if extra:
            self._delete(POD, by_ord[extra[0]])
            if not ordered:
                for i in extra[1:]:
                    self._delete(POD, by_ord[i])
        self._rolling_update(sts, update_rev, replicas)
        sts = self.cache.get(STS, *key)
        if sts is not None:
            self._write_status(STS, sts, self._status(sts, update_rev))

    def _rolling_update(self, sts: dict, update_rev: str, replicas: int) -> None:
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        name = sts["metadata"]["name"]
        pods = {p["metadata"]["name"]: p for p in self.cache.owned(POD, sts["metadata"]["uid"]) if pod_active(p)}
        current = [pods.get(f"{name}-{i}") for i in range(replicas)]
        if any(p is None or not pod_ready(p) for p in current):
            return   # one pod at a time, and only when all are Ready
        for i in range(replicas - 1, partition - 1, -1):
            p = current[i]
            if _hash_of(p) != update_rev:
                self._delete(POD, p)
                return

    def _status(self, sts: dict, update_rev: str) -> dict:
        pods = [p for p in self.cache.owned(POD, sts["metadata"]["uid"]) if pod_active(p)]
        prev = sts.get("status") or {}
        replicas = int((sts.get("spec") or {}).get("replicas", 1))
        ready = sum(1 for p in pods if pod_ready(p))
        updated = sum(1 for p in pods if _hash_of(p) == update_rev)
        current_rev = prev.get("currentRevision") or update_rev
        if updated == replicas and len(pods) == replicas and ready == replicas:
            current_rev = update_rev
        current = sum(1 for p in pods if _hash_of(p) == current_rev)
        status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                  "currentReplicas": current, "updatedReplicas": updated,
                  "currentRevision": current_rev, "updateRevision": update_rev,
                  "observedGeneration": sts["metadata"].get("generation", 1),
                  "collisionCount": int(prev.get("collisionCount") or 0)}
        return status

    def _pod(self, sts: dict, i: int, rev: str) -> dict:
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        template = copy.deepcopy(spec.get("template") or {})
        tspec = template.setdefault("spec", {})
        volumes = tspec.setdefault("volumes", [])
        have = {v.get("name") for v in volumes}
        for tpl in spec.get("volumeClaimTemplates") or ():
            vname = (tpl.get("metadata") or {}).get("name")
            if vname and vname not in have:
                volumes.append({"name": vname,
                                "persistentVolumeClaim": {"claimName": f"{vname}-{name}-{i}"}})
        if not volumes:
            tspec.pop("volumes")
        tspec["hostname"] = f"{name}-{i}"
        if spec.get("serviceName"):
            tspec["subdomain"] = spec["serviceName"]
        return new_pod(template, name=f"{name}-{i}", namespace=sts["metadata"].get("namespace"),
                       owner=sts, extra_labels={REVISION_HASH_LABEL: rev,
                                                "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                                                "apps.kubernetes.io/pod-index": str(i)})

    def _ensure_claims(self, sts: dict, i: int) -> None:
        from ..store import AlreadyExists
        spec = sts.get("spec") or {}
        ns = sts["metadata"].get("namespace")
        pvc_rt = self.types.get("persistentvolumeclaims")
        if pvc_rt is None:
            return
        labels = dict(((spec.get("selector") or {}).get("matchLabels")) or {})
        for tpl in spec.get("volumeClaimTemplates") or ():
            vname = (tpl.get("metadata") or {}).get("name")
            if not vname:
                continue
            pvc_name = f"{vname}-{sts['metadata']['name']}-{i}"
            if self.store.peek(pvc_rt, ns, pvc_name) is not None:
                continue
            pspec = copy.deepcopy(tpl.get("spec") or {})
            pspec.setdefault("volumeMode", "Filesystem")
            storage = ((pspec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            md = copy.deepcopy(tpl.get("metadata") or {})
            md.update(name=pvc_name, namespace=ns)
            md["labels"] = {**labels, **(md.get("labels") or {})}
            # No provisioner is modelled: the claim is Bound at once.
            md.setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
            pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": pspec,
                   "status": {"phase": "Bound", "accessModes": pspec.get("accessModes") or ["ReadWriteOnce"],
                              "capacity": {"storage": storage}}}
            try:
                self.store.create(pvc, rtype=pvc_rt)
            except AlreadyExists:
                pass


# --------------------------------------------------------------------------- component
class WorkloadControllers:
    """The twin component running every workload controller (name ``"workloads"``).

    Exposes :attr:`kubelet` (also as ``rt.options["kubelet"]``) so the node/network
    model can plug a :class:`~twin.controllers.kubelet.SandboxPolicy` in and call
    ``kubelet.reevaluate(node_name)``.

    Example:
        >>> wc = WorkloadControllers()
        >>> wc.name
        'workloads'
    """

    name = "workloads"

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self._policy = policy
        self.cache = Cache()
        self.kubelet: Kubelet | None = None
        self.scheduler: Scheduler | None = None
        self.node_lifecycle: NodeLifecycle | None = None
        self.controllers: list[Controller] = []
        self._unsubscribe = None
        self.store: Any = None
        self.start_seconds = 0.0

    async def start(self, rt: Any) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        store = self.store = rt.store
        types = {}
        for group, plural in list(CACHED_KINDS) + [("", "persistentvolumeclaims")]:
            rtype = next((t for t in store.resource_types() if t.key == (group, plural)), None)
            if rtype is not None:
                types[plural] = rtype
        # Indexing ~10^5 objects allocates many small sets; the cyclic GC would rescan
        # the whole (cycle-free) store several times meanwhile: pause it for the pass.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._start(rt, store, types)
        finally:
            if gc_was_enabled:
                gc.enable()
        rt.options["kubelet"] = self.kubelet
        self.start_seconds = loop.time() - t0

    def _start(self, rt: Any, store: Any, types: dict) -> None:
        for kind in CACHED_KINDS:
            if kind[1] in types:
                self.cache.load(store, types[kind[1]])
        clock = rt.clock
        self.kubelet = Kubelet(store, self.cache, clock, types, self._policy)
        self.scheduler = Scheduler(store, self.cache, clock, types)
        self.node_lifecycle = NodeLifecycle(store, self.cache, clock, types, self.kubelet)
        self.deployments = DeploymentController(store, self.cache, clock, types)
        self.replicasets = ReplicaSetController(store, self.cache, clock, types)
        self.daemonsets = DaemonSetController(store, self.cache, clock, types)
        self.statefulsets = StatefulSetController(store, self.cache, clock, types)
        self.controllers = [self.deployments, self.replicasets, self.daemonsets, self.statefulsets,
                            self.scheduler, self.kubelet, self.node_lifecycle]
        self._unsubscribe = store.subscribe(self._on_change)
        # Initial pass: every workload once (mostly a status check on a converged
        # fixture), unscheduled and not-yet-running pods, and every node's taints.
        for obj in self.cache.all(DEPLOY):
            self.deployments.enqueue(obj_key(obj))
        for obj in self.cache.all(RS):
            self.replicasets.enqueue(obj_key(obj))
        for obj in self.cache.all(DS):
            self.daemonsets.enqueue(obj_key(obj))
        for obj in self.cache.all(STS):
            self.statefulsets.enqueue(obj_key(obj))
        for pod in self.cache.all(POD):
            if self.scheduler.wants(pod):
                self.scheduler.enqueue(obj_key(pod))
        self.kubelet.seed()
        for node in self.cache.all(NODE):
            self.node_lifecycle.enqueue(node["metadata"]["name"])
        for c in self.controllers:
            c.start()

    def _on_change(self, event_type: str, rtype: Any, obj: dict, old: dict | None) -> None:
        kind = rtype.key
        if kind not in self.cache.objects:
            return
        if event_type == "DELETED":
            self.cache.remove(kind, obj)
        else:
            self.cache.put(kind, obj, old)
        for c in (self.scheduler, self.kubelet, self.node_lifecycle):
            c.on_event(event_type, kind, obj, old)
        self._route(event_type, kind, obj, old)

    def _route(self, event_type: str, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        key = obj_key(obj)
        if event_type == "DELETED" and kind in (DEPLOY, DS, STS, RS):
            ctrl = {DEPLOY: self.deployments, DS: self.daemonsets, STS: self.statefulsets,
                    RS: self.replicasets}[kind]
            ctrl.forget(key)
        if kind == DEPLOY:
            self.deployments.enqueue(key)
        elif kind == DS:
            self.daemonsets.enqueue(key)
        elif kind == STS:
            self.statefulsets.enqueue(key)
        elif kind == RS:
            self.replicasets.enqueue(key)
            ref = controller_ref(obj)
            if ref and ref.get("kind") == "Deployment":
                self.deployments.enqueue((key[0], ref.get("name")))
        elif kind == POD:
            ref = controller_ref(obj)
            if ref is None and old is not None:
                ref = controller_ref(old)
            if ref is None:
                return
            target = {"ReplicaSet": self.replicasets, "DaemonSet": self.daemonsets,
                      "StatefulSet": self.statefulsets}.get(ref.get("kind"))
            if target is not None:
                target.enqueue((key[0], ref.get("name")))
        elif kind == NODE:
            if event_type == "DELETED" or old is None or _node_sched_view(old) != _node_sched_view(obj):
                for ds in self.cache.all(DS):
                    self.daemonsets.enqueue(obj_key(ds))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for c in self.controllers:
            await c.stop()

    def idle(self) -> bool:
        """True when no controller has queued or delayed work."""
        return all(c.idle() for c in self.controllers)

    async def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Wait (wall seconds) until every queue is empty; for tests and benchmarks."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if self.idle():
                await asyncio.sleep(settle)
                if self.idle():
                    return True
            await asyncio.sleep(0.01)
        return False

    def describe(self) -> str:
        pods = len(self.cache.objects[POD])
        nodes = len(self.cache.objects[NODE])
        return (f"workload controllers (deployment, replicaset, daemonset, statefulset, scheduler, "
                f"kubelet, node-lifecycle): {pods} pods on {nodes} nodes, "
                f"started in {self.start_seconds:.2f}s")


def _node_sched_view(node: dict) -> tuple:
    spec = node.get("spec") or {}
    return (repr(spec.get("taints")), repr((node.get("metadata") or {}).get("labels")))
