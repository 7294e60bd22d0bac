"""Printers of storage: PersistentVolumeClaims and PersistentVolumes."""
from __future__ import annotations

from .cells import Column, _get, _name, _none, age


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
