"""Background work of the twin's components, written once.

Twin components (controllers, models, servers) run on the twin's single event loop.
What they do in the background comes in two shapes:

- :class:`Ticker`: call a function every ``interval`` seconds until stopped (the Cilium
  model's crash-loop clock, the add-ons' readiness re-check, the SSH servers' fault
  watcher). A pass that raises is logged and the ticker goes on: one broken pass
  must not silently stop a model.
- :class:`TaskSet`: one-off tasks a component starts and must cancel when it stops
  (a Velero backup in progress, an operator recreating a pod, an open connection).
  Tasks may carry a key, so a component can ask "is this one already running?".

:func:`cancel_and_wait` is the one way to cancel a task and wait until it is gone.

Delays are whatever ``sleep`` the caller passes: ``rt.clock.sleep`` for cluster
seconds (the usual case, see :mod:`twin.clock`), ``asyncio.sleep`` for wall seconds.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Hashable, Iterator

log = logging.getLogger("twin.ticker")

Sleep = Callable[[float], Awaitable[Any]]


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has finished (its errors are dropped).

    Example:
        >>> async def demo():
        ...     t = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        ...     await cancel_and_wait(t)
        ...     return t.cancelled()
        >>> asyncio.run(demo())
        True
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


class Ticker:
    """Calls ``fn`` every ``interval`` seconds on the running loop until stopped.

    Args:
        name: names the task and the log line of a failed pass.
        interval: seconds between two passes, as ``sleep`` counts them.
        fn: the pass; plain or ``async`` (awaited before the next sleep).
        sleep: ``rt.clock.sleep`` (cluster seconds) or ``asyncio.sleep`` (wall seconds).
        immediate: run the first pass at once instead of after one interval.
        logger: where a failed pass is logged (default ``twin.ticker``).

    Example:
        >>> async def demo():
        ...     seen = []
        ...     t = Ticker("demo", 0.001, lambda: seen.append(1), sleep=asyncio.sleep)
        ...     t.start()
        ...     while len(seen) < 3:
        ...         await asyncio.sleep(0.001)
        ...     await t.stop()
        ...     return t.running
        >>> asyncio.run(demo())
        False
    """

    def __init__(self, name: str, interval: float, fn: Callable[[], Any], *, sleep: Sleep,
                 immediate: bool = False, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.interval = interval
        self.fn = fn
        self.sleep = sleep
        self.immediate = immediate
        self.log = logger or log
        self.passes = 0
        self.failures = 0
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start ticking (call it on the twin's loop; a running ticker is left alone)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop ticking and wait until the current pass (if any) is cancelled."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        if not self.immediate:
            await self.sleep(self.interval)
        while True:
            try:
                result = self.fn()
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:   # never let the ticker die
                self.failures += 1
                self.log.exception("%s failed", self.name)
            self.passes += 1
            await self.sleep(self.interval)


class TaskSet:
    """One-off background tasks of a component, cancelled together when it stops.

    A finished task leaves the set by itself. With a ``key``, at most one task per key
    is tracked and ``key in tasks`` tells whether it is still running.

    Example:
        >>> async def demo():
        ...     tasks = TaskSet("demo")
        ...     tasks.spawn(asyncio.sleep(60), key=("backups", "velero", "b1"))
        ...     running = ("backups", "velero", "b1") in tasks
        ...     await tasks.stop()
        ...     return running, len(tasks)
        >>> asyncio.run(demo())
        (True, 0)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: dict[Hashable, asyncio.Task] = {}

    def spawn(self, coro: Awaitable[Any], *, key: Hashable = None,
              name: str | None = None) -> asyncio.Task:
        """Run ``coro`` as a task of this set.

        Raises:
            ValueError: a task with ``key`` is still running (check ``key in tasks`` first).
        """
        if key is not None and key in self._tasks:
            if inspect.iscoroutine(coro):
                coro.close()
            raise ValueError(f"{self.name}: a task for {key!r} is still running")
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        slot: Hashable = task if key is None else key
        self._tasks[slot] = task

        def done(t: asyncio.Task, slot: Hashable = slot) -> None:
            if self._tasks.get(slot) is t:
                del self._tasks[slot]
        task.add_done_callback(done)
        return task

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task]:
        return iter(list(self._tasks.values()))

    def cancel(self) -> None:
        """Cancel every task without waiting (for a stop that must not block)."""
        for t in list(self._tasks.values()):
            t.cancel()

    async def stop(self) -> None:
        """Cancel every task and wait until all have finished."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
