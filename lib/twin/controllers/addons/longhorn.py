"""Longhorn and other operators: pods owned by a custom resource come back.

longhorn-manager recreates the pod of an InstanceManager when it is deleted; other
operators do the same for the pods their custom resources own. This is the home of
the twin's Longhorn model (volumes, engines, replicas and InstanceManager pods are
later additions).
"""
from __future__ import annotations

import logging
from typing import Any

from ...ticker import TaskSet
from .common import meta

log = logging.getLogger("twin.controllers.addons")


class OperatorPods:
    """Operators recreate the pods their custom resources own (Longhorn instance managers ...).

    A pod whose controlling owner is a custom resource (not a Deployment, ReplicaSet,
    DaemonSet, StatefulSet or Job) is recreated under the same name, on the same node,
    a couple of cluster seconds after it is deleted, as long as its owner still exists:
    that is what longhorn-manager does for an InstanceManager's pod. Without this, the
    runbook's "restart every unmanaged pod" step would lose those pods on the twin.
    """

    delay = 2.0   # cluster seconds an operator takes to notice and recreate

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._tasks = TaskSet("operator-pods")

    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        if etype != "DELETED" or (rtype.group, rtype.plural) != ("", "pods"):
            return
        ref = next((r for r in meta(obj).get("ownerReferences") or () if r.get("controller")), None)
        if ref is None:
            return
        group = ref.get("apiVersion", "").split("/")[0] if "/" in ref.get("apiVersion", "") else ""
        if group in ("", "apps", "batch"):
            return
        self._tasks.spawn(self._recreate(obj, ref))

    async def _recreate(self, pod: dict, ref: dict) -> None:
        await self.rt.clock.sleep(self.delay)
        store = self.rt.store
        md = meta(pod)
        owner_t = store.lookup_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if owner_t is None or store.try_get(owner_t, md.get("namespace"), ref.get("name", "")) is None:
            return  # the owner is gone: the operator has nothing to recreate
        pod_t = store.lookup("", "v1", "pods")
        if store.try_get(pod_t, md.get("namespace"), md["name"]) is not None:
            return
        ann = {k: v for k, v in (md.get("annotations") or {}).items() if not k.startswith("twin.phase22.io/")}
        fresh = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                              "labels": dict(md.get("labels") or {}), "annotations": ann,
                              "ownerReferences": list(md.get("ownerReferences") or [])},
                 "spec": dict(pod.get("spec") or {})}
        try:
            store.create(fresh)
        except Exception:
            log.debug("operator pods: %s/%s not recreated", md.get("namespace"), md["name"], exc_info=True)

    async def stop(self) -> None:
        self._tasks.cancel()
