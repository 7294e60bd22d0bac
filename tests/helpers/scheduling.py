"""The order of the collected tests, for one process or for pytest-xdist workers.

``make test`` runs pytest-xdist with ``--dist load --maxschedchunk 1``: the workers take
tests from one queue, one at a time, in the order given here. A few dozen tests that
drive whole phases on a twin take most of the suite's time; left in collection order
(alphabetical) they would be taken late and make a long tail. So, with workers, the
heavy tests go first, those with the largest budget first (longest processing time
first), then the others in their usual order, then the readers of the shared migrated
run: by then the background rehearsal (``helpers.migrated_run``) has finished.

A test counts as heavy when its own ``pytest.mark.timeout`` allows it
:data:`HEAVY_SECONDS` or more: the budget its author gave it is the one estimate of its
cost that needs no history. Without xdist the collection order is kept, with the readers
of the shared run last.
"""
from __future__ import annotations

from typing import Callable

import pytest

HEAVY_SECONDS = 180


def budget(item: pytest.Item) -> float:
    """The timeout the test itself declares (0 when it has none of its own)."""
    for mark in getattr(item, "own_markers", []):
        if mark.name == "timeout" and mark.args:
            return float(mark.args[0])
    return 0.0


def arrange(items: list[pytest.Item], workers: int, last: Callable[[pytest.Item], bool]) -> list[pytest.Item]:
    """The run order for ``workers`` processes; ``last(item)`` marks the shared run's readers."""
    readers = [i for i in items if last(i)]
    rest = [i for i in items if not last(i)]
    if workers <= 1:
        return rest + readers
    heavy = sorted((i for i in rest if budget(i) >= HEAVY_SECONDS), key=budget, reverse=True)
    light = [i for i in rest if budget(i) < HEAVY_SECONDS]
    return heavy + light + readers
