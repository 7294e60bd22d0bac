"""runbook.cluster_pipeline through Cluster.pages: the next page asked ahead on one kept
connection of the client's pool; what it cannot deliver asked again through the choke
point, which records the outage, renews a token and raises."""
from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest
import urllib3
from urllib3.connectionpool import HTTPConnectionPool

from runbook.cluster import Cluster
from runbook.cluster_pipeline import PageRequests
from runbook.errors import ClusterError

from cluster_fakeapi import FakeAPI, Recorded, start_server, write_kubeconfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]

PAGES = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d", "e"], "t3"), "t3": (["f"], "")}
NAMES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def kept_api():
    """The fake API server over HTTP/1.1: connections stay open between requests."""
    api = FakeAPI()
    srv = start_server(api, keep_alive=True)
    yield api
    srv.shutdown()
    srv.server_close()


def make(tmp_path: Path, server: str) -> Cluster:
    return Cluster(str(write_kubeconfig(tmp_path / "kubeconfig", server)), retry_for=2.0, request_timeout=2.0)


def paged(fail: dict[str, list[int]] | None = None):
    """Pods in four pages; ``fail[token]`` lists statuses to answer first (0: the connection
    is closed without an answer), one per request for that page."""
    fail = {k: list(v) for k, v in (fail or {}).items()}

    def pods(rec: Recorded):
        token = rec.query.get("continue", [None])[0]
        if fail.get(token):
            status = fail[token].pop(0)
            return status, {"kind": "Status", "reason": "Expired" if status == 410 else "Oops",
                            "message": f"status {status}"}
        names, nxt = PAGES[token]
        return 200, {"metadata": {"continue": nxt}, "items": [{"metadata": {"name": n}} for n in names]}
    return pods


def names(c: Cluster) -> list[str]:
    return [p["metadata"]["name"] for p in c.list("pods")]


def test_a_list_rides_one_kept_connection_which_goes_back_to_the_pool(tmp_path, kept_api):
    kept_api.routes[("GET", "/api/v1/pods")] = paged()
    c = make(tmp_path, kept_api.url)
    assert names(c) == NAMES
    reqs = kept_api.requests
    assert [r.query.get("continue", [None])[0] for r in reqs] == [None, "t1", "t2", "t3"]
    assert len({r.peer for r in reqs}) == 1                  # one connection for the whole list
    assert all(r.target.startswith("/api/v1/pods?") for r in reqs)   # origin form, as the pool sends
    assert {r.headers["authorization"] for r in reqs} == {"Bearer unit-test-token"}
    c.request("GET", "/api/v1/pods")                          # the pool has it back, idle
    assert kept_api.requests[-1].peer == reqs[0].peer
    assert c.outages == []


def test_a_server_url_with_a_path_keeps_it_in_every_request(tmp_path, kept_api):
    # a kubeconfig may name a server behind a path (a proxy such as Rancher's /k8s/clusters/…)
    kept_api.routes[("GET", "/k8s/clusters/c1/api/v1/pods")] = paged()
    c = make(tmp_path, kept_api.url + "/k8s/clusters/c1")
    assert names(c) == NAMES
    assert len(kept_api.requests) == 4
    assert all(r.target.startswith("/k8s/clusters/c1/api/v1/pods?") for r in kept_api.requests)


def test_a_consumer_that_stops_early_leaves_no_half_read_connection_in_the_pool(tmp_path, kept_api):
    kept_api.routes[("GET", "/api/v1/pods")] = paged()
    c = make(tmp_path, kept_api.url)
    it = iter(c.pages("v1", "pods"))
    first = next(it)                    # page 2 is asked for already, its answer unread
    it.close()
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    deadline = time.monotonic() + 5     # the server's thread records the request it was sent
    while len(kept_api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.query.get("continue", [None])[0] for r in kept_api.requests] == [None, "t1"]
    assert c.request("GET", "/api/v1/pods")["items"][0]["metadata"]["name"] == "a"
    assert kept_api.requests[-1].peer != kept_api.requests[0].peer   # a fresh connection


@pytest.mark.parametrize("status", [503, 0])
def test_a_page_the_server_fails_ahead_is_asked_again_and_the_failure_recorded(tmp_path, kept_api, status):
    kept_api.routes[("GET", "/api/v1/pods")] = paged(fail={"t2": [status]})
    c = make(tmp_path, kept_api.url)
    assert names(c) == NAMES
    assert [r.query.get("continue", [None])[0] for r in kept_api.requests] == [None, "t1", "t2", "t2", "t3"]
    assert len(c.outages) == 1 and c.outages[0].attempts == 1
    assert c.outages[0].last_error.startswith("HTTP 503" if status else "RemoteDisconnected")


def test_an_outage_met_ahead_and_lasting_into_the_retries_is_one_record(tmp_path, kept_api):
    # the server is away for the page asked ahead and the choke point's first retry
    kept_api.routes[("GET", "/api/v1/pods")] = paged(fail={"t2": [0, 503]})
    c = make(tmp_path, kept_api.url)
    assert names(c) == NAMES
    assert [r.query.get("continue", [None])[0] for r in kept_api.requests] == [None, "t1", "t2", "t2", "t2", "t3"]
    assert len(c.outages) == 1
    o = c.outages[0]
    assert o.attempts == 2 and o.last_error.startswith("HTTP 503") and o.ended >= o.started + 0.15


def test_an_answer_that_is_an_error_reaches_the_caller_as_the_choke_point_raises_it(tmp_path, kept_api):
    # 410: the continue token expired (the list took longer than the server keeps it)
    kept_api.routes[("GET", "/api/v1/pods")] = paged(fail={"t2": [410, 410]})
    c = make(tmp_path, kept_api.url)
    with pytest.raises(ClusterError) as ei:
        names(c)
    assert ei.value.status == 410 and ei.value.reason == "Expired"
    assert c.outages == []              # an answer, not an outage


def test_an_unserved_type_found_missing_mid_list_ends_the_list_as_it_begins_one(tmp_path, kept_api):
    kept_api.routes[("GET", "/api/v1/pods")] = paged(fail={"t1": [404, 404]})
    c = make(tmp_path, kept_api.url)
    assert names(c) == ["a", "b"]


class _Pool:
    def __init__(self, proxy=None):
        self.proxy = proxy

    def _get_conn(self):
        raise AssertionError("not lent")

    def _put_conn(self, conn):
        raise AssertionError("not lent")


class _Api:
    def __init__(self, pool):
        self.configuration = type("Cfg", (), {"host": "https://127.0.0.1:6443"})()
        self.rest_client = type("Rest", (), {"pool_manager": type(
            "PM", (), {"connection_from_url": staticmethod(lambda url: pool)})()})()


def test_a_pool_behind_a_proxy_is_read_page_after_page():
    # a CONNECT tunnel is set up by the pool's own urlopen: no connection is lent then
    assert PageRequests.of(_Api(_Pool(proxy="http://127.0.0.1:3128")), str, dict, timeout=1) is None
    assert isinstance(PageRequests.of(_Api(_Pool()), str, dict, timeout=1), PageRequests)


def test_the_urllib3_internals_it_borrows_are_there():
    # _get_conn/_put_conn are private: an urllib3 upgrade that changes them fails here
    assert int(urllib3.__version__.split(".")[0]) >= 2
    assert list(inspect.signature(HTTPConnectionPool._get_conn).parameters) == ["self", "timeout"]
    assert list(inspect.signature(HTTPConnectionPool._put_conn).parameters) == ["self", "conn"]
    request = inspect.signature(urllib3.connection.HTTPConnection.request).parameters
    assert request["preload_content"].kind is inspect.Parameter.KEYWORD_ONLY
