"""PATCH in its four flavours: JSON merge, JSON patch, strategic merge, server-side apply.

The patch arithmetic itself is pure (:mod:`twin.patch`); this module reads the request,
applies it to the stored object, checks the result still names the same object, and
stores it. Server-side apply creates the object when it is absent.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..store import NotFound, ResourceType
from .bodies import check_namespace, check_object
from .responses import HTTPError, json_response, now_rfc3339


class PatchRoutes:
    """The :class:`APIServer`'s PATCH requests (uses its ``rt``)."""

    rt: Any

    async def _patch(self, request: web.Request, t: ResourceType, ns: str | None, name: str,
                     sub: str | None) -> web.Response:
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        kinds = {"application/merge-patch+json": "merge", "application/json-patch+json": "json",
                 "application/strategic-merge-patch+json": "strategic",
                 "application/apply-patch+yaml": "apply", "application/apply-patch+json": "apply"}
        kind = kinds.get(ctype)
        if kind is None:
            raise HTTPError(415, "UnsupportedMediaType",
                            f"the body of the request was in an unknown format - accepted media types include: "
                            f"{', '.join(kinds)}")
        patch_body = await self._read_body(request)
        if patch_body is None:
            raise HTTPError(400, "BadRequest", "the body of the request was empty")
        if kind == "json" and not isinstance(patch_body, list):
            raise HTTPError(400, "BadRequest", "json patch must be a list of operations")
        if kind != "json" and not isinstance(patch_body, dict):
            raise HTTPError(400, "BadRequest", "patch body must be an object")
        dry = self._dry_run(request)
        current = self.rt.store.try_get(t, ns, name)
        if current is None:
            if kind != "apply" or sub is not None:
                raise NotFound(f'{t.plural}{"." + t.group if t.group else ""} "{name}" not found',
                               details={"name": name, "group": t.group, "kind": t.plural})
            # Server-side apply creates the object when it is absent.
            obj = check_object(self._patched("apply", None, patch_body, request), t)
            check_namespace(t, ns, obj)
            if obj["metadata"].get("name", name) != name:
                raise HTTPError(400, "BadRequest", "the name of the object does not match the name on the URL")
            obj["metadata"]["name"] = name
            self._require_namespace(ns)
            self.apply_defaults(t, obj)
            self._admit(request, t, obj, apply=True)
            if dry:
                return json_response(self._fake_create(obj, t), 201)
            return json_response(self.rt.store.create(obj, rtype=t, reset_status=True), 201)
        result = self._patched(kind, current, patch_body, request)
        if not isinstance(result, dict):
            raise HTTPError(422, "Invalid", "the patch produced something that is not an object")
        result = check_object(result, t)
        check_namespace(t, ns, result)
        if result["metadata"].get("name") != name:
            raise HTTPError(400, "BadRequest", "a patch may not change the name of an object")
        # A patch is applied to what we just read: optimistic concurrency only if the patch
        # itself names a resourceVersion (as kubectl's does not).
        patched_rv = (patch_body.get("metadata") or {}).get("resourceVersion") if isinstance(patch_body, dict) else None
        if not patched_rv:
            result["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        self._admit(request, t, result, subresource=sub, apply=kind == "apply")
        if kind != "apply" and sub is None:
            self._record_manager(request, t, current, result)
        if dry:
            return json_response(result)
        return json_response(self.rt.store.update(result, rtype=t, subresource=sub,
                                                  check_version=bool(patched_rv),
                                                  preserve_status=sub is None))

    @staticmethod
    def _patched(kind: str, current: dict | None, patch_body: Any, request: web.Request) -> dict:
        from ..managed_fields import ApplyConflict
        from ..patch import PatchError
        try:
            return apply_patch(kind, current, patch_body,
                               manager=request.query.get("fieldManager", ""),
                               force=request.query.get("force") == "true")
        except ApplyConflict as e:
            raise HTTPError(409, "Conflict", str(e), {"causes": e.causes()}) from e
        except PatchError as e:
            raise HTTPError(e.code, "BadRequest" if e.code == 400 else "Invalid", e.message) from e
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise HTTPError(422, "Invalid", f"the patch could not be applied: {e}") from e


def apply_patch(kind: str, current: dict | None, patch_body: Any, *, manager: str = "",
                force: bool = False) -> dict:
    """Apply one PATCH flavour with the pure patch functions of :mod:`twin.patch`."""
    from .. import patch as p
    if kind == "merge":
        return p.merge_patch(current, patch_body)
    if kind == "json":
        return p.json_patch(current, patch_body)
    if kind == "strategic":
        return p.strategic_merge_patch(current, patch_body)
    if kind == "apply":
        return p.server_side_apply(current, patch_body, field_manager=manager or "unknown",
                                   now=now_rfc3339(), force=force)
    raise ValueError(f"unknown patch kind {kind}")
