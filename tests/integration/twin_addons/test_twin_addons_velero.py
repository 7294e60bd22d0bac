"""Velero on the twin, driven with the runbook's own client (runbook.velero / Cluster)."""
from __future__ import annotations

import datetime as dt

import pytest

from runbook import velero
from runbook.errors import VeleroError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _backup(c, name: str) -> velero.VeleroResult:
    velero.create_backup(c, name)
    return velero.wait(c, "Backup", name, timeout=30, interval=0.02)


def _restore(c, backup: str, name: str, policy: str = "none") -> velero.VeleroResult:
    velero.create_restore(c, backup, name=name, existing_resource_policy=policy)
    return velero.wait(c, "Restore", name, timeout=30, interval=0.02)


def _phases_since(at, kind: str, name: str, rv: str) -> list[str]:
    """Every distinct phase of one Backup/Restore in the watch events after ``rv``
    (New while no phase is set), until a terminal phase."""
    from kubernetes import client, watch

    api = client.CustomObjectsApi(at.cluster.api)
    seen: list[str] = []
    w = watch.Watch()
    for ev in w.stream(api.list_namespaced_custom_object, "velero.io", "v1", "velero", kind,
                       field_selector=f"metadata.name={name}", resource_version=rv,
                       timeout_seconds=20):
        ph = (ev["object"].get("status") or {}).get("phase") or "New"
        if not seen or seen[-1] != ph:
            seen.append(ph)
        if ph in ("Completed", "PartiallyFailed", "Failed", "FailedValidation"):
            w.stop()
    return seen


def _ts(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def test_backup_goes_new_inprogress_completed_and_counts_items(addon_twin) -> None:
    at = addon_twin
    rv = at.cluster.request("GET", "/apis/velero.io/v1/namespaces/velero/backups")["metadata"]["resourceVersion"]
    res = _backup(at.cluster, "b1")
    assert res.phase == "Completed"
    assert _phases_since(at, "backups", "b1", rv) == ["New", "InProgress", "Completed"]
    obj = at.cluster.get("backups", "b1", "velero")
    st = obj["status"]
    assert st["progress"]["totalItems"] == st["progress"]["itemsBackedUp"] == res.items
    assert res.items > 500                    # minicloud: pods, services, CRs, CRDs ...
    assert st["formatVersion"] == "1.1.0" and st["version"] == 1
    assert "errors" not in st and "failureReason" not in st
    ttl = _ts(st["expiration"]) - _ts(st["startTimestamp"])
    assert abs(ttl.total_seconds() - 720 * 3600) <= 2
    assert _ts(st["completionTimestamp"]) >= _ts(st["startTimestamp"])
    assert obj["metadata"]["labels"]["velero.io/storage-location"] == "default"


def test_backup_item_count_follows_the_cluster(addon_twin) -> None:
    at = addon_twin
    first = _backup(at.cluster, "c1")
    at.cluster.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "one-more", "namespace": "default"}},
                      "default")
    second = _backup(at.cluster, "c2")
    assert second.items == first.items + 1
    # Without cluster-scoped resources the count drops by every CRD, PV, StorageClass ...
    velero.create_backup(at.cluster, "c3", include_cluster_resources=False)
    third = velero.wait(at.cluster, "Backup", "c3", timeout=30, interval=0.02)
    crds = len(at.cluster.list("customresourcedefinitions"))
    pvs = len(at.cluster.list("persistentvolumes"))
    assert third.items <= second.items - crds - pvs
    assert third.items > 0


def test_backup_partially_failed_fault(addon_twin) -> None:
    at = addon_twin
    status, _ = at.admin("POST", "/faults", {"velero_partially_failed": True})
    assert status == 200
    with pytest.raises(VeleroError) as err:
        _backup(at.cluster, "bad")
    e = err.value
    assert e.phase == "PartiallyFailed" and e.name == "bad" and (e.errors or 0) >= 1
    obj = at.cluster.get("backups", "bad", "velero")
    assert obj["status"]["phase"] == "PartiallyFailed"
    assert obj["status"]["errors"] >= 1 and obj["status"]["warnings"] >= 1
    assert "failureReason" not in obj["status"]     # as real Velero for PartiallyFailed
    pvbs = at.cluster.request("GET", "/apis/velero.io/v1/namespaces/velero/podvolumebackups",
                              query={"labelSelector": "velero.io/backup-name=bad"})["items"]
    assert pvbs and all(p["status"]["phase"] == "Failed" and p["status"]["message"] for p in pvbs)
    # The fault is one-shot: it is off again, and the next backup is fine.
    assert at.admin("GET", "/faults")[1]["velero_partially_failed"] is False
    assert _backup(at.cluster, "good").phase == "Completed"


def test_backup_waits_for_the_velero_server(addon_twin) -> None:
    at = addon_twin
    at.pause_app("velero")
    at.scale("velero", "velero", 0)
    at.until(lambda: not at.cluster.list("pods", "velero", label_selector="name=velero"),
             what="velero server pod gone")
    velero.create_backup(at.cluster, "waiting")
    at.cluster_sleep(10)
    obj = at.cluster.get("backups", "waiting", "velero")
    assert (obj.get("status") or {}).get("phase", "New") == "New"
    at.scale("velero", "velero", 1)
    assert velero.wait(at.cluster, "Backup", "waiting", timeout=30, interval=0.02).phase == "Completed"


def _cm(name: str, ns: str = "default", **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": dict(data)}


def test_restore_recreates_deleted_objects_and_never_overwrites(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    c.create("configmaps", _cm("gone", v="1"), "default")
    c.create("configmaps", _cm("changed", v="1"), "default")
    c.create("configmaps", _cm("same", v="1"), "default")
    old_uid = c.get("configmaps", "gone", "default")["metadata"]["uid"]
    _backup(c, "before")
    # after the backup: delete one, change one, create one
    c.delete("configmaps", "gone", "default")
    c.patch("configmaps", "changed", {"data": {"v": "2"}}, "default")
    c.create("configmaps", _cm("newer", v="1"), "default")
    # a deployment deleted after the backup comes back too (its pods are not restored:
    # the deployment recreates them)
    at.pause_app("whoami")
    c.delete("deployments", "whoami", "whoami")
    at.until(lambda: c.get("deployments", "whoami", "whoami") is None, what="deployment gone")

    rv = c.request("GET", "/apis/velero.io/v1/namespaces/velero/restores")["metadata"]["resourceVersion"]
    res = _restore(c, "before", "r1")
    assert res.phase == "Completed"
    assert _phases_since(at, "restores", "r1", rv) == ["New", "InProgress", "Completed"]
    gone = c.get("configmaps", "gone", "default")
    assert gone is not None and gone["data"] == {"v": "1"}
    assert gone["metadata"]["uid"] != old_uid
    assert gone["metadata"]["labels"]["velero.io/restore-name"] == "r1"
    assert gone["metadata"]["labels"]["velero.io/backup-name"] == "before"
    assert c.get("configmaps", "changed", "default")["data"] == {"v": "2"}    # not overwritten
    assert c.get("configmaps", "newer", "default") is not None                # not deleted
    assert "velero.io/restore-name" not in (c.get("configmaps", "same", "default")["metadata"].get("labels") or {})
    obj = c.get("restores", "r1", "velero")
    assert obj["status"]["warnings"] >= 1                  # "changed" exists and differs
    assert obj["status"]["progress"]["itemsRestored"] == res.items >= 2
    assert obj["status"]["progress"]["totalItems"] > res.items
    assert c.get("deployments", "whoami", "whoami") is not None
    at.until(lambda: at.ready_pods("whoami", "app.kubernetes.io/name=whoami")
             or at.ready_pods("whoami", "app=whoami"), what="whoami pods back")

    # existingResourcePolicy: update overwrites the changed object
    res2 = _restore(c, "before", "r2", policy="update")
    assert res2.phase == "Completed"
    changed = c.get("configmaps", "changed", "default")
    assert changed["data"] == {"v": "1"}
    assert changed["metadata"]["labels"]["velero.io/restore-name"] == "r2"
    assert c.get("configmaps", "newer", "default") is not None


def test_restore_of_an_unknown_backup_fails_validation(addon_twin) -> None:
    at = addon_twin
    with pytest.raises(VeleroError) as err:
        _restore(at.cluster, "no-such-backup", "r-bad")
    assert err.value.phase == "FailedValidation"
    obj = at.cluster.get("restores", "r-bad", "velero")
    assert obj["status"]["phase"] == "FailedValidation"
    assert any("no-such-backup" in m for m in obj["status"]["validationErrors"])


def test_backup_to_a_missing_or_read_only_location_fails_validation(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    velero.create_backup(c, "nowhere", storage_location="no-such-bsl")
    with pytest.raises(VeleroError) as err:
        velero.wait(c, "Backup", "nowhere", timeout=30, interval=0.02)
    assert err.value.phase == "FailedValidation"
    errs = c.get("backups", "nowhere", "velero")["status"]["validationErrors"]
    assert any("no-such-bsl" in e for e in errs)
    at.pause_app("velero")          # the velero app (selfHeal) owns the location
    c.request("PATCH", "/apis/velero.io/v1/namespaces/velero/backupstoragelocations/default",
              body={"spec": {"accessMode": "ReadOnly"}}, content_type="application/merge-patch+json")
    velero.create_backup(c, "read-only")
    with pytest.raises(VeleroError):
        velero.wait(c, "Backup", "read-only", timeout=30, interval=0.02)
    assert "read-only mode" in c.get("backups", "read-only", "velero")["status"]["validationErrors"][0]


def test_restore_brings_back_a_deleted_namespace(addon_twin) -> None:
    """A restore is not a revert, but a namespace deleted after the backup comes back
    whole: the Namespace first, then its objects; the Deployment recreates its pods."""
    at = addon_twin
    c = at.cluster
    at.pause_app("whoami")          # prune only in the fixture, but keep Argo CD out of it
    before = {(i["kind"], i["metadata"]["name"]) for k in ("services", "deployments", "ingresses")
              for i in c.list(k, "whoami")}
    _backup(c, "ns-before")
    c.delete("namespaces", "whoami")
    at.until(lambda: c.get("namespaces", "whoami") is None, what="namespace gone")
    res = _restore(c, "ns-before", "ns-r")
    assert res.phase == "Completed"
    assert c.get("namespaces", "whoami")["metadata"]["labels"]["velero.io/restore-name"] == "ns-r"
    after = {(i["kind"], i["metadata"]["name"]) for k in ("services", "deployments", "ingresses")
             for i in c.list(k, "whoami")}
    assert after == before
    svc = c.get("services", "whoami", "whoami")
    assert svc["spec"]["clusterIP"].startswith("10.43.")     # allocated anew, as on create
    assert at.until(lambda: at.https("whoami.10.0.0.200.nip.io").status == 200, what="site back")
