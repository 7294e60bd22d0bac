"""Availability measured during the session's shared rehearsal (big-bang, stand-in chart).

Reads only what ``helpers.migrated_run`` left behind: ``rehearsal.json``'s
``availability`` section, the journal's outage windows and the index.
"""
from __future__ import annotations

import json

import pytest

from runbook import availability, outage

pytestmark = pytest.mark.integration

WALL_SLACK = 2.0   # wall seconds between the twin's model changing and the journal's clock


@pytest.mark.timeout(900)
def test_every_ingress_host_and_the_service_from_every_node_were_probed_start_to_finish(migrated_run) -> None:
    run = migrated_run
    assert run.ok, run.log_tail
    a = json.loads((run.run_dir / "rehearsal.json").read_text())["availability"]
    hosts = {f"https://{h}/" for h in _ingress_hosts(run)}
    nodes = sorted(p.name for p in (run.state_dir / "nodes").iterdir() if p.is_dir())
    kinds = {name: f["kind"] for name, f in a["per_target"].items()}
    assert {n for n, k in kinds.items() if k == "ingress"} == hosts
    assert sorted(n.rsplit(" from ", 1)[1] for n, k in kinds.items() if k == "service") == nodes
    assert all(n.startswith("service kube-system/kube-dns 10.43.0.10:53/udp") for n, k in kinds.items()
               if k == "service")
    # the totals are the targets' figures, and the figures are the samples'
    assert a["probes"] == sum(f["probes"] for f in a["per_target"].values()) > 0
    assert a["failed"] == sum(f["failed"] for f in a["per_target"].values())
    for t in a["targets"]:
        assert {k: v for k, v in a["per_target"][t["name"]].items() if k != "kind"} == \
            availability.figures(t["samples"]), t["name"]
        # one request per slot of a fixed grid of the twin's clock (a slot a busy loop
        # missed is skipped, never made up for with two requests in one slot)
        slots = [int((s["ct"] - a["origin_ct"]) / a["interval_s"] + 0.01) for s in t["samples"]]
        assert slots[0] == 0 and all(x < y for x, y in zip(slots, slots[1:])), t["name"]
    # from before preflight's first step to after the rollback's last one
    journal = json.loads((run.run_dir / "journal.json").read_text())
    stamps = [outage.ts(e.get(k)) for e in journal["entries"] for k in ("recorded_at", "completed_at")]
    stamps = [s for s in stamps if s is not None]
    first = min(s["t"] for t in a["targets"] for s in t["samples"])
    last = max(s["t"] for t in a["targets"] for s in t["samples"])
    assert stamps and first <= min(stamps) and last >= max(stamps)
    assert set(a["stages"]) == {"migration", "rollback"} and a["strategy"] == "big-bang"


@pytest.mark.timeout(900)
def test_big_bang_baseline_every_target_is_down_in_the_no_cni_window_and_back_after(migrated_run) -> None:
    """The baseline: every target fails during install's no-CNI window, and nowhere else in
    the migration but where the storage plan keeps a volume-using backend scaled to 0 (from
    its scale-down in 02-reconfigure to its scale-up in 04-verify); every target answers
    again by the end of the migration and of the rollback."""
    run = migrated_run
    a = json.loads((run.run_dir / "rehearsal.json").read_text())["availability"]
    doc = json.loads((run.run_dir / "journal.json").read_text())
    facts = doc["facts"]
    window = next(w for w in outage.windows(facts) if w.fact == "no_cni_window")
    opened, closed = outage.ts(window.opened_at), outage.ts(window.closed_at)
    assert opened is not None and closed is not None
    entries = doc.get("entries") or []
    downs = [outage.ts(e["recorded_at"]) for e in entries if e["step"] == "storage-scale-down"]
    ups = [outage.ts(e.get("completed_at") or e["recorded_at"]) for e in entries if e["step"] == "storage-scale-up"]
    assert downs and ups, "minicloud's Longhorn volume users are scaled down and up again"
    phases = {p["phase"]: p for p in json.loads((run.run_dir / "phases.json").read_text())}
    first_down, verify_end = min(downs), phases["verify"]["ended"]
    mig = a["stages"]["migration"]
    assert mig["failed"] > 0 and mig["longest_outage_s"] > 0
    by_ct = {t["name"]: t["samples"] for t in a["targets"]}
    for name, f in mig["per_target"].items():
        assert f["failed"] > 0 and not f["open_at_end"], (name, f)
        samples = availability.in_window(by_ct[name], mig["from_ct"], mig["to_ct"])
        failed_t = [s["t"] for s in samples if not s["ok"]]
        assert min(opened, first_down) - WALL_SLACK <= min(failed_t) and max(failed_t) <= verify_end, (
            name, window, next(s.get("why") for s in samples if not s["ok"]))
        if min(failed_t) < opened - WALL_SLACK:     # down before the window: a backend scaled to 0
            assert any("no pod matches its selector" in (x.get("why") or "") or "no Ready" in (x.get("why") or "")
                       for x in samples if not x["ok"] and x["t"] < opened), name
    assert not any(f["open_at_end"] for f in a["per_target"].values())
    assert a["longest_outage_s"] == max(f["longest_outage_s"] for f in a["per_target"].values())


@pytest.mark.timeout(900)
def test_the_index_shows_the_availability_figures(migrated_run) -> None:
    a = json.loads((migrated_run.run_dir / "rehearsal.json").read_text())["availability"]
    index = migrated_run.index_html.read_text()
    assert "Service availability (big-bang)" in index
    assert (f"<tr data-stage='all'><td>the whole rehearsal</td><td>{a['probes']}</td>"
            f"<td>{a['failed']}</td><td>{a['longest_outage_s']:.0f}s</td></tr>") in index
    for name in a["per_target"]:
        assert f"<tr data-target='{name}'>" in index
    assert "was not probed" not in index
    assert f"availability: {availability.line(a)}" in migrated_run.stdout


def _ingress_hosts(run) -> set[str]:
    """Every Ingress host of the twin's fixture (the cluster the rehearsal ran on)."""
    from twin import fixtures

    fx = fixtures.load("minicloud")
    return {r["host"] for o in fx.objects if o.get("kind") == "Ingress"
            for r in (o.get("spec") or {}).get("rules") or () if r.get("host")}
