"""docs/snapshot-format.md describes every field an archive holds.

The fields are harvested from a real archive (the shipped minicloud snapshot, taken by
``runbook snapshot`` of a twin) and from the records a snapshot writes in the cases
minicloud does not show (a node not read over SSH, a Secret): a field the writer adds
without documenting it fails here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

import snapshot_format
from runbook.snapshot_hosts import unreachable
from runbook.snapshot_objects import secret_entry
from twin.fixtures.snapshot_fixture import MINICLOUD_SNAPSHOT

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

DOC = Path(__file__).resolve().parents[3] / "docs" / "snapshot-format.md"
#: fields whose keys are data (names, paths, kinds), not fields of the format
DATA_KEYED = {"documents", "counts", "derived", "labels", "capacity", "allocatable", "taints",
              "addresses", "host.k3s_config_files", "host.iptables", "host.cni", "params", "items"}


def _paths(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, list):
        for v in value:
            yield from _paths(v, prefix)
        return
    if not isinstance(value, dict):
        return
    for k, v in value.items():
        path = f"{prefix}{k}"
        yield path
        if path not in DATA_KEYED:
            yield from _paths(v, path + ".")


def _section(doc: str, title: str) -> str:
    m = re.search(rf"^##+ `?{re.escape(title)}`?.*?$(.*?)(?=^## )", doc, re.S | re.M)
    assert m, f"docs/snapshot-format.md has no section for {title}"
    return m.group(1)


def _documented(section: str, path: str) -> bool:
    parts = path.split(".")
    quoted = set(re.findall(r"`([^`]+)`", section))
    return path in quoted or (parts[0] in quoted and parts[-1] in quoted)


def test_every_field_of_an_archive_is_described() -> None:
    doc = DOC.read_text()
    snap = snapshot_format.read(MINICLOUD_SNAPSHOT)
    docs = {
        "manifest.json": [snap.manifest],
        "cluster.json": [snap.cluster],
        "nodes.json": snap.nodes + [{"host": unreachable("not in the params")}],
        "secrets.json": [secret_entry({"metadata": {"name": "s", "namespace": "n"}, "type": "Opaque"})],
        "params.json": [snap.params],
        "objects/<group>_<version>_<plural>.json": list(snap.iter_documents()),
    }
    missing = []
    for title, values in docs.items():
        section = _section(doc, title)
        fields = sorted({p for v in values for p in _paths(v)})
        assert fields, title
        missing += [f"{title}: {p}" for p in fields if not _documented(section, p)]
    assert missing == [], "fields the format document does not describe:\n" + "\n".join(missing)


def test_the_document_names_the_version_it_describes() -> None:
    doc = DOC.read_text()
    assert doc.splitlines()[0] == f"# The cluster snapshot format (version {snapshot_format.VERSION})"
    assert f"| {snapshot_format.VERSION} |" in doc and snapshot_format.FORMAT in doc
