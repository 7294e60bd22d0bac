"""Fleet ordering, batching and stop-at-first-failure with fake nodes."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from runbook.errors import NodeError
from runbook.nodes import Fleet

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@dataclass
class FakeNode:
    name: str
    role: str
    fail: bool = False
    touched: list = field(default_factory=list)


def fleet_nodes(fail=()):
    names = [("a1", "agent"), ("s1", "server"), ("a2", "agent"), ("s2", "server"),
             ("a3", "agent"), ("a4", "agent"), ("a5", "agent")]
    return [FakeNode(n, r, fail=n in fail) for n, r in names]


def test_servers_first_one_at_a_time_then_agent_batches():
    nodes = fleet_nodes()
    f = Fleet(nodes, batch_size=2)
    assert [[n.name for n in b] for b in f.batches()] == [["s1"], ["s2"], ["a1", "a2"], ["a3", "a4"], ["a5"]]
    order, lock, live, peak = [], threading.Lock(), [0], [0]

    def op(n):
        with lock:
            order.append(n.name)
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return n.name.upper()

    res = f.apply(op, description="restart k3s")
    assert res.ok and order[:2] == ["s1", "s2"]
    assert set(order[2:4]) == {"a1", "a2"} and order[-1] == "a5"
    assert peak[0] == 2                       # concurrent within a batch, never more
    assert res.values()["a3"] == "A3"
    df = res.frame()
    assert list(df.columns) == ["node", "role", "batch", "status", "error", "duration_s", "value"]
    assert list(df["batch"]) == [1, 2, 1, 1, 2, 2, 3]   # from 1, within each role, as the restart order
    assert "restart k3s" in res._repr_html_()


def test_stops_at_first_failing_batch_and_leaves_the_rest():
    nodes = fleet_nodes(fail={"a2"})

    def op(n):
        n.touched.append(True)
        if n.fail:
            raise NodeError("ssh down", node=n.name)
        return "ok"

    res = Fleet(nodes, batch_size=2).apply(op, description="reconfigure")
    status = {o.node: o.status for o in res.outcomes}
    assert status == {"s1": "ok", "s2": "ok", "a1": "ok", "a2": "failed",
                      "a3": "skipped", "a4": "skipped", "a5": "skipped"}
    assert all(not n.touched for n in nodes if n.name in {"a3", "a4", "a5"})
    assert res.skipped[0].error == "skipped: not reached"
    assert "ssh down" in res.failed[0].error
    with pytest.raises(NodeError) as ei:
        res.raise_for_failures()
    assert "a3, a4, a5" in str(ei.value) and "a2" in str(ei.value)


def test_failing_server_stops_before_agents():
    nodes = fleet_nodes(fail={"s1"})
    res = Fleet(nodes, 3).apply(lambda n: (_ for _ in ()).throw(RuntimeError("x")) if n.fail else 1,
                                description="d")
    assert [o.status for o in res.outcomes] == ["failed"] + ["skipped"] * 6


def test_read_reaches_every_node_at_once_within_the_bound():
    nodes = [FakeNode(f"n{i}", "server" if i == 0 else "agent") for i in range(12)]
    lock, live, peak = threading.Lock(), [0], [0]
    all_in = threading.Barrier(4, timeout=5)

    def op(n):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        if n.name in ("n0", "n1", "n2", "n3"):
            all_in.wait()       # four reads in flight together, or this times out
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return n.name.upper()

    res = Fleet(nodes, batch_size=1, parallel_reads=4).read(op, description="read")
    assert res.ok and res.values() == {n.name: n.name.upper() for n in nodes}
    assert peak[0] == 4                                   # bounded by parallel_reads
    assert [o.node for o in res.outcomes] == [n.name for n in nodes]


def test_read_does_not_skip_nodes_after_a_failure():
    nodes = fleet_nodes(fail=("s1", "a3"))

    def op(n):
        if n.fail:
            raise NodeError("unreachable", node=n.name)
        return "ok"

    res = Fleet(nodes, batch_size=2).read(op, description="facts")
    assert [o.node for o in res.failed] == ["s1", "a3"]
    assert not res.skipped and len(res.values()) == len(nodes) - 2
    with pytest.raises(NodeError, match="facts: failed on 2 node"):
        res.raise_for_failures()


def test_read_with_one_worker_is_serial_and_apply_keeps_its_batches():
    nodes = fleet_nodes()
    seen = []
    Fleet(nodes, batch_size=2, parallel_reads=1).read(lambda n: seen.append(n.name), description="r")
    assert seen == [n.name for n in nodes]
    assert [[n.name for n in b] for b in Fleet(nodes, batch_size=2, parallel_reads=50).batches()] == \
        [["s1"], ["s2"], ["a1", "a2"], ["a3", "a4"], ["a5"]]
