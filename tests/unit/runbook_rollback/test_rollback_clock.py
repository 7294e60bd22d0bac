"""Pods against journal times: the API server's clock (whole seconds, maybe skewed) against
this machine's (runbook.server_clock), in the rollback's pod selection."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runbook import rollback
from runbook.rollback import plan_from_journal
from runbook.server_clock import ClockBounds, possibly_at_or_after, possibly_before

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rollback"
NODES = [("set-hog", "server"), ("fast-skunk", "agent"), ("fast-heron", "agent")]


def _plan(case: str, **changes: str) -> rollback.RollbackPlan:
    doc = json.loads((FIXTURES / case / "journal.json").read_text())
    p = plan_from_journal(doc, NODES)
    for k, v in changes.items():
        setattr(p, k, v)
    return p


def _pod(name: str, node: str, created: str) -> dict:
    return {"metadata": {"name": name, "namespace": "apps", "uid": name, "creationTimestamp": created,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def _names(pods: list[dict], p: rollback.RollbackPlan, clock: ClockBounds | None = None) -> list[str]:
    return sorted(x["metadata"]["name"] for x in rollback.restart_candidates(pods, p, clock))


def test_a_pod_created_in_the_second_the_cni_was_switched_off_is_restarted() -> None:
    # the switch at 05:01:05.700 (this machine); a pod created at 05:01:05.9 reads 05:01:05
    p = _plan("reconfigure-agent-unreached", pods_since="2026-11-26T05:01:05.700Z")
    pods = [_pod("same-second", "set-hog", "2026-11-26T05:01:05Z"),
            _pod("second-before", "set-hog", "2026-11-26T05:01:04Z"),
            _pod("after", "set-hog", "2026-11-26T05:01:06Z")]
    assert _names(pods, p) == ["after", "same-second"]


def test_a_server_clock_behind_this_machine_moves_the_switch_back() -> None:
    # the server's clock is 10 s behind: the switch (05:01:05.7 here) was 05:00:55.7 there
    p = _plan("reconfigure-agent-unreached", pods_since="2026-11-26T05:01:05.700Z")
    behind = ClockBounds(-10.4, -9.6)
    pods = [_pod("created-after-on-its-clock", "set-hog", "2026-11-26T05:00:58Z"),
            _pod("before", "set-hog", "2026-11-26T05:00:53Z")]
    assert _names(pods, p) == []                      # without the skew both look older
    assert _names(pods, p, behind) == ["created-after-on-its-clock"]


def test_on_a_node_back_on_flannel_a_pod_that_may_predate_flannels_config_is_restarted() -> None:
    p = _plan("nbn-after-switch-reverted")
    back = p.node("set-hog").on_flannel["since"]      # 18:41:26.820 on this machine
    assert back == "2026-12-04T18:41:26.820Z"
    pods = [_pod("same-second", "set-hog", "2026-12-04T18:41:26Z"),
            _pod("next-second", "set-hog", "2026-12-04T18:41:27Z"),
            _pod("long-before", "set-hog", "2026-12-04T18:30:00Z")]
    assert _names(pods, p) == ["long-before", "same-second"]
    # the server's clock is 5 s ahead: flannel's config came back at 18:41:31.8 on its clock
    ahead = ClockBounds(4.6, 5.4)
    assert _names(pods, p, ahead) == ["long-before", "next-second", "same-second"]


def test_the_predicates_answer_possibly_on_both_edges() -> None:
    t = datetime(2026, 12, 4, 12, 0, 0, 500000, tzinfo=timezone.utc)
    sec = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)
    prev = datetime(2026, 12, 4, 11, 59, 59, tzinfo=timezone.utc)
    none = ClockBounds.unmeasured()
    assert possibly_at_or_after(sec, t, none) and not possibly_at_or_after(prev, t, none)
    assert possibly_before(sec, t, none) and possibly_before(prev, t, none)
    nxt = datetime(2026, 12, 4, 12, 0, 1, tzinfo=timezone.utc)
    assert not possibly_before(nxt, t, none)
    assert possibly_before(nxt, t, ClockBounds(0.4, 0.6))


def test_bounds_from_a_date_header_and_what_they_tell_a_person() -> None:
    # the server said 12:00:05 while this machine read 12:00:00.2 .. 12:00:00.3
    b = ClockBounds.from_date_header("Fri, 04 Dec 2026 12:00:05 GMT", 1796385600.2, 1796385600.3)
    assert b.lo == pytest.approx(4.7) and b.hi == pytest.approx(5.8) and b.measured
    assert "ahead of this machine's" in b.describe() and not b.worth_a_note
    far = ClockBounds.from_date_header("Fri, 04 Dec 2026 11:58:00 GMT", 1796385600.0, 1796385600.1)
    assert "behind" in far.describe() and far.worth_a_note
    assert "could not be read" in ClockBounds.unmeasured().describe()
    with pytest.raises((TypeError, ValueError)):
        ClockBounds.from_date_header("yesterday", 0.0, 0.1)


def test_the_clock_modules_examples_run_as_written() -> None:
    import doctest

    from runbook import server_clock

    res = doctest.testmod(server_clock)
    assert res.attempted > 0 and res.failed == 0, res


class _Cluster:
    """request_raw of a Cluster: answers /version with ``headers``, or raises ``error``."""

    def __init__(self, headers: dict[str, str] | None = None, error: Exception | None = None) -> None:
        self.headers, self.error, self.calls = headers or {}, error, []

    def request_raw(self, method: str, path: str, **kw: object) -> bytes:
        self.calls.append((method, path, kw.get("retry_for")))
        if self.error is not None:
            raise self.error
        kw["answer_headers"].update(self.headers)       # type: ignore[union-attr]
        return b"{}"


def test_the_skew_is_measured_from_the_date_of_an_answer_and_never_waits_long() -> None:
    from email.utils import formatdate
    import time

    from runbook.errors import ClusterError
    from runbook.server_clock import measure

    ahead = _Cluster({"date": formatdate(time.time() + 120, usegmt=True)})
    b = measure(ahead)
    assert b.measured and 118 < b.lo <= b.hi < 122 and b.worth_a_note
    assert ahead.calls == [("GET", "/version", 10.0)]
    # no Date, a malformed one, or an API that does not answer: assumed to agree
    for c in (_Cluster({}), _Cluster({"Date": "soon"}), _Cluster(error=ClusterError("API server unreachable"))):
        assert measure(c) == ClockBounds.unmeasured()


def test_a_large_skew_is_flagged_once_by_the_pod_step_a_small_one_only_printed() -> None:
    from types import SimpleNamespace

    def run(clock: ClockBounds) -> tuple[list[str], list[tuple[str, str]]]:
        said, flagged = [], []
        s = SimpleNamespace(params=SimpleNamespace(strategy="big-bang", cilium=SimpleNamespace(migration_cidr=None)),
                            cluster=SimpleNamespace(list=lambda resource, *a, **kw: []),
                            progress=said.append, attention=lambda kind, msg: flagged.append((kind, msg)))
        p = _plan("reconfigure-agent-unreached")
        p.clock, p.pods_done = clock, True
        rollback.restart_pods(s, p)
        return said, flagged

    said, flagged = run(ClockBounds(-120.5, -119.5))
    assert said[0].startswith("pods against journal times: the API server's clock is 120.0 s behind")
    assert [k for k, _ in flagged] == ["clock-skew"] and "NTP" in flagged[0][1]
    said, flagged = run(ClockBounds(-0.5, 0.5))
    assert len(said) == 1 and flagged == []
