"""Serving one stored resource under another group: ``events.k8s.io/v1`` Events.

A real API server stores every Event once, as ``core/v1``, and serves the
``events.k8s.io/v1`` view by converting field for field (Kubernetes'
``pkg/apis/events/v1`` conversion). A :class:`~.resource_types.ResourceType` with
``storage`` set is such a view: :func:`to_served` converts a stored object for it and
:func:`to_storage` converts what a client sends through it.

Example:
    >>> e = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"},
    ...      "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "count": 2}
    >>> v = to_served(e, "events.k8s.io")
    >>> (v["regarding"]["name"], v["note"], v["deprecatedCount"])
    ('p', 'hi', 2)
    >>> to_storage(v, "events.k8s.io")["message"]
    'hi'
"""
from __future__ import annotations

# core/v1 Event field -> events.k8s.io/v1 Event field (the rest have the same name).
_EVENTS_V1 = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)

_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {"events.k8s.io": _EVENTS_V1}


def converted(group: str) -> bool:
    """Whether objects served under ``group`` are stored in another shape."""
    return group in _RENAMES


def to_served(obj: dict, group: str) -> dict:
    """A stored object as the view of ``group`` shows it (a new top-level dict)."""
    out = dict(obj)
    for stored, served in _RENAMES.get(group, ()):
        if stored in out:
            value = out.pop(stored)
            if value not in (None, 0, "") or served in ("regarding", "note"):
                out[served] = value
    return out


def to_storage(obj: dict, group: str) -> dict:
    """What a client sent through the view of ``group``, in the stored shape."""
    out = dict(obj)
    for stored, served in _RENAMES.get(group, ()):
        if served in out:
            out[stored] = out.pop(served)
    return out
