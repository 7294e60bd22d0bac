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

The CNI that created a pod's sandbox is recorded once, in the annotation
``twin.phase22.io/sandbox-cni``, when the sandbox is created: a running pod keeps it
until it is deleted and recreated, which is how pods left "unmanaged" by a CNI swap are
modelled.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .base import Cache, Controller, ObjKey
from .scheduler import _condition, _set_condition, node_ready_status, now_rfc3339

log = logging.getLogger("twin.controllers.kubelet")

SANDBOX_CNI_ANNOTATION = "twin.phase22.io/sandbox-cni"
NETWORK_NOT_READY_MESSAGE = (
    "network is not ready: container runtime network not ready: NetworkReady=false "
    "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
CONTAINER_START_SECONDS = 2.0


@dataclass
class PodFate:
    """What the node does with a pod, decided by a :class:`SandboxPolicy`.

    Attributes:
        phase: Pending | Running | Succeeded | Failed.
        ready: whether the containers pass their readiness checks.
        waiting_reason: e.g. "ContainerCreating", "CrashLoopBackOff", "ImagePullBackOff".
        message: the waiting message shown by ``kubectl describe``.
        cni: "flannel" | "cilium" | "host" | None: which CNI created the sandbox.
        ip: the pod IP (hostNetwork: the node's InternalIP), None without a sandbox.
        delay: cluster seconds before this fate is applied (container start, pull).
    """

    phase: str
    ready: bool
    waiting_reason: str | None = None
    message: str | None = None
    cni: str | None = None
    ip: str | None = None
    delay: float = 0.0

    def signature(self) -> tuple:
        """What must match the pod's current status for the fate to be already applied."""
        return (self.phase, self.ready, self.waiting_reason,
                self.message if self.waiting_reason else None, self.cni, self.ip)


class SandboxPolicy(Protocol):
    def decide(self, pod: dict, node: dict) -> PodFate | None:
        """The fate of ``pod`` on ``node``; None leaves the pod as it is."""


# --------------------------------------------------------------------------- IPAM
class IPAllocator:
    """Per-node host-local IPAM over each node's ``spec.podCIDR``.

    Allocation is idempotent per pod uid (asking twice gives the same address) and never
    hands out an address in use; ``.1`` is left to the bridge (cni0/cilium_host), as
    host-local IPAM does.

    Example:
        >>> a = IPAllocator()
        >>> a.allocate("n1", "10.42.1.0/24", "uid-1")
        '10.42.1.2'
        >>> a.allocate("n1", "10.42.1.0/24", "uid-1")
        '10.42.1.2'
    """

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}
        self._next: dict[str, int] = {}
        self._by_uid: dict[str, tuple[str, str]] = {}

    def reserve(self, node: str, ip: str, uid: str | None = None) -> None:
        """Mark an address as in use (pods that already run, from the fixture)."""
        self._used.setdefault(node, set()).add(ip)
        if uid:
            self._by_uid[uid] = (node, ip)

    def allocate(self, node: str, cidr: str | None, uid: str) -> str | None:
        """An address for pod ``uid`` on ``node``, or None when the range is exhausted."""
        have = self._by_uid.get(uid)
        if have is not None and have[0] == node:
            return have[1]
        if have is not None:
            self.release(uid)
        if not cidr:
            return None
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        used = self._used.setdefault(node, set())
        first = int(net.network_address) + 2
        last = int(net.broadcast_address) - 1 if net.version == 4 else int(net.broadcast_address)
        size = last - first + 1
        if size <= 0:
            return None
        start = self._next.get(node, first)
        if not first <= start <= last:
            start = first
        # Next-fit: continue after the last address handed out, like host-local.
        for i in range(size):
            cand = first + (start - first + i) % size
            ip = str(ipaddress.ip_address(cand))
            if ip not in used:
                used.add(ip)
                self._by_uid[uid] = (node, ip)
                self._next[node] = cand + 1 if cand < last else first
                return ip
        return None

    def release(self, uid: str) -> None:
        have = self._by_uid.pop(uid, None)
        if have is not None:
            self._used.get(have[0], set()).discard(have[1])

    def in_use(self, node: str) -> set[str]:
        return set(self._used.get(node, ()))


def node_internal_ip(node: dict) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or ():
        if a.get("type") == "InternalIP":
            return a.get("address")
    return None


def has_sandbox(pod: dict) -> bool:
    """A pod whose sandbox exists: annotated with its CNI and started."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    st = pod.get("status") or {}
    return SANDBOX_CNI_ANNOTATION in ann and (st.get("phase") in ("Running", "Succeeded", "Failed")
                                             or bool(st.get("podIP")))


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


# --------------------------------------------------------------------------- status
def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def image_ref(image: str) -> str:
    """Fully qualified repository of an image, as containerd reports it."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def _qty(v: Any) -> str:
    return str(v) if v is not None else ""


def qos_class(spec: dict) -> str:
    """Guaranteed / Burstable / BestEffort from the containers' requests and limits."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req = res.get("requests") or {}
        lim = res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim:
                guaranteed = False
            elif r in req and _qty(req[r]) != _qty(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed and containers else "Burstable"


def current_signature(pod: dict) -> tuple:
    """The applied fate signature of a pod, read back from its status."""
    st = pod.get("status") or {}
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    cond = _condition(pod, "Ready")
    ready = bool(cond and cond.get("status") == "True")
    waiting = message = None
    for cs in st.get("containerStatuses") or ():
        w = (cs.get("state") or {}).get("waiting")
        if w:
            waiting, message = w.get("reason"), w.get("message")
            break
    return (st.get("phase"), ready, waiting, message if waiting else None,
            ann.get(SANDBOX_CNI_ANNOTATION), st.get("podIP"))


def build_pod_status(pod: dict, node: dict | None, fate: PodFate, now: str, *,
                     restart: bool = False) -> dict:
    """The complete ``status`` of ``pod`` once ``fate`` is applied.

    Keeps timestamps (startTime, startedAt, lastTransitionTime) that did not change, and
    counts a restart each time a container enters CrashLoopBackOff (and, with
    ``restart``, once more for a crash-looping container that just crashed again).
    """
    spec = pod.get("spec") or {}
    prev = pod.get("status") or {}
    uid = (pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name", "")
    status: dict = {"phase": fate.phase, "conditions": [dict(c) for c in prev.get("conditions") or ()]}
    host_ip = node_internal_ip(node) if node else prev.get("hostIP")
    sandbox = fate.ip is not None or fate.phase in ("Running", "Succeeded", "Failed")
    running = fate.phase == "Running"
    prev_cs = {c.get("name"): c for c in prev.get("containerStatuses") or ()}

    def container_status(c: dict, init: bool) -> dict:
        name = c.get("name", "")
        image = c.get("image", "")
        old = prev_cs.get(name) if not init else None
        restarts = int((old or {}).get("restartCount") or 0)
        cs: dict = {"name": name, "image": image, "imageID": "", "ready": False,
                    "restartCount": restarts, "started": False}
        if old and old.get("lastState"):
            cs["lastState"] = old["lastState"]
        if init:
            if sandbox and fate.phase != "Pending":
                cs.update(ready=True, imageID=f"{image_ref(image)}@sha256:{_digest(image)}",
                          containerID=f"containerd://{_digest(uid, 'init', name)}")
                cs["state"] = {"terminated": {"exitCode": 0, "reason": "Completed",
                                              "startedAt": prev.get("startTime") or now,
                                              "finishedAt": prev.get("startTime") or now,
                                              "containerID": cs["containerID"]}}
            else:
                cs["state"] = {"waiting": {"reason": fate.waiting_reason or "PodInitializing"}}
                if fate.message:
                    cs["state"]["waiting"]["message"] = fate.message
            return cs
        waiting_reason = fate.waiting_reason
        if running and not waiting_reason:
            old_run = ((old or {}).get("state") or {}).get("running")
            started = old_run.get("startedAt") if old_run else now
            cs.update(ready=fate.ready, started=True,
                      imageID=f"{image_ref(image)}@sha256:{_digest(image)}",
                      containerID=f"containerd://{_digest(uid, name, str(restarts))}")
            cs["state"] = {"running": {"startedAt": started}}
        elif fate.phase in ("Succeeded", "Failed"):
            code = 0 if fate.phase == "Succeeded" else 1
            cs.update(imageID=f"{image_ref(image)}@sha256:{_digest(image)}",
                      containerID=f"containerd://{_digest(uid, name, str(restarts))}")
            cs["state"] = {"terminated": {"exitCode": code,
                                          "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": prev.get("startTime") or now,
                                          "finishedAt": now, "containerID": cs["containerID"]}}
        else:
            reason = waiting_reason or "ContainerCreating"
            old_wait = ((old or {}).get("state") or {}).get("waiting") or {}
            if reason == "CrashLoopBackOff" and (restart or old_wait.get("reason") != "CrashLoopBackOff"):
                cs["restartCount"] = restarts + 1
                cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error",
                                                  "startedAt": now, "finishedAt": now}}
            if reason in ("CrashLoopBackOff",):
                cs["imageID"] = f"{image_ref(image)}@sha256:{_digest(image)}"
            cs["state"] = {"waiting": {"reason": reason}}
            if fate.message:
                cs["state"]["waiting"]["message"] = fate.message
        return cs

    containers = spec.get("containers") or []
    inits = spec.get("initContainers") or []
    status["containerStatuses"] = [container_status(c, False) for c in containers]
    if inits:
        status["initContainerStatuses"] = [container_status(c, True) for c in inits]

    initialized = not inits or (sandbox and fate.phase != "Pending")
    ready = running and fate.ready and not fate.waiting_reason
    unready = [c.get("name", "") for c in containers if not ready]
    _set_condition(status, {"type": "PodReadyToStartContainers",
                            "status": "True" if sandbox else "False"})
    _set_condition(status, {"type": "Initialized", "status": "True" if initialized else "False",
                            "reason": None if initialized else "ContainersNotInitialized",
                            "message": None if initialized else
                            f"containers with incomplete status: [{' '.join(c.get('name', '') for c in inits)}]"})
    for ctype in ("ContainersReady", "Ready"):
        _set_condition(status, {"type": ctype, "status": "True" if ready else "False",
                                "reason": None if ready else "ContainersNotReady",
                                "message": None if ready else
                                f"containers with unready status: [{' '.join(unready)}]"})
    _set_condition(status, {"type": "PodScheduled", "status": "True"})
    order = {"PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2, "ContainersReady": 3,
             "PodScheduled": 4}
    status["conditions"].sort(key=lambda c: order.get(c.get("type"), 9))
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if fate.ip:
        status["podIP"] = fate.ip
        status["podIPs"] = [{"ip": fate.ip}]
    status["startTime"] = prev.get("startTime") or now
    status["qosClass"] = qos_class(spec)
    return status


# --------------------------------------------------------------------------- controller
class Kubelet(Controller):
    """Applies sandbox policy decisions to the pods bound to nodes.

    Attributes:
        ipam: the per-node allocator used by the default policy (the network model may
            reuse it for podCIDR-based IPAM).
        policy: the current :class:`SandboxPolicy`.
    """

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict,
                 policy: SandboxPolicy | None = None) -> None:
        super().__init__("kubelet", clock, batch=200)
        self.store = store
        self.cache = cache
        self.types = types
        self.ipam = IPAllocator()
        self.policy: SandboxPolicy = policy or DefaultSandboxPolicy(self.ipam)
        # The volume manager: storage models hold a pod before its sandbox until its
        # volumes are attached and mounted (a gate returns the fate to show meanwhile).
        self.volume_gates: list[Callable[[dict, dict | None], PodFate | None]] = []
        self._pending: dict[ObjKey, tuple[tuple, float]] = {}
        self._crash: dict[ObjKey, float] = {}     # next crash-loop restart (cluster time)
        self.applied = 0

    # -- public hooks for the network model --------------------------------------------
    def set_policy(self, policy: SandboxPolicy, *, reevaluate: bool = True) -> None:
        """Replace the sandbox policy (and, by default, re-decide every bound pod)."""
        self.policy = policy
        self._pending.clear()
        self._crash.clear()
        if reevaluate:
            self.reevaluate()

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
        """At start: reserve the IPs of existing pods and queue pods not yet running.

        Pods already Running (e.g. from the fixture) are deliberately not queued: their
        status and sandbox annotation are kept as loaded.
        """
        for pod in self.cache.all(("", "pods")):
            spec = pod.get("spec") or {}
            st = pod.get("status") or {}
            node = spec.get("nodeName")
            if not node:
                continue
            if st.get("podIP") and not spec.get("hostNetwork"):
                self.ipam.reserve(node, st["podIP"], (pod.get("metadata") or {}).get("uid"))
            if st.get("phase") not in ("Running", "Succeeded", "Failed"):
                self.enqueue((pod["metadata"].get("namespace") or "", pod["metadata"]["name"]))

    # -- events -----------------------------------------------------------------------------
    def on_event(self, event_type: str, kind: tuple[str, str], obj: dict, old: dict | None) -> None:
        if kind == ("", "pods"):
            md = obj["metadata"]
            key = (md.get("namespace") or "", md["name"])
            if event_type == "DELETED":
                self._pending.pop(key, None)
                self._crash.pop(key, None)
                self.forget(key)
                if md.get("uid"):
                    self.ipam.release(md["uid"])
                return
            node = (obj.get("spec") or {}).get("nodeName")
            if not node:
                return
            if old is None or (old.get("spec") or {}).get("nodeName") != node:
                self.enqueue(key)
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
        if not spec.get("nodeName") or md.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
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
        sig = fate.signature()
        if sig == current_signature(pod):
            self._pending.pop(key, None)
            if fate.waiting_reason == "CrashLoopBackOff":
                self._crash_loop(key, pod, node, fate)
            else:
                self._crash.pop(key, None)
            return
        self._crash.pop(key, None)
        now = self.clock.cluster_now()
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
        if fate.waiting_reason == "CrashLoopBackOff":
            self.enqueue(key)    # start the back-off clock

    def _crash_loop(self, key: ObjKey, pod: dict, node: dict | None, fate: PodFate) -> None:
        """Keep a crash-looping container restarting: 10 s, 20 s, 40 s ... up to 300 s
        (the kubelet's back-off), so RESTARTS climbs as on a node."""
        now = self.clock.cluster_now()
        due = self._crash.get(key)
        restarts = max([int(cs.get("restartCount") or 0)
                        for cs in (pod.get("status") or {}).get("containerStatuses") or ()] or [0])
        backoff = min(300.0, 10.0 * (2 ** max(0, restarts - 1)))
        if due is None:
            self._crash[key] = now + backoff
            self.requeue_after(key, backoff)
        elif now + 1e-6 >= due:
            del self._crash[key]
            self._apply(key, pod, node, fate, restart=True)
            self._crash[key] = now + min(300.0, backoff * 2)
            self.requeue_after(key, min(300.0, backoff * 2))
        else:
            self.requeue_after(key, due - now)

    def _apply(self, key: ObjKey, pod: dict, node: dict | None, fate: PodFate, *,
               restart: bool = False) -> None:
        now = now_rfc3339()
        new_status = build_pod_status(pod, node, fate, now, restart=restart)
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
