"""Rollback: undo a migration, from ANY point where it stopped, driven by the journal.

What was done is what gets undone; steps the journal does not record are not touched.
The plan (:func:`plan_from_journal`) is a pure function of the journal document and the
node list, golden-tested under ``tests/fixtures/rollback/<case>/``. The original Phase 22
rollback missed half of this (defect 10): ``helm uninstall cilium``, deleting Cilium's
interfaces and CILIUM chains BEFORE k3s stops (reference §5: otherwise the host can lose
connectivity, and flannel fails with "address already in use" while ``cilium_vxlan``
holds UDP 8472), removing ``disable-kube-proxy`` (restoring the config byte-for-byte does
it), and restarting the pods again.

Order, and why:

1. ``helm uninstall`` while the API still answers (the agents stop re-creating their
   interfaces and CNI file);
2. on each node Cilium touched: delete ``cilium_host``, ``cilium_net``, ``cilium_vxlan``
   and the CILIUM chains, while k3s still runs;
3. stop the agents, then the servers (nothing reconciles half-restored nodes);
4. restore each ``config.yaml`` from its journaled backup, checked against the pre-run
   sha256; move ``05-cilium.conflist`` to the backup folder (containerd takes the first
   conflist by name, and ``05-`` sorts before flannel's ``10-``); put back the flannel
   files reconfigure moved away;
5. start the servers first and wait for the API, then the agents; wait for the nodes to
   be Ready with ``flannel.1`` back;
6. restart the pods whose sandbox is not flannel's (created under Cilium or in the
   no-CNI window, or hanging off a ``cni0`` bridge that reconfigure deleted);
7. optionally a Velero restore (a restore is not a revert, defect 11);
8. restore Argo CD's policies exactly from the journal.

Example:
    >>> p = rollback.plan(s)                  # doctest: +SKIP
    >>> p.frame()                             # doctest: +SKIP
"""
from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

import pandas as pd

from . import argocd, lock, velero
from .cluster import node_ready, pod_display_status, pod_ready
from .errors import GateFailed, NodeError, ParamsError

__all__ = [
    "CILIUM_INTERFACES", "CILIUM_CNI_FILE", "MIGRATION_STEPS", "NodeRollback", "RollbackPlan",
    "plan_from_journal", "plan", "helm_uninstall", "delete_cilium", "stop_k3s", "restore_files",
    "start_k3s", "wait_flannel", "pods_to_restart", "restart_pods", "velero_restore",
    "VELERO_POLICY_WHY", "velero_policy", "optional_velero_restore", "argocd_resume", "node_table", "finish", "VERDICT",
    "flannel_problems", "node_problems", "pods_health",
]

#: the interfaces a Cilium agent creates on its node
CILIUM_INTERFACES = ("cilium_host", "cilium_net", "cilium_vxlan")
#: the CNI config the agent writes (``write-cni-conf-when-ready``)
CILIUM_CNI_FILE = "05-cilium.conflist"
#: the chain prefix of Cilium's iptables rules (CILIUM_INPUT, CILIUM_FORWARD, ...)
CILIUM_PREFIXES = ("CILIUM",)
#: journal steps of the migration (02-reconfigure, 03-install) that a rollback undoes
MIGRATION_STEPS = ("write-file", "restart-k3s", "cleanup-leftovers", "helm-install", "restart-pods")
#: flannel's devices; a pod whose bridge (cni0) was deleted lost its network
BRIDGE = "cni0"
VERDICT = "ROLLED BACK: flannel restored, configs identical"

STEP_HELM = "helm-uninstall"
STEP_IFACES = "delete-cilium-ifaces"
STEP_STOP = "stop-k3s"
STEP_RESTORE = "restore-config"
STEP_CNI = "remove-cilium-cni"
STEP_FLANNEL = "restore-flannel-files"
STEP_START = "start-k3s"
STEP_PODS = "restart-pods"
STEP_VELERO = "velero-restore"
ROLLBACK_STEPS = (STEP_HELM, STEP_IFACES, STEP_STOP, STEP_RESTORE, STEP_CNI, STEP_FLANNEL,
                  STEP_START, STEP_PODS, STEP_VELERO)


def unit_for(role: str) -> str:
    """The systemd unit of k3s on a node of ``role``."""
    return "k3s" if role == "server" else "k3s-agent"


# =========================================================================== the plan (pure)
@dataclass
class NodeRollback:
    """What the rollback does on one node.

    Attributes:
        node, role.
        delete_cilium: delete the Cilium interfaces and CILIUM chains (Cilium may have
            run here).
        restart: stop k3s before the file changes and start it after (k3s ran with the
            migration's settings, or its flannel devices were deleted).
        restore_config: ``{"path", "backup", "sha256"}`` (sha256 = pre-run content) or None.
        remove_cilium_cni: move ``05-cilium.conflist`` to the backup folder.
        restore_files: ``[{"path", "backup"}]`` flannel files/leases to move back.
        lost_bridge: reconfigure deleted ``cni0`` here: its old pods lost their network.
        done: rollback steps already done for this node since the last migration step.
        reasons: why the node is in the plan, from the journal.
    """

    node: str
    role: str
    delete_cilium: bool = False
    restart: bool = False
    restore_config: dict[str, str] | None = None
    remove_cilium_cni: bool = False
    restore_files: list[dict[str, str]] = field(default_factory=list)
    lost_bridge: bool = False
    done: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def touched(self) -> bool:
        """False when the migration never changed this node: the rollback leaves it alone."""
        return bool(self.delete_cilium or self.restart or self.restore_config
                    or self.remove_cilium_cni or self.restore_files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RollbackPlan:
    """The whole rollback, computed from the journal.

    Attributes:
        helm_uninstall: ``{"release", "namespace"}`` when a helm install was attempted.
        nodes: one :class:`NodeRollback` per node (servers first), touched or not.
        pods_since: ISO time the CNI was first switched off (pods created since then
            got their sandbox from Cilium or none), or None.
        argocd_recorded: apps whose policy the journal recorded (restored exactly).
        velero_backup: the pre-migration backup, for the optional restore.
        helm_done: the uninstall is already done in this rollback.
        pods_done: the pod restart is already done in this rollback.
    """

    helm_uninstall: dict[str, str] | None
    nodes: list[NodeRollback]
    pods_since: str | None
    argocd_recorded: list[str]
    velero_backup: str | None
    helm_done: bool = False
    pods_done: bool = False

    @property
    def touched_nodes(self) -> list[NodeRollback]:
        return [n for n in self.nodes if n.touched]

    @property
    def nothing_to_do(self) -> bool:
        return not self.helm_uninstall and not self.touched_nodes and not self.pods_since

    def node(self, name: str) -> NodeRollback:
        return next(n for n in self.nodes if n.node == name)

    def to_dict(self) -> dict[str, Any]:
        return {"helm_uninstall": self.helm_uninstall, "nodes": [n.to_dict() for n in self.nodes],
                "pods_since": self.pods_since, "argocd_recorded": list(self.argocd_recorded),
                "velero_backup": self.velero_backup, "helm_done": self.helm_done,
                "pods_done": self.pods_done}

    def frame(self) -> pd.DataFrame:
        """One row per node: what will be done there (``-`` = left alone)."""
        rows = []
        for n in self.nodes:
            rows.append({
                "node": n.node, "role": n.role,
                "delete cilium ifaces/chains": "yes" if n.delete_cilium else "-",
                "stop/start k3s": unit_for(n.role) if n.restart else "-",
                "restore config.yaml": (f"from {n.restore_config['backup']}" if n.restore_config else "-"),
                "remove 05-cilium.conflist": "yes" if n.remove_cilium_cni else "-",
                "put back flannel files": ", ".join(f["path"] for f in n.restore_files) or "-",
                "already done": ", ".join(n.done) or "-",
                "why": "; ".join(n.reasons) or "not changed by this run: left alone"})
        return pd.DataFrame(rows)

    def steps(self) -> pd.DataFrame:
        """The cluster-wide steps in order, with what the journal says about each."""
        touched = self.touched_nodes
        rows = [
            ("1", "helm uninstall " + (self.helm_uninstall or {}).get("release", "cilium"),
             "done" if self.helm_done else ("planned" if self.helm_uninstall else "not needed: never installed")),
            ("2", "delete cilium interfaces + CILIUM chains (k3s still running)",
             ", ".join(n.node for n in touched if n.delete_cilium) or "not needed"),
            ("3", "stop k3s: agents, then servers",
             ", ".join(n.node for n in self._restart_order()) or "not needed"),
            ("4", "restore config.yaml byte-for-byte, remove 05-cilium, put back flannel files",
             ", ".join(n.node for n in touched if n.restore_config or n.remove_cilium_cni or n.restore_files)
             or "not needed"),
            ("5", "start k3s: servers first (wait for the API), then agents; wait for flannel.1",
             ", ".join(n.node for n in self._restart_order(start=True)) or "not needed"),
            ("6", "restart pods whose sandbox is not flannel's",
             "done" if self.pods_done else (f"pods created since {self.pods_since} or on "
                                            f"{', '.join(n.node for n in self.nodes if n.lost_bridge) or 'no node'}"
                                            if self.pods_since or any(n.lost_bridge for n in self.nodes)
                                            else "not needed")),
            ("7", "Velero restore (optional)", self.velero_backup or "no backup recorded"),
            ("8", "restore Argo CD policies exactly", f"{len(self.argocd_recorded)} app(s) recorded"),
        ]
        return pd.DataFrame(rows, columns=["#", "step", "journal says / targets"])

    def _restart_order(self, start: bool = False) -> list[NodeRollback]:
        nodes = [n for n in self.nodes if n.restart]
        servers = [n for n in nodes if n.role == "server"]
        agents = [n for n in nodes if n.role != "server"]
        return servers + agents if start else agents + servers

    def _repr_html_(self) -> str:
        if self.nothing_to_do:
            return ("<p><b>Nothing to roll back</b>: the journal records no change of a node's "
                    "k3s config, no k3s restart, no cleanup and no helm install.</p>")
        return self.steps().to_html(index=False) + self.frame().to_html(index=False)


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("entries") or [])


def _is_migration(e: dict[str, Any]) -> bool:
    return e.get("phase") != "rollback" and e.get("step") in MIGRATION_STEPS


def plan_from_journal(doc: dict[str, Any], nodes: Sequence[tuple[str, str]], *,
                      k3s_config: str = "/etc/rancher/k3s/config.yaml",
                      release: str = "cilium", namespace: str = "kube-system") -> RollbackPlan:
    """Compute the rollback from a journal document (pure: golden-tested).

    Args:
        doc: the journal (``Journal.to_dict()`` or the parsed ``journal.json``).
        nodes: ``(name, role)`` of every node in the params.
        k3s_config: the config path whose backups are restored.
        release, namespace: the Cilium helm release.

    Rules (what was done is what gets undone):

    * a helm install attempted (any status: an intent may have happened) means helm
      uninstall, and on every node: Cilium interfaces/chains deleted, the Cilium CNI file
      removed, k3s restarted (the agents may have run anywhere);
    * a node whose config this run wrote gets it back from the FIRST backup (the
      pre-run content, with its sha256 from the journal); only written, never restarted
      means the file is restored and k3s is left running;
    * a node restarted or cleaned by reconfigure is stopped and started again (agents
      inherit the server's restored settings at start; flannel.1 comes back at start);
    * files reconfigure moved to the backup folder are moved back;
    * a node the journal does not name (an agent never reached) is left alone.

    A rollback step recorded done AFTER the last migration step is reported in
    ``done`` and skipped on a rerun.
    """
    entries = _entries(doc)
    facts = doc.get("facts") or {}
    mig = [e for e in entries if _is_migration(e)]
    last_mig = max((e.get("seq", 0) for e in mig), default=0)
    rb_done = [e for e in entries if e.get("phase") == "rollback" and e.get("status") == "done"
               and e.get("seq", 0) > last_mig and e.get("step") in ROLLBACK_STEPS]

    helm = [e for e in mig if e["step"] == "helm-install"]
    cilium = bool(helm) or bool(facts.get("cilium_installed"))
    helm_plan = None
    if cilium:
        d = (helm[-1].get("data") or {}) if helm else {}
        helm_plan = {"release": d.get("release") or release,
                     "namespace": d.get("namespace") or namespace}

    backups = {b["node"]: b for b in facts.get("backups") or [] if b.get("path") == k3s_config}
    out: list[NodeRollback] = []
    order = sorted(nodes, key=lambda nr: 0 if nr[1] == "server" else 1)
    for name, role in order:
        n = NodeRollback(name, role)
        mine = [e for e in mig if e.get("node") == name]
        writes = [e for e in mine if e["step"] == "write-file"
                  and (e.get("data") or {}).get("path") == k3s_config]
        restarts = [e for e in mine if e["step"] == "restart-k3s"]
        cleans = [e for e in mine if e["step"] == "cleanup-leftovers"]
        b = backups.get(name)
        if b is None:  # crash between the write and add_backup: the write entry has it
            w = next((e for e in writes if (e.get("data") or {}).get("backup")
                      and (e.get("data") or {}).get("sha256_before")), None)
            if w is not None:
                b = {"backup_path": w["data"]["backup"], "sha256": w["data"]["sha256_before"]}
        if b is not None:
            n.restore_config = {"path": k3s_config, "backup": b["backup_path"], "sha256": b["sha256"]}
            n.reasons.append("config.yaml written by this run")
        elif writes:
            n.reasons.append("config.yaml write recorded without a backup (file did not exist?)")
        if restarts:
            n.restart = True
            n.reasons.append("k3s restarted with the migration's settings")
        if cleans:
            n.restart = True
            n.reasons.append("flannel leftovers cleaned (k3s re-creates flannel.1 at start)")
            seen: set[str] = set()
            for e in cleans:
                res = e.get("result") or {}
                data = e.get("data") or {}
                if e.get("status") == "done" and isinstance(res, dict) and "moved" in res:
                    moved = [{"path": m["path"], "backup": m["backup"]} for m in res.get("moved") or []]
                    ifaces = list(res.get("interfaces") or [])
                else:  # intent or failed: any of the planned moves may have happened
                    moved = [{"path": m[0], "backup": m[1]} for m in data.get("move") or []]
                    ifaces = list(data.get("interfaces") or [])
                for m in moved:
                    if m["path"] not in seen:
                        seen.add(m["path"])
                        n.restore_files.append(m)
                if BRIDGE in ifaces:
                    n.lost_bridge = True
        if cilium:
            n.delete_cilium = n.remove_cilium_cni = n.restart = True
            n.reasons.append("Cilium was installed (its agent may have run here)")
        n.done = sorted({e["step"] for e in rb_done if e.get("node") == name})
        out.append(n)

    # pods created once the CNI was switched off got Cilium's sandbox (or none)
    since = (facts.get("no_cni_window") or {}).get("opened_at") if isinstance(
        facts.get("no_cni_window"), dict) else None
    starts = [e.get("recorded_at") for e in mig if e["step"] in ("restart-k3s", "helm-install")
              and e.get("recorded_at")]
    cands = [t for t in [since, *starts] if t]
    pods_since = min(cands, key=_ts) if cands else None
    recorded = sorted((facts.get("argocd_previous_policies") or {}).keys())
    done_steps = {e["step"] for e in rb_done if not e.get("node")}
    return RollbackPlan(helm_uninstall=helm_plan, nodes=out, pods_since=pods_since,
                        argocd_recorded=recorded, velero_backup=facts.get("velero_backup"),
                        helm_done=STEP_HELM in done_steps and cilium,
                        pods_done=STEP_PODS in done_steps)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def plan(s: Any) -> RollbackPlan:
    """The rollback plan of this run (from ``s.journal``)."""
    p = s.params
    return plan_from_journal(s.journal.to_dict(), [(n.name, n.role) for n in p.nodes],
                             k3s_config=p.paths.k3s_config, release=p.cilium.release,
                             namespace=p.cilium.namespace)


# =========================================================================== execution helpers
def _nodes(s: Any, names: Iterable[str]) -> list[Any]:
    wanted = set(names)
    return [n for n in s.nodes if n.name in wanted]


def _fleet(s: Any, nodes: list[Any]) -> Any:
    from .nodes import Fleet

    return Fleet(nodes, batch_size=s.params.limits.agent_batch_size)


def _journaled(s: Any, step: str, action: str, fn: Any, *, node: str | None = None,
               data: Any = None) -> Any:
    entry = s.journal.record(step, action, node=node, data=data)
    try:
        result = fn()
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result=result)
    return result


def helm_uninstall(s: Any, rp: RollbackPlan) -> str:
    """``helm uninstall`` the Cilium release if a helm install was attempted (journaled)."""
    if not rp.helm_uninstall:
        return "not needed: the journal records no helm install"
    if rp.helm_done:
        return "already done in this rollback"
    rel, ns = rp.helm_uninstall["release"], rp.helm_uninstall["namespace"]
    if not s.require_execute(f"helm uninstall {rel} --namespace {ns}"):
        return f"would run: helm uninstall {rel} --namespace {ns} --wait --ignore-not-found"
    from .helm import Helm

    h = Helm.from_params(s.params, run_dir=s.run_dir)
    timeout = f"{int(s.params.limits.timeouts.helm)}s"

    def do() -> dict[str, Any]:
        present = h.is_installed(rel, namespace=ns)
        if present:
            h.uninstall(rel, namespace=ns, wait=True, timeout=timeout)
        return {"was_installed": present}

    res = _journaled(s, STEP_HELM, f"helm uninstall {rel} --namespace {ns}", do,
                     data=rp.helm_uninstall)
    return "uninstalled" if res["was_installed"] else "release already absent"


def _delete_cilium_one(s: Any, n: Any) -> dict[str, Any]:
    def do() -> dict[str, Any]:
        deleted = [i for i in CILIUM_INTERFACES if n.delete_interface(i)]
        rm = n.remove_chains(list(CILIUM_PREFIXES))
        return {"interfaces": deleted, "chains_removed": rm.before.chains.get("CILIUM", 0),
                "rules_removed": rm.removed_lines}

    return _journaled(s, STEP_IFACES, "delete cilium interfaces and CILIUM chains", do, node=n.name,
                      data={"interfaces": list(CILIUM_INTERFACES), "prefixes": list(CILIUM_PREFIXES)})


def delete_cilium(s: Any, rp: RollbackPlan) -> Any:
    """Delete ``cilium_host``/``cilium_net``/``cilium_vxlan`` and the CILIUM chains on every
    node Cilium may have run on, BEFORE k3s stops (reference §5). Idempotent."""
    names = [n.node for n in rp.nodes if n.delete_cilium]
    if not names or not s.require_execute("deleting the Cilium interfaces and chains"):
        return None
    return _fleet(s, _nodes(s, names)).apply(lambda n: _delete_cilium_one(s, n),
                                             description="delete cilium interfaces and CILIUM chains"
                                             ).raise_for_failures()


def stop_k3s(s: Any, rp: RollbackPlan) -> pd.DataFrame | None:
    """Stop k3s on the nodes to restart: agents first (in batches), then the servers."""
    order = rp._restart_order()
    if not order or not s.require_execute("stopping k3s"):
        return None
    rows = []
    for group in ([n for n in order if n.role != "server"], [n for n in order if n.role == "server"]):
        if not group:
            continue
        by = {n.node: n for n in group}

        def op(node: Any) -> str:
            done = by[node.name].done
            if STEP_START in done:
                return "already restored and started in this rollback"
            if STEP_STOP in done:
                return "already stopped in this rollback"
            unit = unit_for(node.role)

            def do() -> dict[str, Any]:
                node.systemctl("stop", unit)
                return {"active": node.is_active(unit)}

            _journaled(s, STEP_STOP, f"systemctl stop {unit}", do, node=node.name, data={"unit": unit})
            return "stopped"

        res = _fleet(s, _nodes(s, by)).apply(op, description="stop k3s").raise_for_failures()
        rows += res.frame().to_dict("records")
    return pd.DataFrame(rows)


def _backup_target(s: Any, path: str) -> str:
    flat = path.strip("/").replace("/", "_")
    return f"{s.params.paths.backup_dir.rstrip('/')}/{flat}.{s.run_id}.rollback"


def _restore_one(s: Any, n: Any, nr: NodeRollback) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if nr.restore_config and n.sha256(nr.restore_config["path"]) == nr.restore_config["sha256"]:
        out["config"] = "already identical to the pre-run file"
    elif nr.restore_config:
        rc = nr.restore_config

        def restore() -> dict[str, Any]:
            res = n.restore_file(rc["path"], rc["backup"])
            now = n.sha256(rc["path"])
            if now != rc["sha256"]:
                raise NodeError(f"{rc['path']} has sha256 {now} after the restore, but the pre-run "
                                f"content had {rc['sha256']}", node=n.name,
                                hint=f"the backup {rc['backup']} is not the pre-run file: compare it "
                                     "by hand before restarting k3s")
            return {"changed": res.changed, "sha256": now}

        out["config"] = _journaled(s, STEP_RESTORE, f"restore {rc['path']} from {rc['backup']}",
                                   restore, node=n.name, data=dict(rc))
    cni_path = posixpath.join(s.params.paths.cni_dir, CILIUM_CNI_FILE)
    if nr.remove_cilium_cni and not n.exists(cni_path):
        out["cilium_cni"] = "absent"
    elif nr.remove_cilium_cni:
        path = cni_path

        def remove() -> dict[str, Any]:
            if not n.exists(path):
                return {"moved": None}
            dst = _backup_target(s, path)
            n.run("mkdir -p %s", s.params.paths.backup_dir, sudo=True).check_output()
            n.run("mv -f %s %s", path, dst, sudo=True).check_output()
            return {"moved": dst}

        out["cilium_cni"] = _journaled(s, STEP_CNI, f"move {path} to the backup folder", remove,
                                       node=n.name, data={"path": path})
    pending = [f for f in nr.restore_files if not n.exists(f["path"]) and n.exists(f["backup"])]
    if nr.restore_files and not pending:
        out["flannel_files"] = "nothing to move back"
    elif nr.restore_files:
        def put_back() -> dict[str, Any]:
            done, kept = [], []
            for f in nr.restore_files:
                if n.exists(f["path"]):
                    kept.append(f"{f['path']} (exists again; backup kept in {f['backup']})")
                    continue
                if not n.exists(f["backup"]):
                    kept.append(f"{f['path']} (no backup at {f['backup']}: never moved)")
                    continue
                n.run("mkdir -p %s", posixpath.dirname(f["path"]), sudo=True).check_output()
                n.run("mv %s %s", f["backup"], f["path"], sudo=True).check_output()
                done.append(f["path"])
            return {"restored": done, "skipped": kept}

        out["flannel_files"] = _journaled(s, STEP_FLANNEL, "move flannel files back", put_back,
                                          node=n.name, data={"files": nr.restore_files})
    return out


def restore_files(s: Any, rp: RollbackPlan) -> Any:
    """With k3s stopped: restore each ``config.yaml`` byte-for-byte (sha256 = pre-run),
    move ``05-cilium.conflist`` to the backup folder, put the flannel files back."""
    todo = [n for n in rp.nodes if n.restore_config or n.remove_cilium_cni or n.restore_files]
    if not todo or not s.require_execute("restoring the node files"):
        return None
    by = {n.node: n for n in todo}
    return _fleet(s, _nodes(s, by)).apply(lambda n: _restore_one(s, n, by[n.name]),
                                          description="restore node files").raise_for_failures()


def start_k3s(s: Any, rp: RollbackPlan) -> pd.DataFrame | None:
    """Start the servers first and wait for the API, then the agents in batches."""
    order = rp._restart_order(start=True)
    if not order or not s.require_execute("starting k3s"):
        return None
    rows = []
    for group in ([n for n in order if n.role == "server"], [n for n in order if n.role != "server"]):
        if not group:
            continue
        by = {n.node: n for n in group}

        def op(node: Any) -> str:
            unit = unit_for(node.role)
            if node.is_active(unit) and STEP_START in by[node.name].done:
                return "already running"

            def do() -> dict[str, Any]:
                node.systemctl("start", unit)
                if not node.is_active(unit):
                    raise NodeError(f"{unit} is not active after start", node=node.name,
                                    hint=f"read `journalctl -u {unit}` on the node: 'address already "
                                         "in use' means a cilium_vxlan device still holds UDP 8472")
                return {"active": True}

            _journaled(s, STEP_START, f"systemctl start {unit}", do, node=node.name, data={"unit": unit})
            if node.role == "server":
                # the choke point retries until the API serves the node object again
                s.cluster.get("nodes", node.name)
            return "started"

        res = _fleet(s, _nodes(s, by)).apply(op, description="start k3s").raise_for_failures()
        rows += res.frame().to_dict("records")
    return pd.DataFrame(rows)


def wait_flannel(s: Any, rp: RollbackPlan, *, wait: bool = True) -> pd.DataFrame:
    """Wait (execute) until every node is Ready; then per node: Ready, flannel.1 present,
    Cilium interfaces absent (over SSH)."""
    if wait and s.execute and rp.touched_nodes:
        def check() -> tuple[bool, list[str]]:
            bad = [n["metadata"]["name"] for n in s.cluster.list("nodes") if not node_ready(n)]
            missing = [n.name for n in _nodes(s, [r.node for r in rp.nodes if r.restart])
                       if "flannel.1" not in {i.name for i in n.interfaces()}]
            return not bad and not missing, ([f"node {b} not Ready" for b in bad]
                                             + [f"{m}: flannel.1 not back yet" for m in missing])
        s.cluster.wait_for(check, timeout=s.params.limits.timeouts.node_ready,
                           what="nodes Ready with flannel.1", interval=1.0, progress=s.progress)
    ready = {n["metadata"]["name"]: node_ready(n) for n in s.cluster.list("nodes")}
    rows = []
    for n in s.nodes:
        row: dict[str, Any] = {"node": n.name, "role": n.role, "Ready": ready.get(n.name, False)}
        ifaces = _interfaces(n, rp.node(n.name))
        if ifaces is None:
            row.update({"flannel.1": None, "cilium interfaces": None,
                        "checked": "no: unreachable, and the rollback left it alone"})
        else:
            row.update({"flannel.1": "flannel.1" in ifaces,
                        "cilium interfaces": ", ".join(sorted(i for i in ifaces if i.startswith("cilium_"))) or "none",
                        "checked": "yes"})
        rows.append(row)
    return pd.DataFrame(rows, columns=["node", "role", "Ready", "flannel.1", "cilium interfaces", "checked"])


def _interfaces(n: Any, nr: NodeRollback) -> set[str] | None:
    """The node's interfaces; None when a node the rollback left alone cannot be reached
    (scenario 2: its SSH is down; the rollback must not depend on it)."""
    try:
        return {i.name for i in n.interfaces()}
    except NodeError:
        if nr.touched:
            raise
        return None


def flannel_problems(table: pd.DataFrame) -> list[str]:
    """One line per node of :func:`wait_flannel`'s table that is not back on flannel."""
    out = []
    for r in table.to_dict("records"):
        if r.get("checked", "yes") != "yes":
            if not r["Ready"]:
                out.append(f"{r['node']}: not Ready")
            continue
        why = [w for w, bad in (("not Ready", not r["Ready"]), ("no flannel.1", not r["flannel.1"]),
                                (f"cilium interfaces: {r['cilium interfaces']}", r["cilium interfaces"] != "none"))
               if bad]
        if why:
            out.append(f"{r['node']}: " + ", ".join(why))
    return out


def _created(pod: dict) -> datetime | None:
    ts = pod["metadata"].get("creationTimestamp")
    try:
        return _ts(ts) if ts else None
    except ValueError:
        return None


#: owners that recreate a deleted pod by themselves; a pod owned by anything else (no
#: owner, or an operator's custom resource such as a Longhorn InstanceManager, whose pods
#: must not disappear under attached volumes) is listed for a person, never deleted.
RECREATING_OWNERS = ("ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController")


def _controller_kind(pod: dict) -> str | None:
    refs = pod["metadata"].get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return ref.get("kind") if ref else None


def pods_to_restart(pods: list[dict], rp: RollbackPlan) -> tuple[list[dict], list[dict]]:
    """(pods to restart, pods listed only: no owner that recreates them), pure.

    Non-hostNetwork pods on a node whose k3s the rollback restarts, created since the CNI
    was switched off (their sandbox is Cilium's, or none), and every non-hostNetwork pod
    on a node whose ``cni0`` bridge reconfigure deleted (its veth hangs off nothing).
    Pods on nodes the rollback leaves alone, hostNetwork pods, finished pods and
    unscheduled pods are not touched."""
    since = _ts(rp.pods_since) if rp.pods_since else None
    bridge_lost = {n.node for n in rp.nodes if n.lost_bridge}
    # a node the rollback leaves alone kept its CNI: its pods are left alone too
    restarted = {n.node for n in rp.nodes if n.restart}
    out = []
    for p in pods:
        spec, md = p.get("spec") or {}, p["metadata"]
        if spec.get("hostNetwork") or md.get("deletionTimestamp"):
            continue
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        node, created = spec.get("nodeName"), _created(p)
        if node in bridge_lost or (node in restarted and since and created and created >= since):
            out.append(p)
    owned = [p for p in out if _controller_kind(p) in RECREATING_OWNERS]
    bare = [p for p in out if _controller_kind(p) not in RECREATING_OWNERS]
    owned.sort(key=lambda p: (p["metadata"].get("namespace") != "kube-system",
                              p["metadata"].get("namespace"), p["metadata"]["name"]))
    return owned, bare


def _key(p: dict) -> str:
    return f"{p['metadata'].get('namespace')}/{p['metadata']['name']}"


def restart_pods(s: Any, rp: RollbackPlan) -> pd.DataFrame:
    """Delete, in batches, the pods whose sandbox is not flannel's, so their controllers
    recreate them on flannel; wait for each batch to be Ready (journaled per batch)."""
    owned, bare = pods_to_restart(s.cluster.list("pods"), rp)
    rows = [{"pod": _key(p), "node": (p.get("spec") or {}).get("nodeName"),
             "action": "restart"} for p in owned]
    rows += [{"pod": _key(p), "node": (p.get("spec") or {}).get("nodeName"),
              "action": (f"skipped: owned by {_controller_kind(p)}, restart it through its operator"
                         if _controller_kind(p) else "skipped: no controller would recreate it")
              + " (it is not on flannel yet)"} for p in bare]
    if rp.pods_done:
        return pd.DataFrame([{"pod": "-", "node": "-", "action": "already done in this rollback"}])
    if not owned or not s.require_execute(f"restarting {len(owned)} pod(s)"):
        return pd.DataFrame(rows, columns=["pod", "node", "action"])
    from .cilium import _wait_replacements

    size = max(1, s.params.limits.pod_restart_batch)
    for i in range(0, len(owned), size):
        batch = owned[i:i + size]

        def do(batch: list[dict] = batch) -> dict[str, Any]:
            for p in batch:
                s.cluster.delete("pods", p["metadata"]["name"], p["metadata"]["namespace"])
            _wait_replacements(s.cluster, batch, timeout=s.params.limits.timeouts.pods_ready)
            return {"restarted": len(batch)}

        _journaled(s, STEP_PODS, f"restart {len(batch)} pod(s) so they get a flannel sandbox", do,
                   data=[_key(p) for p in batch])
        s.progress(f"restarted {min(i + size, len(owned))}/{len(owned)} pod(s)")
    return pd.DataFrame(rows, columns=["pod", "node", "action"])


def pods_health(s: Any) -> pd.DataFrame:
    """Pods that are not Running/Succeeded, or Running but not Ready (with their status)."""
    rows = []
    for p in s.cluster.list("pods"):
        phase = (p.get("status") or {}).get("phase")
        if phase == "Succeeded" or (phase == "Running" and pod_ready(p)):
            continue
        rows.append({"pod": _key(p), "node": (p.get("spec") or {}).get("nodeName"),
                     "status": pod_display_status(p)})
    return pd.DataFrame(rows, columns=["pod", "node", "status"])


VELERO_POLICY_WHY = {
    "none": "Velero's default: objects that still exist are left as they are; only objects "
            "deleted since the backup come back. Safe after a rollback: it cannot undo a live fix.",
    "update": "objects that exist are overwritten with the backup's state (and objects created "
              "after the backup are still NOT deleted): use it only when live objects were damaged.",
}


def velero_policy(policy: str) -> str:
    """Why ``policy`` (``none`` or ``update``); any other value is a parameter error.

    >>> velero_policy("none").startswith("Velero's default")
    True
    """
    if policy not in VELERO_POLICY_WHY:
        raise ParamsError(f"must be 'none' or 'update', got {policy!r}", field="existing_resource_policy",
                          hint="none keeps live objects (the safe choice); update overwrites them")
    return VELERO_POLICY_WHY[policy]


def optional_velero_restore(s: Any, rp: RollbackPlan, *, enabled: bool, policy: str = "none") -> Any:
    """The notebook's optional Velero restore: explain the policy and skip it unless
    ``enabled`` (the ``velero_restore`` parameter)."""
    if not enabled:
        print("no Velero restore (velero_restore=False); policy if asked:", velero_policy(policy))
        return None
    return velero_restore(s, rp, policy=policy)


def velero_restore(s: Any, rp: RollbackPlan, *, policy: str = "none") -> Any:
    """Optional: restore the pre-migration Velero backup with ``existingResourcePolicy``.

    A restore is not a revert (defect 11): see :data:`VELERO_POLICY_WHY`.
    """
    velero_policy(policy)
    if not rp.velero_backup:
        raise GateFailed("a Velero backup recorded by preflight", details=["journal fact velero_backup is absent"],
                         hint="preflight never completed a backup in this run: restore by hand "
                              "from another backup, or re-run with velero_restore=False")
    name = f"{rp.velero_backup}-rollback"
    if not s.require_execute(f"Velero restore {name} (existingResourcePolicy={policy})"):
        return None
    ns = s.params.velero.namespace
    res = _journaled(s, STEP_VELERO, f"Velero restore of {rp.velero_backup} ({policy})",
                     lambda: velero.as_row(velero.restore(s.cluster, rp.velero_backup, name=name,
                                                          namespace=ns, existing_resource_policy=policy,
                                                          timeout=s.params.limits.timeouts.velero,
                                                          progress=s.progress)),
                     data={"backup": rp.velero_backup, "restore": name, "policy": policy})
    return pd.DataFrame([res])


argocd_resume = argocd.resume_for_session  # Restore each Argo CD app's policy exactly from the journal


def node_table(s: Any, rp: RollbackPlan) -> pd.DataFrame:
    """Per node: config sha256 now vs pre-run, flannel.1 present, Cilium interfaces and
    05-cilium absent; ``ok`` when all hold. A node the rollback left alone and cannot
    reach is reported as not read (it was not changed by this run)."""
    cni = posixpath.join(s.params.paths.cni_dir, CILIUM_CNI_FILE)
    path = s.params.paths.k3s_config
    rows = []
    for n in s.nodes:
        nr = rp.node(n.name)
        ifaces = _interfaces(n, nr)
        if ifaces is None:
            rows.append({"node": n.name, "role": n.role, "config sha256 now": "not read (unreachable)",
                         "pre-run sha256": "not changed by this run", "config identical": True,
                         "flannel.1 present": None, "cilium interfaces absent": None,
                         "05-cilium absent": None, "ok": True})
            continue
        now = n.sha256(path)
        pre = nr.restore_config["sha256"] if nr.restore_config else None
        cil = sorted(i for i in ifaces if i in CILIUM_INTERFACES)
        same = (now == pre) if pre else True
        row = {"node": n.name, "role": n.role, "config sha256 now": (now or "absent")[:16],
               "pre-run sha256": pre[:16] if pre else "not changed by this run",
               "config identical": same, "flannel.1 present": "flannel.1" in ifaces,
               "cilium interfaces absent": not cil, "05-cilium absent": not n.exists(cni)}
        row["ok"] = bool(row["config identical"] and row["flannel.1 present"]
                         and row["cilium interfaces absent"] and row["05-cilium absent"])
        rows.append(row)
    return pd.DataFrame(rows)


def node_problems(table: pd.DataFrame) -> list[str]:
    """One line per node of :func:`node_table` that is not ``ok``, naming what differs."""
    out = []
    for r in table.to_dict("records"):
        if r["ok"]:
            continue
        why = [k for k in ("config identical", "flannel.1 present", "cilium interfaces absent",
                           "05-cilium absent") if not r[k]]
        out.append(f"{r['node']}: NOT " + ", NOT ".join(why)
                   + (f" (sha256 now {r['config sha256 now']}, pre-run {r['pre-run sha256']})"
                      if not r["config identical"] else ""))
    return out


def finish(s: Any) -> bool:
    """Record ``rolled_back`` and release the migration lock (execute only)."""
    if not s.execute:
        return False
    s.journal.set("rolled_back", True)
    return lock.release(s.cluster, s.run_id)


class PlanView:
    """HTML/text view of a :class:`RollbackPlan` for the notebook."""

    def __init__(self, rp: RollbackPlan) -> None:
        self.rp = rp

    def __repr__(self) -> str:
        if self.rp.nothing_to_do:
            return "Nothing to roll back: the journal records no change."
        return self.rp.steps().to_string(index=False) + "\n\n" + self.rp.frame().to_string(index=False)

    def _repr_html_(self) -> str:
        return self.rp._repr_html_()
