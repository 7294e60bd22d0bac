"""What every workload controller shares: the kinds, selector matching, adoption of
orphans, creating and deleting pods, status writes, and the spec defaults fallback.

The controllers (:mod:`.replicasets`, :mod:`.deployments`, :mod:`.daemonsets`,
:mod:`.statefulsets`) subclass :class:`WorkloadBase`.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from ...selectors import from_label_selector
from ...store import AlreadyExists, NotFound
from ..base import Cache, Controller, ObjKey
from .templates import canonical, owner_ref_for, pod_active, random_suffix, workload_defaults

log = logging.getLogger("twin.controllers.workloads")

POD = ("", "pods")
NODE = ("", "nodes")
RS = ("apps", "replicasets")
DEPLOY = ("apps", "deployments")
DS = ("apps", "daemonsets")
STS = ("apps", "statefulsets")

MAX_CREATES_PER_PASS = 500


def compiled_selector(selector: dict | None) -> Any:
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


class WorkloadBase(Controller):
    """A controller of one workload kind (``kind_key``) over the shared :class:`Cache`.

    Subclasses implement ``reconcile(key)`` and may override :meth:`first_sight`; the
    helpers here write through the store, never into the cache.
    """

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
        sel = compiled_selector((owner.get("spec") or {}).get("selector")) if orphans else None
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
