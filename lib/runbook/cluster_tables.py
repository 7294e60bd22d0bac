"""The tables :meth:`runbook.cluster.Cluster.snapshot` returns: one row per object, the
columns an operator reads (pods with their workload, services with their LoadBalancer IPs,
nodes with their readiness...). Pure row functions over API objects, plus :func:`table`.

Example:
    >>> row_pvc({"metadata": {"namespace": "db", "name": "data"}, "spec": {"storageClassName": "longhorn"},
    ...          "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}})["capacity"]
    '10Gi'
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pandas as pd

from .cluster import _controller, node_ready, pod_display_status, pod_ready

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["COLUMNS", "table", "row_pod", "row_pvc"]


def table(cluster: Cluster, kind: str) -> pd.DataFrame:
    """The ``kind`` table of ``cluster`` (see :meth:`Cluster.snapshot`), sorted by namespace and name."""
    if kind == "pods":
        rs_owner = {(r["metadata"]["namespace"], r["metadata"]["name"]): _controller(r)
                    for r in cluster.iter_list("replicasets")}
        rows = [row_pod(p, rs_owner) for p in cluster.iter_list("pods")]
    elif kind == "pvcs":
        rows = [row_pvc(p) for p in cluster.iter_list("persistentvolumeclaims")]
    else:
        fn = ROWS.get(kind)
        if fn is None:
            raise ValueError(f"unknown snapshot kind {kind!r}; known: pods, pvcs, {', '.join(ROWS)}")
        resource = {"daemonsets": "daemonsets", "deployments": "deployments",
                    "statefulsets": "statefulsets"}.get(kind, kind)
        rows = [fn(o) for o in cluster.iter_list(resource)]
    df = pd.DataFrame(rows, columns=COLUMNS[kind])
    sort = [c for c in ("namespace", "name") if c in df.columns]
    return df.sort_values(sort).reset_index(drop=True) if len(df) else df


COLUMNS = {
    "pods": ["namespace", "name", "node", "phase", "status", "ready", "ip", "host_network",
             "owner_kind", "owner_name", "workload", "restarts", "uid"],
    "services": ["namespace", "name", "type", "cluster_ip", "lb_ips", "ports"],
    "ingresses": ["namespace", "name", "class", "hosts", "address"],
    "pvcs": ["namespace", "name", "phase", "volume", "storage_class", "capacity"],
    "nodes": ["name", "ready", "roles", "internal_ip", "kernel", "version", "pod_cidr", "taints",
              "unschedulable"],
    "daemonsets": ["namespace", "name", "desired", "ready", "updated", "available"],
    "deployments": ["namespace", "name", "replicas", "ready", "updated", "available"],
    "statefulsets": ["namespace", "name", "replicas", "ready"],
}


def row_pod(p: dict, rs_owner: dict[tuple[str, str], tuple[str, str]]) -> dict:
    md, spec, st = p["metadata"], p.get("spec") or {}, p.get("status") or {}
    kind, name = _controller(p)
    workload = f"{kind}/{name}" if kind else f"Pod/{md['name']}"
    if kind == "ReplicaSet":
        top = rs_owner.get((md.get("namespace", ""), name))
        if top and top[0]:
            workload = f"{top[0]}/{top[1]}"
    return {
        "namespace": md.get("namespace", ""), "name": md["name"], "node": spec.get("nodeName", ""),
        "phase": st.get("phase", ""), "status": pod_display_status(p), "ready": pod_ready(p),
        "ip": st.get("podIP", ""), "host_network": bool(spec.get("hostNetwork")),
        "owner_kind": kind, "owner_name": name, "workload": workload,
        "restarts": sum(int(c.get("restartCount", 0)) for c in st.get("containerStatuses") or []),
        "uid": md.get("uid", ""),
    }


def _row_service(s: dict) -> dict:
    md, spec, st = s["metadata"], s.get("spec") or {}, s.get("status") or {}
    ips = [i.get("ip") or i.get("hostname") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    return {"namespace": md.get("namespace", ""), "name": md["name"], "type": spec.get("type", "ClusterIP"),
            "cluster_ip": spec.get("clusterIP", ""), "lb_ips": ",".join(i for i in ips if i), "ports": ports}


def _row_ingress(i: dict) -> dict:
    md, spec, st = i["metadata"], i.get("spec") or {}, i.get("status") or {}
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or [])
    addr = ",".join(x.get("ip") or x.get("hostname", "") for x in (st.get("loadBalancer") or {}).get("ingress") or [])
    return {"namespace": md.get("namespace", ""), "name": md["name"],
            "class": spec.get("ingressClassName", ""), "hosts": hosts, "address": addr}


def row_pvc(p: dict) -> dict:
    md, spec, st = p["metadata"], p.get("spec") or {}, p.get("status") or {}
    return {"namespace": md.get("namespace", ""), "name": md["name"], "phase": st.get("phase", ""),
            "volume": spec.get("volumeName", ""), "storage_class": spec.get("storageClassName", ""),
            "capacity": (st.get("capacity") or {}).get("storage", "")}


def _row_node(n: dict) -> dict:
    md, spec, st = n["metadata"], n.get("spec") or {}, n.get("status") or {}
    roles = sorted(k.split("/", 1)[1] for k in (md.get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), "")
    info = st.get("nodeInfo") or {}
    taints = ",".join(f"{t['key']}:{t.get('effect', '')}" for t in spec.get("taints") or [])
    return {"name": md["name"], "ready": node_ready(n), "roles": ",".join(roles) or "<none>",
            "internal_ip": ip, "kernel": info.get("kernelVersion", ""),
            "version": info.get("kubeletVersion", ""), "pod_cidr": spec.get("podCIDR", ""),
            "taints": taints, "unschedulable": bool(spec.get("unschedulable"))}


def _row_ds(d: dict) -> dict:
    md, st = d["metadata"], d.get("status") or {}
    return {"namespace": md.get("namespace", ""), "name": md["name"],
            "desired": st.get("desiredNumberScheduled", 0), "ready": st.get("numberReady", 0),
            "updated": st.get("updatedNumberScheduled", 0), "available": st.get("numberAvailable", 0)}


def _row_deploy(d: dict) -> dict:
    md, spec, st = d["metadata"], d.get("spec") or {}, d.get("status") or {}
    return {"namespace": md.get("namespace", ""), "name": md["name"], "replicas": spec.get("replicas", 1),
            "ready": st.get("readyReplicas", 0), "updated": st.get("updatedReplicas", 0),
            "available": st.get("availableReplicas", 0)}


def _row_sts(d: dict) -> dict:
    md, spec, st = d["metadata"], d.get("spec") or {}, d.get("status") or {}
    return {"namespace": md.get("namespace", ""), "name": md["name"], "replicas": spec.get("replicas", 1),
            "ready": st.get("readyReplicas", 0)}


ROWS: dict[str, Callable[[dict], dict]] = {
    "services": _row_service, "ingresses": _row_ingress, "nodes": _row_node,
    "daemonsets": _row_ds, "deployments": _row_deploy, "statefulsets": _row_sts,
}
