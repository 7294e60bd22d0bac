"""``/openapi/v2``: the OpenAPI document kubectl fetches before it validates or explains.

The twin serves an empty document (no schemas): kubectl then skips client-side
validation, as against a server without published schemas.
"""
from __future__ import annotations

from aiohttp import web

from .discovery import K8S_VERSION
from .responses import JSON, json_response


def openapi_v2(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    if "protobuf" in accept and JSON not in accept:
        # An empty protobuf message is a valid, empty openapi_v2.Document.
        return web.Response(body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    return json_response({"swagger": "2.0",
                          "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
                          "paths": {}, "definitions": {}})
