"""Fixtures of the add-on tests; the harness itself is in twin_addons_harness.py (a module
name of its own: every test folder has a conftest.py, so `from conftest import` is ambiguous)."""
from __future__ import annotations

from typing import Any

import pytest

from twin_addons_harness import AddonTwin, _start

@pytest.fixture
def addon_twin(tmp_path_factory: pytest.TempPathFactory):
    """A fresh twin with the add-ons (destructive tests)."""
    at = _start(tmp_path_factory)
    yield at
    at.twin.stop()


@pytest.fixture
def twin_factory(tmp_path_factory: pytest.TempPathFactory):
    """Start twins with options (faults at start, SSH servers); all stopped at the end."""
    started: list[AddonTwin] = []

    def make(**kw: Any) -> AddonTwin:
        at = _start(tmp_path_factory, **kw)
        started.append(at)
        return at
    yield make
    for at in started:
        at.twin.stop()


@pytest.fixture
def lh(addon_twin, kubectl_bin: str, tool_env: dict):
    """A fresh add-on twin that ``kubectl`` (the real binary) talks to, for the Longhorn tests."""
    at = addon_twin
    at.kubectl_bin = kubectl_bin
    at.env = dict(tool_env, KUBECONFIG=str(at.twin.kubeconfig))
    return at
