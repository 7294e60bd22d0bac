"""Container logs: what ``kubectl logs`` reads, kept per container instance.

The kubelet (and the models that know why a container fails) write lines here; the API
server's ``pods/log`` subresource reads them (:mod:`twin.apiserver.logs`). As on a node:

- each container of a pod (by pod uid, so a recreated pod with the same name starts
  empty) has its **current** instance and the **previous** one (``--previous``); a
  restart makes the current instance the previous one;
- every line carries its RFC 3339 nanosecond timestamp (``--timestamps``, ``--since``,
  ``--since-time``); ``--tail`` counts lines from the end;
- followers (``-f``) get each new line as it is written, until the pod is deleted;
- at most :data:`MAX_LINES` lines per instance are kept (the kubelet rotates too), and
  a deleted pod's logs go with it.

Example:
    >>> logs = ContainerLogs()
    >>> logs.write("uid-1", "app", "listening on :8080")
    >>> logs.restart("uid-1", "app")
    >>> logs.write("uid-1", "app", "listening again")
    >>> [line for _, line in logs.read("uid-1", "app", previous=True)]
    ['listening on :8080']
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime, timezone
from typing import Iterable

MAX_LINES = 1000

Line = tuple[float, str]   # (wall time, text)


def nano_time(t: float) -> str:
    """RFC 3339 with nanoseconds, as the kubelet prefixes lines with ``--timestamps``."""
    base = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{int((t % 1) * 1e9):09d}Z"


class _Instance:
    __slots__ = ("lines", "followers")

    def __init__(self) -> None:
        self.lines: deque[Line] = deque(maxlen=MAX_LINES)
        self.followers: set[asyncio.Queue] = set()


class ContainerLogs:
    """The log lines of every container instance the twin runs (see module doc)."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], _Instance] = {}
        self._previous: dict[tuple[str, str], _Instance] = {}
        self._by_uid: dict[str, set[str]] = {}

    def _instance(self, uid: str, container: str) -> _Instance:
        key = (uid, container)
        inst = self._current.get(key)
        if inst is None:
            inst = self._current[key] = _Instance()
            self._by_uid.setdefault(uid, set()).add(container)
        return inst

    def write(self, uid: str, container: str, *lines: str, at: float | None = None) -> None:
        """Append lines to the current instance and hand them to its followers."""
        inst = self._instance(uid, container)
        t = at if at is not None else time.time()
        for text in lines:
            for part in str(text).splitlines() or [""]:
                inst.lines.append((t, part))
                for q in list(inst.followers):
                    q.put_nowait((t, part))

    def ensure(self, uid: str, container: str) -> None:
        """The container has run: it has a current instance (maybe without lines)."""
        self._instance(uid, container)

    def restart(self, uid: str, container: str) -> None:
        """The container restarts: the current instance becomes the previous one."""
        key = (uid, container)
        old = self._current.pop(key, None)
        new = self._instance(uid, container)
        if old is not None:
            self._previous[key] = old

    def finish(self, uid: str, container: str) -> None:
        """The current instance exited: its followers' streams end (``None``)."""
        inst = self._current.get((uid, container))
        if inst is not None:
            for q in inst.followers:
                q.put_nowait(None)
            inst.followers = set()

    def has(self, uid: str, container: str, *, previous: bool = False) -> bool:
        """Whether that instance exists (a container that never ran has no logs)."""
        return (uid, container) in (self._previous if previous else self._current)

    def read(self, uid: str, container: str, *, previous: bool = False, tail: int | None = None,
             since: float | None = None) -> list[Line]:
        """The lines of one instance, oldest first; ``since`` is a wall time."""
        inst = (self._previous if previous else self._current).get((uid, container))
        if inst is None:
            return []
        lines: Iterable[Line] = inst.lines
        if since is not None:
            lines = [ln for ln in lines if ln[0] >= since]
        out = list(lines)
        if tail is not None and tail >= 0:
            out = out[-tail:] if tail else []
        return out

    def tail_text(self, uid: str, container: str, *, lines: int = 80, limit: int = 2048) -> str:
        """The end of the current instance as a termination message
        (``FallbackToLogsOnError``: the last 80 lines, at most 2 KiB)."""
        text = "\n".join(t for _, t in self.read(uid, container, tail=lines))
        return text[-limit:]

    def follow(self, uid: str, container: str) -> asyncio.Queue:
        """A queue receiving every new line of the container; :meth:`unfollow` it."""
        q: asyncio.Queue = asyncio.Queue()
        self._instance(uid, container).followers.add(q)
        return q

    def unfollow(self, uid: str, container: str, q: asyncio.Queue) -> None:
        inst = self._current.get((uid, container))
        if inst is not None:
            inst.followers.discard(q)

    def forget(self, uid: str) -> None:
        """The pod is gone: drop its logs and end its followers (``None`` is the end)."""
        for container in self._by_uid.pop(uid, ()):
            for table in (self._current, self._previous):
                inst = table.pop((uid, container), None)
                if inst is not None:
                    for q in inst.followers:
                        q.put_nowait(None)

    def __len__(self) -> int:
        return len(self._current)
