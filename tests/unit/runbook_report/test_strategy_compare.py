"""runbook.strategy_compare: the other strategy's rehearsal found by its key, and the index's table (pure)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runbook import strategy_compare as sc
from runbook.report_index import IndexData, index_html

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _doc(strategy: str, failed: int, longest: float, key: str = "k1") -> dict:
    per = {"https://homer/": {"kind": "ingress", "probes": 10, "failed": failed, "longest_outage_s": longest},
           "kube-dns": {"kind": "service", "probes": 10, "failed": 0, "longest_outage_s": 0.0}}
    return {"ok": True, "strategy": strategy, "compare_key": key, "checks": {},
            "availability": {"probes": 20, "failed": failed, "longest_outage_s": longest, "strategy": strategy,
                             "per_target": per, "stages": {"migration": {"probes": 14, "failed": failed,
                                                                          "longest_outage_s": longest}},
                             "targets": [{"name": "https://homer/", "samples": [{"ct": 0, "ok": True}]}]}}


def _write(reports: Path, run: str, doc: dict, mtime: float) -> Path:
    d = reports / run
    d.mkdir(parents=True)
    f = d / "rehearsal.json"
    f.write_text(json.dumps(doc))
    os.utime(f, (mtime, mtime))
    return d


def test_the_newest_rehearsal_of_the_other_strategy_with_the_same_key_is_found(tmp_path: Path) -> None:
    _write(tmp_path, "old-bb", _doc("big-bang", 9, 60.0), 1000)
    _write(tmp_path, "new-bb", _doc("big-bang", 6, 40.0), 2000)
    _write(tmp_path, "other-params", _doc("big-bang", 1, 2.0, key="k2"), 3000)
    _write(tmp_path, "same-strategy", _doc("node-by-node", 0, 0.0), 4000)
    me = _write(tmp_path, "me", _doc("node-by-node", 0, 0.0), 5000)
    other = sc.find_other(tmp_path, key="k1", strategy="node-by-node", exclude=me)
    assert other is not None and other["run_id"] == "new-bb" and other["strategy"] == "big-bang"
    assert (other["failed"], other["longest_outage_s"]) == (6, 40.0)
    assert other["per_target"]["https://homer/"] == {"kind": "ingress", "probes": 10, "failed": 6,
                                                     "longest_outage_s": 40.0}
    assert "targets" not in json.dumps(other)          # figures only, never the samples
    assert sc.find_other(tmp_path, key="k3", strategy="node-by-node") is None


def test_an_old_rehearsal_without_a_strategy_counts_as_big_bang(tmp_path: Path) -> None:
    doc = _doc("big-bang", 3, 10.0)
    del doc["strategy"], doc["availability"]["strategy"]
    _write(tmp_path, "legacy", doc, 1000)
    assert sc.find_other(tmp_path, key="k1", strategy="node-by-node")["strategy"] == "big-bang"
    assert sc.find_other(tmp_path, key="k1", strategy="big-bang") is None


def test_the_key_ignores_order_and_tells_contents_apart() -> None:
    assert sc.compare_key([("params", "a"), ("values", "b")]) == sc.compare_key([("values", "b"), ("params", "a")])
    assert sc.compare_key([("params", "a"), ("values", "b")]) != sc.compare_key([("params", "a"), ("values", "c")])
    assert sc.compare_key([("snapshot", None)]) != sc.compare_key([("chart", None)])


def test_the_index_shows_both_strategies_side_by_side(tmp_path: Path) -> None:
    mine = _doc("node-by-node", 0, 0.0)
    mine["compared_with"] = sc.summary(_doc("big-bang", 6, 40.0), run_id="r-bb")
    page = index_html(IndexData(run_dir=tmp_path, rows=[], rehearsal=mine))
    assert "id='strategy-comparison'" in page
    table = page.split("class='strategy-comparison'")[1].split("</table>")[0]
    assert "node-by-node<br><small>this run</small>" in table and "big-bang<br><small>r-bb</small>" in table
    row = table.split("<td>https://homer/</td>")[1].split("</tr>")[0]
    assert row == ("<td>0 of 10 failed, longest 0s</td><td class='failed'>6 of 10 failed, longest 40s</td>")
    assert "stage: migration" in table
    alone = index_html(IndexData(run_dir=tmp_path, rows=[], rehearsal=_doc("big-bang", 6, 40.0)))
    assert "strategy-comparison" not in alone
