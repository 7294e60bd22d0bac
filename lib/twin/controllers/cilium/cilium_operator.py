"""The cilium-operator: registering the CRDs and the unmanaged-pod watcher.

**The operator** (hostNetwork) becomes Ready when it reaches the API server (same rule
as the agent, see :mod:`.agents`) and then registers the cilium.io CRDs
(:data:`~.crds.CRDS`).

**Unmanaged-pod watcher**: while the operator is Ready and
``unmanaged-pod-watcher-interval`` is not ``"0"``, every interval it deletes ONE
``k8s-app=kube-dns`` pod that has no CiliumEndpoint on a node whose agent is Ready,
like the real operator (application pods are never restarted for you).
"""
from __future__ import annotations

import logging
from typing import Any

from .config import is_ready
from .crds import CRDS, crd_object

log = logging.getLogger("twin.controllers.cilium")


class Operator:
    """Part of :class:`~.model.CiliumModel`: what the operator does once Ready.

    Owns ``watcher_restarts`` (pods the watcher deleted), ``_dns`` (kube-dns pod keys) and
    ``_watcher_due`` (cluster time of the next watcher pass).
    """

    rt: Any
    store: Any
    cache: Any
    ctrl: Any
    crds_registered: bool
    watcher_restarts: list[tuple[str, str]]
    _apps: dict[tuple[str, str], tuple[str, str]]
    _dns: set[tuple[str, str]]
    _watcher_due: float

    def operator_ready(self) -> bool:
        """Some cilium-operator pod is Ready."""
        return any(is_ready(self.cache.get(("", "pods"), *k)) for k, (app, _) in self._apps.items()
                   if app == "operator")

    def _register_crds(self) -> None:
        """The operator registers the cilium.io CRDs once it is Ready."""
        if not self.operator_ready():
            return
        crd_t = self._rtype("apiextensions.k8s.io", "customresourcedefinitions")
        if crd_t is None:
            return
        for spec in CRDS:
            name = f"{spec.plural}.cilium.io"
            if self.store.peek(crd_t, None, name) is None:
                self.store.create(crd_object(spec), rtype=crd_t)
        self.crds_registered = self._rtype("cilium.io", "ciliumnodes") is not None
        self.ctrl.enqueue(("all",))

    def _unmanaged_watcher(self, now: float) -> None:
        if not self._dns or not self.operator_ready():
            return
        cfg = self.config()
        if cfg.unmanaged_watcher_seconds <= 0:
            return
        if now < self._watcher_due:
            return
        self._watcher_due = now + cfg.unmanaged_watcher_seconds
        cep_t = self._type("cilium.io", "ciliumendpoints")
        pods_t = self._type("", "pods")
        for key in sorted(self._dns):
            pod = self.cache.get(("", "pods"), *key)
            if pod is None or (pod.get("spec") or {}).get("hostNetwork"):
                continue
            md = pod["metadata"]
            if md.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
                continue
            node = (pod.get("spec") or {}).get("nodeName") or ""
            if not self.agent_ready(node):
                continue
            if cep_t is not None and self.store.peek(cep_t, key[0], key[1]) is not None:
                continue
            log.info("unmanaged-pod watcher: restarting %s/%s", *key)
            try:
                self.store.delete(pods_t, key[0], key[1])
                self.watcher_restarts.append(key)
            except Exception:
                log.debug("restart of %s/%s failed", *key, exc_info=True)
            return   # one pod per cycle
