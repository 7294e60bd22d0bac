"""The runtime component ``"workloads"``: the cache, the scheduler, the kubelet, node
lifecycle and every workload controller, fed by one store subscription."""
from __future__ import annotations

import asyncio
import gc
from typing import Any

from ...fixtures.images import catalog_for
from ...ticker import Ticker
from ..base import CACHED_KINDS, Cache, Controller, controller_ref, obj_key
from ..events import SWEEP_SECONDS, EventRecorder
from ..heartbeats import TICK_SECONDS, Heartbeats
from ..kubelet import Kubelet, SandboxPolicy
from ..service_reach import service_reach
from ..scheduler import NodeLifecycle, Scheduler
from .cronjobs import CRONJOB, CronJobController
from .daemonsets import DaemonSetController
from .deployments import DeploymentController
from .disruption import PDB, DisruptionController
from .jobs import JOB, JobController
from .replicasets import ReplicaSetController
from .statefulsets import StatefulSetController
from .workload_base import DEPLOY, DS, NODE, POD, RS, STS


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
        self.events: EventRecorder | None = None
        self._tickers: list[Ticker] = []
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
        rt.options["events"] = self.events
        rt.options["container_logs"] = self.kubelet.logs
        self.heartbeats = Heartbeats(self.store, self.cache, rt.clock, self.kubelet)
        self._tickers = [Ticker("event-ttl", SWEEP_SECONDS, self.events.sweep, sleep=rt.clock.sleep),
                         Ticker("node-heartbeats", TICK_SECONDS, self.heartbeats.tick,
                                sleep=rt.clock.sleep, immediate=True)]
        for t in self._tickers:
            t.start()
        self.start_seconds = loop.time() - t0

    def _start(self, rt: Any, store: Any, types: dict) -> None:
        for kind in CACHED_KINDS:
            if kind[1] in types:
                self.cache.load(store, types[kind[1]])
        clock = rt.clock
        self.events = EventRecorder(store, clock)
        self.kubelet = Kubelet(store, self.cache, clock, types, self._policy, events=self.events,
                               catalog=catalog_for(rt.fixture), reach=service_reach(store))
        self.scheduler = Scheduler(store, self.cache, clock, types)
        self.node_lifecycle = NodeLifecycle(store, self.cache, clock, types, self.kubelet)
        self.scheduler.events = self.node_lifecycle.events = self.events
        self.deployments = DeploymentController(store, self.cache, clock, types)
        self.replicasets = ReplicaSetController(store, self.cache, clock, types)
        self.daemonsets = DaemonSetController(store, self.cache, clock, types)
        self.statefulsets = StatefulSetController(store, self.cache, clock, types)
        self.disruption = DisruptionController(store, self.cache, clock, types)
        self.jobs = JobController(store, self.cache, clock, types)
        self.cronjobs = CronJobController(store, self.cache, clock, types)
        self.jobs.events = self.cronjobs.events = self.events
        self.controllers = [self.deployments, self.replicasets, self.daemonsets, self.statefulsets,
                            self.disruption, self.jobs, self.cronjobs,
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
        for kind, ctrl in ((PDB, self.disruption), (JOB, self.jobs), (CRONJOB, self.cronjobs)):
            for obj in self.cache.all(kind):
                ctrl.enqueue(obj_key(obj))
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
        if event_type == "DELETED" and kind in (DEPLOY, DS, STS, RS, PDB, JOB, CRONJOB):
            ctrl = {DEPLOY: self.deployments, DS: self.daemonsets, STS: self.statefulsets,
                    RS: self.replicasets, PDB: self.disruption, JOB: self.jobs,
                    CRONJOB: self.cronjobs}[kind]
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
        elif kind == PDB:
            self.disruption.enqueue(key)
        elif kind == JOB:
            self.jobs.enqueue(key)
            ref = controller_ref(obj)
            if ref and ref.get("kind") == "CronJob":
                self.cronjobs.enqueue((key[0], ref.get("name")))
        elif kind == CRONJOB:
            self.cronjobs.enqueue(key)
        elif kind == POD:
            if self.cache.objects[PDB]:
                self.disruption.pod_changed(obj, old)
            ref = controller_ref(obj)
            if ref is None and old is not None:
                ref = controller_ref(old)
            if ref is None:
                return
            target = {"ReplicaSet": self.replicasets, "DaemonSet": self.daemonsets,
                      "StatefulSet": self.statefulsets, "Job": self.jobs}.get(ref.get("kind"))
            if target is not None:
                target.enqueue((key[0], ref.get("name")))
        elif kind == NODE:
            if event_type == "DELETED" or old is None or _node_sched_view(old) != _node_sched_view(obj):
                for ds in self.cache.all(DS):
                    self.daemonsets.enqueue(obj_key(ds))

    async def stop(self) -> None:
        for t in self._tickers:
            await t.stop()
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
        return (f"workload controllers (deployment, replicaset, daemonset, statefulset, disruption, "
                f"job, cronjob, scheduler, kubelet, node-lifecycle): {pods} pods on {nodes} nodes, "
                f"started in {self.start_seconds:.2f}s")


def _node_sched_view(node: dict) -> tuple:
    spec = node.get("spec") or {}
    return (repr(spec.get("taints")), repr((node.get("metadata") or {}).get("labels")))
