"""Plain-dict helpers shared by every part of the store.

Objects are JSON-like dicts exactly as the Kubernetes API serialises them; these read
their metadata without trusting its shape and copy them fast.
"""
from __future__ import annotations

import copy
import marshal
import os
import time
from datetime import datetime, timezone
from typing import Any

from .conversion import to_served
from .resource_types import ResourceType


def json_copy(obj: Any) -> Any:
    """A deep copy of JSON-like data, several times faster than ``copy.deepcopy``.

    ``marshal`` round-trips dicts/lists/str/int/float/bool/None in C; anything else
    (a datetime slipped in by a caller) falls back to ``deepcopy``.
    """
    try:
        return marshal.loads(marshal.dumps(obj))
    except ValueError:
        return copy.deepcopy(obj)


_now_cache: list = [-1, ""]     # [whole second, its text]: 50,000 creates share a few


def utc_now() -> str:
    """The wall clock as an RFC 3339 timestamp (UTC, seconds), as metadata carries it."""
    second = int(time.time())
    if second != _now_cache[0]:
        _now_cache[1] = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        _now_cache[0] = second
    return _now_cache[1]


def new_uid() -> str:
    """A random (version 4) UUID as ``metadata.uid`` carries it, as ``str(uuid.uuid4())``
    formats it, without building a ``uuid.UUID`` (a fifth of a bulk create's time).

    >>> u = new_uid()
    >>> import uuid; str(uuid.UUID(u)) == u and uuid.UUID(u).version == 4
    True
    """
    if not _uid_pool or _uid_pool_pid[0] != os.getpid():   # a forked child draws its own
        _uid_pool.clear()
        _uid_pool_pid[0] = os.getpid()
        h = os.urandom(16 * 256).hex()
        _uid_pool.extend(h[i:i + 32] for i in range(0, len(h), 32))
    h = _uid_pool.pop()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# 256 uids' worth of os.urandom at a time (one system call instead of 256).
_uid_pool: list[str] = []
_uid_pool_pid = [0]


# RFC 4122 variant: the top two bits of byte 8 are 10, so its first hex digit is 8-b.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def meta_of(obj: dict) -> dict:
    """``metadata`` of an object, or an empty dict when it is missing or not a mapping."""
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def owner_uids(obj: dict) -> set[str]:
    """The uids named by the object's ``ownerReferences``."""
    return {r.get("uid") for r in meta_of(obj).get("ownerReferences") or () if r.get("uid")}


def spec_part(obj: dict) -> dict:
    """Everything but metadata, status and type: what bumps ``generation`` when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def render(obj: dict, rtype: ResourceType) -> dict:
    """A copy of a stored object as served at ``rtype``'s version."""
    out = json_copy(obj)
    if rtype.storage:
        out = to_served(out, rtype.group)
    out["apiVersion"] = rtype.api_version
    out["kind"] = rtype.kind
    return out
