"""What every add-on model uses: object metadata, resource types, pod readiness and
reachability, timestamps, and creating an object as the API server would.

Reachability: a pod counts as reachable when it is Ready and, if the twin runs a
network model (component ``"network"`` with ``pod_reachable(pod) -> (bool, reason)``),
that model says its sandbox's CNI works on its node. A controller also has to reach the
API server: :func:`controller_pod_ready` asks the network model's ``reach(pod,
kubernetes ClusterIP, 443)`` (through whatever translates the ClusterIP on its node).
Without a network model, Ready is enough.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from typing import Any, ContextManager

from ...store import json_copy

log = logging.getLogger("twin.controllers.addons")


def now_rfc3339(offset_seconds: float = 0.0) -> str:
    t = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: dict | None) -> dict:
    return (obj or {}).get("metadata") or {}


def pod_ready(pod: dict) -> bool:
    if meta(pod).get("deletionTimestamp"):
        return False
    st = pod.get("status") or {}
    if st.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in st.get("conditions") or ())


def pod_reachable(rt: Any, pod: dict, *, needs_api: bool = False) -> tuple[bool, str]:
    """Ready, and (when the twin has a network model) its data path works; with
    ``needs_api`` it also reaches the API server through the ``kubernetes`` Service."""
    name = f"{meta(pod).get('namespace')}/{meta(pod).get('name')}"
    if not pod_ready(pod):
        return False, f"pod {name} is not Ready"
    try:
        net = rt.component("network")
    except (KeyError, AttributeError):
        net = None
    fn = getattr(net, "pod_reachable", None)
    if fn is None:
        return True, f"pod {name} is Ready"
    try:
        ok, reason = fn(pod)
        reach = getattr(net, "reach", None)
        api = kubernetes_service_ip(rt) if needs_api and ok and reach is not None else None
        if api is not None:
            ok, why = reach(pod, api, 443)
            if not ok:
                reason = f"pod {name} cannot reach the API server: {why}"
    except Exception:  # a broken model must not take the add-ons down
        log.exception("network.pod_reachable failed for %s", name)
        return False, f"pod {name}: network model error"
    return bool(ok), reason or ("reachable" if ok else "unreachable")


def network_instant(rt: Any) -> ContextManager[None]:
    """A block in which each node's network facts are read once (the network model's
    ``one_instant``; nothing without one). For a synchronous pass that reads the data
    paths of many pods and changes no node meanwhile: a node's facts are a dozen file
    checks on its root, and a pass over every Longhorn volume asked for them thousands
    of times (a third of the twin's CPU in a rehearsal, ``benchmarks/rehearse.py``)."""
    try:
        net = rt.component("network")
    except (KeyError, AttributeError):
        net = None
    instant = getattr(net, "one_instant", None)
    return instant() if instant is not None else contextlib.nullcontext()


def kubernetes_service_ip(rt: Any) -> str | None:
    """The ClusterIP of ``default/kubernetes`` (None when the store has no such Service)."""
    t = find_type(rt.store, "", "services")
    svc = rt.store.peek(t, "default", "kubernetes") if t is not None else None
    ip = ((svc or {}).get("spec") or {}).get("clusterIP")
    return ip if ip and ip != "None" else None


def types_by_key(store: Any) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for t in store.resource_types():
        # Prefer the storage version (the one whose bucket rtype it is) when several.
        out.setdefault(t.key, t)
    return out


def find_type(store: Any, group: str, plural: str) -> Any:
    for t in store.resource_types():
        if t.key == (group, plural):
            return t
    return None


def service_spec_portable(spec: dict) -> dict:
    spec = json_copy(spec)    # a deep copy (JSON data: several times faster than deepcopy)
    if spec.get("clusterIP") != "None":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    spec.pop("healthCheckNodePort", None)
    for p in spec.get("ports") or ():
        p.pop("nodePort", None)
    return spec


def create_like_the_api(rt: Any, body: dict, rtype: Any) -> dict:
    """Create ``body`` in the store with the defaults the API server adds on create
    (a Service gets its cluster IP and node ports), as a controller's POST would."""
    if rtype.key == ("", "services"):
        try:
            api = rt.component("apiserver")
        except (KeyError, AttributeError):
            api = None
        allocate = getattr(api, "allocate_service", None)
        if allocate is not None:
            allocate(body)
    return rt.store.create(body, rtype=rtype)


def controller_pod_ready(rt: Any, namespace: str, app_name: str) -> bool:
    """Whether a pod labelled ``app.kubernetes.io/name=<app_name>`` in ``namespace`` is
    Ready and reachable. True when there is no such pod at all: a fixture without that
    add-on's pods runs as if its controller were up."""
    pods = find_type(rt.store, "", "pods")
    found = False
    for p in rt.store.iter_objects(pods, namespace):
        if (meta(p).get("labels") or {}).get("app.kubernetes.io/name") == app_name:
            found = True
            if pod_reachable(rt, p, needs_api=True)[0]:
                return True
    return not found
