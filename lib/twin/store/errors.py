"""The store's errors: each maps onto a Kubernetes ``Status`` (HTTP code, reason).

The API server answers them as they are; controllers and fixtures catch them by class
(``NotFound`` when an object went away meanwhile, ``AlreadyExists`` on a re-create).
"""
from __future__ import annotations


class StoreError(Exception):
    """Base of store errors; maps onto a Kubernetes ``Status`` (code, reason)."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


class Invalid(StoreError):
    code = 422
    reason = "Invalid"


class BadRequest(StoreError):
    code = 400
    reason = "BadRequest"


class Forbidden(StoreError):
    code = 403
    reason = "Forbidden"


class Gone(StoreError):
    code = 410
    reason = "Expired"
