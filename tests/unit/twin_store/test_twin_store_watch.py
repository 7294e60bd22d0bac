"""Watches: live events, resumes from the history ring, Gone, selector transitions,
initial events with the end-of-initial-events bookmark, and periodic bookmarks."""
from __future__ import annotations

import asyncio

import pytest

from twin.store import BadRequest, Gone, Store
from twin_store_helpers import ns_obj, pod

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]


async def drain(watch, timeout: float = 0.05) -> list[tuple[str, str]]:
    out = []
    while True:
        ev = await watch.next(timeout)
        if ev is None:
            return out
        out.append((ev.type, ev.object["metadata"].get("name", "")))


def test_live_events_in_order(store, pods):
    async def main():
        w = store.watch(pods)
        store.create(pod("a"))
        store.mutate(pods, "default", "a", lambda o: o["metadata"]["labels"].update(x="1"))
        store.delete(pods, "default", "a")
        ev = await w.next(1)
        assert ev.type == "ADDED" and ev.object["kind"] == "Pod"
        assert ev.object["apiVersion"] == "v1"
        assert ev.resource_version == int(ev.object["metadata"]["resourceVersion"])
        rest = await drain(w)
        assert rest == [("MODIFIED", "a"), ("DELETED", "a")]
        w.close()
        store.create(pod("b"))
        assert await w.next(0.05) is None
    asyncio.run(main())


def test_deleted_event_carries_a_new_resource_version(store, pods):
    async def main():
        created = store.create(pod("a"))
        w = store.watch(pods)
        store.delete(pods, "default", "a")
        ev = await w.next(1)
        assert ev.type == "DELETED"
        assert int(ev.object["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"])
    asyncio.run(main())


def test_next_times_out_with_none(store, pods):
    async def main():
        w = store.watch(pods)
        assert await w.next(0.01) is None
    asyncio.run(main())


def test_namespace_and_selector_filtering(store, pods):
    async def main():
        w = store.watch(pods, "other", label_selector="app=web",
                        field_selector="metadata.name!=skip")
        store.create(pod("a", "default", labels={"app": "web"}))
        store.create(pod("b", "other", labels={"app": "db"}))
        store.create(pod("c", "other", labels={"app": "web"}))
        store.create(pod("skip", "other", labels={"app": "web"}))
        assert await drain(w) == [("ADDED", "c")]
    asyncio.run(main())


def test_selector_transitions_become_added_and_deleted(store, pods):
    async def main():
        store.create(pod("a", labels={"app": "db"}))
        w = store.watch(pods, label_selector="app=web")
        store.mutate(pods, "default", "a", lambda o: o["metadata"]["labels"].update(app="web"))
        store.mutate(pods, "default", "a", lambda o: o["metadata"]["labels"].update(v="2"))
        store.mutate(pods, "default", "a", lambda o: o["metadata"]["labels"].update(app="db"))
        events = []
        for _ in range(3):
            events.append(await w.next(1))
        assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        gone = events[2]
        # The DELETED event shows the last matching state at the new resourceVersion.
        assert gone.object["metadata"]["labels"]["app"] == "web"
        assert gone.object["metadata"]["resourceVersion"] == str(store.resource_version)
        assert await w.next(0.02) is None
    asyncio.run(main())


def test_field_selector_transition_on_phase(store, pods):
    async def main():
        store.create(pod("a"))
        w = store.watch(pods, field_selector="status.phase!=Running")
        store.mutate(pods, "default", "a", lambda o: o["status"].update(phase="Running"))
        assert await drain(w) == [("DELETED", "a")]
    asyncio.run(main())


def test_resume_from_resource_version(store, pods):
    async def main():
        a = store.create(pod("a"))
        since = a["metadata"]["resourceVersion"]
        store.create(pod("b"))
        store.delete(pods, "default", "a")
        store.create(store_cm := {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "x", "namespace": "default"}})
        assert store_cm
        w = store.watch(pods, resource_version=since)
        assert await drain(w) == [("ADDED", "b"), ("DELETED", "a")]
        # Live events follow the replay.
        store.create(pod("c"))
        assert await drain(w) == [("ADDED", "c")]
    asyncio.run(main())


def test_resume_current_or_zero_means_from_now(store, pods):
    async def main():
        store.create(pod("a"))
        for rv in (None, "0", str(store.resource_version), str(store.resource_version + 100)):
            w = store.watch(pods, resource_version=rv)
            assert await w.next(0.01) is None
            w.close()
        with pytest.raises(BadRequest):
            store.watch(pods, resource_version="abc")
    asyncio.run(main())


def test_gone_when_older_than_the_ring():
    async def main():
        s = Store(history_per_resource=5)
        s.create(ns_obj("default"))
        pods = s.lookup("", "v1", "pods")
        first = s.create(pod("p0"))
        for i in range(1, 8):
            s.create(pod(f"p{i}"))
        with pytest.raises(Gone) as e:
            s.watch(pods, resource_version=first["metadata"]["resourceVersion"])
        assert e.value.code == 410
        # The ring still serves the last few events.
        recent = s.get(pods, "default", "p4")["metadata"]["resourceVersion"]
        w = s.watch(pods, resource_version=recent)
        assert await drain(w) == [("ADDED", "p5"), ("ADDED", "p6"), ("ADDED", "p7")]
        # Writes to other resources do not push pods out of their ring.
        for i in range(20):
            s.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": f"cm{i}", "namespace": "default"}})
        w2 = s.watch(pods, resource_version=recent)
        assert len(await drain(w2)) == 3
    asyncio.run(main())


def test_initial_events_then_bookmark(store, pods):
    async def main():
        store.create(pod("b", labels={"app": "web"}))
        store.create(pod("a", labels={"app": "web"}))
        store.create(pod("c", labels={"app": "db"}))
        store.create(pod("d", "other", labels={"app": "web"}))
        w = store.watch(pods, "default", label_selector="app=web", send_initial_events=True,
                        resource_version="1")
        events = [await w.next(1) for _ in range(3)]
        assert [(e.type, e.object["metadata"]["name"]) for e in events[:2]] == [
            ("ADDED", "a"), ("ADDED", "b")]
        mark = events[2]
        assert mark.type == "BOOKMARK"
        assert mark.object == {"kind": "Pod", "apiVersion": "v1", "metadata": {
            "resourceVersion": str(store.resource_version),
            "annotations": {"k8s.io/initial-events-end": "true"}}}
        store.create(pod("e", labels={"app": "web"}))
        assert await drain(w) == [("ADDED", "e")]
        plain = store.watch(pods, send_initial_events=True, initial_events_bookmark=False)
        assert [t for t, _ in await drain(plain)] == ["ADDED"] * 5
    asyncio.run(main())


def test_periodic_bookmark(store, pods):
    async def main():
        w = store.watch(pods)
        store.create(pod("a"))
        ev = await w.next(1)
        mark = w.bookmark()
        assert mark.type == "BOOKMARK" and mark.object["kind"] == "Pod"
        assert mark.object["metadata"]["resourceVersion"] == ev.object["metadata"][
            "resourceVersion"]
        store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "x", "namespace": "default"}})
        # Nothing pending: a bookmark may advance past unrelated writes.
        assert w.bookmark().resource_version == store.resource_version
    asyncio.run(main())


def test_watch_objects_are_private_copies(store, pods):
    async def main():
        w1 = store.watch(pods)
        w2 = store.watch(pods)
        store.create(pod("a"))
        e1, e2 = await w1.next(1), await w2.next(1)
        e1.object["metadata"]["name"] = "mangled"
        assert e2.object["metadata"]["name"] == "a"
        assert store.get(pods, "default", "a")["metadata"]["name"] == "a"
    asyncio.run(main())


def test_async_iteration_ends_on_close(store, pods):
    async def main():
        w = store.watch(pods)
        store.create(pod("a"))
        store.create(pod("b"))
        w.close()
        names = [ev.object["metadata"]["name"] async for ev in w]
        assert names == ["a", "b"]
    asyncio.run(main())


def test_waiting_reader_is_woken_by_writes(store, pods):
    async def main():
        w = store.watch(pods)

        async def later():
            await asyncio.sleep(0.02)
            store.create(pod("late"))

        task = asyncio.create_task(later())
        ev = await w.next(2)
        await task
        assert ev is not None and ev.object["metadata"]["name"] == "late"
    asyncio.run(main())


def test_closed_and_pending_after_close(store, pods):
    async def main():
        w = store.watch(pods)
        store.create(pod("a"))
        assert w.pending() == 1 and not w.closed
        w.close()
        assert w.pending() == 1 and not w.closed    # one event still to read
        assert (await w.next(0)).type == "ADDED"
        assert w.pending() == 0 and w.closed
        assert await w.next(0) is None and await w.next(0.01) is None
    asyncio.run(main())
