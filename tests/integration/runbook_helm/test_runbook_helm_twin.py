"""runbook.helm (the real library, the real helm) against the twin's API and chart repo."""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook.errors import HelmError
from runbook.helm import Helm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

VALUES = Path(__file__).resolve().parents[2] / "fixtures" / "cilium-values-phase22.yaml"


def test_repo_install_status_values_uninstall(api_and_repo, helm_bin, tmp_path):
    t = api_and_repo
    run_dir = tmp_path / "run"
    h = Helm(binary=helm_bin, kubeconfig=t.kubeconfig, env_home=run_dir / "helm", kind="twin")
    h.repo_add("twin", t.rt.endpoints["charts"])
    h.repo_update("twin")
    assert (run_dir / "helm" / "config" / "repositories.yaml").is_file()   # not ~/.config/helm
    values = VALUES if VALUES.is_file() else None
    manifest = h.template("cilium", "twin/cilium", version="1.19.3", values_file=values)
    assert "kind: DaemonSet" in manifest and "name: cilium" in manifest
    assert not h.is_installed("cilium")
    r = h.upgrade_install("cilium", "twin/cilium", version="1.19.3", values_file=values,
                          wait=False, timeout="2m", set_values={"tunnelPort": 8473})
    assert r.ok and "STATUS: deployed" in r.stdout
    assert h.is_installed("cilium")
    assert h.status("cilium")["info"]["status"] == "deployed"
    assert h.get_values("cilium")["tunnelPort"] == 8473
    assert h.get_values("cilium", all=True)["tunnelPort"] == 8473
    assert [x["revision"] for x in h.history("cilium")] == [1]
    h.uninstall("cilium", wait=False)
    assert not h.is_installed("cilium")
    h.uninstall("cilium", wait=False)               # idempotent
    with pytest.raises(HelmError) as ei:
        h.status("cilium")
    assert "not found" in ei.value.stderr
    # every call went through the one runner and is kept for the evidence
    assert len(h.results) >= 10 and all(x.command[0] == helm_bin for x in h.results)
