"""Helm hooks of the Cilium chart, official and stand-in, and what `helm test` finds
(issue 10, row 6): the official 1.19.3 chart has no test hooks and one post-install /
post-upgrade hook Job, rendered only with clustermesh MCS-API CoreDNS auto-configuration;
with the runbook's values neither chart renders a hook, so the twin runs none."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from twin_lifecycle_helpers import CILIUM_VALUES, STANDIN_CHART

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def hooks(helm_bin: str, env: dict, chart: str, *sets: str) -> list[tuple[str, str, str]]:
    p = subprocess.run([helm_bin, "template", "cilium", chart, "-n", "kube-system", "-f", str(CILIUM_VALUES),
                        *[a for s in sets for a in ("--set", s)]],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = []
    for doc in yaml.safe_load_all(p.stdout):
        ann = ((doc or {}).get("metadata") or {}).get("annotations") or {}
        if "helm.sh/hook" in ann:
            out.append((doc["kind"], doc["metadata"]["name"], ann["helm.sh/hook"]))
    return out


def test_neither_chart_has_test_hooks_and_the_runbook_values_render_no_hook(helm_bin, tool_env, cilium_chart):
    assert hooks(helm_bin, tool_env, str(cilium_chart)) == []
    assert hooks(helm_bin, tool_env, str(STANDIN_CHART)) == []
    mcs = hooks(helm_bin, tool_env, str(cilium_chart), "clustermesh.useAPIServer=true",
                "clustermesh.mcsapi.enabled=true", "clustermesh.mcsapi.corednsAutoConfigure.enabled=true")
    assert mcs == [("Job", "cilium-coredns-mcsapi-autoconfig", "post-install,post-upgrade")]
    assert not any("test" in h for _, _, h in mcs)
