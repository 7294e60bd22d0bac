"""The order xdist workers take the suite's tests in (tests/helpers/scheduling.py): the
heaviest first, each followed by a light test, the shared run's readers last."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.scheduling import arrange

pytestmark = [pytest.mark.unit]


@dataclass
class Item:
    """What arrange() reads of a pytest item: its own timeout mark and its fixtures."""

    name: str
    seconds: float | None = None
    module_fixture: bool = False
    own_markers: list[Any] = field(default_factory=list)
    _fixtureinfo: Any = None

    def __post_init__(self) -> None:
        if self.seconds is not None:
            self.own_markers = [pytest.mark.timeout(self.seconds).mark]
        if self.module_fixture:
            scope = type("Def", (), {"scope": "module"})()
            self._fixtureinfo = type("Info", (), {"name2fixturedefs": {"shared_twin": [scope]}})()


def names(items: list[Item]) -> list[str]:
    return [i.name for i in items]


def test_heaviest_first_each_followed_by_a_light_test_then_the_rest() -> None:
    items = [Item("unit-1"), Item("grouped", module_fixture=True), Item("mid", 600), Item("unit-2"),
             Item("longest", 1500), Item("reader"), Item("long", 1200), Item("unit-3"), Item("small", 120),
             Item("also-mid", 900), Item("unit-4")]
    order = arrange(items, 2, lambda i: i.name == "reader")
    # two workers: the two heaviest first; behind each a light test that is not a module's
    # group (the unit queued behind a long test is fixed when the run starts)
    assert names(order) == ["longest", "long", "unit-1", "unit-2", "also-mid", "mid",
                            "grouped", "unit-3", "small", "unit-4", "reader"]
    assert sorted(names(order)) == sorted(names(items))          # nothing lost, nothing twice


def test_fewer_heavy_tests_than_workers_and_one_process() -> None:
    items = [Item("a"), Item("heavy", 300), Item("b"), Item("reader"), Item("c")]
    last = lambda i: i.name == "reader"   # noqa: E731
    assert names(arrange(items, 4, last)) == ["heavy", "a", "b", "c", "reader"]
    assert names(arrange(items, 1, last)) == ["a", "heavy", "b", "c", "reader"]   # collection order
