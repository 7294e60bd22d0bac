"""Which xdist worker runs which test, and in what order.

``make test`` runs pytest-xdist with ``--dist loadgroup``, served by :func:`make_scheduler`
(pytest-xdist's own loadgroup no longer groups anything on pytest 9.2: it rewrites node
ids, which pytest now ignores, pytest-xdist#1386). Workers take work units one at a time,
in the order :func:`arrange` gives; a unit is one test, or all the tests of a module
that uses a module-scoped fixture (such modules keep state from test to test, and their
fixture is made once). Each worker writes the units it computed to ``xdist-groups.json``
in the session's shared temp folder before it reports its collection; the controller
reads that file when it schedules.

A few dozen tests that drive whole phases on a twin take most of the suite's time; left
in collection order (alphabetical) they would be taken late and make a long tail. So,
with workers, the heavy tests go first, the largest budget first (longest processing
time first), then the others in their usual order, then the readers of the shared
migrated run: by then the background rehearsal (``helpers.migrated_run``) has finished.
A test counts as heavy when its own ``pytest.mark.timeout`` allows it
:data:`HEAVY_SECONDS` or more: the budget its author gave it is the one estimate of its
cost that needs no history. Without xdist the collection order is kept, with the readers
of the shared run last.

A worker runs a test only once the next one is queued behind it (pytest-xdist needs the
next item to tear fixtures down), and the scheduler gives each worker its second unit as
soon as the first one is handed out: the unit queued behind each of the first heavy tests
is fixed before any of them ends. So one light test follows each of the first ``workers``
heavy ones: the heaviest tests are not followed by the next heavy ones, which the workers
that become free first take instead.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

HEAVY_SECONDS = 180
GROUPS_FILE = "xdist-groups.json"


def budget(item: pytest.Item) -> float:
    """The timeout the test itself declares (0 when it has none of its own)."""
    for mark in getattr(item, "own_markers", []):
        if mark.name == "timeout" and mark.args:
            return float(mark.args[0])
    return 0.0


def module_bound(item: pytest.Item) -> bool:
    """True when the test uses a module-scoped fixture: its module's tests stay together."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(defs[-1].scope == "module"
                                    for defs in info.name2fixturedefs.values() if defs)


def arrange(items: list[pytest.Item], workers: int, last: Callable[[pytest.Item], bool]) -> list[pytest.Item]:
    """The run order for ``workers`` processes; ``last(item)`` marks the shared run's readers."""
    readers = [i for i in items if last(i)]
    rest = [i for i in items if not last(i)]
    if workers <= 1:
        return rest + readers
    heavy = sorted((i for i in rest if budget(i) >= HEAVY_SECONDS), key=budget, reverse=True)
    light = [i for i in rest if budget(i) < HEAVY_SECONDS]
    # the second unit of each worker: a light test of its own (not a module's group)
    second = [i for i in light if not module_bound(i)][:min(workers, len(heavy))]
    taken = set(map(id, second))
    return (heavy[:workers] + second + heavy[workers:] + [i for i in light if id(i) not in taken]
            + readers)


def write_groups(items: list[pytest.Item], shared: Path) -> None:
    """Record, for the controller, the work unit of every test bound to its module."""
    groups = {i.nodeid: i.nodeid.split("::")[0] for i in items if module_bound(i)}
    tmp = shared / f"{GROUPS_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, shared / GROUPS_FILE)


def make_scheduler(config: pytest.Config, log: Any, shared: Path) -> Any:
    """xdist's load-scope scheduler with our work units, in the workers' collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:      # first asked once every worker reported its collection
                self.groups = json.loads((shared / GROUPS_FILE).read_text())
            return self.groups.get(nodeid, nodeid)

    config.option.loadscopereorder = False      # keep the order arrange() gave
    return GroupScheduling(config, log)
