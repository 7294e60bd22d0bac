"""Reading big lists fast: a fast JSON decoder, the next page fetched while this one is
decoded, and the garbage collector kept off the pages already received.

:class:`Pager` pages a collection with ``limit``/``continue`` as ``Cluster.iter_list``
does, with three measured savings (``benchmarks/snapshot.py``, ``json_codecs.py``):

- pages are decoded with :func:`loads`: msgspec when installed (1.5× the standard
  library on a page of 500 pods here, integers of any size kept exact), the standard
  library otherwise or for what msgspec refuses (NaN, Infinity), so the result is the
  same;
- a list response names its ``continue`` token before its items, so the next page is
  requested (in a helper thread) as soon as this one has arrived, and the API server
  reads and encodes it while this one is decoded; the token is checked against the
  decoded page and a wrong guess is simply fetched again. The decode holds the
  interpreter lock from start to end (one call into msgspec), so the helper is let put
  its request on the wire first (:class:`Pager` waits for it to start): otherwise it
  only got to send the request once the page was decoded, and the read-ahead hid
  nothing (500-pod pages of a twin: 4.6 ms waited per page after the decode, 0.7 ms
  with the hand-over, 1.33 s → 0.92 s for 50,000 pods);
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

import concurrent.futures as cf
import gc
import json
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

try:  # a fast decoder when installed (a dependency of the package); same results
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - the standard library is enough
    _msgspec = None

__all__ = ["loads", "loads_kept", "Pager", "no_full_collections", "peek_continue"]

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

#: Seconds the read-ahead hand-over yields at most for the helper's request to start
#: (:meth:`Pager._ahead`): past it the page is decoded anyway, overlapping less.
HANDOVER_WAIT = 0.05


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


class Pager:
    """Iterate a paged list: ``fetch(token)`` returns a page's raw JSON (None: absent).

    Yields each decoded page (a dict). The page after the current one is fetched in
    a helper thread while the current one is decoded and consumed. Pages are decoded
    with :func:`loads_kept` (not scanned by the collector), full collections wait
    until the iteration ends (:func:`no_full_collections`).
    """

    def __init__(self, fetch: Callable[[str | None], bytes | None], *, prefetch: bool = True,
                 sent: Callable[[], int] | None = None) -> None:
        self.fetch = fetch
        self.prefetch = prefetch
        #: a count the transport advances as it starts writing each request (urllib3's
        #: ``num_requests``): the read-ahead hand-over waits for it (see :meth:`_ahead`)
        self.sent = sent
        self._promote = False

    def __iter__(self) -> Iterator[dict]:
        self._promote = _nothing_frozen()
        with no_full_collections():
            if not self.prefetch:
                yield from self._serial()
                return
            with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pager") as ex:
                yield from self._overlapped(ex)

    def _serial(self) -> Iterator[dict]:
        token: str | None = None
        while True:
            data = self.fetch(token)
            if data is None:
                return
            page = loads_kept(data, promote=self._promote) if data else {}
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _overlapped(self, ex: cf.ThreadPoolExecutor) -> Iterator[dict]:
        data = self.fetch(None)
        while data is not None:
            guess = peek_continue(data) if data else None
            ahead = self._ahead(ex, guess) if guess else None
            try:
                page = loads_kept(data, promote=self._promote) if data else {}
                token = (page.get("metadata") or {}).get("continue")
                yield page
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                    _quietly(ahead)
                raise
            if not token:
                if ahead is not None:
                    _quietly(ahead)
                return
            if ahead is not None and token == guess:
                data = ahead.result()
            else:
                if ahead is not None:
                    _quietly(ahead)
                data = self.fetch(token)

    def _ahead(self, ex: cf.ThreadPoolExecutor, token: str) -> cf.Future:
        """``fetch(token)`` in the helper thread, returned once the helper runs.

        The caller decodes next, and the decode holds the interpreter lock for its whole
        length: the helper gets the lock first and keeps it until it blocks, i.e. until
        its request has been written and it waits for the answer (a blocking socket call
        lets go of the lock), so the server works on the next page during the decode.
        A transport may let go of the lock once before it writes (urllib3 polls a kept
        connection to see that it is still open): with ``sent``, the caller also yields
        until that count moves, i.e. the helper is past the poll and its next pause is
        the write itself (without it, 30% of a twin's 100 requests left after the decode).
        The waits are bounded (1 s, :data:`HANDOVER_WAIT`): a helper that does not get
        there in time only overlaps less, nothing else changes.
        """
        started = threading.Event()
        before = self.sent() if self.sent is not None else 0

        def fetch_ahead() -> bytes | None:
            started.set()
            return self.fetch(token)

        future = ex.submit(fetch_ahead)
        started.wait(1.0)
        if self.sent is not None:
            until = time.monotonic() + HANDOVER_WAIT
            while self.sent() == before and not future.done() and time.monotonic() < until:
                time.sleep(0)   # the lock to the helper, up to its write
        return future


def _quietly(future: cf.Future) -> None:
    """Wait for a fetch nobody needs any more; its error (if any) is not ours."""
    try:
        future.result()
    except Exception:  # noqa: BLE001 - a discarded read-ahead
        pass
