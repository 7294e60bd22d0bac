"""The pieces under the report: which pods have a live network, the outage windows and
their measure, the availability samples, the chart's identity, values in words, and a
phase page's title, bar and contents."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbformat import v4

from runbook import chart, outage, presentation, report, timeline_plot
from runbook.timeline import live_network

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

T0 = "2026-11-26T05:00:00Z"     # the node's last return to Ready
BEFORE, AFTER = "2026-11-26T04:00:00Z", "2026-11-26T05:01:00Z"


def node(name="n1", ready=True, since=T0):
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}]}}


def pod(name, node_name="n1", *, ready=True, started=AFTER, host=False, phase="Running", ns="web"):
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"nodeName": node_name, "hostNetwork": host},
            "status": {"phase": phase, "startTime": started,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"},
                                      {"type": "PodReadyToStartContainers", "status": "True",
                                       "lastTransitionTime": started}]}}


def agent(node_name="n1", ready=True):
    p = pod(f"cilium-{node_name}", node_name, ready=ready, host=True, ns="kube-system")
    p["metadata"]["labels"] = {"k8s-app": "cilium"}
    return p


def cep(name, ns="web"):
    return {"metadata": {"namespace": ns, "name": name}}


# ------------------------------------------------------------------ live network
def test_flannel_node_pod_started_after_the_node_came_back_is_live():
    assert live_network([node()], [pod("a")], []) == (1, 1)


def test_flannel_node_pod_whose_sandbox_predates_the_outage_is_not_live():
    assert live_network([node()], [pod("old", started=BEFORE)], []) == (0, 1)


def test_flannel_node_pod_with_a_cilium_endpoint_is_on_a_dead_sandbox():
    # after a rollback: the pod was made by Cilium, which no longer runs on the node
    assert live_network([node()], [pod("a")], [cep("a")]) == (0, 1)


def test_cilium_node_needs_the_endpoint():
    pods = [pod("old", started=BEFORE), pod("new"), agent()]
    assert live_network([node()], pods, [cep("new")]) == (1, 2)   # the agent is hostNetwork: not counted


def test_an_agent_that_is_not_ready_does_not_make_the_node_cilium():
    # agent present but not Ready: Cilium is not in force; a pod with an endpoint is not live
    assert live_network([node()], [pod("a"), agent(ready=False)], [cep("a")]) == (0, 1)


def test_not_ready_node_or_pod_and_terminating_pods_are_not_live():
    terminating = pod("t")
    terminating["metadata"]["deletionTimestamp"] = AFTER
    assert live_network([node(ready=False)], [pod("a")], []) == (0, 1)
    assert live_network([node()], [pod("a", ready=False), terminating], []) == (0, 2)
    assert live_network([], [pod("a")], []) == (0, 1)      # its node is gone


def test_host_network_and_finished_pods_are_not_counted():
    assert live_network([node()], [pod("h", host=True), pod("job", phase="Succeeded", ready=False)], []) == (0, 0)


# ------------------------------------------------------------------ outage windows
class _Journal:
    def __init__(self) -> None:
        self.facts: dict = {}

    def get(self, k, default=None):
        return self.facts.get(k, default)

    def set(self, k, v):
        self.facts[k] = v

    def setdefault(self, k, v):
        return self.facts.setdefault(k, v)


def test_a_window_opens_once_and_closes_once():
    j = _Journal()
    first = outage.open_window(j, "rollback_window")
    assert outage.open_window(j, "rollback_window") is first            # a rerun keeps the first opening
    closed = outage.close_window(j, "rollback_window")
    assert closed["closed_at"] and closed["seconds"] is not None and closed["seconds"] >= 0
    assert outage.close_window(j, "rollback_window") == closed          # and the first closing
    assert outage.close_window(j, "no_cni_window") is None              # never opened
    w = outage.windows(j.facts)
    assert [x.fact for x in w] == ["rollback_window"] and not w[0].is_open and "closed" in str(w[0])


def test_measure_runs_an_open_window_to_the_last_sample_and_counts_api_gaps_as_down():
    w = outage.Window("rollback_window", "rollback outage", "1970-01-01T00:01:40Z")
    rows = [{"t": 100.0, "api": True, "pods": 10, "pods_live": 10, "nodes": 3, "nodes_ready": 3},
            {"t": 101.0, "api": False},
            {"t": 103.0, "api": True, "pods": 10, "pods_live": 4, "nodes": 3, "nodes_ready": 1},
            {"t": 104.0, "api": True, "pods": 10, "pods_live": 10, "nodes": 3, "nodes_ready": 3}]
    m = outage.measure(w, rows)
    assert m == {"samples": 4, "live_pods_min_pct": 40.0, "seconds_not_all_live": 3.0, "nodes_not_ready_max": 2}
    assert outage.measure(outage.Window("x", "x", None), rows)["samples"] == 0


# ------------------------------------------------------------------ availability
def test_availability_accepts_both_shapes_and_is_empty_without_probing():
    by_name = {"availability": {"homer": [{"t": 10.0, "ok": True}], "podinfo": [{"t": 10.2, "ok": False}]}}
    assert timeline_plot.availability_series(by_name) == [(10.0, 50.0)]
    assert timeline_plot.availability_series({"checks": {}}) == []
    assert timeline_plot.availability_series(None) == []
    assert timeline_plot.availability_series({"availability": {"targets": [{"name": "a", "samples": ["x"]}]}}) == []


# ------------------------------------------------------------------ the chart
def _cache(tmp_path: Path, data: bytes, *, legacy: bool = False, listed: str | None = None) -> Path:
    cache = tmp_path / "cache"
    (cache / "repository").mkdir(parents=True)
    digest = hashlib.sha256(data).hexdigest()
    index = {"apiVersion": "v1", "entries": {"cilium": [{"version": "1.19.3", "digest": listed or digest,
                                                         "urls": ["cilium-1.19.3.tgz"]}]}}
    (cache / "repository" / "cilium-index.yaml").write_text(yaml.safe_dump(index))
    if legacy:
        (cache / "repository" / "cilium-1.19.3.tgz").write_bytes(data)
    else:
        (cache / "content" / digest[:2]).mkdir(parents=True)
        (cache / "content" / digest[:2] / f"{digest}.chart").write_bytes(data)
    return cache


def _identify(cache: Path, pinned: str | None = None) -> chart.ChartIdentity:
    return chart.identify(cache, repo="cilium", repo_url="https://helm.cilium.io/", chart="cilium",
                          version="1.19.3", pinned=pinned)


def test_a_stand_in_archive_is_not_official_and_says_why(tmp_path):
    ident = _identify(_cache(tmp_path, b"stand-in chart"))
    assert not ident.official and ident.sha256 == hashlib.sha256(b"stand-in chart").hexdigest()
    assert chart.OFFICIAL_SHA256["1.19.3"] in ident.how and ident.banner().startswith("STAND-IN CHART")


def test_a_pinned_digest_decides_and_helm3_archives_are_found(tmp_path):
    data = b"the archive I checked"
    digest = hashlib.sha256(data).hexdigest()
    assert _identify(_cache(tmp_path, data, legacy=True), pinned=digest).official
    assert not _identify(_cache(tmp_path / "2", data), pinned="0" * 64).official


def test_an_archive_that_differs_from_its_repository_index_is_not_official(tmp_path):
    ident = _identify(_cache(tmp_path, b"x", legacy=True, listed=chart.OFFICIAL_SHA256["1.19.3"]))
    assert not ident.official and "its own repository lists" in ident.how


def test_no_archive_means_not_verified(tmp_path):
    ident = _identify(tmp_path / "nothing")
    assert not ident.official and ident.sha256 is None and "could not be checked" in ident.how


# ------------------------------------------------------------------ values in words
def test_frame_html_has_no_row_numbers_no_reprs_and_breaks_paths_at_slashes():
    df = pd.DataFrame([{"node": "set-hog", "value": {"interfaces": ["cilium_host"], "chains_removed": 10},
                        "path": "/var/lib/cni/networks/cbr0", "error": None}])
    out = presentation.frame_html(df)
    assert "<th>0</th>" not in out and "{'" not in out and "['" not in out and "None" not in out
    assert "interfaces: cilium_host; chains_removed: 10" in out
    assert "/<wbr>var/<wbr>lib" in out
    named = presentation.frame_html(pd.DataFrame({"n": [1]}, index=pd.Index(["a"], name="node")))
    assert "<th>node</th>" in named and "<td>a</td>" in named
    long = presentation.frame_html(pd.DataFrame({"n": range(100)}), max_rows=10)
    assert "90 more rows" in long and "100 rows" in long


def test_install_shows_strings_without_quotes_and_lists_item_by_item():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    assert presentation.install(shell)
    fmt = shell.display_formatter
    data, _ = fmt.format("uninstalled")
    assert data["text/plain"] == "uninstalled"
    data, _ = fmt.format([pd.DataFrame({"a": [1]}), "done"])
    assert "<table" in data["text/html"] and "<p>done</p>" in data["text/html"]
    data, _ = fmt.format({"pods": 111, "nodes": 3})
    assert "<th>pods</th><td>111</td>" in data["text/html"]


# ------------------------------------------------------------------ a phase page
def test_a_phase_page_has_the_title_a_bar_back_to_the_index_and_contents(tmp_path):
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# Phase 22 · 01 — Preflight\n\nintro"),
                                v4.new_markdown_cell("## Connect and validate"),
                                v4.new_code_cell("x = 1"),
                                v4.new_markdown_cell("### A detail"),
                                v4.new_markdown_cell("## Summary")])
    nb.metadata["papermill"] = {"duration": 2.0, "end_time": "t"}
    run = tmp_path / "run-7"
    (run / "html").mkdir(parents=True)
    path = run / "01-preflight.ipynb"
    nbformat.write(nb, path)
    page = report.render_phase(path, run / "html", status=report.notebook_status(nb)).read_text()
    assert "<title>Phase 22 · 01 — Preflight</title>" in page
    bar = re.search(r"<nav class='p22-nav'>(.*?)</nav>", page, re.S).group(1)
    assert "href='../index.html'" in bar and "PASSED" in bar and "run-7" in bar
    toc = re.search(r"<nav class='p22-toc'>(.*?)</nav>", page, re.S).group(1)
    assert [t for t in re.findall(r">([^<>]+)</a>", toc)] == ["Connect and validate", "A detail", "Summary"]
    for anchor in re.findall(r"href='#([^']+)'", toc):
        assert f'id="{anchor}"' in page


def test_attention_items_and_lost_evidence_are_read_back_with_their_cells(tmp_path):
    from runbook import evidence

    flagged = v4.new_code_cell("preflight.execute_or_defer(s, decision, True)")
    flagged.id = "c-defer"
    flagged.outputs = [v4.new_output("display_data", data={
        evidence.MIMETYPE: {"kind": "deferral-overridden", "message": "went on", "phase": "preflight"},
        "text/plain": "[evidence] attention/deferral-overridden/1 = ..."},
        metadata={"name": "attention/deferral-overridden/1"})]
    lost = v4.new_code_cell("s.gate(ok, 'x')")
    lost.id = "c-lost"
    lost.outputs = [v4.new_output("display_data", data={
        "text/plain": "EVIDENCE LOST: gate/x was not recorded (OSError: disk full); the report index will not show it",
        "text/html": "<div>lost</div>"})]
    nb = v4.new_notebook(cells=[flagged, lost])
    items = report._attention("preflight", nb, Path("html/01-preflight.html"),
                              {"evidence_lost": [{"name": "gate/x", "reason": "OSError: disk full"}]})
    assert [(i["kind"], i["link"]) for i in items] == [
        ("deferral-overridden", "html/01-preflight.html#cell-id=c-defer"),
        ("evidence-lost", "html/01-preflight.html#cell-id=c-lost")]     # listed once, at its cell
    assert items[1]["message"].startswith("EVIDENCE LOST: gate/x")


def test_the_official_archive_is_recognised_as_official(tmp_path, cilium_chart):
    """The real helm.cilium.io archive (when the suite is given one) matches the digest
    the runbook carries for 1.19.3."""
    ident = _identify(_cache(tmp_path, cilium_chart.read_bytes()))
    assert ident.official and ident.banner() is None and ident.sha256 == chart.OFFICIAL_SHA256["1.19.3"]
