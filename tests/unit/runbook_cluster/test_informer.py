"""runbook.informer against a scripted API: one LIST, then the watch's events applied to the
copy; bookmarks keep its version; 410 Gone re-LISTs; a dropped stream resumes from the last
version without a LIST; where no watch opens, re-LISTs at a bounded rate (offline)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from runbook.cluster import Cluster
from runbook.errors import ClusterError
from runbook.informer import Informer, Informers

from cluster_fakeapi import FakeAPI, Recorded, Stream, write_kubeconfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

PODS = "/api/v1/pods"


def pod(name: str, rv: str, **labels: str) -> dict:
    return {"metadata": {"namespace": "a", "name": name, "resourceVersion": rv, "labels": labels}}


def listing(rv: str, *items: dict) -> dict:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": list(items)}


def ev(etype: str, obj: dict) -> dict:
    return {"type": etype, "object": obj}


def bookmark(rv: str) -> dict:
    return ev("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}})


class Script:
    """The pods' collection: LIST answers and watch answers, each consumed in order (the last
    repeats); every request is kept with the time it came."""

    def __init__(self, lists: list, watches: list, list_cost: float = 0.0) -> None:
        self.lists, self.watches, self.list_cost = lists, watches, list_cost
        self.list_times: list[float] = []
        self.watch_versions: list[str] = []
        self.watch_queries: list[dict] = []

    def __call__(self, rec: Recorded):
        if rec.query.get("watch") == ["true"]:
            self.watch_versions.append(rec.query["resourceVersion"][0])
            self.watch_queries.append(rec.query)
            return self.watches.pop(0) if len(self.watches) > 1 else self.watches[0]
        self.list_times.append(time.monotonic())
        time.sleep(self.list_cost)
        return self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]


def cluster(tmp_path: Path, api: FakeAPI) -> Cluster:
    return Cluster(str(write_kubeconfig(tmp_path / "kubeconfig", api.url)), retry_for=2.0)


def list_starts(c: Cluster) -> list[float]:
    """When the informer starts each LIST, on its own clock (it paces LISTs by their starts;
    the server sees them later by a latency that varies on a loaded machine)."""
    starts: list[float] = []
    pages = c.pages

    def timed(*a, **kw):
        starts.append(time.monotonic())
        return pages(*a, **kw)
    c.pages = timed
    return starts


def until(pred, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def release():
    """Set at the end of a test: the held watch streams end (the server's threads with them)."""
    hold = threading.Event()
    yield hold
    hold.set()


def test_events_are_applied_and_a_bookmark_is_where_the_next_watch_starts(tmp_path, fake_api, release):
    script = Script([(200, listing("10", pod("a", "3"), pod("b", "4")))], [
        (200, Stream([ev("ADDED", pod("c", "11")), ev("MODIFIED", pod("a", "12", tier="web")),
                      ev("DELETED", pod("b", "13")), bookmark("20")])),
        (200, Stream([ev("ADDED", pod("d", "21"))], hold=release))])
    fake_api.routes[("GET", PODS)] = script
    with Informer(cluster(tmp_path, fake_api), "pods") as inf:
        assert sorted(p["metadata"]["name"] for p in inf.items()) == ["a", "b"] and inf.version == "10"
        until(lambda: inf.get("d", "a") is not None, "the second watch's event")
        assert sorted(p["metadata"]["name"] for p in inf.items()) == ["a", "c", "d"]
        assert inf.get("a", "a")["metadata"]["labels"] == {"tier": "web"}
        assert inf.get("b", "a") is None
        assert (inf.lists, inf.events, inf.version, inf.watching) == (1, 4, "21", True)
    # the first watch from the list's version; the second resumed from the bookmark's
    assert script.watch_versions == ["10", "20"]
    assert script.watch_queries[0]["allowWatchBookmarks"] == ["true"]
    assert len(script.list_times) == 1


@pytest.mark.parametrize("gone", [
    (200, Stream([{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                               "message": "too old resource version: 10 (25)"}}])),
    (410, {"kind": "Status", "code": 410, "reason": "Gone", "message": "too old resource version"}),
], ids=["error-event", "http-410"])
def test_a_version_too_old_lists_again_and_follows_the_watch_from_the_new_list(tmp_path, fake_api, release, gone):
    script = Script([(200, listing("10", pod("a", "3"))), (200, listing("30", pod("a", "3"), pod("z", "29")))],
                    [gone, (200, Stream([ev("DELETED", pod("a", "31"))], hold=release))])
    fake_api.routes[("GET", PODS)] = script
    with Informer(cluster(tmp_path, fake_api), "pods") as inf:
        until(lambda: inf.events == 1, "the event after the re-LIST")
        assert [p["metadata"]["name"] for p in inf.items()] == ["z"]
        assert (inf.lists, inf.expired, inf.version) == (2, 1, "31")
    assert script.watch_versions == ["10", "30"]


def test_a_dropped_stream_resumes_from_the_last_version_without_a_list(tmp_path, fake_api, release):
    script = Script([(200, listing("10", pod("a", "3")))], [
        (200, Stream([ev("ADDED", pod("b", "11"))], drop=True)),
        (200, Stream([ev("ADDED", pod("c", "12"))], hold=release))])
    fake_api.routes[("GET", PODS)] = script
    with Informer(cluster(tmp_path, fake_api), "pods") as inf:
        until(lambda: inf.events == 2, "the resumed watch's event")
        assert sorted(p["metadata"]["name"] for p in inf.items()) == ["a", "b", "c"]
        assert inf.lists == 1 and inf.watching
    assert script.watch_versions == ["10", "11"]


def test_without_a_watch_the_copy_is_relisted_no_more_than_its_share_of_the_time(tmp_path, fake_api):
    refused = (405, {"kind": "Status", "code": 405, "reason": "MethodNotAllowed", "message": "watch refused"})
    # each LIST takes 0.05 s: at a quarter of the time, one starts 0.2 s after the last at the soonest
    script = Script([(200, listing("10", pod("a", "3"))), (200, listing("11", pod("a", "3"), pod("b", "11")))],
                    [refused], list_cost=0.05)
    fake_api.routes[("GET", PODS)] = script
    c = cluster(tmp_path, fake_api)
    starts = list_starts(c)
    inf = Informer(c, "pods", poll=0.01, look_share=0.25).start()
    try:
        assert inf.wait(10) is True                    # the re-LIST found b
        assert sorted(p["metadata"]["name"] for p in inf.items()) == ["a", "b"]
        until(lambda: inf.lists >= 4, "more re-LISTs")
        assert not inf.watching and "405" in (inf.error or "")
        assert inf.wait(0.3) is False                  # the re-LISTs since found nothing new
    finally:
        inf.close()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # 0.05 s a LIST: a quarter of the time is 0.2 s from start to start (0.05 without the
    # rule); a few ms allowed for the thread between the informer's clock and this one
    assert len(starts) == len(script.list_times) and min(gaps) >= 0.19, gaps
    # the watch was tried again after each LIST
    assert len(script.watch_versions) >= len(starts) - 1


def test_without_a_watch_the_poll_is_the_shortest_gap(tmp_path, fake_api):
    fake_api.routes[("GET", PODS)] = script = Script([(200, listing("10"))], [(0, None)])  # watches cut
    c = cluster(tmp_path, fake_api)
    starts = list_starts(c)
    inf = Informer(c, "pods", poll=0.1).start()
    try:
        until(lambda: inf.lists >= 4, "re-LISTs")
    finally:
        inf.close()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 4 and min(gaps) >= 0.09, gaps    # back to back without the poll


def test_a_failed_first_list_raises_in_the_caller(tmp_path, fake_api):
    fake_api.on("GET", PODS, (403, {"kind": "Status", "code": 403, "reason": "Forbidden",
                                    "message": "pods is forbidden"}))
    inf = Informer(cluster(tmp_path, fake_api), "pods")
    with pytest.raises(ClusterError) as e:
        inf.start()
    assert e.value.status == 403
    inf.close()


def test_a_group_wakes_its_waiter_on_either_resource_and_closes_at_once(tmp_path, fake_api, release):
    pdbs = "/apis/policy/v1/poddisruptionbudgets"
    fake_api.routes[("GET", PODS)] = Script([(200, listing("10"))], [(200, Stream([], hold=release))])
    pdb = {"metadata": {"namespace": "a", "name": "web", "resourceVersion": "12"}, "status": {"disruptionsAllowed": 1}}
    fake_api.routes[("GET", pdbs)] = Script([(200, listing("10"))], [
        (200, Stream([bookmark("11"), ev("ADDED", pdb)], hold=release))])
    seen = Informers(cluster(tmp_path, fake_api), ["pods", "poddisruptionbudgets"], settle=0.01).start()
    try:
        until(lambda: seen["poddisruptionbudgets"].events == 1, "the PDB's event")
        assert seen.wait(5) is True
        assert seen["poddisruptionbudgets"].items() == [pdb] and seen["pods"].items() == []
        assert seen.lists == 2
        until(lambda: seen.watching, "both watches open")
    finally:
        seen.close()
    # the held streams (10 s) were shut, not waited out: the threads ended within close's join
    assert not any(inf._thread.is_alive() for inf in (seen["pods"], seen["poddisruptionbudgets"]))
