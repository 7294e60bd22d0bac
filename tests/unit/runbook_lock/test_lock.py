"""runbook.lock: the migration Lease, against an in-memory lease store (the target swapped)."""
from __future__ import annotations

import copy
import datetime as dt

import pytest

from runbook import lock
from runbook.errors import ClusterError, LockHeld

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

PATH = f"/apis/coordination.k8s.io/v1/namespaces/{lock.LEASE_NAMESPACE}/leases/{lock.LEASE_NAME}"


class LeaseStore:
    """One Lease object with resourceVersion checks, like the API server."""

    def __init__(self, lease: dict | None = None, create_conflict: dict | None = None) -> None:
        self.lease = copy.deepcopy(lease)
        self.version = 1
        if self.lease:
            self.lease["metadata"]["resourceVersion"] = "1"
        self.create_conflict = create_conflict   # another run creates it just before us
        self.calls: list[str] = []

    def request(self, method, path, *, ok_missing=False, **_):
        assert path == PATH
        self.calls.append(method)
        if method == "GET":
            if self.lease is None and not ok_missing:
                raise ClusterError("not found", status=404)
            return copy.deepcopy(self.lease)
        if method == "DELETE":
            self.lease = None
            return {}
        raise AssertionError(method)

    def create(self, resource, obj, namespace=None):
        assert (resource, namespace) == ("leases", lock.LEASE_NAMESPACE)
        self.calls.append("POST")
        if self.create_conflict is not None:
            self.lease, self.create_conflict = copy.deepcopy(self.create_conflict), None
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            raise ClusterError("already exists", status=409)
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def replace(self, resource, obj):
        self.calls.append("PUT")
        if obj["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ClusterError("conflict", status=409)
        self.version += 1
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


def _lease(run_id: str, renewed: dt.datetime, seconds: int = 1800) -> dict:
    t = lock._fmt(renewed)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lock.LEASE_NAME, "namespace": lock.LEASE_NAMESPACE,
                         "annotations": {lock.RUN_ANNOTATION: run_id}},
            "spec": {"holderIdentity": f"{run_id}@otherhost:42", "leaseDurationSeconds": seconds,
                     "acquireTime": t, "renewTime": t}}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def test_acquire_absent_creates_lease():
    s = LeaseStore()
    got = lock.acquire(s, "run-a", lease_seconds=600)
    assert s.calls == ["GET", "POST"]
    assert got["metadata"]["annotations"][lock.RUN_ANNOTATION] == "run-a"
    assert got["spec"]["leaseDurationSeconds"] == 600
    assert got["spec"]["holderIdentity"].startswith("run-a@")
    assert lock.status(s)["run_id"] == "run-a"


def test_reentrant_for_same_run_keeps_acquire_time_and_renews():
    old = _now() - dt.timedelta(seconds=100)
    s = LeaseStore(_lease("run-a", old))
    got = lock.acquire(s, "run-a")
    assert s.calls == ["GET", "PUT"]
    assert got["spec"]["acquireTime"] == lock._fmt(old)
    assert lock._parse(got["spec"]["renewTime"]) > old
    assert lock.TAKEOVER_ANNOTATION not in got["metadata"]["annotations"]


def test_fresh_foreign_lease_is_refused_naming_run_and_expiry():
    renewed = _now() - dt.timedelta(seconds=60)
    s = LeaseStore(_lease("run-other", renewed, seconds=1800))
    with pytest.raises(LockHeld) as ei:
        lock.acquire(s, "run-a")
    msg = str(ei.value)
    assert "run run-other" in msg and "run-other@otherhost:42" in msg
    assert f"expires {lock._fmt(renewed + dt.timedelta(seconds=1800))}" in msg
    assert "kube-system/phase22-migration" in msg   # the hint says what to delete once sure
    assert s.calls == ["GET"]                       # nothing written
    assert s.lease["metadata"]["annotations"] == {lock.RUN_ANNOTATION: "run-other"}


def test_expired_foreign_lease_is_taken_over_and_recorded():
    renewed = _now() - dt.timedelta(seconds=3600)
    s = LeaseStore(_lease("run-crashed", renewed, seconds=1800))
    got = lock.acquire(s, "run-b")
    ann = got["metadata"]["annotations"]
    assert ann[lock.RUN_ANNOTATION] == "run-b"
    assert ann[lock.TAKEOVER_ANNOTATION] == \
        f"run-crashed (expired {lock._fmt(renewed + dt.timedelta(seconds=1800))})"
    assert got["spec"]["holderIdentity"].startswith("run-b@")
    assert got["metadata"]["resourceVersion"] == "2"


def test_lost_create_race_judges_the_winner():
    winner = _lease("run-fast", _now())
    s = LeaseStore(None, create_conflict=winner)
    with pytest.raises(LockHeld, match="run-fast"):
        lock.acquire(s, "run-slow")
    assert s.calls == ["GET", "POST", "GET"]


def test_other_create_errors_propagate():
    class Forbidden(LeaseStore):
        def create(self, resource, obj, namespace=None):
            raise ClusterError("forbidden", status=403)

    with pytest.raises(ClusterError, match="forbidden"):
        lock.acquire(Forbidden(), "run-a")


def test_release_only_by_holder():
    s = LeaseStore(_lease("run-a", _now()))
    assert lock.release(s, "run-b") is False
    assert s.lease is not None and "DELETE" not in s.calls
    assert lock.release(s, "run-a") is True
    assert s.lease is None and lock.status(s) is None
    assert lock.release(s, "run-a") is False   # already gone


def test_parse_tolerates_bad_times():
    assert lock._parse(None) is None and lock._parse("yesterday") is None
    t = lock._parse("2026-11-26T05:12:00.000000Z")
    assert t == dt.datetime(2026, 11, 26, 5, 12, tzinfo=dt.timezone.utc)
