"""Resource paths: ``/api/v1/...`` and ``/apis/{group}/{version}/...`` split into a Route.

Routing is done here rather than with aiohttp's router because the set of resources
changes at run time (CRDs come and go).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Route:
    """A parsed resource path."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_path: bool = False   # legacy /watch/ prefix


def parse_resource_path(path: str) -> Route | None | str:
    """Split ``/api/v1/...`` or ``/apis/{g}/{v}/...`` into a :class:`Route`.

    Returns:
        A Route, ``"discovery"`` for a group-version root, or None when the path is not
        under a group version at all.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return "discovery"
    watch = False
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
        if not rest:
            return None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        ns, rest = rest[1], rest[2:]
    else:
        ns = None
    if len(rest) > 3:
        return None
    return Route(group, version, rest[0], ns, rest[1] if len(rest) > 1 else None,
                 rest[2] if len(rest) > 2 else None, watch)
