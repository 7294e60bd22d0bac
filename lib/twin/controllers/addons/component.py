"""The runtime component ``"addons"``: runs every add-on model on the twin's store.

Each model changes the world only through the store, like a real controller through
the API server, so every change is visible to watches, kubectl and the runbook.
"""
from __future__ import annotations

import logging
from typing import Any

from ...ticker import Ticker
from .applicationsets import ApplicationSetModel
from .argocd import ArgoCDModel
from .common import find_type, meta
from .longhorn import LonghornModel, OperatorPods
from .metallb import MetalLBModel
from .velero import VELERO, VeleroModel

log = logging.getLogger("twin.controllers.addons")


class AddonControllers:
    """Runtime component ``"addons"``: the Velero, Argo CD, MetalLB, Longhorn and operator models.

    Example:
        >>> from twin.api import Twin, _build_components       # doctest: +SKIP
        >>> Twin(d, components=lambda rt: [*_build_components(rt), AddonControllers()])  # doctest: +SKIP
    """

    name = "addons"
    tick_seconds = 1.0   # cluster seconds between readiness re-checks

    def __init__(self) -> None:
        self.rt: Any = None
        self.velero: VeleroModel | None = None
        self.argocd: ArgoCDModel | None = None
        self.appsets: ApplicationSetModel | None = None
        self.metallb: MetalLBModel | None = None
        self.operators: OperatorPods | None = None
        self.longhorn: LonghornModel | None = None
        self._unsubscribe: Any = None
        self._ticker: Ticker | None = None

    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.velero = VeleroModel(rt)
        self.argocd = ArgoCDModel(rt)
        self.appsets = ApplicationSetModel(rt)
        self.metallb = MetalLBModel(rt)
        self.operators = OperatorPods(rt)
        self.longhorn = LonghornModel(rt)
        self.operators.wanted = self.longhorn.pod_wanted
        self.argocd.load()
        self.metallb.load()
        self._unsubscribe = rt.store.subscribe(self._on_event)
        self.argocd.start()
        self.appsets.start()
        self.metallb.start()
        self.longhorn.start()
        # Backups/Restores created before we subscribed (e.g. in a fixture) get processed too.
        for plural in ("backups", "restores"):
            t = find_type(rt.store, VELERO, plural)
            for o in list(rt.store.iter_objects(t)) if t else ():
                self.velero.on_event("ADDED", t, o, None)
        # Reachability can change without a store event (the network model's CNI state),
        # so the controller pods are looked at again now and then.
        self._ticker = Ticker("addons-tick", self.tick_seconds, self._tick, sleep=rt.clock.sleep,
                              logger=log)
        self._ticker.start()

    def _on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        for model in (self.velero, self.argocd, self.appsets, self.metallb, self.operators,
                      self.longhorn):
            if model is None:
                continue
            try:
                model.on_event(etype, rtype, obj, old)
            except Exception:
                log.exception("addons: %s failed on %s %s", type(model).__name__, etype,
                              meta(obj).get("name"))

    def _tick(self) -> None:
        if self.metallb is not None:
            self.metallb.enqueue("__controller__")
        if self.longhorn is not None:
            self.longhorn.tick()

    async def stop(self) -> None:
        if self._ticker is not None:
            await self._ticker.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for m in (self.argocd, self.appsets, self.metallb):
            if m is not None:
                await m.stop()
        if self.velero is not None:
            await self.velero.stop()
        if self.operators is not None:
            await self.operators.stop()
        if self.longhorn is not None:
            await self.longhorn.stop()

    def idle(self) -> bool:
        return all(m is None or m.idle() for m in (self.argocd, self.appsets)) and not (self.velero and self.velero.busy())

    def describe(self) -> str:
        pools = len(self.metallb.ipam.pools) if self.metallb else 0
        apps = len(self.argocd.desired) if self.argocd else 0
        return (f"velero, argocd ({apps} applications), metallb ({pools} pool(s), "
                f"controller {'Ready' if self.metallb and self.metallb.controller_ready() else 'not Ready'}), "
                f"{self.longhorn.describe() if self.longhorn else 'longhorn: not started'}")
