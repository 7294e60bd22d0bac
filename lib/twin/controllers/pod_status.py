"""A pod's status as the kubelet writes it, from the fate decided for the pod (pure).

:class:`PodFate` is what a sandbox policy (and the kubelet's own image pulls, program
runs and back-offs) decide for a pod; :func:`build_pod_status` turns it into the whole
``status`` (phase, conditions, container statuses, IPs, QoS class);
:func:`current_signature` reads back what is applied, so the kubelet writes only on a
change. A fate's ``overlay`` sets single container statuses (one container exited,
another still running); a CrashLoopBackOff container gets the kubelet's back-off
message, its crash in ``lastState.terminated`` (with the termination message the
container's ``terminationMessagePolicy`` gives).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .scheduler import _condition, _set_condition
from .stages import backoff

SANDBOX_CNI_ANNOTATION = "twin.phase22.io/sandbox-cni"
NETWORK_NOT_READY_MESSAGE = (
    "network is not ready: container runtime network not ready: NetworkReady=false "
    "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")


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
        overlay: container name -> fields of its containerStatus that differ from what
            the pod-level fate gives (state, lastState, restartCount, ready, started).
        logs: what a crashing container writes before it exits (the reason in its own
            words); the kubelet logs it and, with ``FallbackToLogsOnError``, makes it
            the termination message.
    """

    phase: str
    ready: bool
    waiting_reason: str | None = None
    message: str | None = None
    cni: str | None = None
    ip: str | None = None
    delay: float = 0.0
    overlay: dict[str, dict] | None = field(default=None, compare=False)
    logs: tuple[str, ...] = field(default=(), compare=False)

    def signature(self) -> tuple:
        """What must match the pod's current status for the fate to be already applied."""
        return (self.phase, self.ready, self.waiting_reason,
                _message_key(self.waiting_reason, self.message), self.cni, self.ip)


def _message_key(reason: str | None, message: str | None) -> str | None:
    # A CrashLoopBackOff's waiting message is the kubelet's back-off text (it changes
    # with each restart); what the container said is in lastState and its logs.
    return message if reason and reason != "CrashLoopBackOff" else None


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
    return (st.get("phase"), ready, waiting, _message_key(waiting, message),
            ann.get(SANDBOX_CNI_ANNOTATION), st.get("podIP"))


def overlay_applied(pod: dict, overlay: dict[str, dict] | None) -> bool:
    """Whether the container statuses of ``pod`` already show ``overlay``."""
    if not overlay:
        return True
    have = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or ()}
    for name, want in overlay.items():
        cur = have.get(name)
        if cur is None or _state_key(cur) != _state_key(want):
            return False
    return True


def _state_key(cs: dict) -> tuple:
    state = cs.get("state") or {}
    kind = next(iter(state), None)
    detail = state.get(kind) or {}
    return (kind, detail.get("reason"), detail.get("exitCode"), int(cs.get("restartCount") or 0),
            bool(cs.get("ready")))


def go_duration(seconds: float) -> str:
    """A duration as Go prints it: ``10s``, ``1m20s``, ``5m0s``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


def crash_loop_message(pod: dict, container: str, restarts: int) -> str:
    """The kubelet's CrashLoopBackOff waiting message for a container restarted
    ``restarts`` times."""
    md = pod.get("metadata") or {}
    wait = go_duration(backoff("pod.crash-loop", max(1, restarts)))
    return (f"back-off {wait} restarting failed container={container} "
            f"pod={md.get('name', '')}_{md.get('namespace', '')}({md.get('uid', '')})")


def build_pod_status(pod: dict, node: dict | None, fate: PodFate, now: str, *,
                     restart: bool = False, crash_messages: dict[str, str] | None = None) -> dict:
    """The complete ``status`` of ``pod`` once ``fate`` is applied.

    Keeps timestamps (startTime, startedAt, lastTransitionTime) that did not change, and
    counts a restart each time a container enters CrashLoopBackOff (and, with
    ``restart``, once more for a crash-looping container that just crashed again).
    ``crash_messages`` (container -> text) become the crashes' termination messages.
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
                old_run = ((old or {}).get("state") or {}).get("running") or {}
                crashed = {"exitCode": 1, "reason": "Error",
                           "startedAt": old_run.get("startedAt") or now, "finishedAt": now,
                           "containerID": f"containerd://{_digest(uid, name, str(restarts))}"}
                if (crash_messages or {}).get(name):
                    crashed["message"] = crash_messages[name]
                cs["lastState"] = {"terminated": crashed}
            if reason in ("CrashLoopBackOff",):
                cs["imageID"] = f"{image_ref(image)}@sha256:{_digest(image)}"
            cs["state"] = {"waiting": {"reason": reason}}
            message = crash_loop_message(pod, name, int(cs["restartCount"])) \
                if reason == "CrashLoopBackOff" else fate.message
            if message:
                cs["state"]["waiting"]["message"] = message
        return cs

    containers = spec.get("containers") or []
    inits = spec.get("initContainers") or []
    status["containerStatuses"] = [container_status(c, False) for c in containers]
    if inits:
        status["initContainerStatuses"] = [container_status(c, True) for c in inits]
    for cs in status["containerStatuses"]:
        over = (fate.overlay or {}).get(cs["name"])
        if over:
            _apply_overlay(pod, cs, over, prev_cs.get(cs["name"]), now)

    initialized = not inits or (sandbox and fate.phase != "Pending")
    if fate.overlay:
        unready = [cs["name"] for cs in status["containerStatuses"] if not cs.get("ready")]
        ready = running and not unready
    else:
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



def _apply_overlay(pod: dict, cs: dict, over: dict, old: dict | None, now: str) -> None:
    """Set one container's status from an overlay, keeping the timestamps of a state
    that did not change and carrying a run's start into its end."""
    cs.update(over)
    if "lastState" in over and not over["lastState"]:
        cs.pop("lastState")
    if old is not None and _state_key(old) == _state_key(over):
        for k in ("state", "lastState"):
            if k in old:
                cs[k] = old[k]
        return
    old_run = ((old or {}).get("state") or {}).get("running") or {}
    state = cs.get("state") or {}
    ended = state.get("terminated") or ((cs.get("lastState") or {}).get("terminated")
                                        if "waiting" in state else None)
    if ended is not None and old_run.get("startedAt"):
        ended["startedAt"] = old_run["startedAt"]
        ended["finishedAt"] = now
    waiting = state.get("waiting")
    if waiting is not None and waiting.get("reason") == "CrashLoopBackOff" and not waiting.get("message"):
        waiting["message"] = crash_loop_message(pod, cs["name"], int(cs.get("restartCount") or 0))
