"""Tripwires that prove a run opens no network connection it must not open (the
bad-input and security tests; their conftests import the fixtures from here).

Two layers, because the runbook runs in several processes:

* ``net_tripwire`` (autouse) patches this test process's ``socket`` so that a connect
  to anything but loopback is recorded and refused, and fails the test afterwards.
* ``tripwire_env`` is an environment for child processes (the ``runbook`` CLI and the
  papermill kernels it or papermill starts): a ``sitecustomize.py`` on ``PYTHONPATH``
  installs the same patch at interpreter start-up, appending every attempt to a log file
  the test reads back. ``HOME`` points at an empty folder so that ``~/.kube/config`` and
  ``~/.ssh`` of the params files resolve to nothing.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from pathlib import Path

import pytest

SITECUSTOMIZE = r'''
# Installed by tests/helpers/tripwires.py: record and refuse network connections.
import ipaddress as _ip, json as _json, os as _os, socket as _socket

_LOG = _os.environ.get("RUNBOOK_TRIPWIRE_LOG")
_MODE = _os.environ.get("RUNBOOK_TRIPWIRE_MODE", "all")   # all | non-loopback


def _loopback(host):
    h = str(host).strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return _ip.ip_address(h.split("%")[0]).is_loopback
    except ValueError:
        return False


def _trip(kind, host, port):
    if _MODE != "all" and _loopback(host):
        return
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(_json.dumps({"pid": _os.getpid(), "kind": kind, "host": str(host),
                                  "port": port}) + "\n")
    raise ConnectionRefusedError(f"TRIPWIRE: {kind} to {host}:{port} during a bad-input test")


_orig_connect = _socket.socket.connect
_orig_connect_ex = _socket.socket.connect_ex
_orig_create = _socket.create_connection
_orig_gai = _socket.getaddrinfo


def _connect(self, address):
    if self.family in (_socket.AF_INET, _socket.AF_INET6):
        _trip("connect", address[0], address[1])
    return _orig_connect(self, address)


def _connect_ex(self, address):
    if self.family in (_socket.AF_INET, _socket.AF_INET6):
        _trip("connect_ex", address[0], address[1])
    return _orig_connect_ex(self, address)


def _create(address, *a, **kw):
    _trip("create_connection", address[0], address[1])
    return _orig_create(address, *a, **kw)


def _gai(host, port, *a, **kw):
    if host is not None:
        _trip("getaddrinfo", host, port)
    return _orig_gai(host, port, *a, **kw)


if _LOG:
    _socket.socket.connect = _connect
    _socket.socket.connect_ex = _connect_ex
    _socket.create_connection = _create
    _socket.getaddrinfo = _gai
'''


def _is_loopback(host: object) -> bool:
    h = str(host).strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def net_tripwire(monkeypatch: pytest.MonkeyPatch):
    """Refuse (and fail the test on) any non-loopback connection from this process."""
    attempts: list[str] = []
    orig_connect = socket.socket.connect
    orig_create = socket.create_connection

    def connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect {address!r}")
            raise ConnectionRefusedError(f"TRIPWIRE: connect to {address!r}")
        return orig_connect(self, address)

    def create_connection(address, *a, **kw):  # type: ignore[no-untyped-def]
        if not _is_loopback(address[0]):
            attempts.append(f"create_connection {address!r}")
            raise ConnectionRefusedError(f"TRIPWIRE: create_connection to {address!r}")
        return orig_create(address, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    assert not attempts, f"non-loopback connections attempted: {attempts}"


class Tripwire:
    """A child-process environment whose connection attempts land in ``log``."""

    def __init__(self, root: Path, mode: str) -> None:
        self.dir = root / "tripwire"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.log = root / "tripwire.jsonl"
        self.home = root / "home"
        self.home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
        path = [str(self.dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update(PYTHONPATH=os.pathsep.join(path), RUNBOOK_TRIPWIRE_LOG=str(self.log),
                   RUNBOOK_TRIPWIRE_MODE=mode, HOME=str(self.home), PYTHONUNBUFFERED="1")
        env.pop("RUNBOOK_PARAMS", None)
        self.env = env

    def attempts(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text().splitlines() if ln.strip()]

    def armed(self) -> bool:
        """True when a child interpreter really loads the tripwire (checked once per test)."""
        import subprocess

        probe = ("import socket\n"
                 "try:\n    socket.create_connection(('10.0.0.2', 22), timeout=0.01)\n"
                 "except ConnectionRefusedError as e:\n    print('TRIPWIRE' in str(e))\n")
        out = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True,
                             text=True, timeout=60).stdout.strip()
        ok = out == "True" and any(a["host"] == "10.0.0.2" for a in self.attempts())
        self.log.unlink(missing_ok=True)
        return ok


@pytest.fixture
def tripwire(tmp_path: Path) -> Tripwire:
    """Child processes may open no TCP/UDP connection at all (not even loopback)."""
    t = Tripwire(tmp_path, "all")
    assert t.armed(), "the tripwire sitecustomize is not loaded by child interpreters"
    return t


@pytest.fixture
def kernel_tripwire(tmp_path: Path) -> Tripwire:
    """For papermill: the kernel talks to its client on loopback; nothing else may connect."""
    t = Tripwire(tmp_path, "non-loopback")
    assert t.armed(), "the tripwire sitecustomize is not loaded by child interpreters"
    return t
