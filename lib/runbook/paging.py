"""Reading big lists fast: a fast JSON decoder, the next page asked for before this one is
decoded, and the garbage collector kept off the pages already received.

:class:`Pager` pages a collection with ``limit``/``continue`` as ``Cluster.iter_list``
does, with three measured savings (``benchmarks/snapshot.py``, ``json_codecs.py``):

- pages are decoded with :func:`loads`: msgspec when installed (1.5× the standard
  library on a page of 500 pods here, integers of any size kept exact), the standard
  library otherwise or for what msgspec refuses (NaN, Infinity), so the result is the
  same;
- a list response names its ``continue`` token before its items, so the next page is
  requested as soon as this one has arrived (``ahead``: the request is written on a
  kept connection and its answer read later, ``runbook.cluster_pipeline``), and the API
  server reads and encodes it while this one is decoded and consumed; the token is
  checked against the decoded page and a wrong guess is simply fetched again. No helper
  thread: the decode is one msgspec call holding the interpreter lock throughout, so a
  thread fetching meanwhile only ran between decodes (50,000 pods of a twin: 0.95–1.26 s
  with a helper thread, 0.92–0.98 s sent from the calling thread);
- the collector never scans a page: no collection runs while a page is decoded, and
  the objects it made are then handed to the oldest generation as they are, without a
  scan (:func:`loads_kept`). A decoded JSON document holds no reference cycle, so
  scanning it is pure cost, and a page's ~15,000 containers were scanned by the
  young collections while they were made, once more by the middle one, and then all
  pages together by the full collection they set off: on 50,000 pods that was 0.13 s
  of CPU during the decode and 0.8 s in whatever the caller did next (building the
  snapshot's table). Full collections are also held off while the pages are consumed
  (:func:`no_full_collections`), since the consumer's own objects would set one off.

Example:
    >>> pages = Pager(fetch=lambda token: b'{"metadata":{},"items":[1,2]}')
    >>> [item for page in pages for item in page["items"]]
    [1, 2]
"""
from __future__ import annotations

import gc
import json
import re
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

try:  # a fast decoder when installed (a dependency of the package); same results
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - the standard library is enough
    _msgspec = None

__all__ = ["loads", "loads_kept", "Ahead", "Pager", "no_full_collections", "peek_continue"]

# `"continue":"TOKEN"` in the list metadata, before `"items"`; tokens are base64url.
_CONTINUE = re.compile(rb'"continue"\s*:\s*"([^"\\]*)"')
_ITEMS = re.compile(rb'"items"\s*:')


def loads(data: bytes | str) -> Any:
    """Decode JSON like :func:`json.loads`, faster when msgspec is installed."""
    if _msgspec is not None:
        try:
            return _msgspec.json.decode(data)
        except _msgspec.DecodeError:
            pass  # what only the standard library reads (NaN, Infinity), or a real error
    return json.loads(data)


def peek_continue(data: bytes) -> str | None:
    """The ``continue`` token of a list response, read before decoding it (None if none)."""
    items = _ITEMS.search(data, 0, 65536)
    end = items.start() if items else min(len(data), 65536)
    m = _CONTINUE.search(data, 0, end)
    return m.group(1).decode() if m and m.group(1) else None


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Hold off the collector's full (oldest-generation) passes inside the block.

    Young generations are still collected, so cycles made meanwhile are reclaimed;
    only the passes that walk every long-lived object (all the pages received so far)
    wait until the block ends. Nested and concurrent blocks share one setting; the
    last to leave restores the thresholds it found.
    """
    global _gc_depth, _gc_saved
    with _gc_lock:
        if _gc_depth == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(_gc_saved[0], _gc_saved[1], 1 << 30)
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


_pause_lock = threading.Lock()
_pausers = 0
_resume = False


def loads_kept(data: bytes | str, *, promote: bool = True) -> Any:
    """:func:`loads` for a document the caller keeps (a page of a list): the collector
    does not run while it is decoded, and, with ``promote``, what the decode made joins
    the oldest generation without being scanned (``gc.freeze()`` then ``gc.unfreeze()``,
    two list splices), so neither the young collections nor the full collection its
    size would set off walk it. Decoded JSON holds no reference cycle: when the caller
    drops it, reference counting frees it, whatever its generation.

    The pause is process-wide (the collector has no other switch): decodes in several
    threads share it, and the last one to finish turns the collector back on if it was
    on. Young objects other code made meanwhile are promoted with the page; a cycle
    among them is then reclaimed by the next full collection instead of a young one.
    Pass ``promote=False`` when the process keeps objects frozen with ``gc.freeze()``
    (a server that forks): unfreezing would release them (:class:`Pager` checks).

    Example:
        >>> loads_kept(b'{"items": [{"a": 1}]}')["items"]
        [{'a': 1}]
    """
    global _pausers, _resume
    with _pause_lock:
        if _pausers == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        return loads(data)
    finally:
        with _pause_lock:
            _pausers -= 1
            if _pausers == 0:
                if promote:
                    gc.freeze()     # every tracked object to the permanent generation ...
                    gc.unfreeze()   # ... and from there to the oldest: no scan, young count reset
                if _resume:
                    gc.enable()


_frozen_by_others = False


def _nothing_frozen() -> bool:
    """True when no object is frozen (``gc.freeze``) in this process, so unfreezing
    releases only what :func:`loads_kept` froze itself.

    ``gc.get_freeze_count`` walks every frozen object (a twin started in the same process
    freezes its whole start-up heap: a million objects, milliseconds per call, and the
    availability sampler pages every few seconds), so once frozen objects are seen the
    answer is kept: ``gc.freeze`` is for heaps a process keeps (before a fork, or for its
    lifetime). A wrong "frozen" only costs the promotion, never releases anything.
    """
    global _frozen_by_others
    if not _frozen_by_others:
        with _pause_lock:    # never between loads_kept's own freeze and unfreeze
            _frozen_by_others = gc.get_freeze_count() > 0
    return not _frozen_by_others


class Ahead(Protocol):
    """Where a :class:`Pager` asks for the next page early (``runbook.cluster_pipeline``)."""

    def send(self, token: str) -> bool:
        """Put the request of the page ``token`` names on the wire; False if it failed."""

    def receive(self) -> bytes | None:
        """The raw page last sent for; None when it is not a page (ask ``fetch``)."""

    def close(self) -> None:
        """Done: drop what was sent and not received."""


class Pager:
    """Iterate a paged list: ``fetch(token)`` returns a page's raw JSON (None: absent).

    Yields each decoded page (a dict). With ``ahead``, the page after the current one is
    requested before the current one is decoded, and read after it was consumed; what
    ``ahead`` does not deliver (an error, another status, a wrong guess of the token)
    is asked of ``fetch``, which has the last word. Pages are decoded with
    :func:`loads_kept` (not scanned by the collector), full collections wait until the
    iteration ends (:func:`no_full_collections`).
    """

    def __init__(self, fetch: Callable[[str | None], bytes | None], *,
                 ahead: Ahead | None = None) -> None:
        self.fetch = fetch
        self.ahead = ahead
        self._promote = False

    def __iter__(self) -> Iterator[dict]:
        self._promote = _nothing_frozen()
        with no_full_collections():
            try:
                yield from self._pages()
            finally:
                if self.ahead is not None:
                    self.ahead.close()

    def _pages(self) -> Iterator[dict]:
        ahead = self.ahead
        data = self.fetch(None)
        while data is not None:
            guess = peek_continue(data) if ahead is not None and data else None
            sent = guess is not None and ahead.send(guess)
            page = loads_kept(data, promote=self._promote) if data else {}
            token = (page.get("metadata") or {}).get("continue")
            yield page
            if not token:
                return      # a request sent on a wrong guess is dropped by close()
            data = ahead.receive() if sent and token == guess else None
            if data is None:
                data = self.fetch(token)
