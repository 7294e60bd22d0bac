"""The real helm against the twin's chart repository over HTTP on 127.0.0.1:
repo add, update, search, pull and template, for the stand-in and the official archive."""
from __future__ import annotations

import hashlib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from twin.chartrepo import ChartArchiveError, STANDIN_CHART_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[3]
PHASE22_VALUES = REPO_ROOT / "tests" / "fixtures" / "cilium-values-phase22.yaml"


def helm(helm_bin: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([helm_bin, *args], env=env, capture_output=True, text=True, timeout=90)
    # helm's stderr never holds chart secrets; rendered stdout is not echoed
    assert p.returncode == 0, f"helm {' '.join(args[:3])} failed ({p.returncode}): {p.stderr}"
    return p


def _get(url: str) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), url  # loopback only
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _exercise(helm_bin: str, env: dict[str, str], url: str, dest: Path) -> dict:
    """The runbook's own sequence against a repository; returns the rendered objects."""
    helm(helm_bin, env, "repo", "add", "twin", url)
    helm(helm_bin, env, "repo", "update")
    found = yaml.safe_load(helm(helm_bin, env, "search", "repo", "twin/cilium", "--version",
                                "1.19.3", "-o", "yaml").stdout)
    assert [(r["name"], r["version"], r["app_version"]) for r in found] == [
        ("twin/cilium", "1.19.3", "1.19.3")]
    dest.mkdir()
    helm(helm_bin, env, "pull", "twin/cilium", "--version", "1.19.3", "-d", str(dest))
    assert [p.name for p in dest.iterdir()] == ["cilium-1.19.3.tgz"]
    out = helm(helm_bin, env, "template", "cilium", "twin/cilium", "--version", "1.19.3",
               "-n", "kube-system", "-f", str(PHASE22_VALUES)).stdout
    objs = {}
    for d in yaml.safe_load_all(out):
        if d:
            objs[(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])] = d
    return objs


def test_standin_served_and_installed_by_real_helm(start_repo, helm_bin, tool_env, tmp_path):
    h = start_repo()
    assert h.url.startswith("http://127.0.0.1:")
    assert h.rt.options["cilium_chart_source"] == "stand-in"
    assert (h.rt.state_dir / "charts" / "cilium-1.19.3.tgz").is_file()
    assert "stand-in" in h.repo.describe() and h.url in h.repo.describe()

    objs = _exercise(helm_bin, tool_env, h.url, tmp_path / "pulled")
    pulled = (tmp_path / "pulled" / "cilium-1.19.3.tgz").read_bytes()
    assert pulled == (h.rt.state_dir / "charts" / "cilium-1.19.3.tgz").read_bytes()
    # the stand-in's own marker, which the official chart does not carry
    show = yaml.safe_load(helm(helm_bin, tool_env, "show", "chart", "twin/cilium").stdout)
    assert show["annotations"]["phase22.twin/stand-in"] == "true"
    cfg = objs[("ConfigMap", "kube-system", "cilium-config")]["data"]
    assert (cfg["kube-proxy-replacement"], cfg["routing-mode"], cfg["ipam"]) == ("true", "tunnel", "kubernetes")
    assert ("DaemonSet", "kube-system", "cilium") in objs and len(objs) == 36


def test_official_archive_served_byte_for_byte(start_repo, helm_bin, tool_env, tmp_path, cilium_chart):
    h = start_repo(cilium_chart)
    assert h.rt.options["cilium_chart_source"] == f"official {cilium_chart}"
    objs = _exercise(helm_bin, tool_env, h.url, tmp_path / "pulled")
    pulled = (tmp_path / "pulled" / "cilium-1.19.3.tgz").read_bytes()
    assert pulled == cilium_chart.read_bytes()
    assert not (h.rt.state_dir / "charts" / "cilium-1.19.3.tgz").exists()  # served in place
    show = yaml.safe_load(helm(helm_bin, tool_env, "show", "chart", "twin/cilium").stdout)
    assert "phase22.twin/stand-in" not in (show.get("annotations") or {})
    assert ("Deployment", "kube-system", "hubble-ui") in objs and len(objs) == 36


def test_index_and_routes(start_repo):
    h = start_repo()
    status, body = _get(h.url + "/index.yaml")
    assert status == 200
    idx = yaml.safe_load(body)
    assert idx["apiVersion"] == "v1"
    (entry,) = idx["entries"]["cilium"]
    assert set(entry) >= {"name", "version", "appVersion", "urls", "digest", "created"}
    status, tgz = _get(entry["urls"][0])
    assert status == 200
    assert hashlib.sha256(tgz).hexdigest() == entry["digest"]
    assert _get(h.url + "/charts/nginx-1.0.0.tgz")[0] == 404
    assert _get(h.url + "/healthz") == (200, b"ok\n")
    assert (h.rt.state_dir / "charts" / "index.yaml").read_text() == body.decode()


def test_restart_serves_the_same_digest(start_repo):
    a = start_repo()
    b = start_repo()
    da = yaml.safe_load(_get(a.url + "/index.yaml")[1])["entries"]["cilium"][0]["digest"]
    db = yaml.safe_load(_get(b.url + "/index.yaml")[1])["entries"]["cilium"][0]["digest"]
    assert da == db
    assert a.url != b.url


def test_bad_official_archive_fails_start_clearly(tmp_path):
    import asyncio

    from twin.chartrepo import ChartRepo
    from twin_charts_harness import FakeRuntime

    bogus = tmp_path / "cilium.tgz"
    bogus.write_bytes((STANDIN_CHART_DIR / "values.yaml").read_bytes())
    rt = FakeRuntime(state_dir=tmp_path, options={"cilium_chart": str(bogus)})
    with pytest.raises(ChartArchiveError, match="not a gzip file"):
        asyncio.run(ChartRepo().start(rt))
    assert "charts" not in rt.endpoints
