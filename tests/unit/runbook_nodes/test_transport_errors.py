"""Mocks at the paramiko boundary only: each paramiko exception comes out as ours."""
from __future__ import annotations

import socket

import paramiko
import pytest

from runbook import nodes as nodes_mod
from runbook.errors import HostKeyError, NodeError
from runbook.nodes import Node

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class FakeClient:
    connect_exc: BaseException | None = None
    session_exc: BaseException | None = None
    calls = 0

    def __init__(self):
        self._keys = paramiko.HostKeys()

    def load_host_keys(self, path):
        pass

    def get_host_keys(self):
        return self._keys

    def set_missing_host_key_policy(self, p):
        pass

    def connect(self, **kw):
        type(self).calls += 1
        assert kw["allow_agent"] is False and kw["look_for_keys"] is False
        if self.connect_exc is not None:
            raise self.connect_exc

    def get_transport(self):
        client = self

        class T:
            def is_active(self):
                return True

            def open_session(self, timeout=None):
                raise client.session_exc

        return T()

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    cls = type("C", (FakeClient,), {"calls": 0, "connect_exc": None, "session_exc": None})
    monkeypatch.setattr(nodes_mod.paramiko, "SSHClient", cls)
    return cls


def node(tmp_path):
    return Node("n1", "agent", "127.0.0.1", 2222, "ops", None, str(tmp_path / "kh"),
                kind="twin", connect_attempts=2, retry_backoff=0.0)


@pytest.mark.parametrize("exc", [
    paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 2222): ConnectionRefusedError()}),
    socket.timeout("timed out"),
    ConnectionResetError("reset"),
])
def test_retryable_connect_errors(fake, tmp_path, exc):
    fake.connect_exc = exc
    with pytest.raises(NodeError) as ei:
        node(tmp_path).run("true")
    assert fake.calls == 2 and "after 2 attempts" in str(ei.value)
    assert ei.value.__cause__ is exc


@pytest.mark.parametrize("exc,etype,text", [
    (paramiko.AuthenticationException("no"), NodeError, "authentication failed"),
    (paramiko.SSHException("kex failed"), NodeError, "negotiation"),
    (paramiko.BadHostKeyException("h", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()),
     HostKeyError, "MISMATCH"),
    (OSError("no route"), NodeError, "cannot connect"),
])
def test_fatal_connect_errors(fake, tmp_path, exc, etype, text):
    fake.connect_exc = exc
    with pytest.raises(etype) as ei:
        node(tmp_path).run("true")
    assert fake.calls == 1 and text in str(ei.value) and ei.value.__cause__ is exc


@pytest.mark.parametrize("exc", [paramiko.SSHException("channel closed"), EOFError(), OSError("x")])
def test_channel_errors(fake, tmp_path, exc):
    fake.session_exc = exc
    with pytest.raises(NodeError) as ei:
        node(tmp_path).run("uname %s", "-r")
    assert ei.value.command == "uname -r" and ei.value.__cause__ is exc
