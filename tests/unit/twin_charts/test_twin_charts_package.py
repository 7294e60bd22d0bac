"""package_chart and load_chart_archive: deterministic archives that helm reads, and
clear errors for files that are not chart archives."""
from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from twin.chartrepo import (STANDIN_CHART_DIR, ChartArchiveError, build_index,
                            load_chart_archive, package_chart)
from twin_charts_helpers import PHASE22_VALUES, helm_template, objects

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def test_package_is_deterministic(tmp_path):
    a = package_chart(STANDIN_CHART_DIR, tmp_path / "a")
    b = package_chart(STANDIN_CHART_DIR, tmp_path / "b")
    assert a.name == b.name == "cilium-1.19.3.tgz"
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(n.startswith("cilium/") for n in names)
    assert {"cilium/Chart.yaml", "cilium/values.yaml", "cilium/values.schema.json",
            "cilium/templates/_helpers.tpl", "cilium/templates/cilium-configmap.yaml"} <= set(names)
    assert {m.mtime for m in members} == {315532800}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_package_skips_ignored_files(tmp_path):
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (chart / ".helmignore").write_text("*.bak\n")
    (chart / "templates" / "old.bak").write_text("x")
    (chart / "__pycache__").mkdir()
    (chart / "__pycache__" / "x.pyc").write_bytes(b"x")
    out = package_chart(chart, tmp_path / "out")
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
    assert names == ["demo/.helmignore", "demo/Chart.yaml", "demo/templates/cm.yaml"]


def test_helm_reads_the_packaged_chart(tmp_path, helm_bin, tool_env):
    tgz = package_chart(STANDIN_CHART_DIR, tmp_path)
    p = subprocess.run([helm_bin, "show", "chart", str(tgz)], env=tool_env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    meta = yaml.safe_load(p.stdout)
    assert (meta["name"], str(meta["version"]), str(meta["appVersion"])) == ("cilium", "1.19.3", "1.19.3")
    objs = objects(helm_template(helm_bin, tool_env, tgz).stdout)
    assert ("DaemonSet", "kube-system", "cilium") in objs


def test_load_packaged_archive(tmp_path):
    tgz = package_chart(STANDIN_CHART_DIR, tmp_path)
    chart = load_chart_archive(tgz, source="stand-in")
    assert (chart.name, chart.version, chart.app_version) == ("cilium", "1.19.3", "1.19.3")
    assert chart.digest == hashlib.sha256(tgz.read_bytes()).hexdigest()
    assert chart.filename == "cilium-1.19.3.tgz"


def test_load_official_archive(cilium_chart):
    chart = load_chart_archive(cilium_chart, source=f"official {cilium_chart}")
    assert (chart.name, chart.version, chart.app_version) == ("cilium", "1.19.3", "1.19.3")
    # the digest the Cilium repository's index.yaml publishes for 1.19.3
    assert chart.digest == "c8e05df9eabf9019e62f5103e1f35814b4f1b43916f88519e5ae4e36c69aa42b"


def _targz(path: Path, files: dict[str, bytes]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


CHART = b"apiVersion: v2\nname: cilium\nversion: 1.19.3\n"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.tgz", "does not exist"),
    (lambda d: _write(d / "plain.tgz", b"not gzip at all"), "not a gzip file"),
    (lambda d: _write(d / "gz.tgz", gzip.compress(b"just text, no tar")),
     "cannot read as a gzip tar archive"),
    (lambda d: _targz(d / "two.tgz", {"a/Chart.yaml": CHART, "b/x": b""}), "one top-level directory"),
    (lambda d: _targz(d / "nochart.tgz", {"cilium/values.yaml": b"a: 1\n"}), "no cilium/Chart.yaml"),
    (lambda d: _targz(d / "other.tgz", {"nginx/Chart.yaml": b"apiVersion: v2\nname: nginx\nversion: 1.0.0\n"}),
     "expected 'cilium'"),
    (lambda d: _targz(d / "nover.tgz", {"cilium/Chart.yaml": b"name: cilium\n"}), "no name or version"),
], ids=["missing", "not-gzip", "gzip-not-tar", "two-top-dirs", "no-chart-yaml", "other-chart",
        "no-version"])
def test_bad_archives_are_refused_clearly(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ChartArchiveError) as e:
        load_chart_archive(path, source="official")
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


def test_build_index_shape(tmp_path):
    chart = load_chart_archive(package_chart(STANDIN_CHART_DIR, tmp_path), source="stand-in")
    idx = build_index([chart], "http://127.0.0.1:1234", "2026-01-01T00:00:00Z")
    assert idx["apiVersion"] == "v1"
    (entry,) = idx["entries"]["cilium"]
    assert entry["urls"] == ["http://127.0.0.1:1234/charts/cilium-1.19.3.tgz"]
    assert entry["digest"] == chart.digest
    assert (entry["name"], entry["version"], entry["appVersion"]) == ("cilium", "1.19.3", "1.19.3")
    assert entry["created"] == "2026-01-01T00:00:00Z"
    yaml.safe_dump(idx)  # serialisable as is


def test_phase22_values_fixture_is_the_reference_set():
    v = yaml.safe_load(PHASE22_VALUES.read_text())
    assert v == {
        "cluster": {"name": "default"},
        "hubble": {"relay": {"enabled": True}, "ui": {"enabled": True}},
        "ipam": {"mode": "kubernetes"},
        "k8sServiceHost": "10.0.0.2", "k8sServicePort": 6443,
        "kubeProxyReplacement": True, "operator": {"replicas": 1},
        "routingMode": "tunnel", "tunnelProtocol": "vxlan",
    }
