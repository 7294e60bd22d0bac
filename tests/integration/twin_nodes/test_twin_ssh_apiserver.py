"""A server's k3s restart over SSH takes the real API server down for a few seconds."""
from __future__ import annotations

import socket
import time

import pytest

from twin_nodes_harness import run_cmd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_server_restart_makes_api_unavailable(tmp_path):
    from twin.api import Twin
    from twin.apiserver import APIServer
    from twin.node import NodesComponent
    from twin.ssh import SSHServers

    twin = Twin(tmp_path / "twin", speed=0.05,
                components=lambda rt: [NodesComponent(), APIServer(), SSHServers()]).start()
    try:
        port = twin.endpoints["api_port"]
        server = next(n for n in twin.rt.nodes.values() if n.role == "server")
        assert not _refused(port)
        import paramiko
        c = paramiko.SSHClient()
        c.load_host_keys(str(tmp_path / "twin" / "ssh" / "known_hosts"))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect("127.0.0.1", port=twin.endpoints["ssh"][server.name], username="ubuntu",
                  key_filename=str(tmp_path / "twin" / "ssh" / "id_ed25519"),
                  look_for_keys=False, allow_agent=False, timeout=10)
        t0 = time.monotonic()
        i, o, e = c.exec_command("sudo systemctl restart k3s")
        seen_down = False
        while not o.channel.exit_status_ready():   # watch the API while systemctl runs
            seen_down = seen_down or _refused(port)
            time.sleep(0.02)
        assert o.channel.recv_exit_status() == 0
        assert seen_down, "the API server should refuse connections during the restart"
        deadline = t0 + 10
        while _refused(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _refused(port), "the API server should listen again after the restart"
        assert run_cmd(c, "systemctl is-active k3s")[1] == b"active\n"
        c.close()
    finally:
        twin.stop()
