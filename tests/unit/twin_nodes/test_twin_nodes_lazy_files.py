"""A node's files held in memory (twin.node.memfs) until something needs the disk: the
tree written out is the tree an eager node writes, every operation answers as the disk
does (errors included), and a twin stopped before the tree was written keeps it."""
from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from twin.clock import Clock
from twin.node import build_nodes
from twin.node.files import NodeFiles
from twin_nodes_cases import CLUSTER, SPECS, run, sh

TOKEN = "K10" + "ab" * 32 + "::server:" + "cd" * 16
PODS = {"server-1": [("10.42.0.5", "e" * 64)], "agent-1": [("10.42.1.7", "a" * 64), ("10.42.1.12", "b" * 64)],
        "agent-2": [("10.42.2.9", "c" * 64)]}


# A server's admin kubeconfig holds a client key made when k3s first starts.
RANDOM_CONTENT = {"etc/rancher/k3s/k3s.yaml"}


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, permission bits, content or link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)),
                            None if rel in RANDOM_CONTENT else p.read_bytes())
    return out


@pytest.fixture
def boot_ids(monkeypatch):
    """/proc/sys/kernel/random/boot_id is random per boot: call the returned function
    before each build for the same sequence."""
    state = {"n": 0}

    def next_id() -> uuid.UUID:
        state["n"] += 1
        return uuid.UUID(int=state["n"])
    monkeypatch.setattr("twin.node.model.uuid.uuid4", next_id)
    return lambda: state.update(n=0)


def build(root: Path, lazy: bool, defer_leases: bool = False) -> dict:
    return build_nodes(SPECS, CLUSTER, root, Clock(speed=0.001), join_token=TOKEN, pods=PODS,
                       lazy_files=lazy, defer_leases=defer_leases)


@pytest.mark.parametrize("defer_leases", [False, True])
def test_the_tree_written_late_is_the_eager_tree(tmp_path, boot_ids, defer_leases):
    boot_ids()
    eager = build(tmp_path / "eager", False)
    boot_ids()
    lazy = build(tmp_path / "lazy", True, defer_leases)
    for name, node in lazy.items():
        assert node.files.in_memory
        assert os.listdir(tmp_path / "lazy" / name) == []    # nothing on the host disk yet
        assert node.listdir("/etc/rancher/k3s") == eager[name].listdir("/etc/rancher/k3s")
        assert node.read("/etc/rancher/k3s/config.yaml") == eager[name].read("/etc/rancher/k3s/config.yaml")
        node.files.materialize()
        assert not node.files.in_memory
        if defer_leases:   # the lease files come when the directory is first reached
            assert node.leases() == dict((ip, sandbox) for ip, sandbox in PODS[name])
        assert tree(tmp_path / "lazy" / name) == tree(tmp_path / "eager" / name)
    assert sorted(p.name for p in (tmp_path / "lazy").iterdir()) == sorted(n for n in lazy)


def test_modification_times_survive_the_write_out(tmp_path):
    node = build(tmp_path / "nodes", True)["agent-1"]
    before = {p: node.files.stamp(p) for p in ("/etc/hostname", "/etc/rancher/k3s/config.yaml")}
    node.files.materialize()
    assert {p: node.files.stamp(p) for p in before} == before
    assert Path(node.files.host_root, "etc/hostname").stat().st_mtime_ns == before["/etc/hostname"][0]


@pytest.mark.parametrize("first", ["sudo cat /etc/rancher/k3s/config.yaml", "ls -a /home/ubuntu",
                                   "sudo ls /var/run", "cat /etc/hostname", "sudo stat -c %a:%s /etc/rancher/k3s/config.yaml", "sudo ls /etc/cni/net.d"])
def test_a_command_sees_the_node_it_would_have_seen(tmp_path, boot_ids, first):
    boot_ids()
    eager = build(tmp_path / "eager", False)["agent-1"]
    boot_ids()
    lazy = build(tmp_path / "lazy", True)["agent-1"]
    a, b = sh(eager, first), sh(lazy, first)
    assert (b.rc, b.stdout, b.stderr) == (a.rc, a.stdout, a.stderr)
    assert a.rc == 0 and not lazy.files.in_memory     # a command's path needs the disk


def _ops(files: NodeFiles) -> list:
    """The same operations on a NodeFiles: what each answered or raised."""
    out: list = []

    def do(fn, *args, **kw):
        try:
            out.append(fn(*args, **kw))
        except OSError as e:     # the error's type is part of the answer, not its host path
            out.append(type(e).__name__)

    do(files.mkdir, "/etc/x/y", 0o700)
    do(files.write, "/etc/x/y/f", "one\n")
    do(files.write, "/etc/x/y/f", b"two\n", append=True)
    do(files.write, "/etc/x/g", "g", 0o600)
    do(files.chmod, "/etc/x/y", 0o750)
    do(files.read, "/etc/x/y/f")
    do(files.read, "/etc/x/missing")
    do(files.write, "/etc/x/g/under-a-file", "z")
    do(files.mkdir, "/etc/x/g")
    do(files.listdir, "/etc/x")
    do(files.exists, "/etc/x/y/f")
    do(files.is_dir, "/etc/x/y")
    do(files.symlink, "/var/run", "../run")
    do(files.remove, "/etc/x/y")
    do(files.clear, "/etc")
    do(files.listdir, "/etc")
    do(files.stamp, "/etc/none")
    return out


@pytest.mark.parametrize("on_disk_first", [False, True])
def test_operations_answer_as_the_disk_does(tmp_path, on_disk_first):
    disk_events: list = []
    mem_events: list = []
    disk = NodeFiles(tmp_path / "disk", lambda e, **i: disk_events.append((e, i)))
    mem = NodeFiles(tmp_path / "mem", lambda e, **i: mem_events.append((e, i)), lazy=True)
    assert mem.in_memory and not disk.in_memory
    if on_disk_first:
        mem.materialize()
    assert _ops(mem) == _ops(disk)
    assert mem_events == disk_events
    mem.materialize()
    assert tree(tmp_path / "mem") == tree(tmp_path / "disk")


def test_a_twin_stopped_before_the_write_out_keeps_the_files(tmp_path):
    first = build(tmp_path / "nodes", True)
    first["agent-1"].write("/etc/kept", "yes\n", 0o600)
    for n in first.values():
        run(n.close())
    sidecars = sorted(p.name for p in (tmp_path / "nodes").iterdir() if p.name.startswith("."))
    assert sidecars == [".agent-1.files", ".agent-2.files", ".server-1.files"]
    # another `twin up` on the same state: the same nodes (their join token and all), in memory
    again = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), lazy_files=True)
    agent = again["agent-1"]
    assert agent.files.in_memory and f"token: {TOKEN}" in agent.read_text("/etc/rancher/k3s/config.yaml")
    assert agent.read("/etc/kept") == b"yes\n"
    assert sh(agent, "sudo stat -c %a /etc/kept").stdout == b"600\n"
    assert not (tmp_path / "nodes" / ".agent-1.files").exists()
    # a twin without the option reads the saved tree too (it is the node's state) and
    # writes it out at once
    eager_again = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001))
    assert not eager_again["agent-2"].files.in_memory
    assert f"token: {TOKEN}" in (tmp_path / "nodes" / "agent-2" / "etc/rancher/k3s/config.yaml").read_text()


def test_deferred_leases_of_a_node_in_memory_survive_a_restart(tmp_path):
    first = build(tmp_path / "nodes", True, defer_leases=True)
    assert not any(p.name.endswith("pending-leases.json") for p in (tmp_path / "nodes").iterdir())
    for n in first.values():
        run(n.close())           # the twin stops: the files and the lease list are kept
    again = build_nodes(SPECS, CLUSTER, tmp_path / "nodes", Clock(speed=0.001), lazy_files=True, pods={})
    for name, node in again.items():
        assert node.files.in_memory
        assert node.leases() == dict(PODS[name])
