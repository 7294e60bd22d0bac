"""CRUD on every served resource: get, list, create, update, delete, deletecollection.

Reads answer plain JSON, a ``Table`` or ``PartialObjectMetadata`` as the Accept header
asks; writes honour ``dryRun=All``; deletes take DeleteOptions from the body or the
query (propagation policy, grace period, preconditions). Watches, patches and
subresources have their own modules; this one dispatches to them.
"""
from __future__ import annotations

import secrets
import uuid
from typing import Any

from aiohttp import web

from .. import protobuf, tables
from ..store import NotFound, ResourceType
from .auth import REVIEW_KEYS, USER
from .bodies import check_namespace, check_object, decode_body
from .responses import JSON, HTTPError, accept_as, accept_table, json_response, now_rfc3339
from .routing import Route
from .validation import check_field_selector


class ResourceRoutes:
    """The :class:`APIServer`'s resource requests (uses its ``rt`` and ``protobuf_bodies``)."""

    rt: Any
    protobuf_bodies: int

    def _rtype(self, route: Route) -> ResourceType:
        t = self.rt.store.lookup(route.group, route.version, route.plural)
        if t is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource", {})
        return t

    async def _resource(self, request: web.Request, route: Route) -> web.StreamResponse:
        t = self._rtype(route)
        if route.namespace is not None and not t.namespaced:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        ns = route.namespace if t.namespaced else None
        m = request.method
        q = request.query
        if (t.group, t.plural) in REVIEW_KEYS:
            if m != "POST" or route.name is not None:
                raise HTTPError(405, "MethodNotAllowed",
                                "the server does not allow this method on the requested resource")
            body = check_object(await self._read_body(request), t)
            return self._review(request, t, ns, body, request[USER])
        if route.watch_path or (m == "GET" and q.get("watch") in ("true", "1") and route.name is None):
            if route.name is not None:
                fs = f"metadata.name={route.name}"
                q = dict(q)
                q["fieldSelector"] = ",".join(x for x in (q.get("fieldSelector"), fs) if x)
            check_field_selector(t, q.get("fieldSelector"))
            return await self._watch(request, t, ns, q)
        if route.name is None:
            if m == "GET":
                return self._list(request, t, ns)
            if m == "POST":
                return await self._create(request, t, ns, route)
            if m == "DELETE":
                return await self._delete_collection(request, t, ns)
            raise HTTPError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if t.namespaced and ns is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        sub = route.subresource
        if sub is not None:
            return await self._subresource(request, t, ns, route.name, sub)
        if m == "GET":
            return self._get(request, t, ns, route.name)
        if m == "PUT":
            return await self._update(request, t, ns, route.name, None)
        if m == "PATCH":
            return await self._patch(request, t, ns, route.name, None)
        if m == "DELETE":
            return await self._delete(request, t, ns, route.name)
        raise HTTPError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = (request.headers.get("Content-Type") or JSON).split(";")[0].strip().lower()
        body = decode_body(raw, ctype)
        if raw and ctype == protobuf.CONTENT_TYPE:
            self.protobuf_bodies += 1
        return body

    def _require_namespace(self, ns: str | None) -> None:
        """Writes into a namespace that does not exist fail, as on a real server."""
        if ns is None:
            return
        nst = self.rt.store.lookup("", "v1", "namespaces")
        if nst is not None and self.rt.store.try_get(nst, None, ns) is None:
            raise HTTPError(404, "NotFound", f'namespaces "{ns}" not found',
                            {"name": ns, "kind": "namespaces"})

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return "All" in request.query.getall("dryRun", [])

    # -- reads -----------------------------------------------------------------------------
    def _table_or_json(self, request: web.Request, t: ResourceType, objs: list[dict],
                       list_meta: dict | None, single: bool) -> web.Response | None:
        accept = request.headers.get("Accept", "")
        tv = accept_table(accept)
        if tv is not None:
            table = tables.render_table(
                t.group, t.plural, objs, printer_columns=t.table_columns,
                include_object=request.query.get("includeObject", "Metadata"),
                list_metadata=list_meta, api_version=f"meta.k8s.io/{tv}")
            return json_response(table)
        ases = accept_as(accept)
        if "PartialObjectMetadataList" in ases and not single or "PartialObjectMetadata" in ases and single:
            v = "v1beta1" if "v=v1beta1" in accept and "v=v1;" not in accept else "v1"
            items = [tables.partial_metadata(o, f"meta.k8s.io/{v}") for o in objs]
            if single:
                return json_response(items[0])
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{v}",
                                  "metadata": list_meta or {}, "items": items})
        return None

    def _get(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        obj = self.rt.store.get(t, ns, name)
        alt = self._table_or_json(request, t, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                                  single=accept_table(request.headers.get("Accept", "")) is None)
        return alt or json_response(obj)

    def _list(self, request: web.Request, t: ResourceType, ns: str | None) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit") or 0)
        except ValueError as e:
            raise HTTPError(400, "BadRequest", f"invalid limit {q.get('limit')!r}") from e
        check_field_selector(t, q.get("fieldSelector"))
        # copy=False: the stored dicts are only serialised (or read by the printers).
        res = self.rt.store.list(t, ns, label_selector=q.get("labelSelector") or None,
                                 field_selector=q.get("fieldSelector") or None,
                                 limit=max(limit, 0), continue_token=q.get("continue") or None,
                                 copy=False)
        meta: dict[str, Any] = {"resourceVersion": str(res.resource_version)}
        if res.continue_token:
            meta["continue"] = res.continue_token
            if res.remaining is not None:
                meta["remainingItemCount"] = res.remaining
        alt = self._table_or_json(request, t, res.items, meta, single=False)
        if alt is not None:
            return alt
        return json_response({"kind": t.list_kind or f"{t.kind}List", "apiVersion": t.api_version,
                              "metadata": meta, "items": res.items})

    # -- writes ----------------------------------------------------------------------------
    def _fake_create(self, obj: dict, t: ResourceType) -> dict:
        """What a create would return, without storing anything (dryRun=All)."""
        meta = obj["metadata"]
        if t.status_subresource:
            obj.pop("status", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        meta.setdefault("generation", 1)
        return obj

    async def _create(self, request: web.Request, t: ResourceType, ns: str | None,
                      route: Route) -> web.Response:
        body = check_object(await self._read_body(request), t)
        check_namespace(t, ns, body)
        if not body["metadata"].get("name") and not body["metadata"].get("generateName"):
            raise HTTPError(422, "Invalid", f"{t.kind} \"\" is invalid: metadata.name: Required value: "
                                           "name or generateName is required",
                            {"kind": t.kind, "group": t.group})
        body["metadata"].pop("resourceVersion", None)
        self._require_namespace(ns)
        self.apply_defaults(t, body)
        self._admit(request, t, body)
        self._record_manager(request, t, None, body)
        if self._dry_run(request):
            name = body["metadata"].get("name")
            if name and self.rt.store.try_get(t, ns, name) is not None:
                raise HTTPError(409, "AlreadyExists", f'{t.plural} "{name}" already exists',
                                {"name": name, "group": t.group, "kind": t.plural})
            return json_response(self._fake_create(body, t), 201)
        return json_response(self.rt.store.create(body, rtype=t, reset_status=True), 201)

    async def _update(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                      sub: str | None) -> web.Response:
        body = check_object(await self._read_body(request), t)
        check_namespace(t, ns, body)
        if body["metadata"].get("name", name) != name:
            raise HTTPError(400, "BadRequest", "the name of the object "
                                               f"({body['metadata'].get('name')}) does not match the name on the URL ({name})")
        body["metadata"]["name"] = name
        self._admit(request, t, body, subresource=sub)
        if sub is None:
            cur = self.rt.store.get(t, ns, name)
            body["metadata"]["managedFields"] = cur["metadata"].get("managedFields") or []
            self._record_manager(request, t, cur, body)
        if self._dry_run(request):
            cur = self.rt.store.get(t, ns, name)
            if sub == "status":
                cur["status"] = body.get("status")
                return json_response(cur)
            return json_response(body)
        out = self.rt.store.update(body, rtype=t, subresource=sub,
                                   check_version=bool(body["metadata"].get("resourceVersion")),
                                   preserve_status=sub is None)
        return json_response(out)

    async def _delete_options(self, request: web.Request) -> dict:
        opts: dict[str, Any] = {}
        try:
            body = await self._read_body(request)
        except HTTPError:
            body = None
        if isinstance(body, dict):
            opts.update(body)
        q = request.query
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("gracePeriodSeconds"):
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError as e:
                raise HTTPError(400, "BadRequest", "invalid gracePeriodSeconds") from e
        if q.get("orphanDependents") == "true":
            opts["propagationPolicy"] = "Orphan"
        if opts.get("orphanDependents") is True:
            opts["propagationPolicy"] = "Orphan"
        return opts

    def _do_delete(self, t: ResourceType, ns: str | None, name: str, opts: dict, dry: bool) -> dict:
        pre = opts.get("preconditions") or {}
        if dry:
            cur = self.rt.store.get(t, ns, name)
            for k in ("uid", "resourceVersion"):
                if pre.get(k) and pre[k] != cur["metadata"].get(k):
                    raise HTTPError(409, "Conflict", f"Precondition failed: {k}: {pre[k]}")
            return cur
        policy = opts.get("propagationPolicy") or "Background"
        return self.rt.store.delete(t, ns, name, propagation=policy,
                                    grace_period=opts.get("gracePeriodSeconds"),
                                    preconditions=pre or None)

    async def _delete(self, request: web.Request, t: ResourceType, ns: str | None, name: str) -> web.Response:
        opts = await self._delete_options(request)
        return json_response(self._do_delete(t, ns, name, opts, self._dry_run(request)))

    async def _delete_collection(self, request: web.Request, t: ResourceType, ns: str | None) -> web.Response:
        opts = await self._delete_options(request)
        q = request.query
        check_field_selector(t, q.get("fieldSelector"))
        res = self.rt.store.list(t, ns, label_selector=q.get("labelSelector") or None,
                                 field_selector=q.get("fieldSelector") or None)
        dry = self._dry_run(request)
        deleted = []
        for obj in res.items:
            meta = obj["metadata"]
            try:
                deleted.append(self._do_delete(t, meta.get("namespace"), meta["name"], opts, dry))
            except NotFound:
                continue   # removed meanwhile (garbage collection of an earlier item)
        return json_response({"kind": t.list_kind or f"{t.kind}List", "apiVersion": t.api_version,
                              "metadata": {"resourceVersion": str(self.rt.store.resource_version)},
                              "items": deleted})
