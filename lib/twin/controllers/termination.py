"""Graceful pod termination, as the kubelet carries it out (part of the kubelet).

Once the API server has set a pod's ``deletionTimestamp`` (:mod:`twin.store`'s pod
deletion), the kubelet of its node:

1. records ``Killing`` ("Stopping container X") for each running container and sends
   it SIGTERM;
2. waits until each container has exited: after its program's SIGTERM time
   (:func:`~.programs.program_for`, about a second for most programs), or at the end of
   ``deletionGracePeriodSeconds`` for one that ignores SIGTERM (then SIGKILL, exit 137);
   a shorter grace period (``kubectl delete --grace-period``) cuts the wait short;
3. writes the containers' terminated states, then deletes the pod with grace 0, which
   removes it unless finalizers still hold it (they keep it Terminating).

A pod whose containers never started goes at once. While the node's kubelet is down
(k3s stopped, node rebooting) nothing happens: the pod stays Terminating, as on a node
that stopped posting.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..store import NotFound, StoreError
from .events import container_path
from .scheduler import _set_condition, now_rfc3339

log = logging.getLogger("twin.controllers.kubelet")

SIGKILL_EXIT = 137


@dataclass
class _Stopping:
    grace: int
    due: float                       # cluster time when every container has exited
    exits: dict[str, int]            # container -> exit code


def running_containers(pod: dict) -> list[str]:
    """Names of the containers whose status shows them running."""
    return [cs.get("name", "") for cs in (pod.get("status") or {}).get("containerStatuses") or ()
            if "running" in (cs.get("state") or {})]


class Termination:
    """The kubelet's part that stops deleted pods (uses the kubelet's store, clock,
    events, runs and its ``kubelet_running`` check)."""

    def __init__(self, kubelet: Any) -> None:
        self.kubelet = kubelet
        self._stopping: dict[Any, _Stopping] = {}
        self.removed = 0

    def forget(self, key: Any) -> None:
        self._stopping.pop(key, None)

    def reconcile(self, key: Any, pod: dict, node_name: str) -> None:
        k = self.kubelet
        if not k.kubelet_running(node_name):
            return
        md = pod["metadata"]
        grace = int(md.get("deletionGracePeriodSeconds") or 0)
        now = k.clock.cluster_now()
        rec = self._stopping.get(key)
        if rec is None or grace < rec.grace:
            rec = self._begin(key, pod, node_name, grace, now, rec)
        if now + 1e-6 < rec.due:
            k.requeue_after(key, rec.due - now)
            return
        self._finish(key, pod, rec)

    def _begin(self, key: Any, pod: dict, node_name: str, grace: int, now: float,
               prev: _Stopping | None) -> _Stopping:
        k = self.kubelet
        running = running_containers(pod)
        if prev is None:
            for name in running:
                k.events.record(pod, "Normal", "Killing", f"Stopping container {name}",
                                component="kubelet", host=node_name,
                                field_path=container_path(pod, name))
        started = now if prev is None else prev.due - prev.grace   # when SIGTERM was sent
        latest, exits = started, {}
        for name in running:
            prog = k.runs.program(key, pod, name)
            if prog.stop_seconds is None or prog.stop_seconds >= grace:
                took, code = float(grace), SIGKILL_EXIT
            else:
                took, code = prog.stop_seconds, 0
            exits[name] = code
            latest = max(latest, started + took)
        rec = self._stopping[key] = _Stopping(grace, latest, exits)
        return rec

    def _finish(self, key: Any, pod: dict, rec: _Stopping) -> None:
        k = self.kubelet
        md = pod["metadata"]
        ns, name = md.get("namespace") or "", md["name"]
        pods_rt = k.types["pods"]
        if rec.exits:
            now = now_rfc3339()

            def stopped(p: dict) -> None:
                st = p.setdefault("status", {})
                for cs in st.get("containerStatuses") or ():
                    run = (cs.get("state") or {}).get("running")
                    if run is None:
                        continue
                    code = rec.exits.get(cs.get("name"), 0)
                    cs["state"] = {"terminated": {
                        "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                        "startedAt": run.get("startedAt") or now, "finishedAt": now,
                        "containerID": cs.get("containerID", "")}}
                    cs["ready"] = False
                    cs["started"] = False
                for ctype in ("ContainersReady", "Ready"):
                    _set_condition(st, {"type": ctype, "status": "False", "reason": "PodCompleted"})
                if (p.get("spec") or {}).get("restartPolicy", "Always") != "Never" or \
                        st.get("phase") == "Running":
                    st["phase"] = "Failed" if any(rec.exits.values()) else "Succeeded"
            try:
                k.store.mutate(pods_rt, ns or None, name, stopped, subresource="status")
            except NotFound:
                self.forget(key)
                return
        try:
            k.store.delete(pods_rt, ns or None, name, grace_period=0,
                           preconditions={"uid": md.get("uid")} if md.get("uid") else None)
            self.removed += 1
        except NotFound:
            pass
        except StoreError:   # recreated meanwhile with the same name: not ours any more
            log.debug("final delete of %s/%s skipped", ns, name, exc_info=True)
        self.forget(key)
