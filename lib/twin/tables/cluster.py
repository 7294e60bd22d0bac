"""Printers of cluster-level objects: Nodes, Namespaces, Events and CRDs."""
from __future__ import annotations

from .cells import CellFn, Column, _get, _name, age, human_duration, parse_time


# --- nodes -------------------------------------------------------------------------------
def node_status(obj: dict, _now: float = 0) -> str:
    """Ready / NotReady / Unknown, plus ``,SchedulingDisabled`` when cordoned."""
    ready = next((c for c in _get(obj, "status", "conditions", default=[]) or []
                  if c.get("type") == "Ready"), None)
    if ready is None:
        st = "Unknown"
    else:
        st = {"True": "Ready", "False": "NotReady"}.get(ready.get("status"), "Unknown")
    if _get(obj, "spec", "unschedulable"):
        st += ",SchedulingDisabled"
    return st


def node_roles(obj: dict, _now: float = 0) -> str:
    """Roles from ``node-role.kubernetes.io/<role>`` and ``kubernetes.io/role`` labels."""
    roles: set[str] = set()
    for k, v in (_get(obj, "metadata", "labels", default={}) or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k.split("/", 1)[1]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(kind: str) -> CellFn:
    def fn(obj: dict, _now: float) -> str:
        for a in _get(obj, "status", "addresses", default=[]) or []:
            if a.get("type") == kind:
                return a.get("address", "<none>")
        return "<none>"
    return fn


NODE_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Status", "string", node_status),
    Column("Roles", "string", node_roles),
    Column("Age", "string", age),
    Column("Version", "string", lambda o, n: _get(o, "status", "nodeInfo", "kubeletVersion", default="")),
    Column("Internal-IP", "string", _node_address("InternalIP"), priority=1),
    Column("External-IP", "string", _node_address("ExternalIP"), priority=1),
    Column("OS-Image", "string", lambda o, n: _get(o, "status", "nodeInfo", "osImage", default="<unknown>"),
           priority=1),
    Column("Kernel-Version", "string",
           lambda o, n: _get(o, "status", "nodeInfo", "kernelVersion", default="<unknown>"), priority=1),
    Column("Container-Runtime", "string",
           lambda o, n: _get(o, "status", "nodeInfo", "containerRuntimeVersion", default="<unknown>"),
           priority=1),
)


NAMESPACE_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Status", "string", lambda o, n: _get(o, "status", "phase", default="Active")),
    Column("Age", "string", age),
)

def _event_first(o: dict, n: float) -> str:
    t = parse_time(o.get("firstTimestamp") or o.get("eventTime")
                   or _get(o, "metadata", "creationTimestamp"))
    return human_duration(n - (t or n))


def _event_last(o: dict, n: float) -> str:
    """The printer's LAST SEEN: the series' last observation, else lastTimestamp."""
    t = parse_time(_get(o, "series", "lastObservedTime") or o.get("lastTimestamp"))
    return human_duration(n - t) if t is not None else _event_first(o, n)


def _event_count(o: dict, _n: float) -> int:
    return int(_get(o, "series", "count") or o.get("count") or 1)


def _event_source(o: dict, _n: float) -> str:
    src = o.get("source") or {}
    comp = src.get("component") or o.get("reportingComponent") or ""
    host = src.get("host") or o.get("reportingInstance") or ""
    return f"{comp}, {host}" if comp and host else comp or host


EVENT_COLUMNS = (
    Column("Last Seen", "string", _event_last),
    Column("Type", "string", lambda o, n: o.get("type", "")),
    Column("Reason", "string", lambda o, n: o.get("reason", "")),
    Column("Object", "string", lambda o, n: "%s/%s" % ((_get(o, "involvedObject", "kind") or "").lower(),
                                                        _get(o, "involvedObject", "name") or "")),
    Column("Subobject", "string", lambda o, n: _get(o, "involvedObject", "fieldPath") or "", priority=1),
    Column("Source", "string", _event_source, priority=1),
    Column("Message", "string", lambda o, n: (o.get("message") or "").strip()),
    Column("First Seen", "string", _event_first, priority=1),
    Column("Count", "integer", _event_count, priority=1),
    Column("Name", "string", lambda o, n: _get(o, "metadata", "name") or "", priority=1),
)

CRD_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Created At", "date", lambda o, n: _get(o, "metadata", "creationTimestamp", default="")),
)
