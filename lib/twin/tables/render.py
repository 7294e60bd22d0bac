"""A complete ``meta.k8s.io`` Table: the printer for a resource, its rows, its objects."""
from __future__ import annotations

import time
from typing import Any

from .batch import CRONJOB_COLUMNS, JOB_COLUMNS
from .cells import DEFAULT_COLUMNS, Column
from .cluster import CRD_COLUMNS, EVENT_COLUMNS, NAMESPACE_COLUMNS, NODE_COLUMNS
from .config import CONFIGMAP_COLUMNS, SECRET_COLUMNS, SERVICEACCOUNT_COLUMNS
from .custom import crd_columns
from .networking import ENDPOINTS_COLUMNS, INGRESS_COLUMNS, NETWORKPOLICY_COLUMNS, SERVICE_COLUMNS
from .storage import PV_COLUMNS, PVC_COLUMNS
from .workloads import (DAEMONSET_COLUMNS, DEPLOYMENT_COLUMNS, PDB_COLUMNS, POD_COLUMNS,
                        REPLICASET_COLUMNS, STATEFULSET_COLUMNS)

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
    ("batch", "jobs"): JOB_COLUMNS,
    ("batch", "cronjobs"): CRONJOB_COLUMNS,
    ("apiextensions.k8s.io", "customresourcedefinitions"): CRD_COLUMNS,
}


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
