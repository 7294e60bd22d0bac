"""Shared helpers of the fault scenarios (issue 6; a uniquely named module, so that no other
folder's conftest can shadow it): a fast params copy, the "nothing lost"
baseline and its check, and readers for the run's report and journal.

"Nothing lost" (issue 6) means, after the journal plus the rollback:

* every node's ``config.yaml`` byte-identical to the original;
* every Argo CD Application's ``spec.syncPolicy.automated`` exactly as before;
* no PVC gone;
* the same workloads running (Running pods counted by namespace and owning workload,
  compared with :func:`runbook.checks.compare_snapshots`).

The phase tests' helpers (short timeouts, notebook outputs, journal entries) are reused
from ``tests/integration/phases/test_reconfigure_install.py`` rather than copied.
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runbook import checks, runner
from runbook import params as params_mod
from runbook.cluster import Cluster

HERE = Path(__file__).resolve().parent
CONFIG = "etc/rancher/k3s/config.yaml"


def _load_phase_helpers() -> Any:
    """The 02/03 phase tests' module, loaded under its own name (helpers only)."""
    path = HERE.parent / "phases" / "test_reconfigure_install.py"
    spec = importlib.util.spec_from_file_location("faults_phase_helpers", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


phase_helpers = _load_phase_helpers()
outputs = phase_helpers.outputs          # all text of an executed notebook's outputs
entries = phase_helpers.entries          # journal entries by step/node/status
FAST_TIMEOUTS = phase_helpers.FAST_TIMEOUTS


def fast_params(twin: Any, name: str = "params-faults.yaml", **overrides: Any) -> Path:
    """The phase tests' fast params copy, plus section overrides for one scenario.

    ``overrides`` are merged per top-level section, e.g. ``argocd={"pause_parents": False}``
    or ``limits={"lock_seconds": 60}``.
    """
    d = yaml.safe_load(phase_helpers.fast_params(twin).read_text())
    for section, values in overrides.items():
        if isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    p = twin.state_dir / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    os.chmod(p, 0o600)
    return p


def run(params: Path, phases: str, reports: Path, *, run_id: str, execute: bool = True,
        **extra: Any) -> runner.RunResult:
    """runner.run as the scenarios use it (rehearsal: proceed despite a DEFER verdict)."""
    extra.setdefault("proceed_despite_deferral", True)
    return runner.run(params, phases=phases, execute=execute, run_id=run_id, reports_dir=reports,
                      extra=extra, progress=lambda m: None, sample_timeline=False)


def statuses(res: runner.RunResult) -> dict[str, str]:
    return {p.phase: p.status for p in res.phases}


def journal(res: runner.RunResult) -> dict[str, Any]:
    return json.loads((res.run_dir / "journal.json").read_text())


def report_text(res: runner.RunResult, *names: str) -> str:
    """The visible text of the run's index.html and the named phases' report pages.

    ``names`` are notebook names (``01-preflight.ipynb``): both the notebook's outputs
    and its rendered page ``html/01-preflight.html`` are read.
    """
    parts = []
    files = [res.run_dir / "index.html"]
    for n in names:
        files += [res.run_dir / n, res.run_dir / "html" / n.replace(".ipynb", ".html")]
    for f in files:
        if not f.exists():
            continue
        if f.suffix == ".ipynb":
            parts.append(outputs(f))
        else:
            raw = re.sub(r"<[^>]+>", " ", f.read_text(errors="replace"))
            parts.append(html.unescape(raw))
    return "\n".join(parts)


def failed_cell_source(nb_path: Path) -> str:
    """The source of the executed notebook's cell that raised ("" if none did)."""
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return ""


def cluster(params: Path) -> Cluster:
    return Cluster.from_params(params_mod.load(params))


# ----------------------------------------------------------------------------- nothing lost
@dataclass
class Baseline:
    """What must be exactly the same after the rollback."""

    configs: dict[str, bytes]
    policies: dict[str, Any]
    pvcs: set[tuple[str, str]]
    pods: Any       # Running pods (DataFrame from Cluster.snapshot("pods"))


def node_names(twin: Any) -> list[str]:
    return sorted(p.name for p in (twin.state_dir / "nodes").iterdir() if (p / CONFIG).exists())


def configs(twin: Any) -> dict[str, bytes]:
    return {n: (twin.state_dir / "nodes" / n / CONFIG).read_bytes() for n in node_names(twin)}


def policies(c: Cluster) -> dict[str, Any]:
    """Every Application's spec.syncPolicy.automated exactly (absent -> the string "<absent>")."""
    out = {}
    for a in c.list("applications"):
        sp = (a.get("spec") or {}).get("syncPolicy") or {}
        out[f"{a['metadata']['namespace']}/{a['metadata']['name']}"] = sp.get("automated", "<absent>")
    return out


def pvcs(c: Cluster) -> set[tuple[str, str]]:
    return {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in c.list("persistentvolumeclaims")}


def running_pods(c: Cluster) -> Any:
    df = c.snapshot("pods")
    return df[df["phase"] == "Running"].reset_index(drop=True)


def baseline(twin: Any, c: Cluster) -> Baseline:
    return Baseline(configs(twin), policies(c), pvcs(c), running_pods(c))


def assert_nothing_lost(twin: Any, c: Cluster, before: Baseline, *, settle: float = 60.0) -> None:
    """Assert the four "nothing lost" facts; pods may take a moment to be Running again."""
    assert configs(twin) == before.configs, "a config.yaml is not byte-identical to the original"
    now = policies(c)
    diff = {k: (v, now.get(k, "<missing>")) for k, v in before.policies.items() if now.get(k, "<missing>") != v}
    assert not diff, f"Argo CD policies differ (before, after): {diff}"
    assert pvcs(c) >= before.pvcs, f"PVCs gone: {sorted(before.pvcs - pvcs(c))}"
    deadline = time.monotonic() + settle
    while True:
        d = checks.compare_snapshots(before.pods, running_pods(c))
        lost = d.missing.to_dict("records") + d.fewer.to_dict("records")
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not lost, f"workloads not running as before: {lost}"
