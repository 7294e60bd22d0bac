"""Server-side Table output: the columns ``kubectl get`` prints, as pure functions.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
whatever columns the server returns; without them it falls back to NAME/AGE. The
columns and cell rules below follow the API server's built-in printers (the ones a
k3s v1.31 server uses). Columns that kubectl only shows with ``-o wide`` have
``priority: 1``.

Example:
    >>> t = render_table("", "configmaps", [{"metadata": {"name": "a"}, "data": {"k": "v"}}],
    ...                  now=0)
    >>> [c["name"] for c in t["columnDefinitions"]], t["rows"][0]["cells"][:2]
    (['Name', 'Data', 'Age'], ['a', 1])
"""
from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

Cell = Any
CellFn = Callable[[dict, float], Cell]


@dataclass(frozen=True)
class Column:
    """One Table column: its definition and how to compute its cell."""

    name: str
    type: str
    fn: CellFn
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description or self.name, "priority": self.priority}


# --- helpers -----------------------------------------------------------------------------
def parse_time(ts: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC timestamp (``None`` if absent/bad)."""
    if not ts:
        return None
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$", ts)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    tz = m.group(7)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return float(secs)


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: ``42s``, ``3m5s``, ``5h``, ``12d``, ``2y3d``."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(obj: dict, now: float) -> str:
    """AGE cell: time since ``metadata.creationTimestamp`` (``<unknown>`` if absent)."""
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(now - t)


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(p)
        if obj is None:
            return default
    return obj


def _name(obj: dict, _now: float) -> str:
    return _get(obj, "metadata", "name", default="")


def _none(s: str) -> str:
    return s if s else "<none>"


def _selector_str(sel: dict | None) -> str:
    """A label selector as kubectl prints it (``<none>`` when empty)."""
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e.get("operator", "")
        vals = ",".join(e.get("values") or [])
        if op == "In":
            parts.append(f"{e.get('key')} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{e.get('key')} notin ({vals})")
        elif op == "Exists":
            parts.append(str(e.get("key")))
        elif op == "DoesNotExist":
            parts.append(f"!{e.get('key')}")
    return ",".join(parts) or "<none>"


def _map_selector(sel: dict | None) -> str:
    if not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _containers(obj: dict, _now: float) -> str:
    cs = _get(obj, "spec", "template", "spec", "containers", default=[]) or []
    return _none(",".join(c.get("name", "") for c in cs))


def _images(obj: dict, _now: float) -> str:
    cs = _get(obj, "spec", "template", "spec", "containers", default=[]) or []
    return _none(",".join(c.get("image", "") for c in cs))


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


# --- pods --------------------------------------------------------------------------------
def pod_ready(obj: dict, _now: float = 0) -> str:
    """READY: ready containers / containers in the spec."""
    total = len(_get(obj, "spec", "containers", default=[]) or [])
    ready = sum(1 for c in _get(obj, "status", "containerStatuses", default=[]) or [] if c.get("ready"))
    return f"{ready}/{total}"


def pod_restarts(obj: dict, _now: float = 0) -> str:
    return str(sum(_int(c.get("restartCount"))
                   for c in _get(obj, "status", "containerStatuses", default=[]) or []))


def pod_status(obj: dict, _now: float = 0) -> str:
    """STATUS as kubectl prints it (the API server's ``printPod`` rules, simplified).

    Phase, overridden by ``status.reason``, by init-container progress
    (``Init:0/1``, ``Init:CrashLoopBackOff``), by a container's waiting reason
    (``ContainerCreating``, ``CrashLoopBackOff``) or terminated reason, and by
    ``Terminating`` once a deletion timestamp is set.
    """
    status = obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    init_specs = _get(obj, "spec", "initContainers", default=[]) or []
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        term = _get(cs, "state", "terminated")
        waiting = _get(cs, "state", "waiting")
        if term and _int(term.get("exitCode")) == 0:
            continue
        initializing = True
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{_int(term.get('exitCode'))}")
        elif waiting and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            waiting = _get(cs, "state", "waiting")
            term = _get(cs, "state", "terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                reason = (f"Signal:{term['signal']}" if term.get("signal")
                          else f"ExitCode:{_int(term.get('exitCode'))}")
            elif _get(cs, "state", "running") and cs.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if _get(obj, "metadata", "deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_readiness_gates(obj: dict, _now: float) -> str:
    gates = _get(obj, "spec", "readinessGates", default=[]) or []
    if not gates:
        return "<none>"
    conds = {c.get("type"): c.get("status") for c in _get(obj, "status", "conditions", default=[]) or []}
    ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
    return f"{ok}/{len(gates)}"


POD_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Ready", "string", pod_ready),
    Column("Status", "string", pod_status),
    Column("Restarts", "string", pod_restarts),
    Column("Age", "string", age),
    Column("IP", "string", lambda o, n: _none(_get(o, "status", "podIP", default="")), priority=1),
    Column("Node", "string", lambda o, n: _none(_get(o, "spec", "nodeName", default="")), priority=1),
    Column("Nominated Node", "string",
           lambda o, n: _none(_get(o, "status", "nominatedNodeName", default="")), priority=1),
    Column("Readiness Gates", "string", _pod_readiness_gates, priority=1),
)


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


# --- services ----------------------------------------------------------------------------
def service_external_ip(obj: dict, _now: float = 0) -> str:
    """EXTERNAL-IP: load-balancer ingress IPs (``<pending>`` until assigned)."""
    spec = obj.get("spec") or {}
    stype = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if stype == "ExternalName":
        return spec.get("externalName") or "<none>"
    if stype == "LoadBalancer":
        ing = [i.get("ip") or i.get("hostname") for i in
               _get(obj, "status", "loadBalancer", "ingress", default=[]) or []]
        ips = [i for i in ing if i] + external
        return ",".join(ips) or "<pending>"
    return "<unknown>"


def service_ports(obj: dict, _now: float = 0) -> str:
    """PORT(S): ``80/TCP``, ``80:30080/TCP`` with a node port."""
    out = []
    for p in _get(obj, "spec", "ports", default=[]) or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            out.append(f"{p.get('port')}:{p.get('nodePort')}/{proto}")
        else:
            out.append(f"{p.get('port')}/{proto}")
    return ",".join(out) or "<none>"


SERVICE_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Type", "string", lambda o, n: _get(o, "spec", "type", default="ClusterIP")),
    Column("Cluster-IP", "string", lambda o, n: _none(_get(o, "spec", "clusterIP", default=""))),
    Column("External-IP", "string", service_external_ip),
    Column("Port(s)", "string", service_ports),
    Column("Age", "string", age),
    Column("Selector", "string", lambda o, n: _map_selector(_get(o, "spec", "selector")), priority=1),
)


# --- workloads ---------------------------------------------------------------------------
def _status_int(*path: str) -> CellFn:
    return lambda o, n: _int(_get(o, "status", *path))


def _spec_replicas(o: dict) -> int:
    r = _get(o, "spec", "replicas")
    return 1 if r is None else _int(r)


_WIDE_WORKLOAD = (
    Column("Containers", "string", _containers, priority=1),
    Column("Images", "string", _images, priority=1),
    Column("Selector", "string", lambda o, n: _selector_str(_get(o, "spec", "selector")), priority=1),
)

DEPLOYMENT_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Ready", "string", lambda o, n: f"{_int(_get(o, 'status', 'readyReplicas'))}/{_spec_replicas(o)}"),
    Column("Up-to-date", "integer", _status_int("updatedReplicas")),
    Column("Available", "integer", _status_int("availableReplicas")),
    Column("Age", "string", age),
    *_WIDE_WORKLOAD,
)

REPLICASET_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Desired", "integer", lambda o, n: _spec_replicas(o)),
    Column("Current", "integer", _status_int("replicas")),
    Column("Ready", "integer", _status_int("readyReplicas")),
    Column("Age", "string", age),
    *_WIDE_WORKLOAD,
)

DAEMONSET_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Desired", "integer", _status_int("desiredNumberScheduled")),
    Column("Current", "integer", _status_int("currentNumberScheduled")),
    Column("Ready", "integer", _status_int("numberReady")),
    Column("Up-to-date", "integer", _status_int("updatedNumberScheduled")),
    Column("Available", "integer", _status_int("numberAvailable")),
    Column("Node Selector", "string",
           lambda o, n: _map_selector(_get(o, "spec", "template", "spec", "nodeSelector"))),
    Column("Age", "string", age),
    *_WIDE_WORKLOAD,
)

STATEFULSET_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Ready", "string", lambda o, n: f"{_int(_get(o, 'status', 'readyReplicas'))}/{_spec_replicas(o)}"),
    Column("Age", "string", age),
    Column("Containers", "string", _containers, priority=1),
    Column("Images", "string", _images, priority=1),
)


# --- networking --------------------------------------------------------------------------
def _ingress_hosts(o: dict, _now: float) -> str:
    hosts = [r.get("host") for r in _get(o, "spec", "rules", default=[]) or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _lb_address(o: dict, _now: float) -> str:
    ing = [i.get("ip") or i.get("hostname") for i in
           _get(o, "status", "loadBalancer", "ingress", default=[]) or []]
    return ",".join(i for i in ing if i)


def _ingress_ports(o: dict, _now: float) -> str:
    return "80, 443" if _get(o, "spec", "tls") else "80"


INGRESS_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Class", "string", lambda o, n: _none(_get(o, "spec", "ingressClassName", default=""))),
    Column("Hosts", "string", _ingress_hosts),
    Column("Address", "string", _lb_address),
    Column("Ports", "string", _ingress_ports),
    Column("Age", "string", age),
)

NETWORKPOLICY_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Pod-Selector", "string",
           lambda o, n: _selector_str(_get(o, "spec", "podSelector")).replace("<none>", "")),
    Column("Age", "string", age),
)


def _endpoints(o: dict, _now: float) -> str:
    out = []
    for s in o.get("subsets") or []:
        ports = s.get("ports") or [{}]
        for a in s.get("addresses") or []:
            for p in ports:
                out.append(f"{a.get('ip')}:{p['port']}" if p.get("port") else str(a.get("ip")))
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


# --- config and storage ------------------------------------------------------------------
def _pvc_capacity(o: dict, _now: float) -> str:
    return _get(o, "status", "capacity", "storage", default="") if _get(o, "spec", "volumeName") else ""


def _access_modes(modes: list | None) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
             "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


PVC_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Status", "string", lambda o, n: _get(o, "status", "phase", default="Pending")),
    Column("Volume", "string", lambda o, n: _get(o, "spec", "volumeName", default="")),
    Column("Capacity", "string", _pvc_capacity),
    Column("Access Modes", "string",
           lambda o, n: _access_modes(_get(o, "status", "accessModes") or _get(o, "spec", "accessModes"))),
    Column("StorageClass", "string", lambda o, n: _get(o, "spec", "storageClassName", default="")),
    Column("VolumeAttributesClass", "string",
           lambda o, n: _none(_get(o, "spec", "volumeAttributesClassName", default=""))),
    Column("Age", "string", age),
    Column("VolumeMode", "string", lambda o, n: _get(o, "spec", "volumeMode", default="Filesystem"),
           priority=1),
)


def _pv_claim(o: dict, _now: float) -> str:
    ref = _get(o, "spec", "claimRef")
    return f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""


PV_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Capacity", "string", lambda o, n: _get(o, "spec", "capacity", "storage", default="")),
    Column("Access Modes", "string", lambda o, n: _access_modes(_get(o, "spec", "accessModes"))),
    Column("Reclaim Policy", "string",
           lambda o, n: _get(o, "spec", "persistentVolumeReclaimPolicy", default="Retain")),
    Column("Status", "string", lambda o, n: _get(o, "status", "phase", default="Available")),
    Column("Claim", "string", _pv_claim),
    Column("StorageClass", "string", lambda o, n: _get(o, "spec", "storageClassName", default="")),
    Column("VolumeAttributesClass", "string",
           lambda o, n: _none(_get(o, "spec", "volumeAttributesClassName", default=""))),
    Column("Reason", "string", lambda o, n: _get(o, "status", "reason", default="")),
    Column("Age", "string", age),
    Column("VolumeMode", "string", lambda o, n: _get(o, "spec", "volumeMode", default="Filesystem"),
           priority=1),
)

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

NAMESPACE_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Status", "string", lambda o, n: _get(o, "status", "phase", default="Active")),
    Column("Age", "string", age),
)

SERVICEACCOUNT_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Secrets", "integer", lambda o, n: len(o.get("secrets") or [])),
    Column("Age", "string", age),
)

ENDPOINTS_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Endpoints", "string", _endpoints),
    Column("Age", "string", age),
)

EVENT_COLUMNS = (
    Column("Last Seen", "string",
           lambda o, n: human_duration(n - (parse_time(o.get("lastTimestamp") or o.get("eventTime")
                                                       or _get(o, "metadata", "creationTimestamp"))
                                            or n))),
    Column("Type", "string", lambda o, n: o.get("type", "")),
    Column("Reason", "string", lambda o, n: o.get("reason", "")),
    Column("Object", "string", lambda o, n: "%s/%s" % ((_get(o, "involvedObject", "kind") or "").lower(),
                                                        _get(o, "involvedObject", "name") or "")),
    Column("Message", "string", lambda o, n: (o.get("message") or "").strip()),
)

PDB_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Min Available", "string", lambda o, n: str(_get(o, "spec", "minAvailable", default="N/A"))),
    Column("Max Unavailable", "string", lambda o, n: str(_get(o, "spec", "maxUnavailable", default="N/A"))),
    Column("Allowed Disruptions", "integer", _status_int("disruptionsAllowed")),
    Column("Age", "string", age),
)

CRD_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Created At", "date", lambda o, n: _get(o, "metadata", "creationTimestamp", default="")),
)

DEFAULT_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Age", "string", age),
)

#: (group, plural) -> columns of the built-in printers.
BUILTIN_COLUMNS: dict[tuple[str, str], tuple[Column, ...]] = {
    ("", "pods"): POD_COLUMNS,
    ("", "nodes"): NODE_COLUMNS,
    ("", "services"): SERVICE_COLUMNS,
    ("", "namespaces"): NAMESPACE_COLUMNS,
    ("", "configmaps"): CONFIGMAP_COLUMNS,
    ("", "secrets"): SECRET_COLUMNS,
    ("", "serviceaccounts"): SERVICEACCOUNT_COLUMNS,
    ("", "endpoints"): ENDPOINTS_COLUMNS,
    ("", "events"): EVENT_COLUMNS,
    ("", "persistentvolumeclaims"): PVC_COLUMNS,
    ("", "persistentvolumes"): PV_COLUMNS,
    ("apps", "deployments"): DEPLOYMENT_COLUMNS,
    ("apps", "replicasets"): REPLICASET_COLUMNS,
    ("apps", "daemonsets"): DAEMONSET_COLUMNS,
    ("apps", "statefulsets"): STATEFULSET_COLUMNS,
    ("networking.k8s.io", "ingresses"): INGRESS_COLUMNS,
    ("networking.k8s.io", "networkpolicies"): NETWORKPOLICY_COLUMNS,
    ("policy", "poddisruptionbudgets"): PDB_COLUMNS,
    ("apiextensions.k8s.io", "customresourcedefinitions"): CRD_COLUMNS,
}


# --- CRD additionalPrinterColumns -----------------------------------------------------------
def eval_jsonpath(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPath of ``additionalPrinterColumns`` (``.spec.x``,
    ``.status.conditions[0].type``, ``.metadata.labels['a/b']``, ``{.spec.x}``).

    Returns ``None`` when any step is missing. Filters (``[?(...)]``) and wildcards are
    not supported and also give ``None``.
    """
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    tokens = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]", p)
    if not tokens and p not in ("", "."):
        return None
    cur = obj
    for key, idx, q1, q2 in tokens:
        if idx:
            if not isinstance(cur, list) or int(idx) >= len(cur):
                return None
            cur = cur[int(idx)]
        else:
            k = key or q1 or q2
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
    return cur


def _crd_cell(col: dict) -> CellFn:
    ctype = col.get("type", "string")
    path = col.get("jsonPath", "")

    def fn(obj: dict, _now: float) -> Cell:
        v = eval_jsonpath(obj, path)
        if v is None:
            return None
        if ctype == "integer":
            return _int(v)
        if ctype == "number":
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
        if ctype == "boolean":
            return bool(v)
        if ctype == "date":
            # kubectl prints cells as they come: the server turns dates into ages.
            t = parse_time(str(v))
            return "<unknown>" if t is None else human_duration(_now - t)
        if isinstance(v, (dict, list)):
            import json
            return json.dumps(v, separators=(",", ":"))
        return str(v)
    return fn


def crd_columns(printer_columns: list[dict] | tuple[dict, ...]) -> tuple[Column, ...]:
    """Columns of a custom resource: NAME plus its additionalPrinterColumns.

    Without printer columns a custom resource shows NAME and AGE, as on a real server.
    """
    if not printer_columns:
        return (DEFAULT_COLUMNS[0], Column("Age", "date", age))
    cols = [DEFAULT_COLUMNS[0]]
    for c in printer_columns:
        cols.append(Column(c.get("name", ""), c.get("type", "string"), _crd_cell(c),
                           priority=_int(c.get("priority")), format=c.get("format", ""),
                           description=c.get("description", "")))
    return tuple(cols)


def columns_for(group: str, plural: str, printer_columns: tuple[dict, ...] | list[dict] = ()
                ) -> tuple[Column, ...]:
    """The columns for a resource: built-in printer, CRD printer columns, or NAME/AGE."""
    builtin = BUILTIN_COLUMNS.get((group, plural))
    if builtin is not None:
        return builtin
    if printer_columns or "." in group and not group.endswith("k8s.io"):
        return crd_columns(printer_columns)
    return DEFAULT_COLUMNS


def partial_metadata(obj: dict, api_version: str = "meta.k8s.io/v1") -> dict:
    """The PartialObjectMetadata kubectl gets as each row's ``object`` by default."""
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version,
            "metadata": obj.get("metadata") or {}}


def render_rows(columns: tuple[Column, ...], objects: list[dict], *, include_object: str = "Metadata",
                now: float | None = None, api_version: str = "meta.k8s.io/v1") -> list[dict]:
    """Rows (cells + object) for ``objects``; a failing cell renders as ``<error>``."""
    t = time.time() if now is None else now
    rows = []
    for obj in objects:
        cells = []
        for c in columns:
            try:
                cells.append(c.fn(obj, t))
            except Exception:  # a malformed object must not break the whole listing
                cells.append("<error>")
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj, api_version)
        rows.append(row)
    return rows


def render_table(group: str, plural: str, objects: list[dict], *,
                 printer_columns: tuple[dict, ...] | list[dict] = (),
                 include_object: str = "Metadata", now: float | None = None,
                 list_metadata: dict | None = None, api_version: str = "meta.k8s.io/v1") -> dict:
    """A complete ``meta.k8s.io`` Table for ``objects`` of one resource.

    Args:
        group, plural: the resource (selects the built-in printer).
        objects: the objects to print, in order.
        printer_columns: a CRD's additionalPrinterColumns.
        include_object: ``Metadata`` (default), ``Object`` or ``None``.
        now: epoch seconds for AGE (default: the wall clock).
        list_metadata: ``resourceVersion``/``continue``/``remainingItemCount``.
        api_version: ``meta.k8s.io/v1`` or ``meta.k8s.io/v1beta1``, as the client asked.
    """
    cols = columns_for(group, plural, printer_columns)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": dict(list_metadata or {}),
        "columnDefinitions": [c.definition() for c in cols],
        "rows": render_rows(cols, objects, include_object=include_object, now=now,
                            api_version=api_version),
    }
