"""``runbook rehearse`` and ``runbook lab``: the runbook against a twin of minicloud.

This module belongs to the CLI: it is the one place in ``runbook`` that starts a twin
(through ``twin.api``). The modules the notebooks import never touch ``twin``: a
notebook cannot tell a twin from a real cluster, only its params file differs.

A rehearsal starts a twin, runs the four migration phases with ``execute`` (and
``proceed_despite_deferral``, since minicloud's preflight verdict is DEFER), then with
``--with-rollback`` runs ``05-rollback`` and checks, from the twin's side, that every
node's ``config.yaml`` is byte-identical to what it was before the run and that
flannel is back. The result of that check is written to ``rehearsal.json`` in the run
folder and shown on the report's index page.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import runner

K3S_CONFIG = "etc/rancher/k3s/config.yaml"


@dataclass
class Rehearsal:
    run: runner.RunResult | None = None
    rollback: runner.RunResult | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    index_html: Path | None = None

    @property
    def ok(self) -> bool:
        if self.run is None or not self.run.ok:
            return False
        if self.rollback is not None:
            return self.rollback.ok and all(c["ok"] for c in self.checks.values())
        return True


def _config_digests(state_dir: Path) -> dict[str, str]:
    """sha256 of each node's k3s config.yaml, read from the twin's node roots."""
    out = {}
    for node_dir in sorted(d for d in (state_dir / "nodes").iterdir() if d.is_dir()):
        f = node_dir / K3S_CONFIG
        out[node_dir.name] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "absent"
    return out


def verify_back_on_flannel(twin: Any, before: dict[str, str]) -> dict[str, Any]:
    """Independent check after a rollback: configs identical, flannel running, no cilium left."""
    after = _config_digests(twin.state_dir)
    changed = [n for n in before if before[n] != after.get(n)]
    checks: dict[str, Any] = {
        "configs byte-identical": {"ok": not changed, "detail": changed or "all nodes identical"}}

    def node_state() -> dict[str, Any]:
        res = {}
        for name, nm in twin.rt.nodes.items():
            ifaces = set(nm.interfaces)
            res[name] = {"flannel.1": "flannel.1" in ifaces,
                         "cilium": sorted(i for i in ifaces if i.startswith("cilium")),
                         "05-cilium": nm.exists("/etc/cni/net.d/05-cilium.conflist")}
        return res

    state = twin.call(node_state)
    no_flannel = [n for n, s in state.items() if not s["flannel.1"]]
    leftovers = [n for n, s in state.items() if s["cilium"] or s["05-cilium"]]
    checks["flannel back on every node"] = {"ok": not no_flannel, "detail": no_flannel or "flannel.1 present everywhere"}
    checks["no cilium leftovers on nodes"] = {"ok": not leftovers, "detail": leftovers or "none"}
    return checks


def rehearse(*, with_rollback: bool = False, cilium_chart: str | None = None,
             run_id: str | None = None, reports_dir: str | None = None,
             state_dir: str | None = None, progress: Callable[[str], None] = print,
             snapshot: str | None = None) -> Rehearsal:
    """Start a twin (of minicloud, or of the ``snapshot`` archive), run the migration
    (and rollback) on it, render the report."""
    from twin.api import Twin

    from . import report

    tmp = None
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="phase22-twin-")
        state_dir = tmp
    if cilium_chart and not Path(cilium_chart).is_file():
        from .errors import ParamsError

        raise ParamsError(f"chart archive not found: {cilium_chart}", field="--cilium-chart")
    out = Rehearsal()
    progress(f"starting a twin of {snapshot or 'minicloud'} in {state_dir}"
             + (f" serving {cilium_chart}" if cilium_chart else " (stand-in cilium chart)"))
    twin = Twin(state_dir, cilium_chart=cilium_chart, snapshot=snapshot).start()
    try:
        progress(f"twin ready in {twin.startup_seconds:.1f}s; params: {twin.params_path}")
        for line in (twin.rt.options.get("assumption_lines") or []) if twin.rt else []:
            progress(f"assumed: {line}")
        before = _config_digests(twin.state_dir)
        run_id = run_id or runner.new_run_id()
        out.run = runner.run(twin.params_path, phases=runner.MIGRATION, execute=True, run_id=run_id,
                             reports_dir=reports_dir, extra={"proceed_despite_deferral": True},
                             progress=progress)
        out.index_html = out.run.index_html
        if with_rollback:
            if not out.run.ok:
                progress("migration failed: running the rollback from where it stopped")
            out.rollback = runner.run(twin.params_path, phases=["rollback"], execute=True,
                                      run_id=run_id, reports_dir=reports_dir, progress=progress)
            out.checks = verify_back_on_flannel(twin, before)
            for name, c in out.checks.items():
                progress(f"rollback check: {name}: {'OK' if c['ok'] else 'FAILED'} ({c['detail']})")
            path = out.rollback.run_dir / "rehearsal.json"
            path.write_text(json.dumps({"checks": out.checks, "ok": out.ok}, indent=2))
            os.chmod(path, 0o600)
            out.index_html = report.render_run(out.rollback.run_dir)
    finally:
        twin.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    progress("REHEARSAL PASSED" if out.ok else "REHEARSAL FAILED: open the report to see where")
    return out


def snapshot_of_twin(out: str | Path, *, fixture: str = "minicloud", overwrite: bool = False,
                     progress: Callable[[str], None] = print, ssh: bool = True) -> Any:
    """``runbook snapshot --of-twin FIXTURE``: start a fresh twin, snapshot it, stop it.

    ``fixture`` is a fixture name or file, or ``nodes=N,pods=M`` for a generated cluster
    of that size. This is how ``lib/twin/fixtures/minicloud.snapshot.tar.gz`` is made
    (``runbook snapshot --of-twin minicloud --out lib/twin/fixtures/minicloud.snapshot.tar.gz
    --overwrite``), and how benchmarks get a large archive. Returns the
    :class:`runbook.snapshot.SnapshotResult`.
    """
    from twin.api import Twin, parse_scale

    from . import params, snapshot

    scale = parse_scale(fixture) if "nodes=" in fixture else None
    with tempfile.TemporaryDirectory(prefix="phase22-snapshot-twin-") as sd:
        progress(f"starting a twin of {fixture} to snapshot it")
        twin = Twin(sd, fixture=fixture, scale=scale).start()
        try:
            progress(f"twin ready in {twin.startup_seconds:.1f}s")
            return snapshot.take(params.load(twin.params_path), out, overwrite=overwrite,
                                 progress=progress, ssh=ssh)
        finally:
            twin.stop()


def lab(state_dir: Path, *, port: int = 8888) -> int:
    """JupyterLab on 127.0.0.1 with a token, next to a running twin of minicloud."""
    from twin.api import Twin

    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        print("JupyterLab is not installed: run `make lab` (installs the [lab] extra)", file=sys.stderr)
        return 2
    twin = Twin(state_dir).start()
    token = secrets.token_urlsafe(24)
    env = dict(os.environ, RUNBOOK_PARAMS=str(twin.params_path))
    print(f"twin ready; params: {twin.params_path}")
    # JupyterLab masks a configured token in its own log: print the address once, here.
    print(f"open http://127.0.0.1:{port}/lab?token={token}  (Ctrl-C stops JupyterLab and the twin)")
    try:
        cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--ip", "127.0.0.1",
               "--port", str(port), "--no-browser", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={runner.NOTEBOOKS_DIR}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # containers and CI machines run as root
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        twin.stop()
