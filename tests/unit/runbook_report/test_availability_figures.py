"""Availability figures from the prober's samples (runbook.availability) and their table
on the index (runbook.report_availability): pure functions, no twin."""
from __future__ import annotations

from runbook import availability, report_availability, timeline_plot


def _samples(pattern: str, *, interval: float = 2.0, t0: float = 100.0) -> list[dict]:
    """'..xx.' -> ok, ok, failed, failed, ok at ct 0, 2, 4, ..."""
    return [{"t": t0 + i * 0.1, "ct": i * interval, "ok": c == "."} for i, c in enumerate(pattern)]


def test_an_outage_runs_from_the_first_failed_request_to_the_next_success():
    outs = availability.outages(_samples("..xxx..x."))
    assert [(o.start_ct, o.end_ct, o.closed, o.failed) for o in outs] == [(4.0, 10.0, True, 3),
                                                                          (14.0, 16.0, True, 1)]
    assert [o.seconds for o in outs] == [6.0, 2.0]


def test_an_outage_still_open_at_the_end_lasts_until_the_last_request():
    outs = availability.outages(_samples("..xxx"))
    assert len(outs) == 1 and not outs[0].closed and outs[0].seconds == 4.0
    f = availability.figures(_samples("..xxx"))
    assert f == {"probes": 5, "failed": 3, "longest_outage_s": 4.0, "outages": 1, "open_at_end": True}


def test_samples_out_of_order_are_sorted_by_cluster_time():
    s = _samples(".xx.")
    assert availability.figures(list(reversed(s)))["longest_outage_s"] == 4.0


def test_no_failure_no_outage_and_nothing_probed_is_all_zero():
    assert availability.figures(_samples("....")) == {"probes": 4, "failed": 0, "longest_outage_s": 0.0,
                                                      "outages": 0, "open_at_end": False}
    assert availability.figures([]) == {"probes": 0, "failed": 0, "longest_outage_s": 0.0,
                                        "outages": 0, "open_at_end": False}


def test_the_reason_of_the_first_failed_request_names_the_outage():
    s = _samples(".xx.")
    s[1]["why"] = "503 no ingress-nginx controller pod is Ready"
    assert availability.outages(s)[0].why == "503 no ingress-nginx controller pod is Ready"


def test_summary_totals_per_target_and_per_stage():
    targets = [{"name": "https://homer/", "kind": "ingress", "samples": _samples("..xxx...x.")},
               {"name": "service kube-dns from n1", "kind": "service", "samples": _samples("....xx....")}]
    stages = [{"name": "migration", "from_ct": 0.0}, {"name": "rollback", "from_ct": 12.0}]
    a = availability.summarize(targets, stages=stages, interval_s=2.0, strategy="big-bang")
    assert (a["probes"], a["failed"], a["longest_outage_s"]) == (20, 6, 6.0)
    assert a["per_target"]["https://homer/"] == {"kind": "ingress", "probes": 10, "failed": 4,
                                                 "longest_outage_s": 6.0, "outages": 2, "open_at_end": False}
    assert a["per_target"]["service kube-dns from n1"]["longest_outage_s"] == 4.0
    mig, rb = a["stages"]["migration"], a["stages"]["rollback"]
    assert (mig["probes"], mig["failed"], mig["longest_outage_s"], mig["to_ct"]) == (12, 5, 6.0, 12.0)
    # the rollback's window starts at ct 12: homer fails at ct 16 and is back at ct 18
    assert (rb["probes"], rb["failed"], rb["longest_outage_s"], rb["to_ct"]) == (8, 1, 2.0, None)
    assert a["interval_s"] == 2.0 and a["strategy"] == "big-bang" and a["targets"] is targets


def test_an_outage_across_a_stage_boundary_is_cut_at_it():
    targets = [{"name": "a", "kind": "ingress", "samples": _samples("..xxxx..")}]
    a = availability.summarize(targets, stages=[{"name": "migration", "from_ct": 0.0},
                                                {"name": "rollback", "from_ct": 8.0}])
    assert a["longest_outage_s"] == 8.0
    assert a["stages"]["migration"]["per_target"]["a"] == {"probes": 4, "failed": 2, "longest_outage_s": 2.0,
                                                           "outages": 1, "open_at_end": True}
    assert a["stages"]["rollback"]["per_target"]["a"]["longest_outage_s"] == 4.0


def test_the_timeline_plots_the_share_of_targets_answering():
    targets = [{"name": "a", "samples": _samples("..x", t0=100.0)},
               {"name": "b", "samples": _samples("...", t0=100.0)}]
    series = timeline_plot.availability_series({"availability": availability.summarize(targets)},
                                               bucket=0.05)
    assert series == [(100.0, 100.0), (100.1, 100.0), (100.2, 50.0)]


def test_the_index_table_names_each_target_and_why_its_longest_outage_started():
    s = _samples("..xx..")
    s[2]["why"] = "503 no ingress-nginx controller pod is Ready & reachable"
    a = availability.summarize([{"name": "https://homer/", "kind": "ingress", "samples": s},
                                {"name": "svc", "kind": "service", "samples": _samples("......")}],
                               stages=[{"name": "migration", "from_ct": 0.0}], interval_s=2.0)
    page = report_availability.availability_html(a)
    assert "<td>https://homer/</td><td>ingress</td><td>6</td><td class='failed'>2</td><td>4s</td>" in page
    assert "503 no ingress-nginx controller pod is Ready &amp; reachable" in page
    assert "<tr data-stage='migration'><td>migration</td><td>12</td><td>2</td><td>4s</td></tr>" in page
    assert "every 2 cluster seconds" in page and "2 of 12 requests failed" in page


def test_without_probing_the_index_says_so():
    for nothing in (None, {}, {"probes": 0}):
        assert "was not probed" in report_availability.availability_html(nothing)


def test_the_index_says_how_busy_the_machine_was() -> None:
    a = availability.summarize([{"name": "a", "kind": "ingress", "samples": _samples("..x.")}])
    a["load_average"] = {"start": 1.5, "end": 13.25}
    page = report_availability.availability_html(a)
    assert "load average was 1.5 at the start and 13.25 at the end" in page
    a["load_average"] = {"start": None, "end": None}
    assert "load average" not in report_availability.availability_html(a)
