"""Printers of pods and the workloads that own them (apps/v1), and of PodDisruptionBudgets."""
from __future__ import annotations

from .cells import (Column, _containers, _get, _images, _int, _map_selector, _name, _none,
                    _selector_str, _spec_replicas, _status_int, age)


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


PDB_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Min Available", "string", lambda o, n: str(_get(o, "spec", "minAvailable", default="N/A"))),
    Column("Max Unavailable", "string", lambda o, n: str(_get(o, "spec", "maxUnavailable", default="N/A"))),
    Column("Allowed Disruptions", "integer", _status_int("disruptionsAllowed")),
    Column("Age", "string", age),
)
