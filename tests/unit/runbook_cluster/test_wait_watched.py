"""Cluster.wait_for with ``watched_interval``: the clock is only the fallback of a failed watch.

The watch itself is replaced by a scripted :class:`FakeChanges` (open or not, as the test
says), so what is checked is which pause the wait asks for, not how long anything takes.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook import watches
from runbook.cluster import Cluster

from cluster_fakeapi import FakeAPI, write_kubeconfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class FakeChanges:
    """Records each pause the waiter asks for; ``watching`` follows the script."""

    def __init__(self, script: list[bool]) -> None:
        self.script = script
        self.pauses: list[float] = []
        self.events = 0
        self.closed = False

    @property
    def watching(self) -> bool:
        return self.script[min(len(self.pauses), len(self.script) - 1)]

    def wait(self, timeout: float) -> bool:
        self.pauses.append(timeout)
        return True          # as if an event came: the next check follows at once

    def close(self) -> None:
        self.closed = True


def _wait(tmp_path: Path, fake_api: FakeAPI, monkeypatch, script: list[bool], **kw) -> FakeChanges:
    made: list[FakeChanges] = []

    def factory(cluster, resources):
        assert list(resources) == [("pods", "kube-system")]
        made.append(FakeChanges(script))
        return made[-1]

    monkeypatch.setattr(watches, "Changes", factory)
    c = Cluster(str(write_kubeconfig(tmp_path / "kubeconfig", fake_api.url)), retry_for=2.0)
    answers = iter([False, False, False, True])
    c.wait_for(lambda: (next(answers), ["the pod"]), timeout=60, what="the pod", watch=[("pods", "kube-system")],
               **kw)
    (changes,) = made
    assert changes.closed
    return changes


def test_while_the_watch_is_open_the_wait_rechecks_on_its_watched_interval(tmp_path, fake_api, monkeypatch):
    ch = _wait(tmp_path, fake_api, monkeypatch, [True], interval=0.5, watched_interval=15.0)
    assert ch.pauses == [15.0, 15.0, 15.0]


def test_while_no_watch_is_open_it_polls_on_its_interval(tmp_path, fake_api, monkeypatch):
    # the watch opens after the first pause, and fails again after the second
    ch = _wait(tmp_path, fake_api, monkeypatch, [False, True, False], interval=0.5, watched_interval=15.0)
    assert ch.pauses == [0.5, 15.0, 0.5]


def test_without_watched_interval_the_interval_is_the_recheck_too(tmp_path, fake_api, monkeypatch):
    ch = _wait(tmp_path, fake_api, monkeypatch, [True], interval=2.0)
    assert ch.pauses == [2.0, 2.0, 2.0]
