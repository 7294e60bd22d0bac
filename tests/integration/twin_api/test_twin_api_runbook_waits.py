"""The runbook's waits and pages against a real API server (the twin's, over TLS).

Waits wake on watch events (runbook.watches): the check's result is re-read when the
watched resource changes, and polled only where no watch exists. Each next page is asked
for before this one is decoded (runbook.paging, runbook.cluster_pipeline) with the
server's real continue tokens.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from runbook.cluster import Cluster
from runbook.errors import WaitTimeout
from runbook.watches import Changes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def cluster(api, tmp_path) -> Cluster:
    c = Cluster(str(api.kubeconfig), kind="twin", retry_for=5)
    c.wait_log = tmp_path / "waits.jsonl"
    return c


def create_configmap_later(api, name: str, after: float = 0.3) -> threading.Thread:
    def run():
        time.sleep(after)
        api.call(lambda: api.rt.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": name, "namespace": "default"},
                                              "data": {"k": "v"}}))
    t = threading.Thread(target=run)
    t.start()
    return t


def logged(c: Cluster) -> list[dict]:
    return [json.loads(x) for x in c.wait_log.read_text().splitlines()]


def test_a_wait_is_woken_by_the_watch_event(api, tmp_path):
    c = cluster(api, tmp_path)
    writer = create_configmap_later(api, "wake-me")
    # interval 30: only a watch event can end this wait before the poll would
    c.wait_for(lambda: (c.get("configmaps", "wake-me", "default") is not None, ["wake-me"]),
               timeout=60, interval=30, what="the wake-me ConfigMap",
               watch=[("configmaps", "default")])
    writer.join()
    entry = logged(c)[-1]
    assert entry["what"] == "the wake-me ConfigMap" and entry["ok"] is True
    assert entry["events"] is not None          # it waited on a watch, not on the clock


def test_changes_wake_on_each_event_of_the_watched_resource(api, tmp_path):
    c = cluster(api, tmp_path)
    changes = Changes(c, [("configmaps", "default")], settle=0).start()
    try:
        while not changes.watching:        # the watch is open (from the list's version)
            time.sleep(0.05)
        changes.wait(0.01)                  # the re-check owed to opening it
        writer = create_configmap_later(api, "event-1", after=0)
        assert changes.wait(60) is True     # woken by the event (60 s would be the poll)
        writer.join()
        assert changes.events >= 1
    finally:
        changes.close()


def test_without_a_watch_the_wait_polls(api, tmp_path):
    c = cluster(api, tmp_path)
    writer = create_configmap_later(api, "polled")
    # ciliumnodes are not served by this API server: no watch can open, so it polls
    c.wait_for(lambda: (c.get("configmaps", "polled", "default") is not None, ["polled"]),
               timeout=60, interval=0.2, what="the polled ConfigMap", watch=["ciliumnodes"])
    writer.join()
    assert logged(c)[-1]["events"] == 0
    changes = Changes(c, ["ciliumnodes"])
    assert changes.wait(0.5) is False and not changes.watching
    changes.close()


def test_a_timeout_keeps_its_meaning_and_message(api, tmp_path):
    c = cluster(api, tmp_path)
    with pytest.raises(WaitTimeout) as e:
        c.wait_for(lambda: (False, ["pod x not Ready"]), timeout=1, interval=0.2,
                   what="something that never comes", watch=["pods"])
    assert "timed out after 1s waiting for something that never comes" in str(e.value)
    assert e.value.pending == ["pod x not Ready"]
    assert logged(c)[-1]["ok"] is False


def test_paged_reads_follow_the_servers_tokens(api, tmp_path):
    c = cluster(api, tmp_path)
    want = api.call(lambda: sorted((p["metadata"]["namespace"], p["metadata"]["name"])
                                   for p in api.rt.store.iter_objects(api.rt.store.lookup("", "v1", "pods"))))
    assert len(want) > 4
    pool = c.api.rest_client.pool_manager.connection_from_url(c.server)
    asked, opened = pool.num_requests, pool.num_connections
    got = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in c.iter_list("pods", limit=2)]
    assert got == want
    # over TLS, every page after the first went out early on the same kept connection,
    # past the pool's own request path (runbook.cluster_pipeline)
    assert pool.num_requests - asked == 1 and pool.num_connections - opened <= 1
    assert c.outages == []
