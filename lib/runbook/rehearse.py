"""``runbook rehearse`` and ``runbook lab``: the runbook against a twin of minicloud.

This module belongs to the CLI: it is the one place in ``runbook`` that starts a twin
(through ``twin.api``). The modules the notebooks import never touch ``twin``: a
notebook cannot tell a twin from a real cluster, only its params file differs.

A rehearsal starts a twin, runs the four migration phases with ``execute`` (and
``proceed_despite_deferral``, since minicloud's preflight verdict is DEFER), then with
``--with-rollback`` runs ``05-rollback`` and checks, from the twin's side, that every
node's ``config.yaml`` is byte-identical to what it was before the run, that flannel is
back, that no Cilium BPF program, map, device or file is left on any node, and that a
DNS lookup through the kube-dns ClusterIP answers from every node. The result of that check is written to ``rehearsal.json`` in the run
folder and shown on the report's index page. In every rehearsal, a prober outside the
runbook (:mod:`runbook.rehearse_probe`) measures the availability of every ingress host
and of one ClusterIP Service from start to finish; its figures go to ``rehearsal.json``
under ``availability``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import runner
from .availability import line as availability_line
from .rehearse_probe import AvailabilityProber

K3S_CONFIG = "etc/rancher/k3s/config.yaml"


@dataclass
class Rehearsal:
    run: runner.RunResult | None = None
    rollback: runner.RunResult | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    index_html: Path | None = None
    availability: dict[str, Any] = field(default_factory=dict)

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


CILIUM_FILES = ("/etc/cni/net.d/05-cilium.conflist", "/opt/cni/bin/cilium-cni",
                "/etc/sysctl.d/99-zzz-override_cilium.conf")
CILIUM_DIRS = ("/var/lib/cilium", "/run/cilium")
DNS_NAME = "kubernetes.default.svc.cluster.local"


def _node_state(twin: Any) -> dict[str, Any]:
    """Per node, read from the twin's own models (not through the runbook's tools)."""
    res = {}
    for name, nm in twin.rt.nodes.items():
        ifaces = set(nm.interfaces)
        bpf = nm.bpf
        res[name] = {
            "flannel.1": _flannel_device_back(nm, ifaces),
            "cilium": sorted(i for i in ifaces if i.startswith("cilium")),
            "05-cilium": nm.exists("/etc/cni/net.d/05-cilium.conflist"),
            "bpf": ([f"tc {p.dev} {p.name}" for p in bpf.tc_programs() if p.name.startswith("cil")]
                    + [f"cgroup {p.name}" for p in bpf.cgroup_programs() if p.name.startswith("cil")]
                    + [f"map {m.path}" for m in bpf.maps() if "cilium" in m.path]),
            "files": [f for f in CILIUM_FILES if nm.exists(f)]
                     + [d for d in CILIUM_DIRS if nm.is_dir(d) and nm.listdir(d)],
        }
    return res


def _flannel_device_back(nm: Any, ifaces: set[str]) -> bool:
    """The device of the flannel backend k3s runs with (host-gw has none: its routes)."""
    from twin.controllers.network import FLANNEL_DEVICES
    from twin.node.routes import table

    backend = str((nm.k3s.running or {}).get("flannel_backend", "vxlan"))
    dev = FLANNEL_DEVICES.get(backend)
    if dev is not None:
        return dev in ifaces
    return len(nm.peers) == 1 or any(r.dev == "eth0" and r.via and r.dst != "default" for r in table(nm))


async def _clusterip_dns(twin: Any) -> dict[str, str]:
    """``nslookup`` of the kubernetes Service through the kube-dns ClusterIP, run as the
    node's own command (the twin's network model answers): node -> problem ("" = answered)."""
    out = {}
    view = next(iter(twin.rt.nodes.values())).cluster_view
    dns = view.cluster_dns() if view is not None else "10.43.0.10"
    for name, nm in twin.rt.nodes.items():
        r = await nm.exec(f"nslookup {DNS_NAME} {dns}")
        text = r.stdout.decode(errors="replace")
        ok = r.rc == 0 and "Address: 10.43.0.1" in text
        out[name] = "" if ok else (" ".join((text + r.stderr.decode(errors="replace")).split())[:160]
                                   or f"rc={r.rc}")
    return out


def verify_back_on_flannel(twin: Any, before: dict[str, str]) -> dict[str, Any]:
    """Independent check after a rollback, from the twin's side: configs identical, flannel
    running, no Cilium device, BPF program or map, no Cilium file, and a ClusterIP DNS
    lookup that answers from every node."""
    after = _config_digests(twin.state_dir)
    changed = [n for n in before if before[n] != after.get(n)]
    checks: dict[str, Any] = {
        "configs byte-identical": {"ok": not changed, "detail": changed or "all nodes identical"}}
    state = twin.call(_node_state, twin)
    no_flannel = [n for n, s in state.items() if not s["flannel.1"]]
    leftovers = [n for n, s in state.items() if s["cilium"] or s["05-cilium"]]
    bpf = {n: s["bpf"][:4] for n, s in state.items() if s["bpf"]}
    files = {n: s["files"] for n, s in state.items() if s["files"]}
    dns = {n: why for n, why in twin.call(_clusterip_dns, twin).items() if why}
    checks["flannel back on every node"] = {"ok": not no_flannel, "detail": no_flannel or "flannel.1 present everywhere"}
    checks["no cilium leftovers on nodes"] = {"ok": not leftovers, "detail": leftovers or "none"}
    checks["no Cilium BPF state on nodes"] = {"ok": not bpf, "detail": bpf or "no cil_ program, no cilium map"}
    checks["no Cilium files on nodes"] = {"ok": not files, "detail": files or "none"}
    checks["ClusterIP DNS answers from every node"] = {"ok": not dns, "detail": dns or
                                                       f"{DNS_NAME} -> 10.43.0.1 on every node"}
    return checks


#: the new pod CIDR a node-by-node rehearsal uses when the params name none
REHEARSAL_MIGRATION_CIDR = "10.44.0.0/16"


def _set_strategy(params_path: Path, strategy: str) -> None:
    """Write ``strategy`` (and, for node-by-node, a migration CIDR when none is set) into
    the twin's params file."""
    import yaml

    data = yaml.safe_load(params_path.read_text()) or {}
    data["strategy"] = strategy
    if strategy == "node-by-node":
        cil = data.setdefault("cilium", {})
        cil.setdefault("migration_cidr", REHEARSAL_MIGRATION_CIDR)
    params_path.write_text(yaml.safe_dump(data, sort_keys=False))


def _compare_key(twin: Any, cilium_chart: str | None, snapshot: str | None) -> str:
    """What makes two rehearsals comparable (:func:`runbook.strategy_compare.compare_key`)."""
    from twin.rehearsal_params import source_params

    from . import params as params_mod
    from .strategy_compare import compare_key

    src = source_params(twin.rt)
    p = params_mod.load(twin.params_path)

    def read(path: Any) -> bytes | None:
        try:
            return Path(path).read_bytes() if path else None
        except OSError:
            return None
    return compare_key([("params", read(src)), ("values", read(p.values_path)), ("snapshot", read(snapshot)),
                        ("chart", read(cilium_chart))])


def _nbn_stages(prober: AvailabilityProber, run_dir: Path, progress: Callable[[str], None]) -> None:
    """Split the migration's availability at the node-by-node steps (read from the journal):
    the per-node loop and the switch each get their own figures."""
    from . import node_by_node_plan, outage

    try:
        doc = json.loads((run_dir / "journal.json").read_text())
    except (OSError, ValueError):
        return
    for name, at in node_by_node_plan.stage_starts(doc.get("entries") or []):
        wall = outage.ts(at)
        if wall is not None and prober.add_stage(name, wall):
            progress(f"availability stage '{name}' from {at}")


def rehearse(*, with_rollback: bool = False, cilium_chart: str | None = None,
             run_id: str | None = None, reports_dir: str | None = None,
             state_dir: str | None = None, progress: Callable[[str], None] = print,
             snapshot: str | None = None, strategy: str = "big-bang") -> Rehearsal:
    """Start a twin (of minicloud, or of the ``snapshot`` archive), run the migration
    (and rollback) on it with ``strategy``, render the report. ``rehearsal.json`` records
    the strategy and, when the other strategy was rehearsed for the same params (a run
    folder next to this one), its figures for the index's comparison."""
    from twin.api import Twin

    from . import report

    if cilium_chart and not Path(cilium_chart).is_file():
        from .errors import ParamsError

        raise ParamsError(f"chart archive not found: {cilium_chart}", field="--cilium-chart")
    tmp = None
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="phase22-twin-")
        state_dir = tmp
    out = Rehearsal()
    runner.warm_up(runner.MIGRATION[0])   # the first phase's kernel starts with the twin
    try:
        progress(f"starting a twin of {snapshot or 'minicloud'} in {state_dir}"
                 + (f" serving {cilium_chart}" if cilium_chart else " (stand-in cilium chart)"))
        twin = Twin(state_dir, cilium_chart=cilium_chart, snapshot=snapshot).start()
    except BaseException:   # the twin did not start (or Ctrl-C): its temporary folder goes too
        runner.discard_warm()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finished = False
    try:
        progress(f"twin ready in {twin.startup_seconds:.1f}s; params: {twin.params_path}")
        for line in (twin.rt.options.get("assumption_lines") or []) if twin.rt else []:
            progress(f"assumed: {line}")
        before = _config_digests(twin.state_dir)
        if strategy != "big-bang":   # big-bang is the params' default: the twin's file stays as written
            _set_strategy(Path(twin.params_path), strategy)
        progress(f"strategy: {strategy}")
        run_id = run_id or runner.new_run_id()
        prober = AvailabilityProber(twin).start("migration")
        # The report is rendered once, at the end (a failed phase renders it at once too,
        # so a rehearsal that dies later still leaves one).
        out.run = runner.run(twin.params_path, phases=runner.MIGRATION, execute=True, run_id=run_id,
                             reports_dir=reports_dir, extra={"proceed_despite_deferral": True},
                             progress=progress, render=False, then="rollback" if with_rollback else None)
        out.index_html = out.run.index_html
        if with_rollback:
            if not out.run.ok:
                progress("migration failed: running the rollback from where it stopped")
            prober.mark("rollback")
            out.rollback = runner.run(twin.params_path, phases=["rollback"], execute=True,
                                      run_id=run_id, reports_dir=reports_dir, progress=progress,
                                      render=False)
        if strategy == "node-by-node":
            _nbn_stages(prober, out.run.run_dir, progress)
        out.availability = prober.stop(strategy=strategy)
        progress(f"availability: {availability_line(out.availability)}")
        if with_rollback:
            out.checks = verify_back_on_flannel(twin, before)
            for name, c in out.checks.items():
                progress(f"rollback check: {name}: {'OK' if c['ok'] else 'FAILED'} ({c['detail']})")
        last = out.rollback or out.run
        path = last.run_dir / "rehearsal.json"
        from .strategy_compare import find_other

        try:
            key = _compare_key(twin, cilium_chart, snapshot)
            other = find_other(last.run_dir.parent, key=key, strategy=strategy, exclude=last.run_dir)
        except Exception as e:  # noqa: BLE001 - a comparison never costs the rehearsal its evidence
            progress(f"no strategy comparison: {type(e).__name__}: {e}")
            key, other = None, None
        if other is not None:
            progress(f"compared with the {other['strategy']} rehearsal {other['run_id']} (same params)")
        # compact: the prober's samples run to thousands (the index shows the figures)
        path.write_text(json.dumps({"checks": out.checks, "ok": out.ok, "strategy": strategy,
                                    "compare_key": key, "compared_with": other,
                                    "availability": out.availability}, separators=(",", ":")))
        os.chmod(path, 0o600)
        finished = True
    finally:
        runner.discard_warm()
        twin.stop()
        cleanup = None
        if tmp and finished:
            # the twin's folder (thousands of node files) is removed while the report renders
            cleanup = threading.Thread(target=shutil.rmtree, args=(tmp, True), name="twin-cleanup")
            cleanup.start()
        elif tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        out.index_html = report.render_run(last.run_dir)
    finally:
        if cleanup is not None:
            cleanup.join()
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


def lab(state_dir: Path, *, port: int = 8888, out: Callable[[str], None] = print) -> int:
    """JupyterLab on 127.0.0.1 (token in a private config file) next to a twin of minicloud.

    The notebooks read the twin's params from ``RUNBOOK_PARAMS`` and share one new run
    folder, ``RUNBOOK_RUN_DIR`` (``reports/<id>-lab``, created by the first phase run).
    A busy ``port`` is refused before the twin starts (exit code 2).
    """
    from twin.api import Twin

    from . import lab as lab_mod

    if lab_mod.jupyter_binary() is None:
        print("JupyterLab is not installed: run `make lab` (installs the [lab] extra)", file=sys.stderr)
        return 2
    if not lab_mod.port_free(port):
        print(f"error: port {port} on 127.0.0.1 is already in use (another JupyterLab?): choose a free "
              f"one, e.g. `runbook lab --port {port + 1}` or `make lab LAB_PORT={port + 1}`", file=sys.stderr)
        return 2
    twin = Twin(state_dir).start()
    run_dir = runner.REPORTS_DIR / f"{runner.new_run_id()}-lab"
    env = dict(os.environ, RUNBOOK_PARAMS=str(twin.params_path), RUNBOOK_RUN_DIR=str(run_dir))
    out(f"twin ready; params: {twin.params_path}")
    out(f"the notebooks share the run folder {run_dir} (created when the first one runs)")
    try:
        return lab_mod.serve(state_dir, port=port, root_dir=runner.NOTEBOOKS_DIR, env=env, out=out)
    except lab_mod.PortBusy as e:   # taken between the check and the start
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        twin.stop()
