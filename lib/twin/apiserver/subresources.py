"""Subresources: ``status``, ``scale``, a namespace's ``finalize``, a pod's ``eviction``,
``log``, ``exec`` and ``portforward``, a service account's ``token``.

Discovery lists the same set (:meth:`DiscoveryRoutes._subresources`); a subresource
not served here answers the real server's 404.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..store import ResourceType
from .bodies import check_object
from .eviction import EvictionRoutes
from .logs import PodLogRoutes
from .patching import apply_patch
from .responses import HTTPError, json_response


class SubresourceRoutes(EvictionRoutes, PodLogRoutes):
    """The :class:`APIServer`'s subresource requests (uses its ``rt``)."""

    rt: Any

    async def _subresource(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                           sub: str) -> web.StreamResponse:
        m = request.method
        if sub == "status" and t.status_subresource:
            if m == "GET":
                return json_response(self.rt.store.get(t, ns, name))
            if m == "PUT":
                return await self._update(request, t, ns, name, "status")
            if m == "PATCH":
                return await self._patch(request, t, ns, name, "status")
        elif sub == "finalize" and (t.group, t.plural) == ("", "namespaces") and m == "PUT":
            # What operators use to unstick a Terminating namespace: replace spec.finalizers.
            body = check_object(await self._read_body(request), t)
            fins = list((body.get("spec") or {}).get("finalizers") or [])
            return json_response(self.rt.store.mutate(
                t, None, name, lambda o: o.setdefault("spec", {}).__setitem__("finalizers", fins)))
        elif sub == "scale" and t.scale_subresource:
            return await self._scale(request, t, ns, name)
        elif sub == "eviction" and (t.group, t.plural) == ("", "pods") and m == "POST":
            return await self._evict(request, t, ns, name)
        elif sub == "exec" and (t.group, t.plural) == ("", "pods") and m in ("GET", "POST"):
            return await self._exec(request, ns or "", name)
        elif sub == "portforward" and (t.group, t.plural) == ("", "pods") and m in ("GET", "POST"):
            return await self._portforward(request, ns or "", name)
        elif sub == "token" and (t.group, t.plural) == ("", "serviceaccounts") and m == "POST":
            return self._token_request(request, ns or "", name, await self._read_body(request))
        elif sub == "log" and (t.group, t.plural) == ("", "pods") and m == "GET":
            return await self._pod_log(request, t, ns, name)
        raise HTTPError(404, "NotFound", "the server could not find the requested resource")

    async def _scale(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        store = self.rt.store
        scale = store.get_scale(t, ns, name)
        m = request.method
        if m == "GET":
            return json_response(scale)
        body = await self._read_body(request)
        if m == "PATCH":
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
            kind = {"application/json-patch+json": "json"}.get(ctype, "merge")
            body = apply_patch(kind, scale, body)
        elif m != "PUT":
            raise HTTPError(405, "MethodNotAllowed", "method not allowed on scale")
        if not isinstance(body, dict) or "replicas" not in (body.get("spec") or {}):
            raise HTTPError(400, "BadRequest", "scale body needs spec.replicas")
        replicas = body["spec"]["replicas"]
        if self._dry_run(request):
            scale["spec"]["replicas"] = replicas
            return json_response(scale)
        rv = (body.get("metadata") or {}).get("resourceVersion") if m == "PUT" else None
        return json_response(store.set_scale(t, ns, name, replicas, resource_version=rv))
