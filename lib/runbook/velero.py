"""Velero backups and restores through the Kubernetes API (no velero CLI needed).

Only ``Completed`` is success. Any other terminal phase (``PartiallyFailed``,
``Failed``, ``FailedValidation``) raises :class:`~runbook.errors.VeleroError` carrying
the failure reason, the error and warning counts; phases this module does not know are
treated as still running, so a newer Velero cannot make the wait finish early.

A restore is not a revert (defect 11): Velero never overwrites existing objects unless
``existingResourcePolicy: update`` is asked for, and it never deletes objects created
after the backup.

Example:
    >>> res = velero.backup(c, name="phase22-r1", namespace="velero")   # doctest: +SKIP
    >>> res.phase, res.items                                           # doctest: +SKIP
    ('Completed', 812)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .cluster import Cluster
from .errors import VeleroError
from .watches import Changes, log_wait

TERMINAL_FAILED = {"PartiallyFailed", "Failed", "FailedValidation"}
SUCCESS = "Completed"


@dataclass
class VeleroResult:
    """The final state of a Backup or Restore."""

    kind: str            # Backup | Restore
    name: str
    phase: str
    items: int | None
    total_items: int | None
    errors: int
    warnings: int
    failure_reason: str | None
    seconds: float

    def _repr_html_(self) -> str:
        return (f"<b>{self.kind} {self.name}</b>: {self.phase}, items {self.items}/{self.total_items}, "
                f"errors {self.errors}, warnings {self.warnings}, {self.seconds:.1f}s")


def _result(kind: str, obj: dict, seconds: float) -> VeleroResult:
    st = obj.get("status") or {}
    prog = st.get("progress") or {}
    return VeleroResult(kind=kind, name=obj["metadata"]["name"], phase=st.get("phase") or "New",
                        items=prog.get("itemsBackedUp", prog.get("itemsRestored")),
                        total_items=prog.get("totalItems"), errors=int(st.get("errors") or 0),
                        warnings=int(st.get("warnings") or 0),
                        failure_reason=st.get("failureReason"), seconds=seconds)


def create_backup(cluster: Cluster, name: str, *, namespace: str = "velero",
                  storage_location: str = "default", include_cluster_resources: bool = True,
                  ttl: str = "720h0m0s", labels: dict[str, str] | None = None) -> dict:
    """Create a Backup of every namespace (idempotent: an existing one is returned)."""
    existing = cluster.get("backups", name, namespace)
    if existing:
        return existing
    body = {"apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "phase22-runbook", **(labels or {})}},
            "spec": {"includedNamespaces": ["*"], "includeClusterResources": include_cluster_resources,
                     "storageLocation": storage_location, "ttl": ttl}}
    return cluster.create("backups", body, namespace)


def create_restore(cluster: Cluster, backup_name: str, *, name: str, namespace: str = "velero",
                   existing_resource_policy: str = "none",
                   include_cluster_resources: bool = True) -> dict:
    """Create a Restore from ``backup_name``.

    Args:
        existing_resource_policy: ``none`` keeps objects that exist (Velero's default:
            only deleted objects come back) or ``update`` overwrites them with the backup.
    """
    if existing_resource_policy not in ("none", "update"):
        raise ValueError("existing_resource_policy must be 'none' or 'update'")
    existing = cluster.get("restores", name, namespace)
    if existing:
        return existing
    body = {"apiVersion": "velero.io/v1", "kind": "Restore",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"backupName": backup_name, "includeClusterResources": include_cluster_resources,
                     "existingResourcePolicy": existing_resource_policy}}
    return cluster.create("restores", body, namespace)


def wait(cluster: Cluster, kind: str, name: str, *, namespace: str = "velero",
         timeout: float = 600, interval: float = 1.0,
         progress: Callable[[str], None] | None = None) -> VeleroResult:
    """Wait for a Backup/Restore to reach a terminal phase; only Completed returns.

    Raises:
        VeleroError: the phase is PartiallyFailed, Failed or FailedValidation, or the
            wait timed out (with the last phase seen).
    """
    resource = {"Backup": "backups", "Restore": "restores"}[kind]
    t0 = time.monotonic()
    # re-checked at each change of the namespace's Backups/Restores, every `interval` at the latest
    with Changes(cluster, [(resource, namespace)]) as changes:
        res = _wait(cluster, kind, resource, name, namespace, timeout, interval, progress, t0, changes)
    log_wait(cluster, f"{kind} {name}", time.monotonic() - t0, ok=True, timeout=timeout,
             events=changes.events)
    return res


def _wait(cluster: Cluster, kind: str, resource: str, name: str, namespace: str, timeout: float,
          interval: float, progress: Callable[[str], None] | None, t0: float,
          changes: Changes) -> VeleroResult:
    last_phase = None
    while True:
        obj = cluster.get(resource, name, namespace)
        if obj is None:
            raise VeleroError(f"{kind} {namespace}/{name} disappeared while waiting", name=name)
        res = _result(kind, obj, time.monotonic() - t0)
        if res.phase != last_phase and progress:
            progress(f"{kind} {name}: {res.phase}")
        last_phase = res.phase
        if res.phase == SUCCESS:
            return res
        if res.phase in TERMINAL_FAILED:
            # PartiallyFailed has no failureReason: what failed is in the failed
            # PodVolumeBackups (what `velero backup describe --details` shows).
            failed = failed_volume_backups(cluster, name, namespace) if kind == "Backup" else []
            validation = [str(v) for v in (obj.get("status") or {}).get("validationErrors") or []]
            raise VeleroError(
                f"{kind} {name} ended {res.phase}: {res.errors} errors, {res.warnings} warnings"
                + (f"; reason: {res.failure_reason}" if res.failure_reason else "")
                + "".join(f"; {v}" for v in validation)
                + "".join(f"; failed: {f}" for f in failed),
                name=name, phase=res.phase, failure_reason=res.failure_reason,
                errors=res.errors, warnings=res.warnings,
                hint=f"inspect it with `velero {kind.lower()} describe {name} --details` and fix "
                     "the cause before going on: without a good backup there is no safety net")
        if time.monotonic() - t0 > timeout:
            raise VeleroError(f"{kind} {name} still {res.phase} after {timeout:.0f}s",
                              name=name, phase=res.phase,
                              hint="check the velero deployment's logs in the velero namespace")
        changes.wait(min(interval, max(0.0, timeout - (time.monotonic() - t0)) + 0.01))


def failed_volume_backups(cluster: Cluster, backup_name: str, namespace: str = "velero") -> list[str]:
    """``"<pod volume backup>: <message>"`` for each failed PodVolumeBackup of a backup.

    Never raises: a cluster without the CRD (or an API error) gives an empty list, so
    the caller's own error is never hidden by this extra detail.
    """
    try:
        res = cluster.request(
            "GET", f"/apis/velero.io/v1/namespaces/{namespace}/podvolumebackups",
            query={"labelSelector": f"velero.io/backup-name={backup_name}"}, ok_missing=True)
    except Exception:  # noqa: BLE001 - an optional detail of an error being reported
        return []
    out = []
    for item in (res or {}).get("items") or []:
        st = item.get("status") or {}
        if st.get("phase") == "Failed":
            pod = ((item.get("spec") or {}).get("pod") or {})
            where = f" (pod {pod.get('namespace')}/{pod.get('name')})" if pod.get("name") else ""
            out.append(f"{item['metadata']['name']}{where}: {st.get('message') or 'no message'}")
    return sorted(out)


def backup(cluster: Cluster, name: str, *, namespace: str = "velero", storage_location: str = "default",
           include_cluster_resources: bool = True, timeout: float = 600,
           progress: Callable[[str], None] | None = None) -> VeleroResult:
    """Create a Backup and wait until it is Completed (raises otherwise)."""
    create_backup(cluster, name, namespace=namespace, storage_location=storage_location,
                  include_cluster_resources=include_cluster_resources)
    return wait(cluster, "Backup", name, namespace=namespace, timeout=timeout, progress=progress)


def restore(cluster: Cluster, backup_name: str, *, name: str, namespace: str = "velero",
            existing_resource_policy: str = "none", timeout: float = 600,
            progress: Callable[[str], None] | None = None) -> VeleroResult:
    """Create a Restore and wait until it is Completed (raises otherwise)."""
    create_restore(cluster, backup_name, name=name, namespace=namespace,
                   existing_resource_policy=existing_resource_policy)
    return wait(cluster, "Restore", name, namespace=namespace, timeout=timeout, progress=progress)


def as_row(res: VeleroResult) -> dict[str, Any]:
    return {"kind": res.kind, "name": res.name, "phase": res.phase, "items": res.items,
            "errors": res.errors, "warnings": res.warnings, "seconds": round(res.seconds, 1)}
