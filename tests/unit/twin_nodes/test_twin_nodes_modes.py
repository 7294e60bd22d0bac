"""The node model sets every mode it creates itself: the process umask changes nothing.

Permissions for ``ubuntu`` follow the host files' mode bits, and a Jupyter kernel runs
with an owner-only umask; the twin must behave the same under any umask.
"""
from __future__ import annotations

import doctest
import importlib
import os
import stat
from pathlib import Path

import pytest

from twin.clock import Clock
from twin.node import build_nodes
from twin_nodes_cases import CLUSTER, SPECS, sh

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

# What a runbook does to files as ubuntu and as root (mkdir -p, tee, cp into /etc).
COMMANDS = [
    ("mkdir -p /tmp/a/b", b""),
    ("tee /tmp/a/b/f", b"data\n"),
    ("sudo mkdir -p /etc/x/y", b""),
    ("sudo tee /etc/x/y/z", b"z\n"),
    ("sudo cp /tmp/a/b/f /etc/f", b""),
    ("sudo cp -r /tmp/a /etc/a", b""),
    ("sudo mkdir /etc/rancher/k3s/config.yaml.d", b""),
    ("sudo tee -a /etc/rancher/k3s/config.yaml.d/10-cni.yaml", b"flannel-backend: none\n"),
]


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def build_and_use(nodes_dir: Path) -> dict:
    nodes = build_nodes(SPECS, CLUSTER, nodes_dir, Clock(speed=0.001))
    for node in nodes.values():
        for line, stdin in COMMANDS:
            res = sh(node, line, stdin)
            assert res.rc == 0, (line, res.stderr)
    return nodes


@pytest.mark.parametrize("umask", [0o077, 0o027, 0o002], ids=oct)
def test_modes_do_not_follow_the_process_umask(tmp_path, umask):
    build_and_use(tmp_path / "reference" / "nodes")          # the test process's umask: 022
    os.umask(umask)                                           # restored by tests/conftest.py
    nodes = build_and_use(tmp_path / "masked" / "nodes")
    for name, node in nodes.items():
        assert modes(tmp_path / "masked" / "nodes" / name) == modes(tmp_path / "reference" / "nodes" / name)
        # ... so ubuntu reads what it reads on a real node.
        for line in ("ls /", "cat /etc/systemd/system/" + node.unit + ".service", "cat /etc/f",
                     "ls /etc/x/y", "cat /etc/a/b/f",
                     "cat /var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"):
            res = sh(node, line)
            assert res.rc == 0, (name, line, res.stderr)
    assert oct(modes(tmp_path / "masked" / "nodes" / "server-1")["etc/x/y"]) == "0o755"


@pytest.mark.parametrize("name", ["twin.node.iptables", "twin.node.links", "twin.node.k3s_config",
                                  "twin.node.shell", "twin.node.seed"])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.failed == 0 and result.attempted > 0, name
