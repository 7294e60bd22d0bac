"""runbook.velero: phase handling from golden Backup/Restore documents.

The target is swapped, not the functions: a fake cluster serves a scripted sequence
of objects, one per poll (tests/fixtures/velero/<case>/sequence.json).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from runbook import velero
from runbook.errors import VeleroError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "velero"


class ScriptedCluster:
    """Serves the next object of ``sequence`` on each get (the last repeats)."""

    def __init__(self, sequence: list[dict | None], pvbs: dict | None = None,
                 pvb_error: Exception | None = None) -> None:
        self.sequence = list(sequence)
        self.pvbs = pvbs
        self.pvb_error = pvb_error
        self.gets: list[tuple] = []
        self.created: list[tuple] = []
        self.requests: list[tuple] = []

    def get(self, resource, name, namespace=None):
        self.gets.append((resource, name, namespace))
        return self.sequence.pop(0) if len(self.sequence) > 1 else self.sequence[0]

    def create(self, resource, obj, namespace=None):
        self.created.append((resource, obj, namespace))
        return obj

    def request(self, method, path, **kw):
        self.requests.append((method, path, kw))
        if self.pvb_error:
            raise self.pvb_error
        return self.pvbs


def _cases():
    return sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", _cases())
def test_wait_golden(case):
    d = FIXTURES / case
    seq = json.loads((d / "sequence.json").read_text())
    want = json.loads((d / "expected.json").read_text())
    pvbs = json.loads((d / "podvolumebackups.json").read_text()) if (d / "podvolumebackups.json").exists() else None
    c = ScriptedCluster(seq, pvbs)
    name = seq[0]["metadata"]["name"]
    seen: list[str] = []
    if "result" in want:
        res = velero.wait(c, want["kind"], name, timeout=5, interval=0.001,
                          progress=lambda m: seen.append(m.split(": ", 1)[1]))
        got = dataclasses.asdict(res)
        assert got.pop("seconds") >= 0
        assert got == want["result"]
        assert seen == want["phases_seen"]
    else:
        with pytest.raises(VeleroError) as ei:
            velero.wait(c, want["kind"], name, timeout=5, interval=0.001)
        e, w = ei.value, want["error"]
        assert (e.phase, e.errors, e.warnings, e.failure_reason) == (w["phase"], w["errors"], w["warnings"],
                                                                      w["failure_reason"])
        for part in w["message_contains"]:
            assert part in str(e)
    resource = {"Backup": "backups", "Restore": "restores"}[want["kind"]]
    assert all(g == (resource, name, "velero") for g in c.gets)


def test_failed_volume_detail_is_only_asked_for_backups():
    c = ScriptedCluster([{"metadata": {"name": "r"}, "status": {"phase": "PartiallyFailed", "errors": 1}}])
    with pytest.raises(VeleroError):
        velero.wait(c, "Restore", "r", interval=0.001)
    assert c.requests == []


def test_failed_volume_lookup_error_never_hides_the_real_error():
    from runbook.errors import ClusterError

    c = ScriptedCluster([{"metadata": {"name": "b"}, "status": {"phase": "PartiallyFailed", "errors": 1}}],
                        pvb_error=ClusterError("403 forbidden"))
    with pytest.raises(VeleroError, match="ended PartiallyFailed: 1 errors"):
        velero.wait(c, "Backup", "b", interval=0.001)
    assert c.requests[0][2]["query"] == {"labelSelector": "velero.io/backup-name=b"}


def test_unknown_phase_times_out_with_last_phase():
    c = ScriptedCluster([{"metadata": {"name": "b"}, "status": {"phase": "InProgress"}},
                         {"metadata": {"name": "b"}, "status": {"phase": "BrandNewPhase"}}])
    with pytest.raises(VeleroError) as ei:
        velero.wait(c, "Backup", "b", timeout=0.05, interval=0.01)
    assert "Backup b still BrandNewPhase after 0s" in str(ei.value)
    assert ei.value.phase == "BrandNewPhase"
    assert "logs" in str(ei.value)


def test_disappearing_object():
    c = ScriptedCluster([{"metadata": {"name": "b"}, "status": {"phase": "InProgress"}}, None])
    with pytest.raises(VeleroError, match="disappeared"):
        velero.wait(c, "Backup", "b", interval=0.001)


def test_create_backup_body_and_idempotence():
    c = ScriptedCluster([None])
    velero.create_backup(c, "phase22-r1", namespace="velero", storage_location="minio")
    (resource, body, ns), = c.created
    assert (resource, ns) == ("backups", "velero")
    assert body["spec"] == {"includedNamespaces": ["*"], "includeClusterResources": True,
                            "storageLocation": "minio", "ttl": "720h0m0s"}
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "phase22-runbook"
    c2 = ScriptedCluster([{"metadata": {"name": "phase22-r1"}}])
    assert velero.create_backup(c2, "phase22-r1") == {"metadata": {"name": "phase22-r1"}}
    assert c2.created == []


def test_create_restore_policy():
    c = ScriptedCluster([None])
    velero.create_restore(c, "phase22-r1", name="rb", existing_resource_policy="update")
    assert c.created[0][1]["spec"] == {"backupName": "phase22-r1", "includeClusterResources": True,
                                       "existingResourcePolicy": "update"}
    with pytest.raises(ValueError):
        velero.create_restore(c, "phase22-r1", name="rb", existing_resource_policy="overwrite")
