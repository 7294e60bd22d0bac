"""Printers of configuration: ConfigMaps, Secrets and ServiceAccounts."""
from __future__ import annotations

from .cells import Column, _name, age


CONFIGMAP_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Data", "integer", lambda o, n: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
    Column("Age", "string", age),
)

SECRET_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Type", "string", lambda o, n: o.get("type") or "Opaque"),
    Column("Data", "integer", lambda o, n: len(o.get("data") or {})),
    Column("Age", "string", age),
)

SERVICEACCOUNT_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Secrets", "integer", lambda o, n: len(o.get("secrets") or [])),
    Column("Age", "string", age),
)
