"""The twin's Helm chart repository: ``index.yaml`` and chart archives over plain HTTP.

The runbook installs Cilium with the real ``helm`` from a chart repository, so the twin
serves one on loopback. It serves exactly one chart, ``cilium``:

* **the official archive** when ``rt.options["cilium_chart"]`` names one (for example
  an archive from ``helm pull cilium/cilium --version 1.19.3``, see ``docs/charts.md``).
  It is served byte for byte from where it is, never copied into the project;
* **the stand-in** otherwise: ``twin/charts/cilium`` is packaged at start into
  ``<state_dir>/charts/cilium-<version>.tgz`` with :func:`package_chart`, so no
  ``helm package`` is needed at run time.

Routes (server bound to 127.0.0.1 on an ephemeral port)::

    GET /index.yaml                 apiVersion v1 repository index
    GET /charts/<name>-<ver>.tgz    the archive (application/gzip)
    GET /healthz                    "ok"

The repository URL goes to ``rt.endpoints["charts"]`` and the source to
``rt.options["cilium_chart_source"]`` ("official <path>" or "stand-in").

Example:
    >>> from twin.chartrepo import package_chart, STANDIN_CHART_DIR
    >>> package_chart(STANDIN_CHART_DIR, "/tmp/out").name      # doctest: +SKIP
    'cilium-1.19.3.tgz'
"""
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import logging
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .errors import TwinInputError

log = logging.getLogger("twin.charts")

#: The stand-in chart's directory (a Helm chart: Chart.yaml, values.yaml, templates/).
STANDIN_CHART_DIR = Path(__file__).resolve().parent / "charts" / "cilium"

#: mtime given to every member of a packaged chart: a fixed date keeps the archive,
#: and so its digest in index.yaml, identical from one start to the next.
FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z

#: Files never packaged (besides the patterns of the chart's own .helmignore).
_ALWAYS_IGNORED = ("__pycache__", "*.pyc", "*.pyo", "*~", "*.swp", ".DS_Store")


class ChartArchiveError(TwinInputError):
    """A chart archive or chart directory cannot be served (not a chart, wrong chart)."""


@dataclass(frozen=True)
class ServedChart:
    """One chart archive the repository serves.

    Attributes:
        name: chart name from Chart.yaml (``cilium``).
        version: chart version from Chart.yaml.
        app_version: appVersion from Chart.yaml ("" when absent).
        filename: the archive's name under ``/charts/``.
        digest: sha256 of the archive bytes (hex), as ``helm repo index`` writes it.
        source: "official <path>" or "stand-in".
        metadata: the whole Chart.yaml mapping, copied into the index entry as helm does.
        data: the archive bytes.
    """

    name: str
    version: str
    app_version: str
    filename: str
    digest: str
    source: str
    metadata: dict[str, Any] = field(repr=False)
    data: bytes = field(repr=False)


# -- packaging -----------------------------------------------------------------------

def _ignore_patterns(chart_dir: Path) -> list[str]:
    patterns = list(_ALWAYS_IGNORED)
    helmignore = chart_dir / ".helmignore"
    if helmignore.is_file():
        for line in helmignore.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def _ignored(rel: Path, patterns: list[str]) -> bool:
    # A pattern matches a path component (like "__pycache__") or the relative path.
    for pat in patterns:
        if fnmatch.fnmatch(rel.as_posix(), pat):
            return True
        if any(fnmatch.fnmatch(part, pat) for part in rel.parts):
            return True
    return False


def _read_chart_yaml(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ChartArchiveError(f"{where}: Chart.yaml is not valid YAML: {e}") from e
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise ChartArchiveError(f"{where}: Chart.yaml has no name or version")
    meta["version"] = str(meta["version"])
    if "appVersion" in meta and meta["appVersion"] is not None:
        meta["appVersion"] = str(meta["appVersion"])
    return meta


def package_chart(chart_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Package a chart directory into ``<out_dir>/<name>-<version>.tgz``, deterministically.

    The layout is what ``helm package`` produces (every file under a top-level
    ``<name>/`` directory), with sorted entries, a fixed mtime, uid/gid 0 and a gzip
    header without a timestamp, so the same directory always gives the same bytes and
    therefore the same digest in ``index.yaml``.

    Args:
        chart_dir: a Helm chart directory (with Chart.yaml).
        out_dir: where to write the archive (created if missing).

    Returns:
        The archive's path.

    Raises:
        ChartArchiveError: ``chart_dir`` is not a chart directory.

    Example:
        >>> package_chart(STANDIN_CHART_DIR, tmp_path)       # doctest: +SKIP
        PosixPath('.../cilium-1.19.3.tgz')
    """
    chart_dir = Path(chart_dir)
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file():
        raise ChartArchiveError(f"{chart_dir}: not a Helm chart directory (no Chart.yaml)")
    meta = _read_chart_yaml(chart_yaml.read_bytes(), str(chart_dir))
    name, version = str(meta["name"]), meta["version"]
    patterns = _ignore_patterns(chart_dir)

    files = sorted(
        (p for p in chart_dir.rglob("*")
         if p.is_file() and not _ignored(p.relative_to(chart_dir), patterns)),
        key=lambda p: p.relative_to(chart_dir).as_posix(),
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{name}/{path.relative_to(chart_dir).as_posix()}")
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}-{version}.tgz"
    gz = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that varies.
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0) as f:
        f.write(raw.getvalue())
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gz.getvalue())
    os.replace(tmp, out)
    return out


# -- reading archives ----------------------------------------------------------------

def load_chart_archive(path: str | os.PathLike, *, source: str,
                       expect_name: str | None = "cilium") -> ServedChart:
    """Read and check a chart archive: a gzip tar with one top-level chart directory.

    Args:
        path: the ``.tgz`` file.
        source: how to describe it ("official <path>" or "stand-in").
        expect_name: the chart name it must have (None: any).

    Raises:
        ChartArchiveError: missing file, not gzip, not tar, no single top-level
            directory with a Chart.yaml, or another chart than ``expect_name``.
    """
    p = Path(path)
    if not p.is_file():
        raise ChartArchiveError(f"chart archive {p} does not exist",
                                hint="give the path of a file from `helm pull cilium/cilium --version 1.19.3`")
    data = p.read_bytes()
    if data[:2] != b"\x1f\x8b":
        raise ChartArchiveError(f"{p}: not a gzip file, so not a Helm chart archive (.tgz)")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.strip("/")]
            tops = {m.name.lstrip("./").split("/", 1)[0] for m in members}
            if len(tops) != 1:
                raise ChartArchiveError(
                    f"{p}: a chart archive has one top-level directory; found {sorted(tops)[:5]}")
            top = tops.pop()
            chart_member = next((m for m in members
                                 if m.isfile() and m.name.lstrip("./") == f"{top}/Chart.yaml"), None)
            if chart_member is None:
                raise ChartArchiveError(f"{p}: no {top}/Chart.yaml inside: not a Helm chart archive")
            fobj = tar.extractfile(chart_member)
            assert fobj is not None
            meta = _read_chart_yaml(fobj.read(), f"{p}:{top}/Chart.yaml")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise ChartArchiveError(f"{p}: cannot read as a gzip tar archive: {e}") from e
    if expect_name and meta["name"] != expect_name:
        raise ChartArchiveError(f"{p}: chart is {meta['name']!r}, expected {expect_name!r}")
    name, version = str(meta["name"]), meta["version"]
    return ServedChart(
        name=name, version=version, app_version=str(meta.get("appVersion") or ""),
        filename=f"{name}-{version}.tgz", digest=hashlib.sha256(data).hexdigest(),
        source=source, metadata=meta, data=data)


def build_index(charts: list[ServedChart], base_url: str, created: str) -> dict[str, Any]:
    """The repository's ``index.yaml`` content (apiVersion v1), as ``helm repo index`` writes it.

    Args:
        charts: the charts served.
        base_url: the repository URL (``http://127.0.0.1:PORT``); URLs are absolute.
        created: RFC 3339 timestamp for the entries and ``generated``.
    """
    entries: dict[str, list[dict[str, Any]]] = {}
    for c in charts:
        entry = dict(c.metadata)
        entry.update({
            "name": c.name,
            "version": c.version,
            "urls": [f"{base_url}/charts/{c.filename}"],
            "digest": c.digest,
            "created": created,
        })
        if c.app_version:
            entry["appVersion"] = c.app_version
        entries.setdefault(c.name, []).append(entry)
    return {"apiVersion": "v1", "entries": entries, "generated": created}


# -- the component -------------------------------------------------------------------

class ChartRepo:
    """Twin component: the Helm chart repository on 127.0.0.1 (see the module docstring)."""

    name = "charts"

    def __init__(self) -> None:
        self.chart: ServedChart | None = None
        self.url: str | None = None
        self.index_text: str = ""
        self._runner: web.AppRunner | None = None

    def _choose_chart(self, rt: Any) -> ServedChart:
        official = rt.options.get("cilium_chart")
        if official:
            path = Path(official).expanduser().resolve()
            return load_chart_archive(path, source=f"official {path}")
        out = package_chart(STANDIN_CHART_DIR, Path(rt.state_dir) / "charts")
        return load_chart_archive(out, source="stand-in")

    async def start(self, rt: Any) -> None:
        """Choose the chart, bind 127.0.0.1:0 and publish the URL in ``rt.endpoints``."""
        self.chart = self._choose_chart(rt)
        app = web.Application()
        app.router.add_get("/index.yaml", self._index)
        app.router.add_get("/charts/{file}", self._archive)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.index_text = yaml.safe_dump(build_index([self.chart], self.url, created), sort_keys=False)
        # A copy on disk helps whoever debugs a rehearsal; the server answers from memory.
        charts_dir = Path(rt.state_dir) / "charts"
        charts_dir.mkdir(parents=True, exist_ok=True)
        (charts_dir / "index.yaml").write_text(self.index_text)
        rt.endpoints["charts"] = self.url
        rt.options["cilium_chart_source"] = self.chart.source
        log.info("chart repository %s serves %s %s (%s)", self.url, self.chart.name,
                 self.chart.version, self.chart.source)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        if self.chart is None:
            return "charts: not started"
        return (f"charts: {self.url} serves {self.chart.name} {self.chart.version} "
                f"({self.chart.source})")

    # -- handlers ----------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=self.index_text, content_type="application/x-yaml")

    async def _archive(self, request: web.Request) -> web.Response:
        assert self.chart is not None
        if request.match_info["file"] != self.chart.filename:
            raise web.HTTPNotFound(text=f"no chart archive {request.match_info['file']!r} here\n")
        return web.Response(body=self.chart.data, content_type="application/gzip")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")
