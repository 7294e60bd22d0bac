"""runbook.paging: the next page asked ahead, the continue token peeked, the collector held off."""
from __future__ import annotations

import gc
import json
import threading

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


class FakeAhead:
    """An ``Ahead`` over the same pages: sends and receives logged; ``refuse`` tokens are
    not sent, ``lose`` tokens are sent but their answer is not a page."""

    def __init__(self, pages: dict, *, refuse=(), lose=()):
        self.pages, self.refuse, self.lose = pages, set(refuse), set(lose)
        self.log: list[tuple[str, str | None]] = []
        self.pending: str | None = None
        self.closed = 0

    def send(self, token):
        self.log.append(("send", token))
        if token in self.refuse:
            return False
        self.pending = token
        return True

    def receive(self):
        token, self.pending = self.pending, None
        self.log.append(("receive", token))
        return None if token in self.lose else self.pages[token]

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("ahead", [True, False])
@pytest.mark.parametrize("spaced", [True, False])
def test_every_item_once_in_order_and_each_page_asked_once(ahead, spaced):
    pages = pages_of(5, spaced=spaced)
    fetch, calls = recorder(pages)
    early = FakeAhead(pages) if ahead else None
    items = [it["n"] for page in Pager(fetch, ahead=early) for it in page["items"]]
    assert items == list(range(15))
    tokens = ["tok1", "tok2", "tok3", "tok4"]
    if ahead:   # the first page is fetched; every other one is sent ahead, then received
        assert calls == [None]
        assert early.log == [(op, t) for t in tokens for op in ("send", "receive")]
        assert early.closed == 1
    else:
        assert calls == [None] + tokens


def test_a_wrong_guess_is_fetched_again_with_the_real_token():
    # the body's head names a token the decoded metadata contradicts: never trust a guess
    real = {"metadata": {"continue": "real"}, "items": [1]}
    first = b'{"metadata":{"x":{"continue":"fake"},"continue":"real"},"items":[1]}'
    assert peek_continue(first) == "fake"
    pages = {None: first, "fake": b'{"metadata":{},"items":[99]}',
             "real": b'{"metadata":{},"items":[2]}'}
    fetch, calls = recorder(pages)
    early = FakeAhead(pages)
    got = [i for page in Pager(fetch, ahead=early) for i in page["items"]]
    assert got == [1, 2] and json.loads(first)["metadata"]["continue"] == real["metadata"]["continue"]
    assert calls == [None, "real"]
    assert early.log == [("send", "fake")] and early.closed == 1   # never received: close drops it


def test_what_is_not_delivered_ahead_is_fetched():
    # a request that could not be sent, and an answer that is not a page (an error status,
    # a broken connection): fetch, which retries and raises, has the last word
    pages = pages_of(5)
    fetch, calls = recorder(pages)
    early = FakeAhead(pages, refuse={"tok2"}, lose={"tok3"})
    items = [it["n"] for page in Pager(fetch, ahead=early) for it in page["items"]]
    assert items == list(range(15))
    assert calls == [None, "tok2", "tok3"]
    assert early.log == [("send", "tok1"), ("receive", "tok1"), ("send", "tok2"),
                         ("send", "tok3"), ("receive", "tok3"), ("send", "tok4"), ("receive", "tok4")]


def test_a_missing_collection_yields_nothing():
    assert list(Pager(lambda token: None)) == []


def test_an_error_of_a_fetch_reaches_the_caller_and_what_was_sent_is_dropped():
    pages = pages_of(4)

    def fetch(token):
        if token == "tok2":
            raise RuntimeError("410 Gone: continue token expired")
        return pages[token]
    early = FakeAhead(pages, lose={"tok2"})
    with pytest.raises(RuntimeError, match="expired"):
        list(Pager(fetch, ahead=early))
    assert early.closed == 1


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


def test_thresholds_are_restored_and_what_was_sent_dropped_when_the_consumer_stops_early():
    before = gc.get_threshold()
    pages = pages_of(4)
    fetch, _ = recorder(pages)
    early = FakeAhead(pages)
    it = iter(Pager(fetch, ahead=early))
    next(it)
    it.close()
    assert gc.get_threshold() == before
    assert early.log == [("send", "tok1")] and early.closed == 1


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


def test_the_next_page_is_sent_before_this_one_is_decoded_and_read_after_it_is_consumed(monkeypatch):
    # the server reads and encodes page k+1 while page k is decoded and used
    pages = pages_of(4)
    fetch, _ = recorder(pages)
    early = FakeAhead(pages)
    real = paging.loads_kept

    def decode(data, **kw):
        early.log.append(("decode", None))
        return real(data, **kw)
    monkeypatch.setattr(paging, "loads_kept", decode)
    for page in Pager(fetch, ahead=early):
        early.log.append(("consumed", page["items"][0]["n"]))
    assert early.log == [
        ("send", "tok1"), ("decode", None), ("consumed", 0), ("receive", "tok1"),
        ("send", "tok2"), ("decode", None), ("consumed", 3), ("receive", "tok2"),
        ("send", "tok3"), ("decode", None), ("consumed", 6), ("receive", "tok3"),
        ("decode", None), ("consumed", 9)]   # the last page names no next one
