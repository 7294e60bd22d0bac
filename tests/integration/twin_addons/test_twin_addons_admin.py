"""The fault admin endpoint: token, reading and setting faults, API outage, SSH down."""
from __future__ import annotations

import os
import socket
import stat
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _api_port(at) -> int:
    return int(at.twin.endpoints["api_port"])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_token_required_and_faults_read_and_set(addon_twin) -> None:
    at = addon_twin
    token_file = at.twin.state_dir / "admin-token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert at.twin.endpoints["admin"].startswith("http://127.0.0.1:")
    assert at.admin("GET", "/faults", token=None)[0] == 401
    assert at.admin("GET", "/faults", token="wrong")[0] == 401
    assert at.admin("POST", "/faults", {"metallb_sticky": True}, token=None)[0] == 401
    assert at.twin.rt.faults.metallb_sticky is False          # nothing set without the token

    status, faults = at.admin("GET", "/faults")
    assert status == 200 and faults == at.twin.call(lambda: at.twin.rt.faults.as_dict())
    assert faults["velero_partially_failed"] is False

    status, faults = at.admin("POST", "/faults", {"velero_partially_failed": True,
                                                  "argocd_parent_reverts": True})
    assert status == 200 and faults["velero_partially_failed"] and faults["argocd_parent_reverts"]
    assert at.twin.rt.faults.velero_partially_failed is True

    status, err = at.admin("POST", "/faults", {"metallb_sticky": True, "no_such_fault": 1})
    assert status == 400 and "no_such_fault" in err["error"] and "metallb_sticky" in err["error"]
    assert at.twin.rt.faults.metallb_sticky is False          # all or nothing
    assert at.admin("POST", "/faults", ["not", "an", "object"])[0] == 400
    assert at.admin("POST", "/faults/api-outage", {"seconds": "soon"})[0] == 400
    assert at.admin("POST", "/faults/ssh-down", {"node": "set-hog"})[0] == 409   # no SSH here


def test_faults_set_at_start_are_visible(twin_factory) -> None:
    at = twin_factory(faults={"metallb_sticky": True, "ssh_down": ["fast-heron"]})
    status, faults = at.admin("GET", "/faults")
    assert status == 200 and faults["metallb_sticky"] is True and faults["ssh_down"] == ["fast-heron"]


def test_api_outage_refuses_connections_then_recovers(addon_twin) -> None:
    at = addon_twin
    port = _api_port(at)
    assert not _refused(port)
    t0 = time.monotonic()
    status, body = at.admin("POST", "/faults/api-outage", {"seconds": 60})   # 1.2 s wall
    assert status == 202 and body["outage_seconds"] == 60 and body["wall_seconds"] == pytest.approx(1.2)
    at.until(lambda: _refused(port), timeout=5, what="API refusing connections")
    at.until(lambda: not _refused(port), timeout=10, what="API back")
    assert time.monotonic() - t0 >= 1.1
    # the runbook's client rides through an outage set as a fault switch
    # 5 s wall: the get below falls in it even on a loaded machine (2 s was missed at load 13)
    at.admin("POST", "/faults", {"api_down_seconds": 250})
    at.until(lambda: _refused(port), timeout=5, what="outage from api_down_seconds")
    assert at.cluster.get("namespaces", "default")["metadata"]["name"] == "default"
    assert at.cluster.outages and at.cluster.outages[-1].seconds > 0


def test_ssh_down_through_the_admin_endpoint(twin_factory) -> None:
    at = twin_factory(ssh=True)
    ssh_ports = at.twin.endpoints["ssh"]
    port = int(ssh_ports["fast-skunk"])
    assert not _refused(port)
    status, body = at.admin("POST", "/faults/ssh-down", {"node": "fast-skunk", "down": True})
    assert status == 200 and body["ssh_down"] == ["fast-skunk"]
    assert _refused(port) and at.twin.rt.faults.ssh_down == {"fast-skunk"}
    status, body = at.admin("POST", "/faults/ssh-down", {"node": "fast-skunk", "down": False})
    assert status == 200 and body["ssh_down"] == []
    assert not _refused(port)
    assert at.admin("POST", "/faults/ssh-down", {"node": "nope", "down": True})[0] == 404
    # the same through POST /faults {"ssh_down": [...]}
    status, _ = at.admin("POST", "/faults", {"ssh_down": ["set-hog"]})
    assert status == 200 and _refused(int(ssh_ports["set-hog"]))
    at.admin("POST", "/faults", {"ssh_down": []})
    assert not _refused(int(ssh_ports["set-hog"]))
    status, err = at.admin("POST", "/faults", {"ssh_down": ["no-such-node"]})
    assert status == 400 and "no-such-node" in err["error"] and at.twin.rt.faults.ssh_down == set()
