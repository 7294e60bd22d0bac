"""Request bodies: JSON, YAML or protobuf in; an object of the route's kind out.

helm stores its releases as Secrets sent in protobuf (``application/vnd.kubernetes.protobuf``);
:mod:`twin.protobuf` decodes those. Everything else is JSON or YAML. A body's kind,
group and namespace must agree with the URL, as a real server insists.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

from .. import protobuf
from ..store import ResourceType
from .responses import HTTPError


def decode_body(raw: bytes, ctype: str) -> Any:
    """The request body as Python data (None when empty); ``ctype`` is the bare media type."""
    if not raw:
        return None
    if ctype == protobuf.CONTENT_TYPE:
        try:
            return protobuf.decode_body(raw)
        except protobuf.ProtobufError as e:
            if "not supported" in str(e):
                raise HTTPError(415, "UnsupportedMediaType", str(e)) from e
            raise HTTPError(400, "BadRequest", f"invalid protobuf body: {e}") from e
    try:
        if ctype.endswith("yaml"):
            return yaml.safe_load(raw.decode())
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise HTTPError(400, "BadRequest", f"the body of the request was in an unknown format: {e}") from e


def check_object(body: Any, t: ResourceType) -> dict:
    if not isinstance(body, dict):
        raise HTTPError(400, "BadRequest", "the body of the request must be an object")
    kind, av = body.get("kind"), body.get("apiVersion")
    if kind and kind != t.kind:
        raise HTTPError(400, "BadRequest",
                        f"the kind of the provided object ({kind}) does not match the resource ({t.kind})")
    if av and (av.split("/")[0] if "/" in av else "") != t.group:
        raise HTTPError(400, "BadRequest", f"the API version in the data ({av}) does not match "
                                           f"the expected API version ({t.api_version})")
    body["kind"] = t.kind
    body["apiVersion"] = t.api_version
    if not isinstance(body.get("metadata"), dict):
        body["metadata"] = {}
    return body

def check_namespace(t: ResourceType, ns: str | None, body: dict) -> None:
    meta = body["metadata"]
    if not t.namespaced:
        meta.pop("namespace", None)
        return
    if ns is None:
        raise HTTPError(404, "NotFound", "the server could not find the requested resource")
    if meta.get("namespace") and meta["namespace"] != ns:
        raise HTTPError(400, "BadRequest", "the namespace of the provided object does not "
                                           "match the namespace sent on the request")
    meta["namespace"] = ns
