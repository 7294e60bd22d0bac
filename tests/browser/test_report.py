"""The report of a real rehearsal, read as files and opened in headless Chromium.

The HTML checks (links resolve, pages stand alone, images are data URIs, a failed run
says where and why) need no browser and always run; the Chromium checks skip with the
reason when no Chromium is installed.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from report_html import external_loads, parse, pixels_near, png_data, is_remote

PHASES = ["preflight", "reconfigure", "install", "verify", "rollback"]
PAGES = ["01-preflight", "02-reconfigure", "03-install", "04-verify", "05-rollback"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _index_rows(index: Path) -> dict[str, str]:
    """phase -> status, from the index's phase table."""
    text = index.read_text()
    rows = {}
    for m in re.finditer(r"<tr data-phase='([a-z]+)'><td>.*?</td><td class='([a-z-]+)'>([A-Z-]+)", text):
        rows[m.group(1)] = m.group(3)
    return rows


# -- the HTML, no browser ---------------------------------------------------------------
def test_index_shows_every_phase_passed_and_the_rollback_checks(rehearsal) -> None:
    index = rehearsal.index_html
    assert index.is_file()
    assert _index_rows(index) == {ph: "PASSED" for ph in PHASES}
    text = index.read_text()
    assert "ALL PHASES PASSED" in text and "Where and why it stopped" not in text
    for check in rehearsal.checks:
        assert re.search(re.escape(check) + r"</td><td class='passed'>OK</td>", text), check


def test_timeline_is_an_embedded_png(rehearsal) -> None:
    from PIL import Image

    refs = parse(rehearsal.index_html)
    timeline = [src for src in refs.images if src.startswith("data:")]
    assert len(timeline) == 1 and len(refs.images) == 1, refs.images
    raw = png_data(timeline[0])
    assert raw.startswith(PNG_MAGIC) and len(raw) > 1000
    with Image.open(io.BytesIO(raw)) as im:
        im.verify()
    with Image.open(io.BytesIO(raw)) as im:
        assert im.width > 300 and im.height > 100


def test_every_link_in_the_index_resolves_to_a_file(rehearsal) -> None:
    index = rehearsal.index_html
    links = parse(index).links
    local = [u for u in links if not u.startswith(("#", "data:"))]
    assert not [u for u in local if is_remote(u) or urlsplit(u).scheme], local
    pages = {Path(unquote(urlsplit(u).path)).name for u in local}
    # a page and the executed notebook per phase, and the raw evidence
    assert {f"{p}.html" for p in PAGES} <= pages and {f"{p}.ipynb" for p in PAGES} <= pages
    assert {"journal.json", "phases.json", "commands.jsonl", "rehearsal.json"} <= pages
    missing = [u for u in local if not (index.parent / unquote(urlsplit(u).path)).is_file()]
    assert not missing, missing
    for page in (index.parent / "html").glob("*.html"):
        for u in parse(page).links:
            if not (u.startswith(("#", "data:", "mailto:")) or is_remote(u)):
                assert (page.parent / unquote(urlsplit(u).path)).exists(), (page.name, u)


def test_each_phase_page_stands_alone(rehearsal) -> None:
    html_dir = rehearsal.index_html.parent / "html"
    assert sorted(p.stem for p in html_dir.glob("*.html")) == PAGES
    for page in html_dir.glob("*.html"):
        assert external_loads(page) == [], page.name
        refs = parse(page)
        assert all(src.startswith("data:") for src in refs.images), (page.name, refs.images)
        # the evidence JSON lines stay in the notebook, not on the page
        assert "[evidence]" not in page.read_text(), page.name


def test_the_reconfigure_page_shows_the_config_diff_monospace(rehearsal) -> None:
    page = (rehearsal.index_html.parent / "html" / "02-reconfigure.html").read_text()
    assert "+++ b/etc/rancher/k3s/config.yaml" in page       # the config diff is on the page
    assert re.search(r"\.jp-OutputArea-output pre[^{]*\{[^}]*font-family: var\(--jp-code-font-family", page)


def test_a_failed_run_says_where_and_why_it_stopped(failed_run) -> None:
    assert failed_run.failed is not None and failed_run.failed.phase == "preflight"
    assert "PartiallyFailed" in (failed_run.failed.error or "")
    index = failed_run.index_html
    text = index.read_text()
    assert "RUN STOPPED" in text and "Where and why it stopped" in text
    box = re.search(r"<h2[^>]*>Where and why it stopped</h2>(.*?)<h2[^>]*>Phases</h2>", text, re.S)
    assert box, text[:2000]
    assert "<b>preflight</b>" in box.group(1)
    assert "PartiallyFailed" in box.group(1)             # the failing gate's own message
    assert "preflight.backup(s)" in box.group(1)         # the step that failed, as code
    assert _index_rows(index) == {"preflight": "FAILED"}  # reconfigure never ran
    # named by its step heading, linked to the failing cell's anchor on the page
    step = re.search(r"step <b>([^<]+)</b>", box.group(1))
    link = re.search(r"href='(html/01-preflight\.html)#cell-id=([^']+)'", box.group(1))
    assert step and link, box.group(1)
    page = (index.parent / link.group(1)).read_text()
    assert f'id="cell-id={link.group(2)}"' in page
    assert step.group(1) in page
    # the gates met before the stop are listed although s.finish() never ran
    row = re.search(r"<tr data-phase='preflight'>.*?</tr>", text, re.S).group(0)
    assert "execute-or-defer" in row and "prerequisites" in row


# -- in a browser ----------------------------------------------------------------------
def test_chromium_renders_the_index_with_every_phase_passed(rehearsal, chromium, tmp_path: Path) -> None:
    dom = chromium.dump_dom(rehearsal.index_html)
    for ph in PHASES:
        assert re.search(rf"<tr data-phase=\"{ph}\"><td>.*?</td><td class=\"passed\">PASSED", dom), ph
    assert "ALL PHASES PASSED" in dom
    # tall enough to reach the timeline below the header, "Needs attention" and the phases
    shot = chromium.screenshot(rehearsal.index_html, tmp_path / "index.png", height=5200)
    # The timeline's node-readiness line (#1f77b4) is drawn only by the embedded PNG:
    # seeing it proves the browser decoded and showed the image.
    blue = pixels_near(shot, (31, 119, 180), tol=24)
    assert blue > 200, blue


def test_chromium_opens_each_phase_page_offline(rehearsal, chromium) -> None:
    titles = {"01-preflight": "Preflight", "02-reconfigure": "Reconfigure", "03-install": "Install",
              "04-verify": "Verify", "05-rollback": "Rollback"}
    for name in PAGES:
        dom = chromium.dump_dom(rehearsal.index_html.parent / "html" / f"{name}.html")
        assert titles[name].lower() in dom.lower(), name
        assert ">PASSED<" in dom, name          # the summary table of its gates
        assert "Traceback" not in dom, name
        assert not re.search(r"<script[^>]+src=\"https?:", dom), name


def test_chromium_shows_where_a_failed_run_stopped(failed_run, chromium) -> None:
    dom = chromium.dump_dom(failed_run.index_html)
    assert "Where and why it stopped" in dom and "PartiallyFailed" in dom
    assert re.search(r"<tr data-phase=\"preflight\"><td>.*?</td><td class=\"failed\">FAILED", dom)
