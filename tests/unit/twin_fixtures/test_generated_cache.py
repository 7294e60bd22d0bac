"""The generated-cluster cache: the cluster read back is the cluster generated, keyed by
size, seed and the generator's source, never trusted when damaged, off with
PHASE22_TWIN_CACHE=off."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from twin.fixtures import generate, generated_cache

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """A per-test cache folder in which the small clusters here count."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PHASE22_TWIN_CACHE", raising=False)
    monkeypatch.setattr(generated_cache, "CACHE_FROM_PODS", 0)
    return tmp_path / "xdg" / "phase22-twin" / "fixtures" / "generated"


def builds(monkeypatch) -> list[tuple]:
    """Count the calls of the generator proper."""
    module = importlib.import_module("twin.fixtures.generate")   # the module, not the function
    calls: list[tuple] = []
    real = module._generate

    def counting(nodes, pods, seed):
        calls.append((nodes, pods, seed))
        return real(nodes, pods, seed)

    monkeypatch.setattr(module, "_generate", counting)
    return calls


def test_the_cached_cluster_is_the_generated_one(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("PHASE22_TWIN_CACHE", "off")
    reference = generate(4, 300, seed=3)
    monkeypatch.delenv("PHASE22_TWIN_CACHE")
    calls = builds(monkeypatch)
    cold = generate(4, 300, seed=3)
    warm = generate(4, 300, seed=3)
    assert calls == [(4, 300, 3)]                     # the second came from the folder
    assert len(list(cache.glob("*.marshal"))) == 1
    for fx in (cold, warm):
        assert fx.cluster == reference.cluster and fx.nodes == reference.nodes
        assert fx.objects == reference.objects and fx.source == reference.source
    assert warm.objects is not cold.objects
    warm.objects[0]["metadata"]["name"] = "changed"   # each caller owns its copy
    assert generate(4, 300, seed=3).objects[0] == reference.objects[0]


def test_size_seed_and_generator_source_are_the_key(cache: Path, monkeypatch) -> None:
    calls = builds(monkeypatch)
    generate(4, 300, seed=0)
    generate(4, 300, seed=1)
    generate(4, 301, seed=0)
    assert len(calls) == 3
    monkeypatch.setattr(generated_cache, "source_digest", lambda: "f" * 64)   # the generator changed
    generate(4, 300, seed=0)
    assert len(calls) == 4
    assert len(list(cache.glob("*.marshal"))) == generated_cache.KEEP        # the oldest pruned


def test_a_damaged_file_is_generated_again(cache: Path, monkeypatch) -> None:
    calls = builds(monkeypatch)
    first = generate(4, 300)
    path = generated_cache.cache_path(4, 300, 0)
    path.write_bytes(path.read_bytes()[:1000])
    assert generate(4, 300).objects == first.objects and len(calls) == 2
    assert generate(4, 300).objects == first.objects and len(calls) == 2    # replaced


def test_off_and_small_clusters_are_not_cached(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("PHASE22_TWIN_CACHE", "off")
    generate(4, 300)
    assert not cache.exists()
    monkeypatch.delenv("PHASE22_TWIN_CACHE")
    monkeypatch.setattr(generated_cache, "CACHE_FROM_PODS", 5000)
    generate(4, 300)
    assert not cache.exists()
