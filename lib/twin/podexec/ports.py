"""What answers on a pod's ports (``kubectl port-forward``), from the twin's model of the pod.

The kubelet forwards a connection by dialling ``localhost:PORT`` inside the pod's network
namespace, so what matters is the pod, not the cluster's data path: the pod must be
Running with a network sandbox (a pod IP, or the node's network), on a node that is up,
and a running container must listen on the port. The twin's containers listen on the
ports their spec declares (``containerPort``) and answer HTTP there: ``GET /healthz``
(and ``/readyz``, ``/livez``) with ``ok``, anything else with a one-line page naming
the container. Any other port refuses the connection with the runtime's message.

Example:
    >>> pod = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
    ...        "spec": {"nodeName": "n1", "containers": [{"name": "nginx", "ports": [{"containerPort": 80}]}]},
    ...        "status": {"phase": "Running", "podIP": "10.42.1.5",
    ...                   "containerStatuses": [{"name": "nginx", "state": {"running": {}}}]}}
    >>> listener(None, pod, 80)[0]
    'nginx'
    >>> answer_http("nginx", pod, b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n").split(b"\\r\\n")[0]
    b'HTTP/1.1 200 OK'
"""
from __future__ import annotations

from typing import Any


def _running(pod: dict, container: str) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("name") == container:
            return "running" in (cs.get("state") or {})
    return False


def refused(pod: dict, port: int) -> str:
    """The kubelet's message for a port nothing listens on."""
    uid = (pod.get("metadata") or {}).get("uid", "")
    return (f"error forwarding port {port} to pod {uid}, uid : failed to execute portforward in "
            f"network namespace: failed to connect to localhost:{port} inside namespace, "
            f"IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused ")


def listener(rt: Any, pod: dict, port: int) -> tuple[str | None, str]:
    """(container listening on ``port``, or None; the reason when none does)."""
    st, spec = pod.get("status") or {}, pod.get("spec") or {}
    if st.get("phase") != "Running":
        return None, f"pod is not running (phase {st.get('phase') or 'unknown'})"
    if not spec.get("hostNetwork") and not st.get("podIP"):
        return None, "pod has no network sandbox"
    node = (rt.nodes.get(spec.get("nodeName")) if rt is not None and getattr(rt, "nodes", None) else None)
    if node is not None and not getattr(node, "up", True):
        return None, f"node {spec.get('nodeName')} is down"
    for c in spec.get("containers") or ():
        for p in c.get("ports") or ():
            if int(p.get("containerPort") or 0) == port and _running(pod, c.get("name", "")):
                return c.get("name"), ""
    return None, refused(pod, port)


def answer_http(container: str, pod: dict, request: bytes) -> bytes:
    """The container's answer to one HTTP request (the connection then closes)."""
    line = request.split(b"\r\n", 1)[0].decode(errors="replace").split()
    path = line[1] if len(line) > 1 else "/"
    if path.split("?")[0] in ("/healthz", "/readyz", "/livez"):
        status, body = "200 OK", "ok\n"
    else:
        name = (pod.get("metadata") or {}).get("name", "")
        status, body = "200 OK", f"{name}/{container}: {path}\n"
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body.encode())}\r\nConnection: close\r\n\r\n{body}").encode()
