"""Fixture: a scripted loopback API server (see cluster_fakeapi.py)."""
from __future__ import annotations

import pytest

from cluster_fakeapi import FakeAPI, start_server


@pytest.fixture
def fake_api():
    api = FakeAPI()
    srv = start_server(api)
    yield api
    srv.shutdown()
    srv.server_close()
