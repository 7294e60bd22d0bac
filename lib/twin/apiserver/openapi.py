"""``/openapi/v2`` and ``/openapi/v3``: the schemas kubectl explains and validates with.

- ``/openapi/v3`` lists one document per group version (``serverRelativeURL`` with a
  content hash); ``/openapi/v3/api/v1``, ``/openapi/v3/apis/{g}/{v}`` hold the schemas
  of that group version's kinds and everything they reference, and one path per
  resource whose operations carry ``x-kubernetes-group-version-kind`` and the query
  parameters the server honours (kubectl reads ``fieldValidation`` there before it
  sends ``--validate=strict`` to the server).
- ``/openapi/v2`` is the whole swagger document in JSON. Asked for protobuf only (the
  gnostic encoding), it answers an empty, valid protobuf document: the twin does not
  encode gnostic protobuf, and kubectl 1.32 reads v3 for ``explain`` and validation.

Documents are built once per set of served types (CRDs change it) and kept as bytes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from ..store import ResourceType
from . import schemas
from .discovery import K8S_VERSION
from .responses import JSON, HTTPError

_V2_REF = "#/definitions/"
_V3_REF = "#/components/schemas/"
PROTO_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _param(name: str) -> dict:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


class OpenAPIRoutes:
    """The :class:`APIServer`'s OpenAPI documents (uses its ``rt``)."""

    rt: Any
    _openapi_cache: dict

    # -- what the documents are built from ------------------------------------------------
    def _crd_objects(self) -> list[dict]:
        t = self.rt.store.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        return list(self.rt.store.iter_objects(t)) if t is not None else []

    def _openapi_key(self) -> tuple:
        crds = tuple(sorted((o["metadata"]["name"], o["metadata"].get("resourceVersion", ""))
                            for o in self._crd_objects()))
        types = tuple(sorted((t.group, t.version, t.plural) for t in self.rt.store.resource_types()))
        return crds, types

    def _openapi_defs(self) -> tuple[dict[str, dict], dict[tuple[str, str], list[tuple[ResourceType, str]]]]:
        """All definitions (built-in and CRD) and, per group version, (type, definition)."""
        cache = self.__dict__.setdefault("_openapi_cache", {})
        key = self._openapi_key()
        if cache.get("key") != key:
            defs = dict(schemas.builtin_definitions())
            crd_by_group_kind = {}
            for crd in self._crd_objects():
                spec = crd.get("spec") or {}
                crd_by_group_kind[(spec.get("group"), (spec.get("names") or {}).get("kind"))] = crd
            by_gv: dict[tuple[str, str], list[tuple[ResourceType, str]]] = {}
            for t in self.rt.store.resource_types():
                name = schemas.definition_name(defs, t.group, t.version, t.kind)
                if name is None:
                    crd = crd_by_group_kind.get((t.group, t.kind))
                    d = schemas.crd_definition(crd, t.version) if crd else None
                    if d is None:
                        continue
                    name = schemas.crd_definition_name(t.group, t.version, t.kind)
                    defs[name] = d
                by_gv.setdefault((t.group, t.version), []).append((t, name))
            cache.clear()
            cache.update(key=key, defs=defs, by_gv=by_gv, docs={})
        return cache["defs"], cache["by_gv"]

    # -- documents ------------------------------------------------------------------------
    def _cached_doc(self, name: str, build) -> bytes:
        self._openapi_defs()
        docs = self._openapi_cache["docs"]
        if name not in docs:
            docs[name] = json.dumps(build(), separators=(",", ":")).encode()
        return docs[name]

    def _v3_gv_doc(self, group: str, version: str) -> dict:
        defs, by_gv = self._openapi_defs()
        entries = by_gv.get((group, version))
        if not entries:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        names = schemas.closure(defs, [n for _t, n in entries])
        paths: dict[str, Any] = {}
        for t, name in entries:
            gvk = {"group": t.group, "version": t.version, "kind": t.kind}
            ref = {"$ref": _V3_REF + name}
            body = {"content": {"application/json": {"schema": ref}}}
            ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

            def op(action: str, with_body: bool, _gvk=gvk, _ok=ok, _body=body) -> dict:
                o: dict[str, Any] = {"responses": _ok, "x-kubernetes-action": action,
                                     "x-kubernetes-group-version-kind": _gvk,
                                     "parameters": [_param(p) for p in _QUERY_PARAMS]}
                if action == "patch":
                    o["parameters"].append(_param("force"))
                if with_body:
                    o["requestBody"] = _body
                return o
            base = "/" + _gv_path(t.group, t.version)
            coll = f"{base}/namespaces/{{namespace}}/{t.plural}" if t.namespaced else f"{base}/{t.plural}"
            paths[coll] = {"get": op("list", False), "post": op("post", True)}
            paths[coll + "/{name}"] = {"get": op("get", False), "put": op("put", True),
                                       "patch": op("patch", True), "delete": op("delete", False)}
        return {"openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
                "paths": paths,
                "components": {"schemas": {n: schemas.to_openapi(defs[n], _V3_REF, n) for n in names}}}

    def _v3_root(self) -> dict:
        _defs, by_gv = self._openapi_defs()
        paths = {}
        for g, v in sorted(by_gv):
            doc = self._cached_doc(f"v3:{g}/{v}", lambda g=g, v=v: self._v3_gv_doc(g, v))
            digest = hashlib.sha512(doc).hexdigest()[:128].upper()
            paths[_gv_path(g, v)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={digest}"}
        return {"paths": paths}

    def _v2_doc(self) -> dict:
        defs, _by_gv = self._openapi_defs()
        return {"swagger": "2.0",
                "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
                "paths": {},
                "definitions": {n: schemas.to_openapi(d, _V2_REF, n) for n, d in sorted(defs.items())}}

    # -- routes ---------------------------------------------------------------------------
    def _openapi(self, request: web.Request, path: str) -> web.Response:
        if path == "/openapi/v2":
            accept = request.headers.get("Accept", "")
            if "protobuf" in accept and JSON not in accept:
                # An empty protobuf message is a valid, empty openapi_v2.Document.
                return web.Response(body=b"", content_type=PROTO_V2.replace("@", "."))
            return _json_bytes(self._cached_doc("v2", self._v2_doc))
        if path == "/openapi/v3":
            return _json_bytes(json.dumps(self._v3_root(), separators=(",", ":")).encode())
        rest = path[len("/openapi/v3/"):].split("/")
        if len(rest) == 2 and rest[0] == "api":
            g, v = "", rest[1]
        elif len(rest) == 3 and rest[0] == "apis":
            g, v = rest[1], rest[2]
        else:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        doc = self._cached_doc(f"v3:{g}/{v}", lambda: self._v3_gv_doc(g, v))
        resp = _json_bytes(doc)
        if request.query.get("hash"):
            resp.headers["Cache-Control"] = "public, immutable"
        return resp


def _json_bytes(data: bytes) -> web.Response:
    return web.Response(body=data, content_type=JSON)
