"""The parsed-fixture cache: keyed by the file's content, kept on disk between processes,
never trusted when damaged, and off with PHASE22_TWIN_CACHE=off."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from twin.fixtures import files

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DOC = """cluster: {name: tiny, k3s_version: v1.31.4+k3s1, cluster_cidr: 10.42.0.0/16,
          service_cidr: 10.43.0.0/16, cluster_dns: 10.43.0.10, server_url: "https://10.0.0.2:6443"}
nodes:
- {name: a, role: server, ip: 10.0.0.2, pod_cidr: 10.42.0.0/24, kernel: 6.8.0-51-generic,
   os_image: Ubuntu 24.04.1 LTS}
objects:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: one, namespace: default}, data: {k: v}}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """A fresh per-test cache: its own folder, an empty in-process cache, parses counted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PHASE22_TWIN_CACHE", raising=False)
    monkeypatch.setattr(files, "_parsed_cache", {})
    monkeypatch.setattr(files, "DISK_CACHE_MIN_BYTES", 0)    # the small documents here count
    return tmp_path / "xdg" / "phase22-twin" / "fixtures"


def parses(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = yaml.load

    def counting(stream, Loader):
        calls.append(1)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(files.yaml, "load", counting)
    return calls


def test_a_new_process_reads_the_parsed_file_from_disk(cache: Path, tmp_path: Path, monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC)
    calls = parses(monkeypatch)
    first = files.load(fx_file)
    assert len(calls) == 1 and len(list(cache.glob("*.marshal"))) == 1
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    monkeypatch.setattr(files, "_parsed_cache", {})          # as in a new process
    again = files.load(fx_file)
    assert len(calls) == 1
    assert again.objects == first.objects and again.objects is not first.objects
    again.objects[0]["data"]["k"] = "changed"                # each caller has its own copy
    assert files.load(fx_file).objects[0]["data"] == {"k": "v"} and len(calls) == 1


def test_changed_content_is_parsed_again(cache: Path, tmp_path: Path, monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC)
    calls = parses(monkeypatch)
    files.load(fx_file)
    fx_file.write_text(DOC.replace("{k: v}", "{k: w}"))
    assert files.load(fx_file).objects[0]["data"] == {"k": "w"}
    assert len(calls) == 2 and len(list(cache.glob("*.marshal"))) == 2


def test_a_damaged_cache_file_is_parsed_again_and_replaced(cache: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC)
    files.load(fx_file)
    [blob] = cache.glob("*.marshal")
    blob.write_bytes(b"\x00not marshal")
    monkeypatch.setattr(files, "_parsed_cache", {})
    calls = parses(monkeypatch)
    assert files.load(fx_file).objects[0]["metadata"]["name"] == "one"
    assert len(calls) == 1 and blob.read_bytes() != b"\x00not marshal"


def test_off_switch_and_an_unwritable_cache_still_load(cache: Path, tmp_path: Path, monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC)
    monkeypatch.setenv("PHASE22_TWIN_CACHE", "off")
    assert files.load(fx_file).cluster["name"] == "tiny"
    assert not cache.exists()
    monkeypatch.delenv("PHASE22_TWIN_CACHE")
    monkeypatch.setattr(files, "_parsed_cache", {})
    (tmp_path / "xdg").write_text("a file where the cache folder would go")
    assert files.load(fx_file).cluster["name"] == "tiny"


def test_data_marshal_cannot_keep_is_loaded_but_not_cached(cache: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC.replace("data: {k: v}", "data: {k: v}, stamp: 2026-01-01T00:00:00Z"))
    calls = parses(monkeypatch)
    files.load(fx_file)
    files.load(fx_file)
    assert len(calls) == 2 and not list(cache.glob("*.marshal"))


def test_small_files_stay_out_of_the_folder_and_it_keeps_the_latest(cache: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    fx_file = tmp_path / "fx.yaml"
    fx_file.write_text(DOC)
    monkeypatch.setattr(files, "DISK_CACHE_MIN_BYTES", len(DOC) + 1)
    files.load(fx_file)
    assert not cache.exists()                                # parsed in milliseconds anyway
    monkeypatch.setattr(files, "DISK_CACHE_MIN_BYTES", 0)
    monkeypatch.setattr(files, "DISK_CACHE_KEEP", 2)
    for k in range(4):
        before = set(cache.glob("*.marshal"))
        fx_file.write_text(DOC.replace("{k: v}", f"{{k: v{k}}}"))
        files.load(fx_file)
        for new in set(cache.glob("*.marshal")) - before:    # distinct times on any file system
            os.utime(new, (1_000_000 + k, 1_000_000 + k))
    assert len(list(cache.glob("*.marshal"))) == 2
    calls = parses(monkeypatch)
    monkeypatch.setattr(files, "_parsed_cache", {})
    assert files.load(fx_file).objects[0]["data"] == {"k": "v3"} and calls == []   # the latest kept
