"""A twin at scale keeps each node's files in memory until something needs them (issue 16):
over SSH and SFTP a node looks as it would have, the files reach the disk on the first
login, and a twin stopped meanwhile leaves the other nodes' files for the next one."""
from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from twin.api import Twin
from twin.node import DEFER_LEASES_FROM_PODS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# 8 nodes: 16 hostNetwork DaemonSet pods; the rest hold flannel leases, past the threshold.
SCALE = (8, DEFER_LEASES_FROM_PODS + 100)
CONFIG = "/etc/rancher/k3s/config.yaml"


def connect(twin: Twin, node: str) -> paramiko.SSHClient:
    ssh = twin.state_dir / "ssh"
    c = paramiko.SSHClient()
    c.load_host_keys(str(ssh / "known_hosts"))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", port=twin.endpoints["ssh"][node], username="ubuntu",
              key_filename=str(ssh / "id_ed25519"), look_for_keys=False, allow_agent=False, timeout=20)
    return c


def run(c: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, o, e = c.exec_command(command, timeout=30)
    out = o.read().decode()
    return o.channel.recv_exit_status(), out + e.read().decode()


def pods_on(twin: Twin, node: str) -> set[str]:
    def ips() -> set[str]:
        t = twin.rt.store.lookup("", "v1", "pods")
        return {p["status"]["podIP"] for p in twin.rt.store.iter_objects(t)
                if p["spec"].get("nodeName") == node and not p["spec"].get("hostNetwork")}
    return twin.call(ips)


def test_nodes_at_scale_are_written_on_first_use_and_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    state = tmp_path / "twin"
    with Twin(state, scale=SCALE) as twin:
        nodes = twin.rt.nodes
        assert all(n.files.in_memory for n in nodes.values())
        assert {p.name for p in (state / "nodes").iterdir() if not p.name.startswith(".")} == set(nodes)
        assert all(not any((state / "nodes" / name).iterdir()) for name in nodes)
        server = next(n for n in nodes.values() if n.role == "server")
        agent = "node-0003"
        c = connect(twin, agent)
        try:
            assert run(c, "hostname") == (0, f"{agent}\n")
            rc, out = run(c, f"sudo cat {CONFIG}")
            token = twin.call(lambda: server.read_text("/var/lib/rancher/k3s/server/token")).strip()
            assert rc == 0 and f"token: {token}\n" in out
            rc, out = run(c, f"cat {CONFIG}")
            assert rc == 1 and "Permission denied" in out            # 0600, as the install leaves it
            rc, out = run(c, "sudo ls /var/lib/cni/networks/cbr0")
            leases = set(out.split()) - {"last_reserved_ip.0", "lock"}
            assert rc == 0 and leases == pods_on(twin, agent) and len(leases) > 1000
            sftp = c.open_sftp()
            try:
                assert sftp.open("/etc/hostname").read() == f"{agent}\n".encode()
            finally:
                sftp.close()
        finally:
            c.close()
        # written out for that node only, with its modes
        assert not nodes[agent].files.in_memory
        assert sum(n.files.in_memory for n in nodes.values()) == len(nodes) - 1
        on_disk = state / "nodes" / agent / CONFIG.lstrip("/")
        assert on_disk.stat().st_mode & 0o777 == 0o600
    saved = sorted(p.name for p in (state / "nodes").iterdir() if p.name.endswith(".files"))
    assert saved == sorted(f".{n}.files" for n in nodes if n != agent)
    # another twin on the same state: the same nodes (join token and all)
    with Twin(state, scale=SCALE) as again:
        c = connect(again, "node-0005")
        try:
            rc, out = run(c, f"sudo cat {CONFIG}")
            assert rc == 0 and f"token: {token}\n" in out
        finally:
            c.close()
