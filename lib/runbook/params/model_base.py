"""The base of every params section: unknown keys refused, nothing coerced.

A YAML string ``"yes"`` must not silently become True for a safety switch, and a port
written as ``"22"`` is a typo worth reporting rather than guessing.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_Model"]


class _Model(BaseModel):
    # strict: a YAML string "yes" must not silently become True for a safety switch, and
    # a port written as "22" is a typo worth reporting rather than guessing.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)
