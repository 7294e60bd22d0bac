"""The next page of a list asked for before this one is decoded, on one kept connection.

A paged read (``Cluster.pages``) receives a page, then decodes it: ~10 ms of CPU for
500 pods, during which the API server could already be reading and encoding the next
page. :class:`PageRequests` lets it: ``send(token)`` writes the GET of the page after
this one on a connection of its own and returns at once; ``receive()`` reads that
answer once the page in hand is decoded and consumed. One request is in flight at
most, and only after the previous answer was read in full, so this is plain HTTP/1.1
keep-alive (no pipelining of several requests, which servers and proxies handle badly).

Why not a helper thread that fetches the next page while this one is decoded, as the
library did before: the decode is one call into msgspec that holds the interpreter lock
from start to end, so the helper only ran between decodes, and urllib3's request path
lets go of the lock several times (the pool's check of a kept connection, the socket's
poll before each send and receive). On 50,000 pods of a twin the threaded read-ahead
took 0.95–1.26 s; sending from the calling thread takes 0.92–0.98 s, with no thread
and no hand-over, level with the best plain ``http.client`` loop (``benchmarks/snapshot.py``).

The connection is the official client's own: taken from its urllib3 pool (same TLS, CA,
client certificate) and put back once idle. Only answers that are plainly a page come
through here, a ``200``; anything else, and any transport error, makes ``receive`` say
None, and the caller asks for that page again through ``Cluster.request_raw``, the one
choke point with the retries, the outage record, the 401 renewal and the errors. What
went wrong is reported first (``failed``: the caller records an outage, or renews the
credentials a 401 refused, before it asks again).

This uses two private methods of urllib3's pool, ``_get_conn`` and ``_put_conn`` (stable
since urllib3 1.x, pinned by ``tests/unit/runbook_cluster/test_cluster_pipeline.py``),
and urllib3 2's ``HTTPConnection.request(..., preload_content=)``. :meth:`PageRequests.of`
returns None where they are missing or a proxy sits in between (a tunnel is set up by
the pool's own ``urlopen``): the pages are then read one after the other.

Example:
    >>> PageRequests.of(object(), lambda token: "/api/v1/pods", dict, timeout=5) is None
    True
"""
from __future__ import annotations

from http.client import HTTPException
from typing import Any, Callable, Mapping

__all__ = ["PageRequests"]


class PageRequests:
    """GETs of a list's pages on one connection of the client's pool, one in flight.

    Args:
        pool: the urllib3 connection pool of the API server.
        url_for: the request target (path and query, as urllib3's pool manager sends
            it) of the page a continue token names.
        headers: the headers every request carries, asked at each send (a route renewed
            after a 401 applies to the next page).
        timeout: seconds to connect, and to wait for each answer.
        failed: told ``(error, status)`` of each answer that is not a page (its status)
            and each transport error (status None), before the caller asks again.
    """

    def __init__(self, pool: Any, url_for: Callable[[str], str],
                 headers: Callable[[], Mapping[str, str]], *,
                 timeout: float,
                 failed: Callable[[str, int | None], None] = lambda err, status: None) -> None:
        self.pool = pool
        self.url_for = url_for
        self.headers = headers
        self.timeout = timeout
        self.failed = failed
        self._conn: Any = None
        self._waiting = False     # a request was sent whose answer is not read yet
        from urllib3.exceptions import HTTPError

        self._errors = (OSError, HTTPException, HTTPError)

    @classmethod
    def of(cls, api: Any, url_for: Callable[[str], str], headers: Callable[[], Mapping[str, str]], *,
           timeout: float, **kw: Any) -> "PageRequests | None":
        """The page requests of an official ``ApiClient`` (``api``), or None when its
        pool cannot lend a connection this way (see the module's docstring)."""
        try:
            import urllib3
            pool = api.rest_client.pool_manager.connection_from_url(api.configuration.host)
        except (AttributeError, ValueError, TypeError, ImportError):
            return None
        if int(urllib3.__version__.split(".")[0]) < 2 or getattr(pool, "proxy", None) is not None:
            return None
        if not (hasattr(pool, "_get_conn") and hasattr(pool, "_put_conn")):
            return None
        return cls(pool, url_for, headers, timeout=timeout, **kw)

    def send(self, token: str) -> bool:
        """Write the GET of the page ``token`` names; False when it could not be sent
        (the caller then asks for it in full later). An answer not read yet is dropped
        with its connection."""
        if self._waiting:
            self._drop()
        try:
            if self._conn is None:
                self._conn = self.pool._get_conn()
            self._conn.timeout = self.timeout
            self._conn.request("GET", self.url_for(token), headers=dict(self.headers()),
                               preload_content=False)
        except self._errors as e:
            self._fail(e)
            return False
        self._waiting = True
        return True

    def receive(self) -> bytes | None:
        """The body of the answer to the last :meth:`send` when it is a ``200``, else
        None (nothing sent, another status, or a transport error)."""
        if not self._waiting:
            return None
        self._waiting = False
        try:
            resp = self._conn.getresponse()
            data = resp.data
        except self._errors as e:
            self._fail(e)
            return None
        if resp.status == 200:
            return data
        self.failed(f"HTTP {resp.status}", resp.status)
        return None

    def close(self) -> None:
        """Give the connection back to the pool, or close it if an answer is unread."""
        if self._waiting:
            self._drop()
        elif self._conn is not None:
            self.pool._put_conn(self._conn)
            self._conn = None

    def _fail(self, e: BaseException) -> None:
        self._drop()
        self.failed(f"{type(e).__name__}: {e}", None)

    def _drop(self) -> None:
        """Close the connection (an answer may be half read) and free its pool slot."""
        self._waiting = False
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self.pool._put_conn(None)

