"""The rollback's start of several k3s servers (embedded etcd): which groups it applies
to, and what a person is told about a server that does not come up."""
from __future__ import annotations

from types import SimpleNamespace

from runbook import etcd_quorum


def test_several_servers_is_a_group_of_two_or_more_servers_only() -> None:
    server, agent = SimpleNamespace(role="server"), SimpleNamespace(role="agent")
    assert etcd_quorum.several_servers([server, server, server])
    assert not etcd_quorum.several_servers([server])
    assert not etcd_quorum.several_servers([server, agent])


def test_a_pending_server_is_explained_by_its_unit_state() -> None:
    activating = etcd_quorum.pending_reason("sly-fox", "activating", 3)
    # activating is a member waiting for quorum or a k3s systemd keeps restarting: both named
    assert activating.startswith("sly-fox: k3s activating (waiting for etcd's quorum, 2 of 3 servers")
    assert "journalctl -u k3s" in activating
    assert etcd_quorum.pending_reason("set-hog", "failed", 5) == \
        "set-hog: k3s failed (read `journalctl -u k3s` there, then `systemctl start k3s`)"
    assert etcd_quorum.pending_reason("sly-owl", "inactive", 3) == \
        "sly-owl: k3s inactive (the queued start did not run: `systemctl status k3s` there)"
