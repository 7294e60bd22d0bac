"""Snapshot a running twin, rebuild a twin from the archive, rehearse on it.

The snapshot is taken by the real library against a minicloud twin over its sockets
(the API on loopback, SSH with host keys checked); the twin rebuilt from the archive
must hold the same cluster, and the whole migration with its rollback must pass on it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import snapshot_format
from runbook import params, snapshot
from runbook.cluster import Cluster
from runbook.nodes import Node
from twin.api import Twin
from twin.fixtures.snapshot_fixture import MINICLOUD_SNAPSHOT

pytestmark = pytest.mark.integration

RUNBOOK = Path(sys.executable).parent / "runbook"
KINDS = ("nodes", "pods", "services", "ingresses", "persistentvolumeclaims")
READ_COMMANDS = re.compile(r"^(sudo -n )?(test -[ed] |cat |ls -1 |ip -o link show$|iptables-save$|ip6tables-save$)")


class _RecordingCluster(Cluster):
    """The API choke point (every call, decoded or paged, goes through ``request_raw``),
    recording each method and path."""

    calls: list[tuple[str, str]]

    def request_raw(self, method, path, **kw):
        self.calls.append((method, path))
        return super().request_raw(method, path, **kw)


def _counts(params_path: Path) -> dict[str, int]:
    c = Cluster.from_params(params.load(params_path))
    return {k: len(c.list(k)) for k in KINDS}


@pytest.mark.timeout(300)
def test_a_snapshot_is_read_only_and_rebuilds_the_same_cluster(fresh_twin, tmp_path: Path) -> None:
    p = params.load(fresh_twin.params_path)
    cluster = _RecordingCluster.from_params(p)
    cluster.calls = []
    log = tmp_path / "commands.jsonl"
    nodes = Node.from_params(p, command_log=log)
    lines: list[str] = []
    res = snapshot.take(p, tmp_path / "minicloud.tar.gz", cluster=cluster, nodes=nodes, progress=lines.append)

    # read-only: GETs through the API, reads over SSH (each command is logged by Node.run)
    assert {m for m, _ in cluster.calls} == {"GET"} and len(cluster.calls) > 30
    commands = [json.loads(ln)["command"] for ln in log.read_text().splitlines()]
    assert commands and all(READ_COMMANDS.match(c) for c in commands), \
        [c for c in commands if not READ_COMMANDS.match(c)]
    assert {json.loads(ln)["node"] for ln in log.read_text().splitlines()} == {n.name for n in nodes}
    assert any("nodes read over SSH: 3/3" in ln for ln in lines) and "3 Node, 114 Pod" in lines[-1]
    assert res.nodes_read == 3 and res.warnings == []

    original = _counts(fresh_twin.params_path)
    assert original == {"nodes": 3, "pods": 114, "services": 64, "ingresses": 10, "persistentvolumeclaims": 32}
    assert {k: res.counts[kind] for k, kind in zip(KINDS, ("Node", "Pod", "Service", "Ingress",
                                                           "PersistentVolumeClaim"))} == original
    for archive in (res.path, MINICLOUD_SNAPSHOT):
        with Twin(tmp_path / f"from-{archive.name}", snapshot=archive) as twin:
            assert _counts(twin.params_path) == original, archive
            built = params.validate(params.load(twin.params_path))
            assert built.target.name == "minicloud" and built.target.kind == "twin"
            assert sorted(n.name for n in built.nodes) == sorted(n.name for n in p.nodes)
            assert {n.name: n.node_ip for n in built.nodes} == {n.name: n.node_ip for n in p.nodes}
            assert [c.url for c in built.checks.ingress] == [c.url for c in p.checks.ingress]
            assert built.twin.snapshot == str(archive.resolve())
            assert built.twin.assumptions[0].startswith("images are not run")
            saved = json.loads((twin.state_dir / "assumptions.json").read_text())
            assert [a["rule"] for a in saved["assumptions"]] == ["images", "ports", "volumes", "ingress"]
            # the nodes' own config files, the twin's own join token in place of the mask
            agent = (twin.state_dir / "nodes" / "fast-skunk" / "etc/rancher/k3s/config.yaml").read_text()
            assert "token: K10" in agent and "*****" not in agent


@pytest.mark.timeout(900)
def test_snapshot_then_rehearse_from_it_with_rollback_passes(fresh_twin, tmp_path: Path) -> None:
    """The issue's "done": ``runbook snapshot`` of a running minicloud twin, then
    ``runbook rehearse --from-snapshot … --with-rollback``, both as the CLI."""
    archive = tmp_path / "minicloud.tar.gz"
    snap = subprocess.run([str(RUNBOOK), "snapshot", "--params", str(fresh_twin.params_path),
                           "--out", str(archive)], capture_output=True, text=True, timeout=240)
    assert snap.returncode == 0, snap.stderr[-3000:]
    fresh_twin.stop()            # the rehearsal works from the archive alone
    reports = tmp_path / "reports"
    reh = subprocess.run([str(RUNBOOK), "rehearse", "--from-snapshot", str(archive), "--with-rollback",
                          "--reports-dir", str(reports), "--run-id", "from-snapshot"],
                         capture_output=True, text=True, timeout=840)
    assert reh.returncode == 0, (reh.stdout[-5000:], reh.stderr[-3000:])
    assert "REHEARSAL PASSED" in reh.stdout and f"starting a twin of {archive}" in reh.stdout
    assert "assumed: images are not run" in reh.stdout
    run_dir = reports / "from-snapshot"
    assert all(c["ok"] for c in json.loads((run_dir / "rehearsal.json").read_text())["checks"].values())
    # preflight kept the rebuilt cluster as evidence, and what the twin assumed
    again = snapshot_format.read(run_dir / "cluster-snapshot.tar.gz")
    assert sorted(n["name"] for n in again.nodes) == sorted(n["name"] for n in snapshot_format.read(archive).nodes)
    assumed = json.loads((run_dir / "assumed.json").read_text())
    assert assumed["snapshot"] == str(archive.resolve()) and len(assumed["assumptions"]) == 4
    index = (run_dir / "index.html").read_text()
    assert "<h2>Cluster snapshot</h2>" in index and "href='cluster-snapshot.tar.gz'" in index
    assert "<h2>Assumed</h2>" in index and "images are not run" in index
