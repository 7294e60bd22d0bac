"""Which Cilium chart archive a run installed, and whether it is the official release.

A rehearsal on the twin may install the twin's stand-in chart (a small chart that
renders the objects Cilium 1.19.3 renders, without Cilium's templates), and the
engineer who approves the real run must know that from the report, not from one line
of helm notes. After ``helm upgrade --install`` this module finds the archive helm
downloaded, hashes it, and compares the sha256 with, in this order:

1. ``cilium.chart_sha256`` in the params, when you pinned one (the digest of the
   archive you pulled and checked yourself);
2. :data:`OFFICIAL_SHA256`, the sha256 of the official archive of each Cilium release
   this runbook was checked against. It is the ``digest`` field of that version's
   entry in the official repository's index (https://helm.cilium.io/index.yaml);
   ``helm pull cilium/cilium --version 1.19.3`` on a machine with internet downloads
   that very archive.

Only a match with one of those counts as official. The result is kept in the journal
(fact ``cilium_chart``) and shown at the top of the report's index.

Where helm keeps the archive: helm 4 stores downloads content-addressed under
``<cache>/content/<2 hex>/<sha256>.chart``, helm 3 as ``<cache>/repository/<name>-<version>.tgz``;
the repository's index (``<cache>/repository/<repo>-index.yaml``) gives each version's
``digest`` and ``urls``. The helm cache of a run lives in the run folder (``helm/cache``).

Example:
    >>> ChartIdentity("twin/cilium", "1.19.3", "ab" * 32, official=False,
    ...               how="its sha256 differs from the official archive's").banner()[:8]
    'STAND-IN'
"""
from __future__ import annotations

import hashlib
import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["OFFICIAL_SHA256", "ChartIdentity", "identify", "find_archive", "record", "FACT"]

#: The journal fact of the installed chart.
FACT = "cilium_chart"

#: Cilium version -> sha256 of the official chart archive (the digest helm.cilium.io's
#: index.yaml lists for it).
OFFICIAL_SHA256: dict[str, str] = {
    "1.19.3": "c8e05df9eabf9019e62f5103e1f35814b4f1b43916f88519e5ae4e36c69aa42b",
}

GET_OFFICIAL = ("helm repo add cilium https://helm.cilium.io/ && helm pull cilium/cilium --version {v}"
                " (on a machine with internet), then: runbook rehearse --cilium-chart cilium-{v}.tgz")


@dataclass
class ChartIdentity:
    """The chart a run installed.

    Attributes:
        source: where it came from (``twin/cilium 1.19.3 from http://127.0.0.1:8879/``).
        version: the chart version installed.
        sha256: the archive's sha256 (None when helm's download could not be found).
        official: True only when the sha256 matches a pinned or a known official digest.
        how: how that was decided, in words.
    """

    source: str
    version: str
    sha256: str | None
    official: bool
    how: str

    def banner(self) -> str | None:
        """The warning to show when the chart is not the official archive, else None."""
        if self.official:
            return None
        return (f"STAND-IN CHART: the Cilium chart this run installed is not the official "
                f"{self.version} archive: {self.how}. A rehearsal with it proves the runbook's steps, "
                f"not Cilium's own behaviour. To rehearse with the official chart: "
                + GET_OFFICIAL.format(v=self.version))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ChartIdentity | None":
        if not isinstance(d, dict) or "source" not in d:
            return None
        return cls(d["source"], d.get("version", ""), d.get("sha256"), bool(d.get("official")),
                   d.get("how", ""))

    def __str__(self) -> str:
        digest = self.sha256 or "unknown"
        return f"{self.source} · sha256 {digest} · {'OFFICIAL' if self.official else 'NOT OFFICIAL'}: {self.how}"

    def _repr_html_(self) -> str:
        head = (f"<p>chart: <code>{html.escape(self.source)}</code>, sha256 "
                f"<code>{html.escape(self.sha256 or 'unknown')}</code>: {html.escape(self.how)}</p>")
        b = self.banner()
        if b:
            head += ("<div style='border:3px solid #b45309;background:#fff7e6;color:#7c2d12;"
                     f"padding:.5rem .8rem;font-weight:600'>{html.escape(b)}</div>")
        return head


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _index_entry(cache: Path, repo: str, chart: str, version: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    path = cache / "repository" / f"{repo}-index.yaml"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError):
        return {}
    for entry in (doc.get("entries") or {}).get(chart) or []:
        if str(entry.get("version")) == version:
            return entry
    return {}


def find_archive(cache: Path, repo: str, chart: str, version: str) -> tuple[Path | None, str | None]:
    """(archive path, the digest the repository's index lists) in a helm cache folder."""
    entry = _index_entry(cache, repo, chart, version)
    digest = entry.get("digest")
    if digest:
        hit = cache / "content" / digest[:2] / f"{digest}.chart"
        if hit.is_file():
            return hit, digest
    legacy = cache / "repository" / f"{chart}-{version}.tgz"
    if legacy.is_file():
        return legacy, digest
    return None, digest


def identify(cache: Path, *, repo: str, repo_url: str, chart: str, version: str,
             pinned: str | None = None) -> ChartIdentity:
    """Identify the archive of ``repo/chart`` ``version`` in the helm cache ``cache``.

    Example:
        >>> identify(Path("/nonexistent"), repo="cilium", repo_url="https://helm.cilium.io/",
        ...          chart="cilium", version="1.19.3").official
        False
    """
    source = f"{repo}/{chart} {version} from {repo_url}"
    archive, digest = find_archive(cache, repo, chart, version)
    sha = _sha256(archive) if archive else None
    if sha is None:
        return ChartIdentity(source, version, digest, False,
                             "helm's download was not found in the run's helm cache, so its sha256 "
                             "could not be checked")
    if digest and digest != sha:
        return ChartIdentity(source, version, sha, False,
                             f"its sha256 differs from the digest its own repository lists ({digest})")
    if pinned:
        if sha == pinned:
            return ChartIdentity(source, version, sha, True,
                                 "its sha256 is the one pinned in the params (cilium.chart_sha256)")
        return ChartIdentity(source, version, sha, False,
                             f"its sha256 differs from the one pinned in the params (cilium.chart_sha256 = {pinned})")
    official = OFFICIAL_SHA256.get(version)
    if official is None:
        return ChartIdentity(source, version, sha, False,
                             f"this runbook knows no official sha256 for version {version}: pin the "
                             "archive's sha256 as cilium.chart_sha256 in the params")
    if sha == official:
        return ChartIdentity(source, version, sha, True,
                             f"its sha256 is the official Cilium {version} archive's (the digest "
                             "helm.cilium.io's index lists)")
    return ChartIdentity(source, version, sha, False,
                         f"its sha256 differs from the official {version} archive's ({official})")


def record(s: Session, *, repo: str, repo_url: str, chart: str, version: str) -> ChartIdentity:
    """Identify the chart this run's helm downloaded and keep it as the fact ``cilium_chart``."""
    ident = identify(Path(s.run_dir) / "helm" / "cache", repo=repo, repo_url=repo_url, chart=chart,
                     version=version, pinned=s.params.cilium.chart_sha256)
    s.journal.set(FACT, ident.to_dict())
    return ident
