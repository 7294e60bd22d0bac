"""Command-line parsing and the node command set (no sockets)."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from twin.node import ShellRefused, tokenize
from twin_nodes_cases import run, sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


# ---------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("line", [
    "cat /etc/hostname | grep x", "cat a > b", "cat < a", "true; reboot", "true && reboot",
    "true || reboot", "sleep 1 &", "echo `id`", "echo $(id)", "echo $HOME", 'echo "$HOME"',
    "echo ${HOME}", "(true)", "cat a\nreboot", "cat a 2>/dev/null"])
def test_shell_constructs_are_refused(line):
    with pytest.raises(ShellRefused):
        tokenize(line)


def test_quoting_is_bash_like():
    words = tokenize("""sudo tee -a '/tmp/a b' "x|y" c\\ d '' 'it''s' """)
    assert [w.text for w in words] == ["sudo", "tee", "-a", "/tmp/a b", "x|y", "c d", "", "its"]
    assert not any(w.glob for w in words)
    # quoted metacharacters are data, not shell syntax
    assert [w.text for w in tokenize("echo '$(id) `x` ; > |'")] == ["echo", "$(id) `x` ; > |"]


def test_glob_only_when_unquoted():
    w = tokenize("rm /var/lib/cni/networks/cbr0/* '/tmp/*'")
    assert w[1].glob and w[1].pattern.endswith("/*")
    assert not w[2].glob and w[2].text == "/tmp/*"
    assert tokenize("ls ~/x")[1].text == "/home/ubuntu/x"
    assert tokenize("echo a # comment")[-1].text == "a"


def test_unterminated_quote():
    with pytest.raises(ShellRefused, match="unexpected EOF"):
        tokenize("cat 'oops")


def test_pipe_gives_rc2_with_clear_message(nodes):
    rc, out, err = sh(nodes["agent-1"], "sudo iptables-save | grep -v KUBE")
    assert rc == 2 and out == b""
    assert b"does not run a shell" in err and b"filter in Python" in err


def test_unknown_command_127(nodes):
    rc, _, err = sh(nodes["agent-1"], "telnet example.com 80")
    assert rc == 127 and err == b"bash: line 1: telnet: command not found\n"
    rc, _, err = sh(nodes["agent-1"], "sudo nft list ruleset")
    assert rc == 1 and b"sudo: nft: command not found" in err
    rc, _, err = sh(nodes["agent-1"], "bash -c 'cat /etc/hostname | wc'")
    assert rc == 2 and b"does not run a shell" in err


# ------------------------------------------------------------------ commands
def test_system_facts(nodes):
    a2 = nodes["agent-2"]
    assert sh(a2, "uname -r") == (0, b"6.8.0-45-generic\n", b"")
    assert sh(a2, "hostname").stdout == b"agent-2\n"
    assert sh(a2, "/usr/bin/hostname").stdout == b"agent-2\n"
    out = sh(a2, "k3s --version").stdout.decode()
    assert out.startswith("k3s version v1.30.6+k3s1 (") and "go version" in out
    assert sh(a2, "true").rc == 0
    assert b'VERSION_ID="22.04"' in sh(a2, "cat /etc/os-release").stdout


def test_cat_tee_and_permissions(nodes):
    a = nodes["agent-1"]
    rc, out, err = sh(a, "cat /etc/rancher/k3s/config.yaml")
    assert rc == 1 and b"Permission denied" in err and out == b""   # 0600 root
    rc, out, _ = sh(a, "sudo -n cat /etc/rancher/k3s/config.yaml")
    assert rc == 0 and b"server: https://10.0.0.2:6443" in out and b"token: K10" in out
    assert sh(a, "cat /nope").stderr == b"cat: /nope: No such file or directory\n"
    assert b"Is a directory" in sh(a, "cat /etc").stderr
    # tee needs root outside the home directory and /tmp, echoes its input
    rc, _, err = sh(a, "tee /etc/rancher/k3s/config.yaml.d/x.yaml", b"a: 1\n")
    assert rc == 1 and b"Permission denied" in err
    assert sh(a, "sudo tee /etc/motd", b"hello\n") == (0, b"hello\n", b"")
    assert sh(a, "sudo tee -a /etc/motd", b"again\n").rc == 0
    assert a.read_text("/etc/motd") == "hello\nagain\n"
    assert sh(a, "tee /tmp/t", b"x").rc == 0 and a.read("/tmp/t") == b"x"
    assert sh(a, "cat", b"stdin!").stdout == b"stdin!"


def test_stdin_is_read_only_when_needed(nodes):
    a = nodes["agent-1"]

    async def never():  # a client that never closes stdin
        await asyncio.sleep(3600)
        return b""
    res = run(asyncio.wait_for(a.exec("cat /etc/hostname", stdin=never), 5))
    assert res.stdout == b"agent-1\n"


def test_cp_mv_rm_mkdir_test_ls(nodes):
    a = nodes["agent-1"]
    cfg = "/etc/rancher/k3s/config.yaml"
    assert sh(a, f"cp -p {cfg} /tmp/c").rc == 1          # ubuntu cannot read it
    assert sh(a, f"sudo cp -p {cfg} {cfg}.bak").rc == 0
    assert a.read(cfg + ".bak") == a.read(cfg)
    assert oct(a.host_path(cfg + ".bak").stat().st_mode & 0o777) == "0o600"
    rc, _, err = sh(a, f"cp {cfg}.bak /etc/x")
    assert rc == 1 and b"Permission denied" in err
    assert sh(a, "sudo mkdir -p /var/backups/phase22/a").rc == 0
    assert sh(a, "sudo mkdir /var/backups/phase22").stderr.endswith(b"File exists\n")
    assert sh(a, "sudo mkdir -p /var/backups/phase22").rc == 0
    assert sh(a, f"sudo cp {cfg}.bak /var/backups/phase22/").rc == 0
    assert a.exists("/var/backups/phase22/config.yaml.bak")
    assert sh(a, f"sudo mv {cfg}.bak /root/keep").rc == 0
    assert not a.exists(cfg + ".bak") and a.exists("/root/keep")
    assert sh(a, "test -f /etc/hostname").rc == 0
    assert sh(a, "test -d /etc/hostname").rc == 1
    assert sh(a, "test -e /etc/cni/net.d").rc == 0 and sh(a, "test -d /etc/cni/net.d").rc == 0
    assert sh(a, "test -e /var/lib/rancher/nothing").rc == 1
    assert sh(a, "ls -1 /etc/cni/net.d") == (0, b"", b"")           # exists, empty
    assert sh(a, "ls /nope").rc == 2
    long = sh(a, "ls -la /var/lib/cni/networks/cbr0").stdout.decode()
    assert "last_reserved_ip.0" in long and long.splitlines()[0].startswith("total")
    # rm with globs (expanded by the node, like bash does), -f, -r
    leases = sh(a, "ls -1 /var/lib/cni/networks/cbr0").stdout.decode().split()
    assert "last_reserved_ip.0" in leases and len(leases) >= 4
    assert sh(a, "rm -f /var/lib/cni/networks/cbr0/*").rc == 1        # not as ubuntu
    assert sh(a, "sudo rm -f /var/lib/cni/networks/cbr0/*").rc == 0
    assert a.listdir("/var/lib/cni/networks/cbr0") == []
    assert sh(a, "sudo rm /nope").stderr == b"rm: cannot remove '/nope': No such file or directory\n"
    assert sh(a, "sudo rm -f /nope").rc == 0
    assert b"Is a directory" in sh(a, "sudo rm /var/backups").stderr
    assert sh(a, "sudo rm -rf /var/backups").rc == 0 and not a.exists("/var/backups")
    assert b"dangerous" in sh(a, "sudo rm -rf /").stderr and a.exists("/etc/hostname")
    # a quoted glob is a literal name
    assert sh(a, "sudo rm '/etc/*'").rc == 1 and a.exists("/etc/hostname")


def test_sha256sum_and_stat(nodes):
    a = nodes["agent-1"]
    want = hashlib.sha256(a.read("/etc/hostname")).hexdigest()
    assert sh(a, "sha256sum /etc/hostname").stdout.decode() == f"{want}  /etc/hostname\n"
    assert sh(a, "sha256sum /etc/rancher/k3s/config.yaml").rc == 1
    assert sh(a, "sudo sha256sum /etc/rancher/k3s/config.yaml").rc == 0
    assert sh(a, "stat -c %a:%U /etc/rancher/k3s/config.yaml").stdout == b"600:root\n"


def test_paths_cannot_escape_the_root(nodes, tmp_path):
    a = nodes["agent-1"]
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret")
    assert sh(a, "sudo cat /../../../../../../" + str(outside)).rc == 1
    assert a.host_path("/../../etc/hostname") == a.host_path("/etc/hostname")
    # a symlink planted in the root that points outside is refused
    (a.root / "etc" / "evil").symlink_to(outside)
    rc, out, err = sh(a, "sudo cat /etc/evil")
    assert rc == 1 and out == b"" and b"Permission denied" in err
    with pytest.raises(PermissionError):
        a.read("/etc/evil")


def test_systemctl(nodes):
    a, s = nodes["agent-1"], nodes["server-1"]
    assert sh(a, "systemctl is-active k3s-agent") == (0, b"active\n", b"")
    assert sh(a, "systemctl is-active k3s").rc == 3
    assert sh(s, "systemctl is-active k3s.service").stdout == b"active\n"
    rc, _, err = sh(a, "systemctl restart k3s-agent")
    assert rc == 1 and b"Interactive authentication required" in err
    rc, _, err = sh(a, "sudo systemctl restart k3s")
    assert rc == 5 and b"Unit k3s.service not found" in err
    assert sh(a, "sudo systemctl stop k3s-agent").rc == 0
    assert sh(a, "systemctl is-active k3s-agent") == (3, b"inactive\n", b"")
    assert b"inactive (dead)" in sh(a, "systemctl status k3s-agent").stdout
    assert sh(a, "sudo systemctl start k3s-agent").rc == 0
    assert a.service_active("k3s-agent")
    assert b"active (running)" in sh(a, "systemctl status k3s-agent --no-pager").stdout
    assert sh(a, "systemctl status nope").rc == 4


def test_ip_link(nodes):
    a = nodes["agent-1"]
    out = sh(a, "ip -o link show").stdout.decode().splitlines()
    names = [line.split(": ")[1].split("@")[0] for line in out]
    assert names[:4] == ["lo", "eth0", "flannel.1", "cni0"]
    assert any(n.startswith("veth") for n in names)
    fl = next(line for line in out if ": flannel.1:" in line)
    assert "<BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450" in fl and "\\    link/ether " in fl
    assert sh(a, "ip link delete flannel.1").rc == 2                   # not root
    assert sh(a, "sudo ip link delete flannel.1") == (0, b"", b"")
    rc, _, err = sh(a, "sudo ip link delete flannel.1")
    assert rc == 1 and err == b'Cannot find device "flannel.1"\n'
    assert "flannel.1" not in a.interfaces
    assert sh(a, "ip -o link show dev cni0").stdout.count(b"\n") == 1
    assert sh(a, "ip link show flannel.1").rc == 1


def test_journalctl_and_exec_result(nodes):
    a = nodes["agent-1"]
    res = sh(a, "journalctl -u k3s-agent --no-pager -n 50")
    assert res.ok and b"k3s agent is up and running" in res.stdout
    assert res.rc == 0 and isinstance(res.stdout, bytes)


def test_chmod(nodes):
    a = nodes["agent-1"]
    assert sh(a, "sudo tee /etc/x", b"1").rc == 0
    assert sh(a, "chmod 600 /etc/x").rc == 1                          # root's file
    assert sh(a, "sudo chmod 600 /etc/x").rc == 0
    assert sh(a, "stat -c %a /etc/x").stdout == b"600\n"
    assert sh(a, "sudo chmod g+r,o+r /etc/x").rc == 0
    assert sh(a, "stat -c %a /etc/x").stdout == b"644\n"
    assert sh(a, "sudo chmod u=rwx /etc/x").rc == 0
    assert sh(a, "stat -c %a /etc/x").stdout == b"744\n"
    assert sh(a, "sudo chmod nope /etc/x").stderr == b"chmod: invalid mode: 'nope'\n"
    assert sh(a, "sudo chmod 600 /nope").rc == 1


def test_iptables_counters_roundtrip(nodes):
    a = nodes["agent-1"]
    save = sh(a, "sudo iptables-save -c").stdout.decode()
    assert "[0:0] -A KUBE-ROUTER-INPUT" in save
    kept = "\n".join(l for l in save.splitlines() if "KUBE-ROUTER" not in l) + "\n"
    assert sh(a, "sudo iptables-restore -c", kept.encode()).rc == 0
    assert "KUBE-ROUTER" not in a.iptables_save()


@pytest.mark.parametrize("line", [
    "sudo -n timeout -k 5 60 iptables-save -t nat", "a  b\tc", "", "  ", "x=1 y",
    "-a --b=c d,e f@g 10% +1 a:b", "cat /etc/hostname"])
def test_plain_lines_split_as_the_full_tokenizer_splits_them(line, monkeypatch):
    # most lines hold no quote, glob or shell syntax and skip the character loop: the
    # words are the same as the loop's
    import re
    from twin.node import shell
    fast = tokenize(line)
    monkeypatch.setattr(shell, "_PLAIN", re.compile(r"(?!)"))     # matches nothing
    assert fast == tokenize(line)
