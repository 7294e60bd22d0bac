"""The ``pods/eviction`` subresource: what ``kubectl drain`` posts for each pod.

An eviction is a delete that first asks the pod's PodDisruptionBudget
(:func:`twin.controllers.workloads.disruption.eviction_decision`): refused with 429
``TooManyRequests`` "Cannot evict pod as it would violate the pod's disruption budget."
(kubectl drain then retries every 5 s until its ``--timeout``), 500 with more than one
PDB, 403 for a negative budget. An allowed eviction first takes one disruption from the
PDB's status (``disruptionsAllowed - 1``, the pod under ``disruptedPods``), as the real
registry does before it deletes, so two evictions in a row cannot both spend the last
one; then the pod is deleted gracefully with the request's ``deleteOptions``.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..controllers.workloads.disruption import charge, eviction_decision
from ..store import ResourceType
from .responses import HTTPError, json_response, now_rfc3339


class EvictionRoutes:
    """The :class:`APIServer`'s evictions (uses its ``rt``, ``_read_body``, ``_do_delete``)."""

    rt: Any

    async def _evict(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        store = self.rt.store
        body = await self._read_body(request)
        opts = body.get("deleteOptions") if isinstance(body, dict) else None
        opts = opts if isinstance(opts, dict) else {}
        pod = store.get(t, ns, name)
        pdb_t = store.lookup("policy", "v1", "poddisruptionbudgets")
        pdbs = list(store.iter_objects(pdb_t, ns)) if pdb_t is not None else []
        decision = eviction_decision(pod, pdbs)
        if not decision.allowed:
            details: dict = {"name": name, "kind": "pods"}
            if decision.cause:
                details["causes"] = [{"reason": "DisruptionBudget", "message": decision.cause}]
            raise HTTPError(decision.code, decision.reason, decision.message, details)
        dry = self._dry_run(request)
        if decision.pdb is not None and not dry:
            md = decision.pdb["metadata"]
            store.mutate(pdb_t, md.get("namespace"), md["name"],
                         lambda b: charge(b, name, now_rfc3339()), subresource="status")
        self._do_delete(t, ns, name, opts, dry)
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, 201)
