"""runbook.paging: pages read ahead, the continue token peeked, the collector held off."""
from __future__ import annotations

import gc
import json
import sys
import threading
import time

import pytest

from runbook import paging
from runbook.paging import Pager, loads, loads_kept, no_full_collections, peek_continue

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def pages_of(n_pages: int, per_page: int = 3, *, spaced: bool = False) -> dict:
    """token -> raw page, as an API server sends them (metadata before items)."""
    out = {}
    for i in range(n_pages):
        token = None if i == 0 else f"tok{i}"
        meta = {"resourceVersion": "7"}
        if i < n_pages - 1:
            meta["continue"] = f"tok{i + 1}"
        doc = {"kind": "PodList", "metadata": meta,
               "items": [{"n": i * per_page + k} for k in range(per_page)]}
        out[token] = json.dumps(doc, separators=None if spaced else (",", ":")).encode()
    return out


def recorder(pages: dict):
    calls: list = []
    lock = threading.Lock()

    def fetch(token):
        with lock:
            calls.append(token)
        return pages[token]
    return fetch, calls


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("spaced", [True, False])
def test_every_item_once_in_order_and_each_page_fetched_once(prefetch, spaced):
    fetch, calls = recorder(pages_of(5, spaced=spaced))
    items = [it["n"] for page in Pager(fetch, prefetch=prefetch) for it in page["items"]]
    assert items == list(range(15))
    assert sorted(calls, key=str) == sorted([None, "tok1", "tok2", "tok3", "tok4"], key=str)


def test_a_wrong_guess_is_fetched_again_with_the_real_token():
    # the body's head names a token the decoded metadata contradicts: never trust a guess
    real = {"metadata": {"continue": "real"}, "items": [1]}
    first = b'{"metadata":{"x":{"continue":"fake"},"continue":"real"},"items":[1]}'
    assert peek_continue(first) == "fake"
    pages = {None: first, "fake": b'{"metadata":{},"items":[99]}',
             "real": b'{"metadata":{},"items":[2]}'}
    fetch, calls = recorder(pages)
    got = [i for page in Pager(fetch) for i in page["items"]]
    assert got == [1, 2] and json.loads(first)["metadata"]["continue"] == real["metadata"]["continue"]
    assert "real" in calls


def test_a_missing_collection_yields_nothing():
    assert list(Pager(lambda token: None)) == []


def test_an_error_of_the_read_ahead_reaches_the_caller():
    pages = pages_of(3)

    def fetch(token):
        if token == "tok2":
            raise RuntimeError("410 Gone: continue token expired")
        return pages[token]
    with pytest.raises(RuntimeError, match="expired"):
        list(Pager(fetch))


def test_peek_continue_ignores_tokens_after_the_items():
    assert peek_continue(b'{"metadata":{},"items":[{"continue":"no"}]}') is None
    assert peek_continue(b'{"metadata": {"continue": "abc_-"}, "items": []}') == "abc_-"
    assert peek_continue(b'{"metadata":{"continue":""},"items":[]}') is None


def test_loads_reads_what_only_the_standard_library_reads():
    assert loads(b'{"a": NaN}')["a"] != loads(b'{"a": NaN}')["a"]       # NaN, as json.loads
    assert loads(b'{"big": 123456789012345678901234567890}')["big"] == 123456789012345678901234567890
    with pytest.raises(ValueError):
        loads(b'{"broken": ')


def test_full_collections_are_held_off_inside_and_restored_after():
    before = gc.get_threshold()
    with no_full_collections():
        assert gc.get_threshold()[2] > 1_000_000
        with no_full_collections():       # nested (a pager inside a pager's consumer)
            assert gc.get_threshold()[2] > 1_000_000
        assert gc.get_threshold()[2] > 1_000_000
    assert gc.get_threshold() == before
    assert paging._gc_depth == 0


def test_thresholds_are_restored_when_the_consumer_stops_early():
    before = gc.get_threshold()
    fetch, _ = recorder(pages_of(4))
    it = iter(Pager(fetch))
    next(it)
    it.close()
    assert gc.get_threshold() == before


def _in_generation(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation=generation))


@pytest.mark.parametrize("enabled", [True, False])
def test_a_kept_page_leaves_the_collector_as_it_found_it(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert loads_kept(b'{"items":[{"a":[1]}]}') == {"items": [{"a": [1]}]}
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_a_kept_page_joins_the_oldest_generation_unscanned():
    page = loads_kept(b'{"items":[{"containers":[{"name":"c"}]}]}')
    assert _in_generation(page, 2) and _in_generation(page["items"][0]["containers"], 2)
    young = loads_kept(b'{"items":[{"containers":[]}]}', promote=False)
    assert not _in_generation(young, 2)


def test_kept_pages_decoded_in_two_threads_turn_the_collector_back_on_once():
    assert gc.isenabled()
    seen: list[bool] = []
    barrier = threading.Barrier(2)

    def decode():
        barrier.wait()
        for _ in range(200):
            loads_kept(json.dumps({"items": [{"n": list(range(50))}] * 20}).encode())
            seen.append(True)
    threads = [threading.Thread(target=decode) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 400 and gc.isenabled() and paging._pausers == 0


def test_a_pager_leaves_what_others_froze_frozen(monkeypatch):
    # the pager must not unfreeze (which would release everything frozen); the freeze
    # count itself is no witness: frozen objects may die meanwhile by reference counting
    fetch, _ = recorder(pages_of(3))
    monkeypatch.setattr(paging, "_frozen_by_others", False)   # as in a fresh process
    real_unfreeze, unfreezes = gc.unfreeze, []
    monkeypatch.setattr(gc, "unfreeze", lambda: unfreezes.append(1) or real_unfreeze())
    gc.freeze()
    try:
        assert gc.get_freeze_count() > 0
        items = [it["n"] for page in Pager(fetch) for it in page["items"]]
        assert items == list(range(9))
        assert unfreezes == []                        # nothing of theirs was released
    finally:
        real_unfreeze()


def test_frozen_objects_once_seen_are_not_counted_again(monkeypatch):
    # counting frozen objects walks them all: a process that froze some is asked once
    monkeypatch.setattr(paging, "_frozen_by_others", False)
    counts = []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counts.append(1) or 1_000_000)
    assert [paging._nothing_frozen() for _ in range(3)] == [False, False, False]
    assert len(counts) == 1
    monkeypatch.setattr(paging, "_frozen_by_others", False)
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counts.append(0) or 0)
    assert paging._nothing_frozen() and paging._nothing_frozen()   # none frozen: asked each time
    assert counts == [1, 0, 0]


def test_the_next_page_is_requested_before_this_one_is_decoded(monkeypatch):
    # The decode holds the interpreter lock throughout (one msgspec call): a helper thread
    # that has not started by then sends its request only after it, and overlaps nothing.
    pages = pages_of(6)
    asked: list = []
    order: list[str] = []

    def fetch(token):
        asked.append(token)
        return pages[token]

    real = paging.loads_kept

    def decode(data, **kw):
        order.append(f"decode with {len(asked)} asked")
        return real(data, **kw)
    monkeypatch.setattr(paging, "loads_kept", decode)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)   # no forced switch on a busy machine: the order is the pager's own
    try:
        got = [it["n"] for page in Pager(fetch) for it in page["items"]]
    finally:
        sys.setswitchinterval(interval)
    assert got == list(range(18))
    # page k (k = 0..4) is decoded once page k+1 has been asked for; the last has no next
    assert order == [f"decode with {k + 2} asked" for k in range(5)] + ["decode with 6 asked"]


def test_the_hand_over_waits_past_a_transport_pause_before_the_write(monkeypatch):
    # urllib3 polls a kept connection (letting go of the lock) before it writes the request:
    # with ``sent`` (its request count) the pager yields until the count moves.
    pages = pages_of(5)
    written = [0]
    order: list[int] = []

    def fetch(token):
        if token is not None:
            time.sleep(0.002)        # the poll: the lock is free meanwhile
        written[0] += 1              # the request goes out
        return pages[token]

    real = paging.loads_kept

    def decode(data, **kw):
        order.append(written[0])
        return real(data, **kw)
    monkeypatch.setattr(paging, "loads_kept", decode)
    monkeypatch.setattr(paging, "HANDOVER_WAIT", 10.0)   # a loaded machine's 2 ms sleep may take long
    got = [it["n"] for page in Pager(fetch, sent=lambda: written[0]) for it in page["items"]]
    assert got == list(range(15))
    assert order == [2, 3, 4, 5, 5]   # page k decoded once request k+1 was written
