"""Server-side Table output: the columns ``kubectl get`` prints, as pure functions.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
whatever columns the server returns; without them it falls back to NAME/AGE. The
columns and cell rules follow the API server's built-in printers (the ones a k3s v1.31
server uses). Columns that kubectl only shows with ``-o wide`` have ``priority: 1``.

Layout: ``cells`` (``Column``, ages, shared cell helpers), one module of printers per
kind group (``workloads``, ``networking``, ``cluster``, ``config``, ``storage``),
``custom`` (a CRD's additionalPrinterColumns) and ``render`` (the Table itself).

Example:
    >>> t = render_table("", "configmaps", [{"metadata": {"name": "a"}, "data": {"k": "v"}}],
    ...                  now=0)
    >>> [c["name"] for c in t["columnDefinitions"]], t["rows"][0]["cells"][:2]
    (['Name', 'Data', 'Age'], ['a', 1])
"""
from __future__ import annotations

from .cells import DEFAULT_COLUMNS, Cell, CellFn, Column, age, human_duration, parse_time
from .cluster import (CRD_COLUMNS, EVENT_COLUMNS, NAMESPACE_COLUMNS, NODE_COLUMNS, node_roles,
                      node_status)
from .config import CONFIGMAP_COLUMNS, SECRET_COLUMNS, SERVICEACCOUNT_COLUMNS
from .custom import crd_columns, eval_jsonpath
from .networking import (ENDPOINTS_COLUMNS, INGRESS_COLUMNS, NETWORKPOLICY_COLUMNS,
                         SERVICE_COLUMNS, service_external_ip, service_ports)
from .render import BUILTIN_COLUMNS, columns_for, partial_metadata, render_rows, render_table
from .storage import PV_COLUMNS, PVC_COLUMNS
from .workloads import (DAEMONSET_COLUMNS, DEPLOYMENT_COLUMNS, PDB_COLUMNS, POD_COLUMNS,
                        REPLICASET_COLUMNS, STATEFULSET_COLUMNS, pod_ready, pod_restarts,
                        pod_status)

__all__ = [
    "BUILTIN_COLUMNS", "CONFIGMAP_COLUMNS", "CRD_COLUMNS", "Cell", "CellFn", "Column",
    "DAEMONSET_COLUMNS", "DEFAULT_COLUMNS", "DEPLOYMENT_COLUMNS", "ENDPOINTS_COLUMNS",
    "EVENT_COLUMNS", "INGRESS_COLUMNS", "NAMESPACE_COLUMNS", "NETWORKPOLICY_COLUMNS",
    "NODE_COLUMNS", "PDB_COLUMNS", "POD_COLUMNS", "PVC_COLUMNS", "PV_COLUMNS",
    "REPLICASET_COLUMNS", "SECRET_COLUMNS", "SERVICEACCOUNT_COLUMNS", "SERVICE_COLUMNS",
    "STATEFULSET_COLUMNS", "age", "columns_for", "crd_columns", "eval_jsonpath",
    "human_duration", "node_roles", "node_status", "parse_time", "partial_metadata",
    "pod_ready", "pod_restarts", "pod_status", "render_rows", "render_table",
    "service_external_ip", "service_ports",
]
