"""The topology archives in tests/fixtures/topologies/ equal a fresh build of build.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import snapshot_format

BUILD = Path(__file__).resolve().parents[2] / "fixtures" / "topologies" / "build.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("topology_build", BUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _build_module()


@pytest.mark.parametrize("name", sorted(build.TOPOLOGIES))
def test_archive_is_what_build_py_makes(name):
    fresh = build.TOPOLOGIES[name]()
    shipped = snapshot_format.read(build.path_of(name))
    assert shipped.cluster == fresh.cluster
    assert shipped.nodes == fresh.nodes
    assert shipped.secrets == fresh.secrets and shipped.params is None
    assert shipped.objects == fresh.objects, f"regenerate: .venv/bin/python {BUILD.relative_to(BUILD.parents[3])} {name}"


def test_each_archive_is_small():
    for name in build.TOPOLOGIES:
        counts = snapshot_format.read_manifest(build.path_of(name))["counts"]
        assert counts.get("Pod", 0) <= 20, name
