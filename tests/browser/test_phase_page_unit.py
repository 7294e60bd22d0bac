"""One phase page rendered from a small executed notebook: standalone, no twin needed."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest

from runbook import evidence, report

from report_html import external_loads, parse

pytestmark = pytest.mark.unit


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (31, 119, 180)).save(buf, format="PNG")
    return buf.getvalue()


def _notebook(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('params_file: str = "/secret/path.yaml"  # params')
    params.metadata["tags"] = ["parameters"]
    hidden = nbformat.v4.new_code_cell("helper_that_adds_nothing()")
    hidden.metadata["tags"] = ["hide-input"]
    hidden.outputs = [nbformat.v4.new_output("stream", name="stdout", text="shown without its code\n")]
    gate = nbformat.v4.new_code_cell("s.gate(ok, 'every pod Running')")
    gate.outputs = [
        nbformat.v4.new_output("display_data", data={
            evidence.MIMETYPE: {"passed": True}, "text/plain": '[evidence] gate/x = {"passed": true}'},
            metadata={"name": "gate/x"}),
        nbformat.v4.new_output("display_data", data={
            "text/html": "<pre>--- a/config.yaml\n+++ b/config.yaml\n+flannel-backend: none</pre>",
            "text/plain": "diff"}),
        nbformat.v4.new_output("display_data", data={
            "image/png": base64.b64encode(_png_bytes()).decode(), "text/plain": "<Figure>"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Phase 22 · 99 — Test\nCosts $5 and $6, not math."),
                params, hidden, gate]
    path = tmp_path / "99-test.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_phase_page_loads_nothing_remote_and_embeds_its_images(tmp_path: Path) -> None:
    nb_path = _notebook(tmp_path)
    page = report.render_phase(nb_path, tmp_path)
    text = page.read_text()
    assert external_loads(page) == []
    assert "mathjax" not in text.lower() and "require.min.js" not in text and "mermaid.esm" not in text
    imgs = parse(page).images
    assert len(imgs) == 1 and imgs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(imgs[0].split(",", 1)[1]) == _png_bytes()
    # evidence records leave the page but stay in the notebook for the index
    assert "[evidence]" not in text
    assert evidence.read_records(nb_path) == {"gate/x": {"passed": True}}
    # tagged inputs hidden, their outputs kept; prose and the diff kept
    assert "helper_that_adds_nothing" not in text and "shown without its code" in text
    assert "/secret/path.yaml" not in text
    assert "+flannel-backend: none" in text and "Costs $5 and $6" in text


def test_the_page_css_makes_output_pre_monospace_after_the_lab_css(tmp_path: Path) -> None:
    text = report.render_phase(_notebook(tmp_path), tmp_path).read_text()
    ours = text.find("font-family: var(--jp-code-font-family, monospace)")
    lab = text.find(".jp-OutputArea-output pre {")
    assert 0 <= lab < ours, "our rules must come after the lab CSS to win"
