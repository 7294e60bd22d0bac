"""Whether an HTTP client in a pod reaches a URL, decided from the cluster's objects.

The ``wget``/``curl`` programs of :mod:`.programs` (a ``helm test`` pod, a Job that
checks a Service) ask :func:`service_reach`. A host is a Service name
(``name``, ``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``), a Service's
ClusterIP or a pod IP. It answers when the Service has the port and at least one Ready,
non-terminating pod behind its selector (the pod itself for a pod IP); otherwise the
client fails as busybox ``wget`` says: "bad address" (no such name) or "Connection
refused" (nothing ready behind it).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..selectors import from_label_selector
from .scheduler import _condition


def _ready(pod: dict) -> bool:
    c = _condition(pod, "Ready")
    return bool(c and c.get("status") == "True") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def service_reach(store: Any) -> Any:
    """A ``reach(url, namespace)`` callback over ``store`` (see module doc)."""
    svc_t = store.lookup("", "v1", "services")
    pod_t = store.lookup("", "v1", "pods")

    def reach(url: str, namespace: str) -> tuple[bool, str]:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False, f"bad address '{parts.netloc}'"
        svc = None
        labels = host.split(".")
        if labels and not host.replace(".", "").isdigit():
            ns = labels[1] if len(labels) > 1 else namespace
            svc = store.peek(svc_t, ns, labels[0])
            if svc is None:
                return False, f"bad address '{host}'"
        else:
            for s in store.iter_objects(svc_t):
                if (s.get("spec") or {}).get("clusterIP") == host:
                    svc = s
                    break
            if svc is None:
                pods = [p for p in store.iter_objects(pod_t) if (p.get("status") or {}).get("podIP") == host]
                ok = any(_ready(p) for p in pods)
                return ok, "" if ok else f"can't connect to remote host ({host}): Connection refused"
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP") or host
        if not any(int(p.get("port") or 0) == port for p in spec.get("ports") or ()):
            return False, f"can't connect to remote host ({ip}): Connection refused"
        selector = spec.get("selector") or {}
        if not selector:
            return False, f"can't connect to remote host ({ip}): Connection refused"
        sel = from_label_selector({"matchLabels": selector})
        ns = (svc.get("metadata") or {}).get("namespace")
        if any(_ready(p) and sel.matches_object(p) for p in store.iter_objects(pod_t, ns)):
            return True, ""
        return False, f"can't connect to remote host ({ip}): Connection refused"

    return reach
