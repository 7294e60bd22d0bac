"""The journal file's text: the fast writer gives exactly what ``json.dumps(indent=2)`` gives."""
from __future__ import annotations

import json

import pytest

from runbook.journal import _pretty_json

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DOCS = [
    {},
    {"entries": [], "facts": {}, "phases": {"preflight": {"status": "done", "seconds": 12.5}}},
    {"unicode": "é – ✓ \u2028", "controls": "tab\tnl\nq\"bs\\\x01", "big": 12345678901234567890,
     "floats": [0.1, -0.0, 1e-07, 1.5e300, 3.0], "nested": [[{}], [[]], {"a": None, "b": True}]},
    {1: "an int key", "k": [False, None]},
]


@pytest.mark.parametrize("doc", DOCS)
def test_same_text_as_the_standard_library(doc):
    assert _pretty_json(doc) == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_nan_is_written_as_the_standard_library_writes_it():
    doc = {"seconds": float("nan"), "inf": float("inf")}
    text = _pretty_json(doc)
    assert text == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    assert "NaN" in text and "Infinity" in text
