"""The twin of a three-server k3s (embedded etcd): the API lives while two of three
servers run, stops when quorum is lost, the agents' 127.0.0.1:6444 load balancer
follows whichever server answers, and a server started alone waits for etcd's quorum."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from runbook import params
from runbook.cluster import Cluster
from runbook.errors import ClusterError
from twin.api import Twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ARCHIVE = Path(__file__).resolve().parents[2] / "fixtures" / "topologies" / "ha-servers.snapshot.tar.gz"


def _sh(twin: Twin, node: str, command: str) -> None:
    res = twin.call(twin.rt.nodes[node].exec, command, timeout=60)
    assert res.rc == 0, f"{node}: {command}: {res.stderr!r}"


def _api_answers(p) -> bool:
    c = Cluster.from_params(p)
    c.retry_for = 0.0
    try:
        c.get("nodes", "set-hog")
        return True
    except ClusterError:
        return False


def _until(fn, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _lb(twin: Twin, agent: str):
    net = twin.rt.component("network")
    return twin.call(lambda: net.trace(agent, str(twin.rt.nodes[agent].spec.ip), 6444))


def test_api_keeps_quorum_with_two_of_three_servers_and_stops_without(tmp_path: Path) -> None:
    with Twin(tmp_path / "ha", snapshot=ARCHIVE) as twin:
        p = params.load(twin.params_path)
        servers = sorted(n for n, m in twin.rt.nodes.items() if m.role == "server")
        assert servers == ["set-hog", "sly-fox", "sly-owl"]
        assert _api_answers(p)
        _sh(twin, "sly-owl", "sudo systemctl stop k3s")
        assert _api_answers(p), "one server of three down: etcd keeps quorum, the API answers"
        assert _lb(twin, "fast-skunk").ok
        _sh(twin, "sly-fox", "sudo systemctl stop k3s")
        _until(lambda: not _api_answers(p), "the API to stop without quorum (1 of 3)")
        assert _lb(twin, "fast-skunk").ok, "set-hog's k3s still runs: the load balancer forwards to it"
        _sh(twin, "sly-owl", "sudo systemctl start k3s")
        _until(lambda: _api_answers(p), "the API back with quorum (2 of 3)")
        for s in ("set-hog", "sly-owl"):
            _sh(twin, s, "sudo systemctl stop k3s")
        lb = _lb(twin, "fast-skunk")
        assert not lb.ok and "no server to forward to" in lb.reason
        # every server down: the first one started waits for a quorum of etcd members
        # (activating: `systemctl start` would not return), the second completes it
        _sh(twin, "set-hog", "sudo systemctl --no-block start k3s")
        time.sleep(1.0)
        state = lambda n: twin.call(twin.rt.nodes[n].exec, "systemctl is-active k3s").stdout.decode().strip()  # noqa: E731
        assert state("set-hog") == "activating" and not _api_answers(p)
        _sh(twin, "sly-owl", "sudo systemctl --no-block start k3s")
        _until(lambda: state("set-hog") == "active" and state("sly-owl") == "active", "both servers active")
        _until(lambda: _api_answers(p), "the API back with 2 of 3 members")


def _state(twin: Twin, node: str) -> str:
    return twin.call(twin.rt.nodes[node].exec, "systemctl is-active k3s").stdout.decode().strip()


def _journal(twin: Twin, node: str) -> str:
    return twin.call(twin.rt.nodes[node].exec, "sudo journalctl -u k3s --no-pager").stdout.decode()


def _add_line(twin: Twin, node: str, line: str) -> str:
    nm = twin.rt.nodes[node]
    before = twin.call(nm.read_text, "/etc/rancher/k3s/config.yaml")
    twin.call(nm.write, "/etc/rancher/k3s/config.yaml", before + line + "\n")
    return before


def test_flannel_backend_is_compared_only_when_a_server_joins(tmp_path: Path) -> None:
    """k3s's compareConfig runs in bootstrap(), i.e. only while the server's etcd member is
    not initialised (pkg/cluster/bootstrap.go): a member restarted alone with another
    flannel-backend starts; one that joins afresh is refused with "critical configuration
    value mismatch" until its value matches the server it joins."""
    with Twin(tmp_path / "ha", snapshot=ARCHIVE) as twin:
        before = _add_line(twin, "sly-owl", "flannel-backend: none")
        _sh(twin, "sly-owl", "sudo systemctl restart k3s")
        _until(lambda: _state(twin, "sly-owl") == "active", "sly-owl active with flannel-backend none")
        assert "critical configuration value mismatch" not in _journal(twin, "sly-owl")
        assert twin.call(lambda: twin.rt.nodes["sly-owl"].running["flannel"]) is False
        twin.call(twin.rt.nodes["sly-owl"].write, "/etc/rancher/k3s/config.yaml", before)

        # sly-fox's etcd data removed: it joins set-hog again, which still runs vxlan.
        _sh(twin, "sly-fox", "sudo systemctl stop k3s")
        _sh(twin, "sly-fox", "sudo rm -rf /var/lib/rancher/k3s/server/db")
        before = _add_line(twin, "sly-fox", "flannel-backend: none")
        _sh(twin, "sly-fox", "sudo systemctl --no-block start k3s")
        _until(lambda: "critical configuration value mismatch" in _journal(twin, "sly-fox"),
               "sly-fox refused: critical configuration value mismatch")
        assert _state(twin, "sly-fox") != "active"
        assert "failed to validate server configuration" in _journal(twin, "sly-fox")
        # The operator puts the value back: the next start joins and initialises its member.
        twin.call(twin.rt.nodes["sly-fox"].write, "/etc/rancher/k3s/config.yaml", before)
        _sh(twin, "sly-fox", "sudo systemctl restart k3s")
        _until(lambda: _state(twin, "sly-fox") == "active", "sly-fox joined")
        assert twin.call(twin.rt.nodes["sly-fox"].is_dir, "/var/lib/rancher/k3s/server/db/etcd")
