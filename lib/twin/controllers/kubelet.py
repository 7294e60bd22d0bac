"""The twin's "kubelet": what happens to a pod once it is bound to a node.

A real kubelet creates the pod sandbox through the CNI, pulls images and starts the
containers. In the twin a pluggable :class:`SandboxPolicy` decides a pod's fate
(:class:`PodFate`) from the pod and its node; the :class:`Kubelet` controller applies
that fate after its delay and writes a complete pod status (phase, conditions,
container statuses, IPs, QoS class), so ``kubectl get pods``, ``kubectl rollout status``
and ``helm --wait`` read it as on a cluster.

The node and network model plugs in its own policy with :meth:`Kubelet.set_policy` and
asks for a fresh decision with :meth:`Kubelet.reevaluate`. Until then
:class:`DefaultSandboxPolicy` applies:

- node Ready: the pod runs and becomes ready after ~2 cluster seconds, with an IP
  from the node's ``spec.podCIDR`` (``cni="flannel"``); hostNetwork pods get the node's
  InternalIP (``cni="host"``);
- node NotReady (Ready=False): new non-hostNetwork pods stay Pending in
  ContainerCreating with the kubelet's "cni plugin not initialized" message;
  hostNetwork pods still run (that is how a CNI bootstraps); pods whose sandbox
  already exists keep running with their old sandbox;
- node Unknown (kubelet not posting): nothing changes (the node lifecycle controller
  marks the pods not ready).

Storage models append to :attr:`Kubelet.volume_gates`: a pod without a sandbox waits
(the fate a gate returns, ContainerCreating) until its volumes are attached and mounted.

A fate with ``waiting_reason="CrashLoopBackOff"`` keeps the container restarting with
the kubelet's back-off (10 s doubling to 300 s), so RESTARTS climbs until the policy
says otherwise.

Around the policy's decision the kubelet also does what a node does (delays in
:mod:`.stages`): it pulls images and fails those the fixture's registry does not know
(ErrImagePull / ImagePullBackOff), runs each container's program and honours
``restartPolicy`` when it exits (:mod:`.pod_runs`), stops deleted pods gracefully
(:mod:`.termination`), records the events a kubelet records (:mod:`.kubelet_events`,
through :mod:`.events`) and keeps the containers' logs (:mod:`.logs`). Status building
is in :mod:`.pod_status`, pod IPAM in :mod:`.ipam`.

The CNI that created a pod's sandbox is recorded once, in the annotation
``twin.phase22.io/sandbox-cni``, when the sandbox is created: a running pod keeps it
until it is deleted and recreated, which is how pods left "unmanaged" by a CNI swap are
modelled.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from ..fixtures.images import ImageCatalog
from .base import Cache, Controller, ObjKey
from .events import EventRecorder, container_path
from .ipam import IPAllocator
from .kubelet_events import status_changes
from .logs import ContainerLogs
from .pod_runs import PodRuns
from .pod_status import (NETWORK_NOT_READY_MESSAGE, SANDBOX_CNI_ANNOTATION, PodFate, _digest,
                         build_pod_status, current_signature, has_sandbox, image_ref,
                         node_internal_ip, overlay_applied, qos_class)
from .programs import Reach
from .scheduler import node_ready_status, now_rfc3339
from .stages import backoff, seconds
from .termination import Termination

log = logging.getLogger("twin.controllers.kubelet")

__all__ = ["CONTAINER_START_SECONDS", "DefaultSandboxPolicy", "IPAllocator", "Kubelet",
           "NETWORK_NOT_READY_MESSAGE", "PodFate", "SANDBOX_CNI_ANNOTATION", "SandboxPolicy",
           "_digest", "build_pod_status", "current_signature", "has_sandbox", "image_ref",
           "node_internal_ip", "qos_class", "settled_fate"]

CONTAINER_START_SECONDS = seconds("pod.start")


class SandboxPolicy(Protocol):
    def decide(self, pod: dict, node: dict) -> PodFate | None:
        """The fate of ``pod`` on ``node``; None leaves the pod as it is.

        A policy may also offer ``kubelet_running(node_name) -> bool`` (False while the
        node's k3s is down: deleted pods then stay Terminating).
        """




def settled_fate(pod: dict, node: dict, start_seconds: float) -> PodFate | None:
    """The fate that needs no CNI decision: a pod whose sandbox exists keeps it (and its
    CNI, for as long as the pod lives), and a hostNetwork pod needs no sandbox."""
    if has_sandbox(pod):
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        st = pod.get("status") or {}
        return PodFate("Running", True, cni=ann.get(SANDBOX_CNI_ANNOTATION),
                       ip=st.get("podIP"), delay=0.0)
    if (pod.get("spec") or {}).get("hostNetwork"):
        return PodFate("Running", True, cni="host", ip=node_internal_ip(node), delay=start_seconds)
    return None


class DefaultSandboxPolicy:
    """Flannel-era behaviour: pods run shortly after their node is Ready (see module doc)."""

    def __init__(self, ipam: IPAllocator, *, start_seconds: float = CONTAINER_START_SECONDS,
                 cni: str = "flannel") -> None:
        self.ipam = ipam
        self.start_seconds = start_seconds
        self.cni = cni

    def decide(self, pod: dict, node: dict) -> PodFate | None:
        if node is None:
            return None
        ready = node_ready_status(node)
        if ready == "Unknown":
            return None
        settled = settled_fate(pod, node, self.start_seconds)
        if settled is not None:
            return settled
        md = pod.get("metadata") or {}
        if ready != "True":
            return PodFate("Pending", False, "ContainerCreating", NETWORK_NOT_READY_MESSAGE)
        ip = self.ipam.allocate(node["metadata"]["name"], (node.get("spec") or {}).get("podCIDR"),
                                md.get("uid") or md.get("name"))
        if ip is None:
            return PodFate("Pending", False, "ContainerCreating",
                           "Failed to create pod sandbox: plugin type=\"flannel\" failed (add): "
                           "failed to allocate for range 0: no IP addresses available in range set")
        return PodFate("Running", True, cni=self.cni, ip=ip, delay=self.start_seconds)


# --------------------------------------------------------------------------- controller
class Kubelet(Controller):
    """Applies sandbox policy decisions to the pods bound to nodes (see module doc).

    Attributes:
        ipam: the per-node allocator used by the default policy (the network model may
            reuse it for podCIDR-based IPAM).
        policy: the current :class:`SandboxPolicy`.
        events: the :class:`~.events.EventRecorder` the kubelet records through.
        logs: every container's :class:`~.logs.ContainerLogs`.
        runs: image pulls and container runs (:class:`~.pod_runs.PodRuns`).
    """

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict,
                 policy: SandboxPolicy | None = None, *, events: EventRecorder | None = None,
                 catalog: ImageCatalog | None = None, reach: Reach | None = None) -> None:
        super().__init__("kubelet", clock, batch=200)
        self.store = store
        self.cache = cache
        self.types = types
        self.ipam = IPAllocator()
        self.policy: SandboxPolicy = policy or DefaultSandboxPolicy(self.ipam)
        self.events = events or EventRecorder(store, clock)
        self.logs = ContainerLogs()
        self.runs = PodRuns(catalog, reach)
        self.termination = Termination(self)
        # The volume manager: storage models hold a pod before its sandbox until its
        # volumes are attached and mounted (a gate returns the fate to show meanwhile).
        self.volume_gates: list[Callable[[dict, dict | None], PodFate | None]] = []
        self._pending: dict[ObjKey, tuple[tuple, float]] = {}
        self._crash: dict[ObjKey, float] = {}     # next crash-loop restart (cluster time)
        self._node_images: dict[str, set[str]] = {}   # images already on each node
        self._log_run: dict[tuple[str, str], int] = {}  # (pod uid, container) -> run its log holds
        self.applied = 0

    # -- public hooks for the network model --------------------------------------------
    def set_policy(self, policy: SandboxPolicy, *, reevaluate: bool = True) -> None:
        """Replace the sandbox policy (and, by default, re-decide every bound pod)."""
        self.policy = policy
        self._pending.clear()
        self._crash.clear()
        if reevaluate:
            self.reevaluate()

    def kubelet_running(self, node_name: str) -> bool:
        """Whether the kubelet of ``node_name`` runs (the policy's say, else True)."""
        check = getattr(self.policy, "kubelet_running", None)
        return True if check is None else bool(check(node_name))

    def reevaluate(self, node_name: str | None = None) -> int:
        """Queue the pods of ``node_name`` (all bound pods when None) for a new decision.

        Returns the number of pods queued.
        """
        pods = self.cache.pods_on(node_name) if node_name else list(self.cache.all(("", "pods")))
        n = 0
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName"):
                self.enqueue((pod["metadata"].get("namespace") or "", pod["metadata"]["name"]))
                n += 1
        return n

    def seed(self) -> None:
        """At start: reserve the IPs of existing pods, note the images already on each
        node, and queue pods not yet running or being deleted.

        Pods already Running (e.g. from the fixture) are deliberately not queued: their
        status and sandbox annotation are kept as loaded.
        """
        for pod in self.cache.all(("", "pods")):
            spec = pod.get("spec") or {}
            st = pod.get("status") or {}
            node = spec.get("nodeName")
            if not node:
                continue
            images = self._node_images.setdefault(node, set())
            for c in spec.get("containers") or ():
                images.add(c.get("image", ""))
            if st.get("podIP") and not spec.get("hostNetwork"):
                self.ipam.reserve(node, st["podIP"], (pod.get("metadata") or {}).get("uid"))
            if st.get("phase") not in ("Running", "Succeeded", "Failed") or \
                    (pod.get("metadata") or {}).get("deletionTimestamp"):
                self.enqueue((pod["metadata"].get("namespace") or "", pod["metadata"]["name"]))

    # -- events -----------------------------------------------------------------------------
    def on_event(self, event_type: str, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        if kind == ("", "pods"):
            md = obj["metadata"]
            key = (md.get("namespace") or "", md["name"])
            if event_type == "DELETED":
                self._pending.pop(key, None)
                self._crash.pop(key, None)
                self.runs.forget(key)
                self.termination.forget(key)
                self.forget(key)
                if md.get("uid"):
                    self.ipam.release(md["uid"])
                    self.logs.forget(md["uid"])
                    for c in (obj.get("spec") or {}).get("containers") or ():
                        self._log_run.pop((md["uid"], c.get("name", "")), None)
                return
            node = (obj.get("spec") or {}).get("nodeName")
            if not node:
                return
            if old is None or (old.get("spec") or {}).get("nodeName") != node:
                self.enqueue(key)
            elif md.get("deletionTimestamp") and \
                    md.get("deletionGracePeriodSeconds") != (old.get("metadata") or {}).get("deletionGracePeriodSeconds"):
                self.enqueue(key)     # deleted (or its grace period shortened)
            elif _images(obj) != _images(old):
                self.enqueue(key)     # kubectl set image on a pod
        elif kind == ("", "nodes"):
            name = obj["metadata"]["name"]
            if event_type == "DELETED":
                return
            if old is None or _node_view(old) != _node_view(obj):
                self.reevaluate(name)

    # -- reconcile ----------------------------------------------------------------------------
    def reconcile(self, key: ObjKey) -> None:
        pod = self.cache.get(("", "pods"), *key)
        if pod is None:
            self._pending.pop(key, None)
            return
        spec = pod.get("spec") or {}
        md = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("nodeName"):
            self._pending.pop(key, None)
            return
        if md.get("deletionTimestamp"):
            self._pending.pop(key, None)
            self.termination.reconcile(key, pod, spec["nodeName"])
            return
        if phase in ("Succeeded", "Failed"):
            self._pending.pop(key, None)
            return
        node = self.cache.get(("", "nodes"), "", spec["nodeName"])
        fate = self.policy.decide(pod, node) if node is not None else None
        if fate is not None and fate.phase == "Running" and not has_sandbox(pod):
            fate = next((f for f in (g(pod, node) for g in self.volume_gates) if f is not None), fate)
        if fate is None:
            self._pending.pop(key, None)
            self._crash.pop(key, None)
            return
        now = self.clock.cluster_now()
        fate, due = self.runs.adjust(key, pod, fate, now)
        line_due = self._write_lines(key, pod, now)
        for t in (due, line_due):
            if t is not None:
                self.requeue_after(key, max(0.0, t - now))
        sig = fate.signature()
        if sig == current_signature(pod) and overlay_applied(pod, fate.overlay):
            self._pending.pop(key, None)
            if fate.waiting_reason == "CrashLoopBackOff" and not fate.overlay:
                self._crash_loop(key, pod, node, fate)
            else:
                self._crash.pop(key, None)
            return
        self._crash.pop(key, None)
        pend = self._pending.get(key)
        if fate.delay > 0 and (pend is None or pend[0] != sig):
            self._pending[key] = (sig, now + fate.delay)
            # Show the container being created while it "starts", as a kubelet does.
            if fate.phase == "Running" and not has_sandbox(pod) and \
                    current_signature(pod)[2] != "ContainerCreating":
                self._apply(key, pod, node, PodFate("Pending", False, "ContainerCreating"))
            self.requeue_after(key, fate.delay)
            return
        if pend is not None and pend[0] == sig and pend[1] > now + 1e-6:
            self.requeue_after(key, pend[1] - now)
            return
        self._pending.pop(key, None)
        self._apply(key, pod, node, fate)
        if fate.waiting_reason == "CrashLoopBackOff" and not fate.overlay:
            self.enqueue(key)    # start the back-off clock

    def _crash_loop(self, key: ObjKey, pod: dict, node: dict | None, fate: PodFate) -> None:
        """Keep a crash-looping container restarting: 10 s, 20 s, 40 s ... up to 300 s
        (the kubelet's back-off), so RESTARTS climbs as on a node."""
        now = self.clock.cluster_now()
        due = self._crash.get(key)
        restarts = max([int(cs.get("restartCount") or 0)
                        for cs in (pod.get("status") or {}).get("containerStatuses") or ()] or [0])
        wait = backoff("pod.crash-loop", restarts)
        if due is None:
            self._crash[key] = now + wait
            self.requeue_after(key, wait)
        elif now + 1e-6 >= due:
            del self._crash[key]
            self._apply(key, pod, node, fate, restart=True)
            nxt = backoff("pod.crash-loop", restarts + 1)
            self._crash[key] = now + nxt
            self.requeue_after(key, nxt)
        else:
            self.requeue_after(key, due - now)

    def _apply(self, key: ObjKey, pod: dict, node: dict | None, fate: PodFate, *,
               restart: bool = False) -> None:
        now = now_rfc3339()
        crash_lines = fate.logs or ((fate.message,) if fate.waiting_reason == "CrashLoopBackOff"
                                    and fate.message and not fate.overlay else ())
        crash_messages = {c.get("name", ""): "\n".join(crash_lines)[-2048:]
                          for c in (pod.get("spec") or {}).get("containers") or ()
                          if crash_lines and c.get("terminationMessagePolicy") == "FallbackToLogsOnError"}
        new_status = build_pod_status(pod, node, fate, now, restart=restart,
                                      crash_messages=crash_messages)
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        # The sandbox is created now: record which CNI made it (once, for its life).
        annotate = bool(fate.cni and SANDBOX_CNI_ANNOTATION not in ann and fate.phase != "Pending")

        def write(p: dict) -> None:
            p["status"] = new_status
            if annotate:
                p.setdefault("metadata", {}).setdefault("annotations", {})[SANDBOX_CNI_ANNOTATION] = fate.cni
        # One write for annotation + status (mutate without subresource writes both).
        self.store.mutate(self.types["pods"], key[0] or None, key[1], write,
                          subresource=None if annotate else "status")
        self.applied += 1
        if fate.phase == "Running" and not fate.waiting_reason and \
                self.runs.started(key, pod, self.clock.cluster_now()):
            self.enqueue(key)      # its programs exit or write later: follow them
        self._report(key, pod, new_status, crash_lines)
        if self.runs.follows(key):
            self._write_lines(key, pod, self.clock.cluster_now())

    def _write_lines(self, key: ObjKey, pod: dict, now: float) -> float | None:
        """Log what the pod's programs wrote by now (into the run its log holds)."""
        uid = (pod.get("metadata") or {}).get("uid") or ""
        if not uid or not self.runs.follows(key):
            return None
        runs = {c.get("name", ""): self._log_run.get((uid, c.get("name", "")), 0)
                for c in (pod.get("spec") or {}).get("containers") or ()}
        lines, nxt = self.runs.lines_due(key, now, runs)
        for container, text in lines:
            self.logs.write(uid, container, *text)
        return nxt

    def _report(self, key: ObjKey, pod: dict, new_status: dict, crash_lines: tuple[str, ...]) -> None:
        """Record the events of this status change and write the containers' logs."""
        node = (pod.get("spec") or {}).get("nodeName") or ""
        images = self._node_images.setdefault(node, set())
        containers = (pod.get("spec") or {}).get("containers") or ()
        present = all(c.get("image", "") in images for c in containers)
        start_lines = {}
        if not self.runs.follows(key):     # followed programs log through _write_lines
            for c in containers:
                start_lines[c.get("name", "")] = self.runs.program(key, pod, c.get("name", "")).lines
        uid = (pod.get("metadata") or {}).get("uid") or ""
        for r in status_changes(pod, new_status, image_present=present, start_lines=start_lines,
                                exit_lines={}, crash_lines=crash_lines):
            if r.container is not None and uid:
                if r.restart_log:
                    self.logs.restart(uid, r.container)
                    self._log_run[(uid, r.container)] = self._log_run.get((uid, r.container), 0) + 1
                if r.log_lines:
                    self.logs.write(uid, r.container, *r.log_lines)
                elif r.reason == "Created" or r.ended:
                    self.logs.ensure(uid, r.container)   # it ran: it has a (maybe empty) log
                if r.ended:
                    self.logs.finish(uid, r.container)
            if r.reason:
                self.events.record(pod, r.etype, r.reason, r.message, component="kubelet", host=node,
                                   field_path=container_path(pod, r.container) if r.container else None)
            if r.reason == "Pulled":
                images.update(c.get("image", "") for c in containers)


def _images(pod: dict) -> list[str]:
    return [c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or ()]


def _node_view(node: dict) -> tuple:
    """The parts of a node that can change a pod's fate (not heartbeats or annotations:
    a policy that reads annotations calls :meth:`Kubelet.reevaluate` itself)."""
    c = None
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            c = (cond.get("status"), cond.get("reason"), cond.get("message"))
    spec = node.get("spec") or {}
    return (c, repr(spec.get("taints")), spec.get("podCIDR"),
            repr((node.get("status") or {}).get("addresses")),
            repr((node.get("metadata") or {}).get("labels")))
