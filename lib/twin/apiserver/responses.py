"""What the API server answers with: ``Status`` errors, JSON bodies, content negotiation.

Every failure is a Kubernetes ``Status`` object (``HTTPError`` carries its code, reason
and message). The Accept header chooses between plain JSON, a server-side ``Table``
(``as=Table;g=meta.k8s.io``) and ``PartialObjectMetadata``.
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

try:  # a fast encoder when installed (a dependency of the package); same JSON
    import msgspec as _msgspec
except ImportError:  # pragma: no cover
    _msgspec = None

JSON = "application/json"
TABLE_VERSIONS = ("v1", "v1beta1")


class HTTPError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A ``Status`` object with ``status: Failure``, as the API server sends on errors."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes: the one encoder of every response and watch event.

    msgspec when installed (8x the standard library on a page of 500 pods here:
    ``benchmarks/json_codecs.py``); the standard library for what msgspec refuses, so
    the output means the same (both write UTF-8 JSON; msgspec does not escape
    non-ASCII, which JSON does not require).
    """
    if _msgspec is not None:
        try:
            return _msgspec.json.encode(obj)
        except (TypeError, _msgspec.EncodeError):
            pass
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200) -> web.Response:
    """``obj`` as a compact JSON response."""
    return web.Response(body=dumps(obj), status=status, content_type=JSON)


def error_response(e: HTTPError) -> web.Response:
    """The ``Status`` response of an error, with its HTTP code."""
    return json_response(status_body(e.code, e.reason, e.message, e.details), e.code)


def now_rfc3339() -> str:
    """The wall clock as metadata timestamps carry it (RFC 3339, UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def accept_table(accept: str) -> str | None:
    """The Table version asked for by an Accept header (``as=Table;g=meta.k8s.io``)."""
    for part in accept.split(","):
        params = {}
        for kv in part.split(";")[1:]:
            if "=" in kv:
                k, v = kv.strip().split("=", 1)
                params[k] = v
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            v = params.get("v", "v1")
            if v in TABLE_VERSIONS:
                return v
    return None


def accept_as(accept: str) -> set[str]:
    """Every ``as=`` kind an Accept header asks for (``Table``, ``APIGroupDiscoveryList`` ...)."""
    out = set()
    for part in accept.split(","):
        for kv in part.split(";")[1:]:
            kv = kv.strip()
            if kv.startswith("as="):
                out.add(kv[3:])
    return out
