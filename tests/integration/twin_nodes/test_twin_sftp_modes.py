"""SFTP creates files with the modes a real sftp-server gives, and its permission rules
hold whatever SFTP version a client asks for (the servers answer with version 3, whose
``open`` is where the rules are checked)."""
from __future__ import annotations

import asyncio
import os

import asyncssh
import pytest

from twin_nodes_harness import run_cmd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_sftp_modes_do_not_follow_the_process_umask(nodes_twin, tmp_path):
    # The twin's SSH servers run in this process; a Jupyter kernel's umask is 077.
    os.umask(0o077)                     # restored by tests/conftest.py
    c = nodes_twin.connect("server-1")
    try:
        sftp = c.open_sftp()
        local = tmp_path / "values.yaml"
        local.write_bytes(b"k: v\n")
        sftp.put(str(local), "/tmp/values.yaml")
        sftp.mkdir("/tmp/upload")
        with sftp.open("/tmp/upload/private", "w") as f:
            f.write("secret\n")
        sftp.chmod("/tmp/upload/private", 0o600)
        sftp.close()
        modes = run_cmd(c, "stat -c %a /tmp/values.yaml /tmp/upload /tmp/upload/private")[1]
        assert modes == b"644\n755\n600\n"
        # Copied into /etc with sudo, the file stays readable for ubuntu, as on a real node.
        assert run_cmd(c, "sudo cp /tmp/values.yaml /etc/values.yaml")[0] == 0
        rc, out, err = run_cmd(c, "cat /etc/values.yaml")
        assert (rc, out) == (0, b"k: v\n"), err
    finally:
        c.close()


@pytest.mark.parametrize("version", [3, 6])
def test_sftp_permissions_hold_whatever_version_a_client_asks_for(nodes_twin, version):
    t = nodes_twin
    port = t.rt.endpoints["ssh"]["agent-1"]

    async def session() -> dict[str, str]:
        seen: dict[str, str] = {}
        async with asyncssh.connect("127.0.0.1", port, username="ubuntu", client_keys=[str(t.ssh.client_key)],
                                    known_hosts=str(t.ssh.known_hosts)) as conn:
            async with conn.start_sftp_client(sftp_version=version) as sftp:
                assert sftp.version == 3
                for what, path, mode in (("write /etc", "/etc/rancher/k3s/new.yaml", "w"),
                                         ("read 0600", "/etc/rancher/k3s/config.yaml", "r"),
                                         ("write home", "/home/ubuntu/new.yaml", "w")):
                    try:
                        async with sftp.open(path, mode) as f:
                            if "w" in mode:
                                await f.write("x: 1\n")
                        seen[what] = "ok"
                    except asyncssh.SFTPPermissionDenied:
                        seen[what] = "denied"
        return seen

    seen = asyncio.run(session())
    assert seen == {"write /etc": "denied", "read 0600": "denied", "write home": "ok"}
    node = t.rt.nodes["agent-1"]
    assert not node.exists("/etc/rancher/k3s/new.yaml")
    assert node.read_text("/home/ubuntu/new.yaml") == "x: 1\n"
