"""The runbook's drain on a twin LISTs the cluster's pods and PDBs once and then follows the
watch: the number of LISTs is the same however many rounds and events the drain sees."""
from __future__ import annotations

from typing import Any

import pytest

from runbook import drain
from runbook.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE = "fast-heron"


class Counted:
    """What the drain asked of the API server, by kind: LISTs (first pages) and watches."""

    def __init__(self, c: Cluster) -> None:
        self.lists: list[str] = []
        self.watches: list[str] = []
        self.evictions = 0
        raw, stream = c.request_raw, c.watch_stream

        def request_raw(method: str, path: str, **kw: Any) -> Any:
            q = kw.get("query") or {}
            if method == "GET" and path.endswith(("/pods", "/poddisruptionbudgets")) and not q.get("continue"):
                self.lists.append(path.rsplit("/", 1)[1])
            if path.endswith("/eviction"):
                self.evictions += 1
            return raw(method, path, **kw)

        def watch_stream(path: str, query: dict, **kw: Any) -> Any:
            self.watches.append(f"{path.rsplit('/', 1)[1]}@{query.get('resourceVersion')}")
            return stream(path, query, **kw)

        c.request_raw = request_raw      # type: ignore[method-assign]
        c.watch_stream = watch_stream    # type: ignore[method-assign]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from twin.api import Twin

    t = Twin(tmp_path_factory.mktemp("twin")).start()
    yield t
    t.stop()


def test_a_node_drain_lists_pods_and_pdbs_once_and_follows_the_watch(twin, monkeypatch):
    looks: list[int] = []
    to_move = drain.pods_to_move
    monkeypatch.setattr(drain, "pods_to_move", lambda pods, node: looks.append(len(pods)) or to_move(pods, node))
    c = Cluster(str(twin.kubeconfig), kind="twin", retry_for=20)
    before = [p for p in c.list("pods") if p["spec"].get("nodeName") == NODE]
    moving = drain.pods_to_move(before, NODE)
    assert len(moving) >= 2, [p["metadata"]["name"] for p in before]
    drain.cordon(c, NODE)
    counted = Counted(c)
    lines: list[str] = []
    try:
        res = drain.drain(c, NODE, timeout=240, retry=1.0, progress=lines.append)
        # looked at while the node is still cordoned: once uncordoned, longhorn-manager
        # starts its instance manager there again (a new pod the drain never saw)
        look = Cluster(str(twin.kubeconfig), kind="twin", retry_for=20)   # not counted
        left = drain.pods_to_move([p for p in look.list("pods") if p["spec"].get("nodeName") == NODE], NODE)
    finally:
        drain.uncordon(c, NODE)
    assert lines[0] == f"drain {NODE}: {len(moving)} pod(s) to move" and "done in" in lines[-1]
    assert sorted(res.evicted + res.deleted) == sorted(drain._key(p) for p in moving)
    # one LIST of each, at the start, however many evictions (each a round of looks) followed
    assert sorted(counted.lists) == ["poddisruptionbudgets", "pods"], (counted.lists, counted.watches)
    assert left == []
    assert counted.evictions >= len(moving) >= 2 and len(looks) > 2
    # each watch started from a LIST's or a later version, never from scratch ("" or "0")
    assert counted.watches and all(w.split("@")[1] not in ("", "0", "None") for w in counted.watches)
