"""Fixtures for the twin store unit tests: a fresh store with a namespace or two."""
from __future__ import annotations

import pytest

from twin.store import Store
from twin_store_helpers import ns_obj


@pytest.fixture
def store() -> Store:
    s = Store(history_per_resource=50, seed=7)
    s.create(ns_obj("default"))
    s.create(ns_obj("other"))
    return s


@pytest.fixture
def pods(store: Store):
    return store.lookup("", "v1", "pods")
