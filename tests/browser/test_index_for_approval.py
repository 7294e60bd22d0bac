"""The index and the pages as the engineer who must approve the migration reads them, in
headless Chromium: what was run (the header), what needs attention, the command that
rolls a failed run back, an honest timeline with both outage windows, and pages free of
Python reprs. Same two reports as ``test_report.py`` (``conftest.py``).
"""
from __future__ import annotations

import json
import re

import pytest
from report_html import pixels_near

PAGES = ["01-preflight", "02-reconfigure", "03-install", "04-verify", "05-rollback"]
TITLES = {"01-preflight": "Phase 22 · 01 — Preflight", "02-reconfigure": "Phase 22 · 02 — Reconfigure",
          "03-install": "Phase 22 · 03 — Install", "04-verify": "Phase 22 · 04 — Verify",
          "05-rollback": "Phase 22 · 05 — Rollback"}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _text(html: str) -> str:
    """What a person reads: no <style>/<script>, no tags, entities decoded."""
    import html as html_mod

    body = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return html_mod.unescape(re.sub(r"<[^>]+>", " ", body))


def _section(dom: str, heading_id: str) -> str:
    m = re.search(rf"<h2 id=\"{heading_id}\">(.*?)(?=<h2 )", dom, re.S)
    assert m, heading_id
    return m.group(1)


# -------------------------------------------------------------------- the header
def test_the_header_says_what_was_rehearsed_with_a_loud_stand_in_banner(rehearsal, chromium) -> None:
    dom = chromium.dump_dom(rehearsal.index_html)
    head = _text(_section(dom, "what"))
    info = json.loads((rehearsal.index_html.parent / "run.json").read_text())
    for words in ("minicloud", "twin: a rehearsal cluster", "EXECUTE", "twin/cilium 1.19.3",
                  info["params_file"], info["params_sha256"], info["values_sha256"],
                  info["runbook"]["version"], info["runbook"]["commit"][:12],
                  f"{info['sessions'][0]['user']}@{info['sessions'][0]['host']}", info["sessions"][0]["at"]):
        assert words in head, words
    # `make rehearse` serves the twin's stand-in chart: the banner says so, and how to fix it
    chart = json.loads((rehearsal.index_html.parent / "journal.json").read_text())["facts"]["cilium_chart"]
    assert chart["official"] is False and chart["sha256"] in head
    banner = re.search(r"<div class=\"standin\"[^>]*>(.*?)</div>", dom, re.S)
    assert banner and "STAND-IN CHART" in banner.group(1)
    assert "helm pull cilium/cilium --version 1.19.3" in banner.group(1) and "--cilium-chart" in banner.group(1)


def test_needs_attention_lists_the_overridden_defer_and_the_warnings(rehearsal, chromium) -> None:
    dom = chromium.dump_dom(rehearsal.index_html)
    box = _section(dom, "attention")
    items = re.findall(r"<li class=\"([a-z-]+)\" style=\"--c:(#[0-9a-f]+)\">(.*?)</li>", box, re.S)
    kinds = [k for k, _c, _t in items]
    assert "deferral-overridden" in kinds
    assert kinds.count("preflight-warning") >= 1 and "no-regression-checks" in kinds
    # Longhorn's instance managers are the storage plan's (recreated while every volume is
    # detached), so minicloud leaves no pod for a person (pods.follow_up_text is unit-tested)
    assert "pods-skipped" not in kinds
    colours = {k: c for k, c, _t in items}
    assert colours["deferral-overridden"] != colours["preflight-warning"]
    text = {k: _text(t) for k, _c, t in items}
    assert "proceed_despite_deferral" in text["deferral-overridden"]
    assert any("firewall" in _text(t) for k, _c, t in items if k == "preflight-warning")
    # each links to its cell, and that cell is on the page
    run = rehearsal.index_html.parent
    for href in re.findall(r"href=\"(html/[^\"#]+)#cell-id=([^\"]+)\"", box):
        page, cell = href
        assert f'id="cell-id={cell}"' in (run / page).read_text(), href
    # the overridden gate is not shown as a green pass in the phase table
    row = re.search(r"<tr data-phase=\"preflight\">(.*?)</tr>", dom, re.S).group(1)
    assert re.search(r"<li class=\"overridden\">⚠ execute-or-defer \(OVERRIDDEN\)</li>", row)


def test_a_failed_run_prints_the_exact_rollback_command(failed_run, chromium) -> None:
    dom = chromium.dump_dom(failed_run.index_html)
    stopped = _section(dom, "stopped")
    cmd = re.search(r"<pre class=\"cmd\">(.*?)</pre>", stopped, re.S)
    assert cmd, stopped[:2000]
    info = json.loads((failed_run.run_dir / "run.json").read_text())
    words = _text(cmd.group(1)).split()
    assert words[0].endswith("runbook") and words[1:3] == ["run", "--params"]
    assert words[3] == info["params_file"]
    assert words[words.index("--phases") + 1] == "rollback"
    assert words[words.index("--run-id") + 1] == failed_run.run_id
    assert words[words.index("--reports-dir") + 1] == str(failed_run.run_dir.parent)  # not reports/
    assert words[-1] == "--execute" and "--confirm" not in words                    # a twin: no confirm
    assert "Needs attention" in dom and "What was run" in dom


# -------------------------------------------------------------------- the timeline
def test_the_timeline_shades_both_outages_and_plots_live_network_pods(rehearsal, chromium, tmp_path) -> None:
    run = rehearsal.index_html.parent
    phases = {p["phase"]: p for p in json.loads((run / "phases.json").read_text())}
    install = [o for o in phases["install"]["outages"] if o["window"] == "no_cni_window"]
    rollback = [o for o in phases["rollback"]["outages"] if o["window"] == "rollback_window"]
    assert len(install) == 1 and len(rollback) == 1
    for o in (install[0], rollback[0]):
        assert o["closed_at"] and o["seconds"] > 0 and o["samples"] > 0
        # the pods had no network in either window: the honest line goes to the bottom
        assert o["live_pods_min_pct"] == 0 and o["seconds_not_all_live"] > 0
    samples = [json.loads(line) for line in (run / "timeline.jsonl").read_text().splitlines() if line.strip()]
    ok = [r for r in samples if r.get("api")]
    assert all("pods_live" in r for r in ok)
    # the kubelet's Ready count stayed high while the live-network count fell
    assert max(r["pods_ready"] - r["pods_live"] for r in ok) > 0.5 * max(r["pods"] for r in ok)
    # both windows are listed with their figures, and drawn: two shades and the green line
    dom = chromium.dump_dom(rehearsal.index_html)
    table = _section(dom, "timeline")
    assert 'data-window="no_cni_window"' in table and 'data-window="rollback_window"' in table
    shot = chromium.screenshot(rehearsal.index_html, tmp_path / "index.png", width=1200, height=5200)
    orange = pixels_near(shot, (255, 232, 212), tol=6)    # #ff7f0e at 18% on white
    purple = pixels_near(shot, (236, 228, 243), tol=6)    # #9467bd at 18% on white
    green = pixels_near(shot, (44, 160, 44), tol=40)
    assert orange > 2000 and purple > 2000 and green > 300, (orange, purple, green)


# -------------------------------------------------------------------- the pages
def test_no_page_shows_a_python_dict_or_list_repr(rehearsal) -> None:
    run = rehearsal.index_html.parent
    for page in [run / "index.html", *sorted((run / "html").glob("*.html"))]:
        text = _text(page.read_text())
        for bad in ("{'", "['"):
            at = text.find(bad)
            assert at < 0, f"{page.name}: {text[max(0, at - 120):at + 120]!r}"


def test_every_page_has_one_title_a_way_back_and_its_contents(rehearsal, chromium) -> None:
    run = rehearsal.index_html.parent
    index = rehearsal.index_html.read_text()
    for name in PAGES:
        page = run / "html" / f"{name}.html"
        dom = chromium.dump_dom(page)
        title = TITLES[name]
        assert f"<title>{title}</title>" in dom
        assert re.search(rf"<h1[^>]*>{re.escape(title)}", dom), name
        assert f">{title}</a>" in index                                  # the index uses the same words
        nav = re.search(r"<nav class=\"p22-nav\">(.*?)</nav>", dom, re.S).group(1)
        assert 'href="../index.html"' in nav and title in nav and "PASSED" in nav
        toc = re.search(r"<nav class=\"p22-toc\">(.*?)</nav>", dom, re.S).group(1)
        anchors = re.findall(r"href=\"#([^\"]+)\"", toc)
        assert len(anchors) >= 4 and all(f'id="{a}"' in dom for a in anchors), name
        # a person's table: no pandas row numbers column, batches counted from 1
        assert not re.search(r"<tbody>\s*<tr>\s*<th>0</th>", dom), name
    rollback = (run / "html" / "05-rollback.html").read_text()
    assert (run / "html" / "03-install.html").read_text().count("helm list --namespace") == 1
    batch_tables = [t for t in re.findall(r"<table.*?</table>", rollback, re.S)
                    if re.search(r"<th>node</th>\s*<th>role</th>\s*<th>batch</th>", t)]
    batches = [b for t in batch_tables for b in re.findall(
        r"<td>(?:set-hog|fast-skunk|fast-heron)</td>\s*<td>(?:server|agent)</td>\s*<td>(\d+)</td>", t)]
    assert batches and min(int(b) for b in batches) == 1


def test_a_defer_verdict_stops_a_headless_run_and_the_index_says_how_to_go_on(deferred_run, chromium) -> None:
    assert [p.status for p in deferred_run.phases] == ["stopped", "not-run"]
    assert not deferred_run.ok and deferred_run.failed.phase == "preflight"
    assert deferred_run.failed.error.startswith("DeferredStop")
    phases = json.loads((deferred_run.run_dir / "phases.json").read_text())
    assert [(p["phase"], p["status"]) for p in phases] == [("preflight", "stopped")]
    dom = chromium.dump_dom(deferred_run.index_html)
    assert "RUN STOPPED at preflight: a deliberate stop" in dom
    stopped = _text(_section(dom, "stopped"))
    assert "proceed_despite_deferral" in stopped and "the verdict is DEFER" in stopped
    assert "This was a dry run" in stopped and "To roll this run back" not in stopped
    assert re.search(r"<tr data-phase=\"preflight\"><td>.*?</td><td class=\"stopped\">STOPPED", dom)
