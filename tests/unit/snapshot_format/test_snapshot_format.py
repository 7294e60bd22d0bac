"""The archive format: what is written reads back; what is not a snapshot is refused clearly."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

import snapshot_format as sf

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _snap() -> sf.Snapshot:
    s = sf.Snapshot(cluster={"name": "demo", "flannel_backend": "host-gw"},
                    nodes=[{"name": "s1", "role": "server"}, {"name": "a1", "role": "agent"}],
                    secrets=[{"namespace": "a", "name": "tls", "type": "kubernetes.io/tls", "labels": {}, "keys": 2}],
                    params={"params": {"target": {"name": "demo"}}, "values": "ipam: {mode: kubernetes}\n"},
                    manifest={"source": {"target": "demo", "kind": "real"}, "masked": ["everything"]})
    s.add_objects("v1", "Namespace", "namespaces", False, [{"metadata": {"name": "a"}}])
    s.add_objects("apps/v1", "Deployment", "deployments", True,
                  [{"metadata": {"name": "web", "namespace": "a"}, "spec": {"replicas": 2}}])
    return s


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy an archive, passing each member (name, bytes) through ``change``."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            name, data = change(m.name, tin.extractfile(m).read())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_written_archive_reads_back_the_same(tmp_path: Path) -> None:
    out = tmp_path / "demo.tar.gz"
    manifest = sf.write(out, _snap())
    assert out.stat().st_mode & 0o777 == 0o600
    back = sf.read(out)
    assert back.cluster == {"name": "demo", "flannel_backend": "host-gw"}
    assert [n["name"] for n in back.nodes] == ["s1", "a1"]
    assert back.items("Deployment") == [{"metadata": {"name": "web", "namespace": "a"}, "spec": {"replicas": 2}}]
    assert back.items("Deployment", group="apps") and not back.items("Deployment", group="")
    assert back.secrets[0]["type"] == "kubernetes.io/tls"
    assert back.params["values"].startswith("ipam")
    assert back.manifest == manifest and manifest["version"] == sf.VERSION
    assert manifest["counts"] == {"Deployment": 1, "Namespace": 1, "Secret": 1}
    assert manifest["source"] == {"target": "demo", "kind": "real"} and manifest["masked"] == ["everything"]
    assert set(manifest["documents"]) == {"cluster.json", "nodes.json", "secrets.json", "params.json",
                                          "objects/core_v1_namespaces.json", "objects/apps_v1_deployments.json"}
    with tarfile.open(out) as tar:
        assert tar.getnames()[0] == "manifest.json", "the manifest comes first"
        assert all(m.mode == 0o600 for m in tar.getmembers())


def test_an_unpacked_directory_reads_like_the_archive(tmp_path: Path) -> None:
    out = tmp_path / "demo.tar.gz"
    sf.write(out, _snap())
    folder = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(folder, filter="data")
    a, b = sf.read(out), sf.read(folder)
    assert (a.cluster, a.nodes, a.objects, a.secrets) == (b.cluster, b.nodes, b.objects, b.secrets)
    assert sf.read_manifest(folder)["format"] == sf.FORMAT


def test_a_hand_written_directory_needs_no_checksums(tmp_path: Path) -> None:
    d = tmp_path / "topology"
    (d / "objects").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"format": sf.FORMAT, "version": "1.0"}))
    (d / "cluster.json").write_text(json.dumps({"name": "ha"}))
    (d / "nodes.json").write_text(json.dumps([{"name": f"s{i}", "role": "server"} for i in range(3)]))
    (d / "objects" / "core_v1_namespaces.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "items": [{"metadata": {"name": "default"}}]}))
    snap = sf.read(d)
    assert [n["name"] for n in snap.nodes] == ["s0", "s1", "s2"] and snap.secrets == []
    assert snap.objects["objects/core_v1_namespaces.json"]["resource"] == "namespaces"
    assert snap.objects["objects/core_v1_namespaces.json"]["namespaced"] is False


def test_a_newer_minor_reads_another_major_is_refused_naming_both(tmp_path: Path) -> None:
    out = tmp_path / "demo.tar.gz"
    sf.write(out, _snap())

    def version(v: str):
        def change(name: str, data: bytes):
            if name == "manifest.json":
                doc = json.loads(data)
                doc["version"] = v
                data = json.dumps(doc).encode()
            return name, data
        return change

    _rewrite(out, tmp_path / "minor.tar.gz", version("1.7"))
    assert sf.read(tmp_path / "minor.tar.gz").cluster["name"] == "demo"
    _rewrite(out, tmp_path / "major.tar.gz", version("2.0"))
    for reader in (sf.read, sf.read_manifest):
        with pytest.raises(sf.SnapshotVersionError) as e:
            reader(tmp_path / "major.tar.gz")
        assert str(tmp_path / "major.tar.gz") in str(e.value)
        assert "snapshot format version 2.0 is not supported" in str(e.value)
        assert "reads version 1.x" in str(e.value) and e.value.hint


@pytest.mark.parametrize("case,make,words", [
    ("missing", lambda d: d / "nope.tar.gz", "snapshot archive not found"),
    ("not-an-archive", lambda d: _write(d / "x.tar.gz", b"just text\n"), "not a snapshot archive"),
    ("gzip-not-tar", lambda d: _write(d / "x.tar.gz", gzip.compress(b"{}")), "not a snapshot archive"),
    ("no-manifest", lambda d: _tar(d / "x.tar.gz", {"cluster.json": b"{}"}), "no manifest.json"),
    ("other-format", lambda d: _tar(d / "x.tar.gz", {"manifest.json": b'{"format": "velero-backup"}'}),
     "this is not a cluster snapshot"),
    ("bad-version", lambda d: _tar(d / "x.tar.gz", {"manifest.json": json.dumps(
        {"format": sf.FORMAT, "version": "one"}).encode()}), "is not MAJOR.MINOR"),
])
def test_what_is_not_a_snapshot_is_refused_with_one_clear_message(tmp_path: Path, case, make, words) -> None:
    path = make(tmp_path)
    with pytest.raises(sf.SnapshotFormatError) as e:
        sf.read(path)
    assert words in e.value.problem and e.value.path == str(path)
    with pytest.raises(sf.SnapshotFormatError):
        sf.read_manifest(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_changed_document_fails_its_checksum(tmp_path: Path) -> None:
    out = tmp_path / "demo.tar.gz"
    sf.write(out, _snap())
    _rewrite(out, tmp_path / "changed.tar.gz",
             lambda n, d: (n, d.replace(b'"replicas":2', b'"replicas":9')))
    with pytest.raises(sf.SnapshotFormatError, match="does not match its sha256"):
        sf.read(tmp_path / "changed.tar.gz")


def test_a_secret_entry_with_data_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "leaky"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": sf.FORMAT, "version": "1.0"}))
    (d / "cluster.json").write_text('{"name": "c"}')
    (d / "nodes.json").write_text('[{"name": "n"}]')
    (d / "secrets.json").write_text(json.dumps([{"name": "s", "type": "Opaque", "data": {"k": "dg=="}}]))
    with pytest.raises(sf.SnapshotFormatError, match="this entry holds data"):
        sf.read(d)


def test_objects_need_names(tmp_path: Path) -> None:
    s = _snap()
    s.add_objects("v1", "Pod", "pods", True, [{"metadata": {"namespace": "a"}}])
    sf.write(tmp_path / "x.tar.gz", s)
    with pytest.raises(sf.SnapshotFormatError, match=r"core_v1_pods.json: items\[0\]: metadata.name"):
        sf.read(tmp_path / "x.tar.gz")
