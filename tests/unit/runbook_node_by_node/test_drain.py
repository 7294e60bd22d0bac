"""runbook.drain against a small in-memory API: PDB refusals retried, accepted outages deleted
(journaled), what a drain leaves, and the timeout's message (offline)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook import drain
from runbook.errors import ClusterError
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _pod(name: str, node: str, *, app: str, owner: str = "ReplicaSet", ns: str = "a") -> dict:
    return {"metadata": {"namespace": ns, "name": name, "labels": {"app": app},
                         "ownerReferences": [{"kind": owner, "name": f"{app}-x", "controller": True}]},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def _pdb(name: str, app: str, ns: str = "a") -> dict:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}}


class FakeAPI:
    """Pods and PDBs; an eviction of a pod in ``refuse`` answers 429 ``refusals`` times."""

    def __init__(self, pods: list[dict], pdbs: list[dict], refuse: dict[str, int] | None = None) -> None:
        self.pods, self.pdbs, self.refuse = pods, pdbs, dict(refuse or {})
        self.evictions: list[str] = []
        self.deletes: list[str] = []

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        if resource == "poddisruptionbudgets":
            return list(self.pdbs)
        node = (kw.get("field_selector") or "").removeprefix("spec.nodeName=")
        return [p for p in self.pods if not node or p["spec"]["nodeName"] == node]

    def _drop(self, ns: str, name: str) -> None:
        self.pods = [p for p in self.pods if (p["metadata"]["namespace"], p["metadata"]["name"]) != (ns, name)]

    def request(self, method: str, path: str, **kw: Any) -> Any:
        assert method == "POST" and path.endswith("/eviction") and kw["raise_status"] == frozenset({429})
        ns, name = path.split("/")[4], path.split("/")[6]
        self.evictions.append(name)
        if self.refuse.get(name, 0) > 0:
            self.refuse[name] -= 1
            raise ClusterError("Cannot evict pod as it would violate the pod's disruption budget.", status=429)
        self._drop(ns, name)
        return {"status": "Success"}

    def delete(self, resource: str, name: str, namespace: str | None = None) -> dict:
        self.deletes.append(name)
        self._drop(namespace or "", name)
        return {}


def test_daemonset_pods_stay_and_a_refused_eviction_is_retried_until_it_passes() -> None:
    api = FakeAPI([_pod("web-1", "n1", app="web"), _pod("web-2", "n2", app="web"),
                   _pod("agent-1", "n1", app="agent", owner="DaemonSet")], [_pdb("web", "web")],
                  refuse={"web-1": 2})
    lines: list[str] = []
    res = drain.drain(api, "n1", timeout=20, retry=0.01, progress=lines.append)
    assert res.evicted == ["a/web-1"] and res.deleted == [] and res.refusals == 2
    assert api.evictions == ["web-1", "web-1", "web-1"]
    assert [p["metadata"]["name"] for p in api.pods] == ["web-2", "agent-1"]
    assert lines[0] == "drain n1: 1 pod(s) to move" and lines[-1].startswith("drain n1: done in")


def test_an_accepted_outage_is_deleted_and_journaled_first(tmp_path: Path) -> None:
    j = Journal.open(tmp_path / "run", params_hash="h" * 64, cluster_uid="uid", run_id="r1")
    api = FakeAPI([_pod("solo-1", "n1", app="solo"), _pod("web-1", "n1", app="web")],
                  [_pdb("solo", "solo"), _pdb("web", "web")], refuse={"solo-1": 99})
    res = drain.drain(api, "n1", timeout=20, retry=0.01, delete_pdbs=["a/solo"], journal=j, progress=lambda _: None)
    assert res.deleted == ["a/solo-1"] and res.evicted == ["a/web-1"]
    assert api.deletes == ["solo-1"] and "solo-1" not in api.evictions
    (e,) = j.entries(step="nbn-delete-pod")
    assert (e.node, e.status, e.data) == ("n1", "done", {"pod": "a/solo-1", "pdb": "a/solo"})


def test_a_pdb_that_never_allows_the_eviction_times_out_naming_it() -> None:
    api = FakeAPI([_pod("solo-1", "n1", app="solo")], [_pdb("solo", "solo")], refuse={"solo-1": 10**6})
    with pytest.raises(drain.DrainTimeout) as ei:
        drain.drain(api, "n1", timeout=0.2, retry=0.02, progress=lambda _: None)
    e = ei.value
    assert e.node == "n1" and e.pods == ["a/solo-1: eviction refused by a/solo"]
    assert "did not finish in 0s" in str(e) and "delete_instead_of_evict" in e.hint
    assert "kubectl uncordon n1" in e.hint


def test_a_longhorn_instance_manager_left_behind_says_why_longhorn_keeps_its_pdb() -> None:
    im = "instance-manager-0123"
    api = FakeAPI([_pod(im, "n1", app="im", owner="InstanceManager", ns="longhorn-system")],
                  [_pdb(im, "im", ns="longhorn-system")], refuse={im: 10**6})
    with pytest.raises(drain.DrainTimeout) as ei:
        drain.drain(api, "n1", timeout=0.2, retry=0.02, progress=lambda _: None)
    e = ei.value
    assert e.pods == [f"longhorn-system/{im}: eviction refused by longhorn-system/{im}"]
    assert e.hint.startswith(drain.LONGHORN_HINT) and "node-drain-policy" in e.hint
    # any other PDB's timeout does not talk about Longhorn
    api2 = FakeAPI([_pod("solo-1", "n1", app="solo")], [_pdb("solo", "solo")], refuse={"solo-1": 10**6})
    with pytest.raises(drain.DrainTimeout) as ei2:
        drain.drain(api2, "n1", timeout=0.2, retry=0.02, progress=lambda _: None)
    assert "Longhorn" not in ei2.value.hint


def test_mirror_terminating_and_finished_pods_are_not_moved() -> None:
    mirror = _pod("etcd-n1", "n1", app="etcd", owner="Node")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    going = _pod("old-1", "n1", app="old")
    going["metadata"]["deletionTimestamp"] = "2026-12-04T12:00:00Z"
    done = _pod("job-1", "n1", app="job", owner="Job")
    done["status"]["phase"] = "Succeeded"
    assert drain.pods_to_move([mirror, going, done, _pod("web-1", "n1", app="web"), _pod("web-2", "n2", app="web")],
                              "n1") == [_pod("web-1", "n1", app="web")]
    assert drain.blocking_pdb(_pod("web-1", "n1", app="web"), [_pdb("other", "x"), _pdb("web", "web")]) == "a/web"
    assert drain.blocking_pdb(_pod("web-1", "n1", app="web", ns="b"), [_pdb("web", "web")]) is None


def _ready(p: dict) -> dict:
    p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    p["metadata"]["ownerReferences"][0]["uid"] = "rs-web"
    return p


class SlowReplacements(FakeAPI):
    """An evicted pod's replacement turns Ready on another node two list calls later."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pending: list[tuple[int, dict]] = []
        self.lists = 0
        self.log: list[str] = []

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        if resource == "pods":
            self.lists += 1
            for due, pod in [x for x in self.pending if x[0] <= self.lists]:
                self.pending.remove((due, pod))
                self.pods.append(pod)
                self.log.append(f"ready {pod['metadata']['name']}")
        return super().list(resource, namespace, **kw)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        name = path.split("/")[6]
        res = super().request(method, path, **kw)
        self.log.append(f"evict {name}")
        self.pending.append((self.lists + 2, _ready(_pod(f"{name}-new", "n2", app="web"))))
        return res


def test_replicas_on_the_drained_node_leave_one_at_a_time() -> None:
    api = SlowReplacements([_ready(_pod("web-1", "n1", app="web")), _ready(_pod("web-2", "n1", app="web"))], [])
    lines: list[str] = []
    res = drain.drain(api, "n1", timeout=20, retry=0.01, progress=lines.append)
    assert sorted(res.evicted) == ["a/web-1", "a/web-2"]
    # the second replica left only once the first one's replacement was Ready elsewhere
    assert api.log[:3] == ["evict web-1", "ready web-1-new", "evict web-2"]


class PdbTurnsGreen(FakeAPI):
    """The PDB allows no disruption (evictions refused) until the pods were listed
    ``after`` times; then its status says one disruption is allowed, as the disruption
    controller writes once a replacement is Ready."""

    def __init__(self, *a: Any, after: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.after, self.lists = after, 0
        self.pdbs[0]["status"] = {"disruptionsAllowed": 0, "currentHealthy": 1}

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        if resource == "pods":
            self.lists += 1
            if self.lists == self.after:
                self.pdbs[0]["status"] = {"disruptionsAllowed": 1, "currentHealthy": 2}
                self.refuse.clear()
        return super().list(resource, namespace, **kw)


def test_a_refused_eviction_waits_for_its_retry_unless_its_pdb_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    api = PdbTurnsGreen([_pod("web-1", "n1", app="web")], [_pdb("web", "web")], refuse={"web-1": 10**6}, after=5)
    # a retry of an hour: only the PDB's change can bring the second attempt within the timeout
    res = drain.drain(api, "n1", timeout=20, retry=3600, progress=lambda _: None)
    assert res.evicted == ["a/web-1"] and res.refusals == 1
    assert api.evictions == ["web-1", "web-1"]          # refused once, then asked once the PDB changed
    assert api.lists >= 5                                # the node was looked at meanwhile, not asked again


def test_an_unchanged_pdb_is_not_asked_again_before_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    api = FakeAPI([_pod("solo-1", "n1", app="solo")], [_pdb("solo", "solo")], refuse={"solo-1": 10**6})
    with pytest.raises(drain.DrainTimeout):
        drain.drain(api, "n1", timeout=0.3, retry=3600, progress=lambda _: None)
    assert api.evictions == ["solo-1"]                   # one attempt: its retry is an hour away


def test_the_drain_looks_again_without_waiting_out_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.01)
    api = SlowReplacements([_ready(_pod("web-1", "n1", app="web")), _ready(_pod("web-2", "n1", app="web"))], [])
    # an hour between eviction retries, but no eviction is refused: the drain follows the
    # replacements at its own pace and ends within its 20 s
    res = drain.drain(api, "n1", timeout=20, retry=3600, progress=lambda _: None)
    assert sorted(res.evicted) == ["a/web-1", "a/web-2"] and res.refusals == 0
    assert api.log[:3] == ["evict web-1", "ready web-1-new", "evict web-2"]


class SlowLists(FakeAPI):
    """Every LIST of the pods takes ``cost`` seconds (a big cluster); their start times are kept."""

    def __init__(self, *a: Any, cost: float, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.cost, self.starts = cost, []

    def list(self, resource: str, namespace: str | None = None, **kw: Any) -> list[dict]:
        if resource == "pods":
            import time

            self.starts.append(time.monotonic())
            time.sleep(self.cost)
        return super().list(resource, namespace, **kw)


def test_a_drain_spends_at_most_a_quarter_of_its_time_listing_a_big_clusters_pods(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.001)
    monkeypatch.setattr(drain, "MIN_PAUSE", 0.001)
    api = SlowLists([_pod("solo-1", "n1", app="solo")], [_pdb("solo", "solo")], refuse={"solo-1": 10**6},
                    cost=0.05)
    with pytest.raises(drain.DrainTimeout):
        drain.drain(api, "n1", timeout=1.5, retry=0.001, progress=lambda _: None)
    # the last look comes at the deadline, however short the rest before it
    gaps = [b - a for a, b in zip(api.starts, api.starts[1:])][:-1]
    assert len(gaps) >= 2
    # a look of >= 0.05 s is followed by >= 0.15 s of rest: a look starts >= 0.2 s after the last
    assert min(gaps) >= 0.195, gaps
    assert len(api.evictions) == len(api.starts)     # every look still asked again (retry due)


class SameNameReplacements(SlowReplacements):
    """A StatefulSet's replacement has the evicted pod's name (and a new uid)."""

    def request(self, method: str, path: str, **kw: Any) -> Any:
        name = path.split("/")[6]
        res = FakeAPI.request(self, method, path, **kw)
        self.log.append(f"evict {name}")
        new = _ready(_pod(name, "n2", app="web", owner="StatefulSet"))
        new["metadata"]["uid"] = f"{name}-second"
        self.pending.append((self.lists + 2, new))
        return res


def test_a_statefulset_pods_replacement_of_the_same_name_counts_as_ready() -> None:
    pods = [_ready(_pod(n, "n1", app="web", owner="StatefulSet")) for n in ("web-0", "web-1")]
    for p in pods:
        p["metadata"]["uid"] = f"{p['metadata']['name']}-first"
    api = SameNameReplacements(pods, [])
    res = drain.drain(api, "n1", timeout=20, retry=0.01, progress=lambda _: None)
    assert sorted(res.evicted) == ["a/web-0", "a/web-1"]
    assert api.log[:3] == ["evict web-0", "ready web-0", "evict web-1"]
