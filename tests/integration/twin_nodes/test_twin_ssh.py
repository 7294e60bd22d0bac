"""paramiko (the runbook's client) against the twin's SSH servers over real sockets."""
from __future__ import annotations

import os
import stat
import time
import subprocess

import paramiko
import pytest

from helpers.required_tools import require_command
from twin_nodes_harness import run_cmd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_files_keys_and_endpoints(nodes_twin):
    t = nodes_twin
    ports = t.rt.endpoints["ssh"]
    assert set(ports) == {"server-1", "agent-1"} and len(set(ports.values())) == 2
    key = t.ssh.client_key
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (key.parent / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    lines = [l for l in t.ssh.known_hosts.read_text().splitlines() if not l.startswith("#")]
    assert sorted(l.split()[0] for l in lines) == sorted(f"[127.0.0.1]:{p}" for p in ports.values())
    assert all(l.split()[1] == "ssh-ed25519" for l in lines)
    assert "known_hosts" in t.ssh.describe()


def test_exec_sudo_cat_and_stdin(nodes_twin):
    c = nodes_twin.connect("agent-1")
    try:
        rc, out, err = run_cmd(c, "sudo cat /etc/rancher/k3s/config.yaml")
        assert rc == 0 and b"server: https://10.0.0.2:6443" in out and b"token: K10" in out
        rc, out, err = run_cmd(c, "cat /etc/rancher/k3s/config.yaml")
        assert rc == 1 and b"Permission denied" in err
        rc, out, _ = run_cmd(c, "sudo tee -a /etc/rancher/k3s/config.yaml", b"flannel-backend: none\n")
        assert rc == 0 and out == b"flannel-backend: none\n"
        rc, _, _ = run_cmd(c, "sudo systemctl restart k3s-agent")
        assert rc == 0
        rc, out, _ = run_cmd(c, "journalctl -u k3s-agent")
        assert b"Unknown flag --flannel-backend found in config.yaml, skipping" in out
        assert run_cmd(c, "ip -o link show flannel.1")[0] == 0       # agents keep flannel
        assert run_cmd(c, "uname -r")[1] == b"5.15.0-105-generic\n"
        rc, _, err = run_cmd(c, "sudo iptables-save | grep KUBE-SVC")
        assert rc == 2 and b"does not run a shell" in err
        assert run_cmd(c, "wget x")[0] == 127
    finally:
        c.close()


def test_iptables_roundtrip_over_ssh(nodes_twin):
    """The runbook's cleanup: save, filter in Python, restore from stdin."""
    t = nodes_twin
    s = t.connect("server-1")
    try:
        assert run_cmd(s, "sudo tee -a /etc/rancher/k3s/config.yaml",
                       b"disable-kube-proxy: true\n")[0] == 0
        assert run_cmd(s, "sudo systemctl restart k3s")[0] == 0
        rc, save, _ = run_cmd(s, "sudo iptables-save")
        assert rc == 0 and b"KUBE-SVC-" in save
        kept = b"\n".join(l for l in save.splitlines() if b"KUBE-SVC" not in l and b"KUBE-SEP" not in l)
        rc, _, err = run_cmd(s, "sudo iptables-restore", kept + b"\n")
        assert rc == 0, err
        assert b"KUBE-SVC" not in run_cmd(s, "sudo iptables-save")[1]
    finally:
        s.close()


def test_sftp_read_and_write_rules(nodes_twin, tmp_path):
    c = nodes_twin.connect("server-1")
    try:
        sftp = c.open_sftp()
        assert sftp.open("/etc/hostname").read() == b"server-1\n"
        assert sftp.normalize(".") == "/home/ubuntu"
        assert "10-flannel.conflist" in sftp.listdir("/var/lib/rancher/k3s/agent/etc/cni/net.d")
        with pytest.raises(PermissionError):
            sftp.open("/var/lib/rancher/k3s/server/token").read()
        with pytest.raises(PermissionError):
            sftp.open("/etc/rancher/k3s/new.yaml", "w")
        with sftp.open("/home/ubuntu/config.yaml.new", "w") as f:
            f.write("flannel-backend: none\n")
        node = nodes_twin.rt.nodes["server-1"]
        assert node.read_text("/home/ubuntu/config.yaml.new") == "flannel-backend: none\n"
        assert sftp.stat("/etc/hostname").st_uid == 0
        local = tmp_path / "up.txt"
        local.write_bytes(b"payload\n")
        sftp.put(str(local), "/tmp/up.txt")          # put checks the size with stat
        assert node.read("/tmp/up.txt") == b"payload\n"
        sftp.get("/etc/os-release", str(tmp_path / "os-release"))
        assert (tmp_path / "os-release").read_text().startswith("PRETTY_NAME=")
        attrs = {a.filename: a for a in sftp.listdir_attr("/var/lib/rancher/k3s/agent/etc/flannel")}
        assert "net-conf.json" in attrs and " root " in attrs["net-conf.json"].longname
        with pytest.raises(PermissionError):
            sftp.remove("/etc/hostname")
        with pytest.raises(PermissionError):
            sftp.listdir("/var/lib/rancher/k3s/server")        # 0700 root
        with pytest.raises(IOError):
            sftp.symlink("/etc/hostname", "/home/ubuntu/link")
        with pytest.raises(IOError):
            sftp.open("/../../../../etc/passwd").read()   # maps to the node's /etc/passwd
        sftp.close()
    finally:
        c.close()


def test_wrong_key_and_password_refused(nodes_twin, tmp_path):
    t = nodes_twin
    other = paramiko.Ed25519Key.from_private_key_file(str(t.ssh.client_key))  # sanity: loads
    assert other.get_name() == "ssh-ed25519"
    import asyncssh
    wrong = tmp_path / "wrong"
    wrong.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
    os.chmod(wrong, 0o600)
    with pytest.raises(paramiko.AuthenticationException):
        t.connect("agent-1", key_filename=str(wrong))
    with pytest.raises(paramiko.AuthenticationException):
        t.connect("agent-1", key_filename=None, password="ubuntu")
    with pytest.raises(paramiko.AuthenticationException):
        t.connect("agent-1", username="root")


def test_unknown_host_key_is_rejected(nodes_twin, tmp_path):
    t = nodes_twin
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.RejectPolicy())   # empty known_hosts
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        c.connect("127.0.0.1", port=t.rt.endpoints["ssh"]["agent-1"], username="ubuntu",
                  key_filename=str(t.ssh.client_key), look_for_keys=False, allow_agent=False)
    # another node's key under this port is a mismatch, not a match
    ports = t.rt.endpoints["ssh"]
    swapped = t.ssh.known_hosts.read_text().replace(f"[127.0.0.1]:{ports['agent-1']}", "X") \
        .replace(f"[127.0.0.1]:{ports['server-1']}", f"[127.0.0.1]:{ports['agent-1']}")
    kh = tmp_path / "kh"
    kh.write_text(swapped)
    c = paramiko.SSHClient()
    c.load_host_keys(str(kh))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        c.connect("127.0.0.1", port=ports["agent-1"], username="ubuntu",
                  key_filename=str(t.ssh.client_key), look_for_keys=False, allow_agent=False)


def _fails(client: paramiko.SSHClient, command: str) -> bool:
    """True when the command cannot run: no channel, or no exit status (-1)."""
    try:
        rc, _, _ = run_cmd(client, command)
    except (paramiko.SSHException, EOFError, OSError):
        return True
    return rc == -1


def test_ssh_down_fault_and_set_down(nodes_twin):
    t = nodes_twin
    live = t.connect("agent-1")
    assert run_cmd(live, "hostname")[1] == b"agent-1\n"
    # the fault switch alone (as the admin endpoint sets it): new connections fail
    t.rt.faults.ssh_down.add("agent-1")
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        t.connect("agent-1")
    assert _fails(live, "hostname")        # the open session's next command fails
    time.sleep(0.3)                         # the watcher then closes the listener
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        t.connect("agent-1")
    t.rt.faults.set("ssh_down", [])         # as the admin endpoint clears it
    time.sleep(0.3)
    again = t.connect("agent-1")
    assert run_cmd(again, "hostname")[0] == 0
    # set_down: connection refused at TCP level, sessions dropped; then back on the same port
    port = t.rt.endpoints["ssh"]["agent-1"]
    t.call(t.ssh.set_down("agent-1"))
    assert "agent-1" in t.rt.faults.ssh_down
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        t.connect("agent-1")
    assert _fails(again, "hostname")
    assert run_cmd(t.connect("server-1"), "hostname")[1] == b"server-1\n"   # others unaffected
    t.call(t.ssh.set_down("agent-1", False))
    assert t.rt.endpoints["ssh"]["agent-1"] == port
    c = t.connect("agent-1")
    assert run_cmd(c, "hostname")[1] == b"agent-1\n"
    c.close()


def test_command_latency_model_waits_before_each_command(nodes_twin, monkeypatch):
    import twin.ssh

    t = nodes_twin
    waited = []
    real_sleep = twin.ssh.asyncio.sleep

    async def recording_sleep(delay, *a, **kw):
        waited.append(delay)
        return await real_sleep(delay, *a, **kw)

    monkeypatch.setattr(twin.ssh.asyncio, "sleep", recording_sleep)
    c = t.connect("agent-1")
    try:
        t.rt.faults.set("ssh_command_latency", 0.02)
        assert run_cmd(c, "hostname")[1] == b"agent-1\n"      # same answer, later
        assert waited.count(0.02) == 1
        t.rt.faults.set("ssh_command_latency", 0)
        assert run_cmd(c, "hostname")[0] == 0
        assert waited.count(0.02) == 1                       # off again: no wait
        for bad in (-1, 61):
            with pytest.raises(ValueError, match="ssh_command_latency"):
                t.rt.faults.set("ssh_command_latency", bad)
        assert t.rt.faults.as_dict()["ssh_command_latency"] == 0
    finally:
        t.rt.faults.set("ssh_command_latency", 0)
        c.close()


def test_reboot_drops_the_session(nodes_twin):
    t = nodes_twin
    c = t.connect("agent-1")
    run_cmd(c, "sudo ip link delete flannel.1")
    rc, _, _ = run_cmd(c, "sudo reboot")
    assert rc == 0
    deadline = time.monotonic() + 20
    # `reboot` returns before the machine goes down (as systemd's does): a reconnect right
    # away can still reach the old boot, so first wait for the old session to drop
    while not _fails(c, "hostname"):
        assert time.monotonic() < deadline, "agent-1 never went down after `sudo reboot`"
        time.sleep(0.05)
    while time.monotonic() < deadline:   # down for REBOOT_SECONDS (scaled), then back
        try:
            c2 = t.connect("agent-1")
            if run_cmd(c2, "systemctl is-active k3s-agent")[0] == 0:
                break
        except (paramiko.SSHException, EOFError, OSError):
            pass
        time.sleep(0.1)
    else:
        pytest.fail("agent-1 did not come back after reboot")
    assert t.rt.nodes["agent-1"].boot_count == 2
    assert _fails(c, "hostname")                               # the old session was dropped
    assert run_cmd(c2, "ip -o link show flannel.1")[0] == 0     # flannel re-created it


def test_openssh_client_accepts_known_hosts(nodes_twin):
    require_command("ssh", "openssh-client")
    t = nodes_twin
    port = t.rt.endpoints["ssh"]["server-1"]
    p = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(port), "-i", str(t.ssh.client_key),
         "-o", f"UserKnownHostsFile={t.ssh.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "ubuntu@127.0.0.1", "hostname"],
        capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"server-1\n"
