"""The shared background-work helpers of the twin's components (twin.ticker)."""
from __future__ import annotations

import asyncio

import pytest

from twin.ticker import TaskSet, Ticker, cancel_and_wait

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def _until(cond, limit: int = 10_000) -> None:
    for _ in range(limit):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_ticker_sleeps_first_then_calls_until_stopped() -> None:
    async def scenario() -> tuple[list, int, bool]:
        events: list = []

        async def sleep(s: float) -> None:
            events.append(("sleep", s))
            await asyncio.sleep(0)
        t = Ticker("t", 2.5, lambda: events.append("pass"), sleep=sleep)
        t.start()
        await _until(lambda: events.count("pass") >= 3)
        await t.stop()
        after = len(events)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return events, after, t.running
    events, after, running = asyncio.run(scenario())
    assert events[:4] == [("sleep", 2.5), "pass", ("sleep", 2.5), "pass"]
    assert len(events) == after and not running      # nothing happens once stopped


def test_ticker_immediate_runs_the_first_pass_before_sleeping() -> None:
    async def scenario() -> list:
        events: list = []

        async def sleep(s: float) -> None:
            events.append("sleep")
            await asyncio.sleep(0)
        t = Ticker("t", 1.0, lambda: events.append("pass"), sleep=sleep, immediate=True)
        t.start()
        await _until(lambda: len(events) >= 2)
        await t.stop()
        return events
    assert asyncio.run(scenario())[:2] == ["pass", "sleep"]


def test_ticker_survives_a_failing_pass_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[int, int]:
        calls = []

        def fn() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
        t = Ticker("flaky-ticker", 1.0, fn, sleep=_no_wait)
        t.start()
        await _until(lambda: len(calls) >= 3)
        await t.stop()
        return t.failures, len(calls)
    failures, calls = asyncio.run(scenario())
    assert failures == 1 and calls >= 3
    assert any("flaky-ticker failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_ticker_awaits_an_async_pass() -> None:
    async def scenario() -> list:
        events: list = []

        async def fn() -> None:
            events.append("begin")
            await asyncio.sleep(0)
            events.append("end")
        t = Ticker("t", 1.0, fn, sleep=_no_wait, immediate=True)
        t.start()
        await _until(lambda: events.count("end") >= 2)
        await t.stop()
        return events
    events = asyncio.run(scenario())
    assert events[:4] == ["begin", "end", "begin", "end"]


def test_ticker_start_twice_keeps_one_task() -> None:
    async def scenario() -> tuple[int, int]:
        t = Ticker("t", 1.0, lambda: None, sleep=_no_wait)
        t.start()
        first = t._task
        t.start()
        same = first is t._task
        await t.stop()
        return same, len([x for x in asyncio.all_tasks() if x.get_name() == "t"])
    same, left = asyncio.run(scenario())
    assert same and left == 0


def test_taskset_tracks_by_key_and_forgets_finished_tasks() -> None:
    async def scenario() -> tuple:
        tasks = TaskSet("demo")
        gate = asyncio.Event()
        tasks.spawn(gate.wait(), key="a", name="demo-a")
        tasks.spawn(gate.wait())
        running = ("a" in tasks, len(tasks))
        with pytest.raises(ValueError, match="still running"):
            tasks.spawn(gate.wait(), key="a")
        gate.set()
        await _until(lambda: len(tasks) == 0)
        return running, "a" in tasks
    running, still = asyncio.run(scenario())
    assert running == (True, 2) and not still


def test_taskset_stop_cancels_and_waits_cancel_does_not_wait() -> None:
    async def scenario() -> tuple:
        tasks = TaskSet("demo")
        t1 = tasks.spawn(asyncio.sleep(60))
        await tasks.stop()
        stopped = (t1.cancelled(), len(tasks))
        t2 = tasks.spawn(asyncio.sleep(60))
        tasks.cancel()
        pending = not t2.done()          # cancellation requested, not yet delivered
        await cancel_and_wait(t2)
        return stopped, pending, t2.cancelled()
    stopped, pending, cancelled = asyncio.run(scenario())
    assert stopped == (True, 0) and pending and cancelled


def test_cancel_and_wait_accepts_none_and_swallows_task_errors() -> None:
    async def scenario() -> bool:
        async def bad() -> None:
            raise RuntimeError("already failed")
        t = asyncio.get_running_loop().create_task(bad())
        await asyncio.sleep(0)
        await cancel_and_wait(None)
        await cancel_and_wait(t)
        return t.done()
    assert asyncio.run(scenario())
