"""Unit tests of the install phase's planning and bookkeeping (no cluster, no helm run)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runbook import install, params
from runbook.journal import Journal

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

REPO = Path(__file__).resolve().parents[3]


def _session(tmp_path: Path, *, execute: bool = True) -> SimpleNamespace:
    p = params.load(REPO / "params" / "minicloud.yaml")
    j = Journal.open(tmp_path / "run-1", params_hash="h" * 16, cluster_uid="uid-1", run_id="run-1")
    j.begin_phase("install")
    figures: dict[str, Any] = {}
    return SimpleNamespace(params=p, values=p.values(), journal=j, run_dir=tmp_path / "run-1",
                           run_id="run-1", execute=execute, figures=figures,
                           figure=lambda k, v: figures.__setitem__(k, v))


def test_plan_is_the_exact_pinned_helm_commands(tmp_path: Path) -> None:
    s = _session(tmp_path)
    ip = install.plan(s)
    values = str(REPO / "params" / "cilium-values.yaml")
    assert ip.commands == [
        "helm repo add cilium https://helm.cilium.io/ --force-update",
        "helm repo update cilium",
        "helm upgrade --install cilium cilium/cilium --version 1.19.3 --namespace kube-system "
        f"--values {values} --wait --timeout 600s",
    ]
    assert ip.version == "1.19.3" and ip.chart == "cilium/cilium" and ip.timeout == "600s"
    # the values are shown as written: the comments explain each correction
    assert "CORRECTED (defect 13)" in ip.values_text and "tunnelPort: 8473" in ip.values_text
    assert len(ip.values_sha256) == 64
    data = ip.journal_data()
    assert data["repo_url"] == "https://helm.cilium.io/" and data["values_sha256"] == ip.values_sha256
    assert "values_text" not in data
    # helm's home is the run folder, never the operator's ~/.config/helm
    assert (s.run_dir / "helm").is_dir()


def test_plan_follows_the_params_timeout_and_repo(tmp_path: Path) -> None:
    s = _session(tmp_path)
    s.params.limits.timeouts.helm = 90
    s.params.cilium.chart_repo_name = "mirror"
    ip = install.plan(s)
    assert ip.commands[0].startswith("helm repo add mirror ")
    assert ip.commands[2].startswith("helm upgrade --install cilium mirror/cilium ")
    assert ip.commands[2].endswith("--wait --timeout 90s")


def test_wait_table_says_what_helm_wait_does_not_prove() -> None:
    t = install.HELM_WAIT_PROVES
    no = t[t.iloc[:, 1].str.startswith("no")]
    assert len(no) >= 3 and any("managed by Cilium" in w for w in no["what"])


class _FakeHelm:
    """A stand-in with the four read calls _deployed_same uses."""

    def __init__(self, installed: bool, status: str = "deployed", version: str = "1.19.3",
                 values: dict | None = None) -> None:
        self.installed, self.st, self.version, self.values = installed, status, version, values or {}

    def is_installed(self, release: str, namespace: str | None = None) -> bool:
        return self.installed

    def status(self, release: str, namespace: str | None = None) -> dict:
        return {"version": 3, "info": {"status": self.st}}

    def history(self, release: str, namespace: str | None = None) -> list[dict]:
        return [{"revision": 3, "chart": f"cilium-{self.version}"}]

    def get_values(self, release: str, all: bool = False, namespace: str | None = None) -> dict:  # noqa: A002
        return self.values


@pytest.mark.parametrize("helm, same", [
    (_FakeHelm(False), False),
    (_FakeHelm(True, values={"a": 1}), True),
    (_FakeHelm(True, values={"a": 2}), False),             # other values: upgrade
    (_FakeHelm(True, version="1.18.0", values={"a": 1}), False),   # other chart version
    (_FakeHelm(True, status="failed", values={"a": 1}), False),    # a failed release is retried
])
def test_a_release_is_left_alone_only_when_deployed_with_the_same_version_and_values(
        tmp_path: Path, helm: _FakeHelm, same: bool) -> None:
    ip = install.plan(_session(tmp_path))
    got, _rev = install._deployed_same(helm, ip, {"a": 1})
    assert got is same


def test_close_window_records_the_length_once_every_pod_is_managed(tmp_path: Path) -> None:
    s = _session(tmp_path)
    opened = (datetime.now(timezone.utc) - timedelta(seconds=42)).isoformat(timespec="seconds")
    s.journal.set("no_cni_window", {"opened_at": opened.replace("+00:00", "Z"), "closed_at": None,
                                    "seconds": None})
    assert install.close_window(s, install.ManagedCheck(10, 11, ["x"]))["closed_at"] is None
    win = install.close_window(s, install.ManagedCheck(11, 11, []))
    assert win["closed_at"] and 41 <= win["seconds"] <= 60
    assert s.journal.get("no_cni_window") == win and s.figures["no_cni_window_seconds"] == win["seconds"]
    # a rerun keeps the first closing time
    assert install.close_window(s, install.ManagedCheck(11, 11, [])) == win


def test_close_window_does_nothing_in_a_dry_run_or_without_an_open_window(tmp_path: Path) -> None:
    s = _session(tmp_path, execute=False)
    assert install.close_window(s, install.ManagedCheck(1, 1, [])) is None
    s.journal.set("no_cni_window", {"opened_at": "2026-11-26T05:00:00Z", "closed_at": None, "seconds": None})
    assert install.close_window(s, install.ManagedCheck(1, 1, []))["closed_at"] is None


def test_managed_check_needs_every_pod_and_at_least_one() -> None:
    assert install.ManagedCheck(5, 5, []).ok
    assert not install.ManagedCheck(4, 5, ["ns/p"]).ok
    assert not install.ManagedCheck(0, 0, []).ok
    assert "4/5 managed" in repr(install.ManagedCheck(4, 5, ["ns/p"]))
