"""The rollback's plan: what to undo, computed from the journal alone (pure).

What was done is what gets undone; steps the journal does not record are not touched.
:func:`plan_from_journal` turns the journal document (its entries and facts) and the
node list into a :class:`RollbackPlan`; :func:`restart_plan` adds the cluster's pods to
decide which of them must be recreated on flannel. Nothing here talks to a cluster or a
node, so every rule is golden-tested offline: ``tests/fixtures/rollback/<case>/`` holds a
``journal.json`` and the ``plan.json`` it must give (and, for some cases, ``pods.json``
and the ``restart.json`` the pod selection must give). :mod:`runbook.rollback` carries
the plan out.

Example:
    >>> import json
    >>> doc = {"entries": [], "facts": {"velero_backup": "phase22-r1"}}
    >>> p = plan_from_journal(doc, [("set-hog", "server"), ("fast-skunk", "agent")])
    >>> p.nothing_to_do, p.velero_backup
    (True, 'phase22-r1')
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Sequence

import pandas as pd

from . import node_by_node_plan as nbp
from . import pods as pods_mod
from .k3sconfig import unit_for
from .presentation import frame_html
from .server_clock import ClockBounds, possibly_at_or_after, possibly_before

__all__ = [
    "STEP_CRDS", "STEP_FILES", "STEP_CLEANUP", "STEP_KILLALL", "STEP_REBOOT",
    "CILIUM_INTERFACES", "CILIUM_CNI_FILE", "CILIUM_PREFIXES", "MIGRATION_STEPS", "BRIDGE",
    "ROLLBACK_STEPS", "NodeRollback", "RollbackPlan", "plan_from_journal", "restart_candidates",
    "restart_plan", "pods_to_restart", "PlanView",
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

STEP_HELM = "helm-uninstall"
STEP_IFACES = "delete-cilium-ifaces"
STEP_STOP = "stop-k3s"
STEP_RESTORE = "restore-config"
STEP_CNI = "remove-cilium-cni"
STEP_FLANNEL = "restore-flannel-files"
STEP_START = "start-k3s"
STEP_PODS = "restart-pods"
STEP_VELERO = "velero-restore"
STEP_CRDS = "remove-cilium-crds"
STEP_FILES = "remove-cilium-files"
STEP_CLEANUP = "cilium-cleanup"
STEP_KILLALL = "remove-cni-chains-ipsets"
STEP_REBOOT = "reboot-node"
#: the per-node rollback's steps that prove a node back on flannel (runbook.node_by_node_rollback)
NBN_RESTORE_CNI = "nbn-rb-restore-cni"
NBN_VALIDATE = "nbn-rb-validate"
#: the unswitch's k3s restart with flannel back (runbook.node_by_node_unswitch)
NBN_US_RESTART = "nbn-us-restart-k3s"
ROLLBACK_STEPS = (STEP_HELM, STEP_IFACES, STEP_STOP, STEP_RESTORE, STEP_CNI, STEP_FLANNEL,
                  STEP_START, STEP_PODS, STEP_VELERO, STEP_CRDS, STEP_FILES, STEP_CLEANUP,
                  STEP_KILLALL, STEP_REBOOT)


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
        remove_cilium_cni: Cilium's files go to the backup folder (its CNI config and binary,
            its sysctl override) and Cilium's own cleanup runs here (or the node reboots).
        restore_files: ``[{"path", "backup"}]`` flannel files/leases to move back.
        lost_bridge: reconfigure deleted ``cni0`` here: its old pods lost their network.
        done: rollback steps already done for this node since the last migration step.
        reasons: why the node is in the plan, from the journal.
        on_flannel: node-by-node only (None otherwise): the journal proves the node's pods
            and its k3s are on flannel already, so the tail neither stops nor starts its k3s
            (``restart`` is False) and restarts only its pods created before flannel's
            config was back there. ``{"since": ISO time of the per-node rollback's
            ``nbn-rb-restore-cni`` (None: the node never left flannel), "evidence": words}``.
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
    on_flannel: dict[str, Any] | None = None

    @property
    def touched(self) -> bool:
        """False when the migration never changed this node: the rollback leaves it alone."""
        return bool(self.delete_cilium or self.restart or self.restore_config
                    or self.remove_cilium_cni or self.restore_files)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.on_flannel is None:   # big-bang plans (and their golden files) do not carry it
            del out["on_flannel"]
        return out


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
        reboot_nodes: the nodes k3s would restart are rebooted instead, servers first, one at
            a time (``rollback.reboot_nodes``); a reboot clears the kernel state, so no
            cleanup pod, no stop/start of k3s and no pod restarts on those nodes.
        remove_crds: the cilium.io CRDs are deleted after the uninstall (``rollback.remove_crds``).
        cilium_files: the paths of Cilium's files (from the values' CNI folders).
        crds_done: the CRDs are already deleted in this rollback.
        clock: the API server's clock against this machine's (:mod:`runbook.server_clock`).
    """

    helm_uninstall: dict[str, str] | None
    nodes: list[NodeRollback]
    pods_since: str | None
    argocd_recorded: list[str]
    velero_backup: str | None
    helm_done: bool = False
    pods_done: bool = False
    reboot_nodes: bool = False
    remove_crds: bool = False
    cilium_files: list[str] = field(default_factory=list)
    crds_done: bool = False
    #: the API server's clock against this machine's, to compare pods with journal times
    #: (measured by :func:`runbook.rollback.plan`; the journal alone cannot tell)
    clock: ClockBounds = field(default_factory=ClockBounds.unmeasured)

    @property
    def touched_nodes(self) -> list[NodeRollback]:
        return [n for n in self.nodes if n.touched]

    def rebooted(self, n: NodeRollback) -> bool:
        """Whether ``n`` is rebooted (``reboot_nodes`` and k3s would restart there); a node
        on flannel already gets Cilium's cleanup pod instead."""
        return self.reboot_nodes and n.restart

    @property
    def on_flannel_nodes(self) -> list[NodeRollback]:
        """Node-by-node: the nodes the journal proves on flannel already (no k3s stop/start)."""
        return [n for n in self.nodes if n.on_flannel]

    @property
    def nothing_to_do(self) -> bool:
        return not self.helm_uninstall and not self.touched_nodes and not self.pods_since

    def node(self, name: str) -> NodeRollback:
        return next(n for n in self.nodes if n.node == name)

    def to_dict(self) -> dict[str, Any]:
        return {"helm_uninstall": self.helm_uninstall, "nodes": [n.to_dict() for n in self.nodes],
                "pods_since": self.pods_since, "argocd_recorded": list(self.argocd_recorded),
                "velero_backup": self.velero_backup, "helm_done": self.helm_done,
                "pods_done": self.pods_done, "reboot_nodes": self.reboot_nodes,
                "remove_crds": self.remove_crds, "cilium_files": list(self.cilium_files),
                "crds_done": self.crds_done}

    def frame(self) -> pd.DataFrame:
        """One row per node: what will be done there (``-`` = left alone)."""
        rows = []
        for n in self.nodes:
            rows.append({
                "node": n.node, "role": n.role,
                "Cilium's cleanup": ("files; reboot clears the kernel state" if self.rebooted(n)
                                     else "files, cleanup pod") if n.remove_cilium_cni else "-",
                "delete cilium ifaces/chains": "yes" if n.delete_cilium and not self.rebooted(n) else "-",
                ("reboot" if self.reboot_nodes else "stop/start k3s"):
                    ("reboot" if self.reboot_nodes else unit_for(n.role)) if n.restart
                    else "no: on flannel already" if n.on_flannel else "-",
                "restore config.yaml": (f"from {n.restore_config['backup']}" if n.restore_config else "-"),
                "put back flannel files": ", ".join(f["path"] for f in n.restore_files) or "-",
                "already done": ", ".join(n.done) or "-",
                "why": "; ".join(n.reasons) or "not changed by this run: left alone"})
        return pd.DataFrame(rows)

    def steps(self) -> pd.DataFrame:
        """The cluster-wide steps in order, with what the journal says about each."""
        touched = self.touched_nodes
        cil = ", ".join(n.node for n in touched if n.remove_cilium_cni) or "not needed"
        order = ", ".join(n.node for n in self._restart_order(start=True)) or "not needed"
        restore = ", ".join(n.node for n in touched if n.restore_config or n.restore_files) or "not needed"
        kept = ", ".join(n.node for n in self.on_flannel_nodes)
        if kept and order == "not needed":
            order = f"not needed: {kept} on flannel already"
        pods = self._pods_target()
        rows = [
            ("1", "helm uninstall " + (self.helm_uninstall or {}).get("release", "cilium"),
             "done" if self.helm_done else ("planned" if self.helm_uninstall else "not needed: never installed")),
            ("2", "delete the cilium.io CRDs (objects saved first)",
             "done" if self.crds_done else "planned" if self.remove_crds and self.helm_uninstall
             else "kept (rollback.remove_crds: false)" if self.helm_uninstall else "not needed"),
            ("3", "Cilium's files to the backup folder; " + (
                "the reboot clears the kernel state" + (f" (on {kept}, not rebooted: cilium-dbg post-uninstall-"
                                                        "cleanup in a pod, its interfaces and CILIUM chains)"
                                                        if kept else "")
                if self.reboot_nodes else "cilium-dbg post-uninstall-cleanup in a pod"), cil),
        ]
        if self.reboot_nodes:
            rows += [
                ("4", "restore config.yaml byte-for-byte, put back flannel files", restore),
                ("5", "reboot: servers first, one node at a time, each Ready with flannel.1 before "
                      "the next", order),
            ]
        else:
            rows += [
                ("4", "delete cilium interfaces + CILIUM chains (k3s still running)",
                 ", ".join(n.node for n in touched if n.delete_cilium) or "not needed"),
                ("5", "stop k3s: agents, then servers; remove CNI-* chains and kube-router ipsets",
                 ", ".join(n.node for n in self._restart_order()) or "not needed"),
                ("6", "restore config.yaml byte-for-byte, put back flannel files", restore),
                ("7", "start k3s: servers first (wait for the API), then agents; wait for flannel.1", order),
            ]
        rows += [
            (str(len(rows) + 1), "restart pods whose sandbox is not flannel's", pods),
            (str(len(rows) + 2), "Velero restore (optional)", self.velero_backup or "no backup recorded"),
            (str(len(rows) + 3), "restore Argo CD policies exactly", f"{len(self.argocd_recorded)} app(s) recorded"),
        ]
        return pd.DataFrame(rows, columns=["#", "step", "journal says / targets"])

    def _pods_target(self) -> str:
        if self.pods_done:
            return "done"
        back = [n.node for n in self.on_flannel_nodes if n.on_flannel.get("since")]
        if self.reboot_nodes and not back:
            return "not needed: a reboot re-creates every sandbox on flannel"
        bridge = [n.node for n in self.nodes if n.lost_bridge and not n.on_flannel and not self.rebooted(n)]
        where = [n.node for n in self.nodes if n.restart and not self.rebooted(n)]
        out = []
        if self.on_flannel_nodes:
            if (self.pods_since and where) or bridge:
                out.append(f"pods created since {self.pods_since} on {', '.join(where) or 'no node'}, or on "
                           f"{', '.join(bridge) or 'no node'}")
        elif self.pods_since or bridge:
            out.append(f"pods created since {self.pods_since} or on {', '.join(bridge) or 'no node'}")
        if back:
            out.append(f"on {', '.join(back)} only the pods created before flannel's config was back there")
        return "; ".join(out) or "not needed"

    def _restart_order(self, start: bool = False) -> list[NodeRollback]:
        nodes = [n for n in self.nodes if n.restart]
        servers = [n for n in nodes if n.role == "server"]
        agents = [n for n in nodes if n.role != "server"]
        return servers + agents if start else agents + servers

    def _repr_html_(self) -> str:
        if self.nothing_to_do:
            return ("<p><b>Nothing to roll back</b>: the journal records no change of a node's "
                    "k3s config, no k3s restart, no cleanup and no helm install.</p>")
        return frame_html(self.steps()) + frame_html(self.frame())


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("entries") or [])


def _is_migration(e: dict[str, Any]) -> bool:
    return e.get("phase") != "rollback" and e.get("step") in MIGRATION_STEPS


def plan_from_journal(doc: dict[str, Any], nodes: Sequence[tuple[str, str]], *,
                      k3s_config: str = "/etc/rancher/k3s/config.yaml",
                      release: str = "cilium", namespace: str = "kube-system",
                      reboot_nodes: bool = False, remove_crds: bool = False,
                      cilium_files: Sequence[str] = ()) -> RollbackPlan:
    """Compute the rollback from a journal document (pure: golden-tested).

    Args:
        doc: the journal (``Journal.to_dict()`` or the parsed ``journal.json``).
        nodes: ``(name, role)`` of every node in the params.
        k3s_config: the config path whose backups are restored.
        release, namespace: the Cilium helm release.
        reboot_nodes, remove_crds: the params' ``rollback`` section.
        cilium_files: the paths of Cilium's files (:func:`runbook.datapath.cilium_files`).

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
    * a node the journal does not name (an agent never reached) is left alone;
    * with ``reboot_nodes`` every node k3s would restart is rebooted instead (servers first,
      one at a time), and no pod is restarted: the reboot re-creates every sandbox;
    * node-by-node: a node the journal proves on flannel (:func:`on_flannel`) keeps Cilium's
      removal (uninstall, its files, its cleanup pod, its devices and chains: the agent
      ran there) but its k3s is neither stopped nor started, so neither the
      ``k3s-killall.sh`` cleanup nor a reboot applies to it, and of its pods only those
      created before flannel's config was back are restarted (docs/node-by-node.md, I9).

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
            n.on_flannel = on_flannel(entries, name)
            if n.on_flannel:
                n.restart = False
                n.reasons.append(f"on flannel already ({n.on_flannel['evidence']}): k3s is neither "
                                 "stopped nor started")
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
    # the per-node rollback journals its own pod restarts as restart-pods too (inside its
    # nbn-rb-pods step): only one begun after every per-node step ended is the tail's
    nbn_end = max((_ts(e.get("completed_at") or e["recorded_at"]) for e in entries
                   if e.get("phase") == "rollback" and str(e.get("step", "")).startswith("nbn-")
                   and (e.get("completed_at") or e.get("recorded_at"))), default=None)
    done_steps = {e["step"] for e in rb_done if not e.get("node")
                  and (e["step"] != STEP_PODS or nbn_end is None
                       or (e.get("recorded_at") and _ts(e["recorded_at"]) > nbn_end))}
    return RollbackPlan(helm_uninstall=helm_plan, nodes=out, pods_since=pods_since,
                        argocd_recorded=recorded, velero_backup=facts.get("velero_backup"),
                        helm_done=STEP_HELM in done_steps and cilium,
                        pods_done=STEP_PODS in done_steps, reboot_nodes=bool(reboot_nodes),
                        remove_crds=bool(remove_crds) and cilium,
                        cilium_files=list(cilium_files) if cilium else [],
                        crds_done=STEP_CRDS in done_steps and cilium)


def _seq(e: dict[str, Any]) -> int:
    return int(e.get("seq") or 0)


def on_flannel(entries: Sequence[dict[str, Any]], node: str) -> dict[str, Any] | None:
    """Whether the journal proves ``node`` on flannel already under node-by-node (pure):
    ``{"since", "evidence"}``, or None when it does not (then big-bang's rules apply).

    Proven when the install was node-by-node's (its CiliumNodeConfig, ``nbn-cnc``, is
    recorded), every k3s restart or flannel cleanup the switch recorded on the node is
    followed by the unswitch's restart with flannel (``nbn-us-restart-k3s`` done), and
    either the node was never labelled for Cilium's CNI config (no ``nbn-label`` nor
    ``nbn-agent``: with ``cni.customConf`` its agent wrote none, F2/F3; ``since`` None) or
    the per-node rollback put flannel's config back (``nbn-rb-restore-cni``, its time is
    ``since``) and a probe pod then got a flannel address (``nbn-rb-validate``), both done
    after the node's last migration step.

    Example:
        >>> e = [{"seq": 1, "step": "nbn-cnc", "phase": "install", "status": "done"},
        ...      {"seq": 2, "step": "nbn-label", "node": "a", "phase": "install", "status": "done"}]
        >>> on_flannel(e, "a") is None, on_flannel(e, "b")["since"]
        (True, None)
        >>> done = {"phase": "rollback", "node": "a", "status": "done"}
        >>> on_flannel(e + [{**done, "seq": 3, "step": "nbn-rb-restore-cni", "completed_at": "T3"},
        ...                 {**done, "seq": 4, "step": "nbn-rb-validate"}], "a")["since"]
        'T3'
    """
    mig = [e for e in entries if e.get("phase") != "rollback"]
    if not any(e.get("step") == nbp.STEP_CNC for e in mig):
        return None
    mine = [e for e in mig if e.get("node") == node]
    back = [e for e in entries if e.get("phase") == "rollback" and e.get("node") == node
            and e.get("status") == "done"]
    for e in mine:
        if e.get("step") in ("restart-k3s", "cleanup-leftovers") and not any(
                b.get("step") == NBN_US_RESTART and _seq(b) > _seq(e) for b in back):
            return None       # k3s still runs as the switch left it, or flannel's devices are gone
    if not nbp.needs_revert(entries, node):
        if nbp.switch_started(entries):
            return None       # the switch's final values write Cilium's config on every node
        return {"since": None, "evidence": "never labelled for Cilium's CNI config: its pods never left flannel"}
    last = max(_seq(e) for e in mine)
    cni = [b for b in back if b.get("step") == NBN_RESTORE_CNI and _seq(b) > last]
    val = [b for b in back if b.get("step") == NBN_VALIDATE and _seq(b) > last]
    if not cni or not val or _seq(val[-1]) < _seq(cni[-1]):
        return None       # not taken back yet, or not validated since flannel's config came back
    addr = (val[-1].get("result") or {}).get("address") if isinstance(val[-1].get("result"), dict) else None
    return {"since": cni[-1].get("completed_at") or cni[-1].get("recorded_at"),
            "evidence": "the per-node rollback put flannel's CNI config back and a probe pod then got "
                        + (f"{addr}, a flannel address" if addr else "a flannel address")}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _created(pod: dict) -> datetime | None:
    ts = pod["metadata"].get("creationTimestamp")
    try:
        return _ts(ts) if ts else None
    except ValueError:
        return None


def restart_candidates(pods: list[dict], rp: RollbackPlan,
                       clock: ClockBounds | None = None) -> list[dict]:
    """The pods whose sandbox is not flannel's (pure).

    Non-hostNetwork pods on a node whose k3s the rollback restarts, created since the CNI
    was switched off (their sandbox is Cilium's, or none), and every non-hostNetwork pod
    on a node whose ``cni0`` bridge reconfigure deleted (its veth hangs off nothing).
    Pods on nodes the rollback leaves alone, hostNetwork pods, finished pods and
    unscheduled pods are not touched; on a rebooted node none is (the reboot re-creates
    every sandbox of the node with flannel). On a node-by-node node on flannel already
    (:attr:`NodeRollback.on_flannel`) only the pods created before flannel's config was
    back there are: the per-node rollback could not re-create them (their owner's policy,
    or they came in between), and they lose their network when Cilium goes; on a node that
    never left flannel, none is.

    Creation times are the API server's, to the second; the journal's are this machine's
    (:mod:`runbook.server_clock`): a pod is compared with a journal time through ``clock``,
    the measured skew between the two (default: the plan's), and a pod that may have
    been created on the wrong side of it is restarted."""
    clock = clock or rp.clock
    since = _ts(rp.pods_since) if rp.pods_since else None
    by = {n.node: n for n in rp.nodes}
    out = []
    for p in pods:
        spec, md = p.get("spec") or {}, p["metadata"]
        if spec.get("hostNetwork") or md.get("deletionTimestamp"):
            continue
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        n, created = by.get(spec.get("nodeName")), _created(p)
        if n is None or rp.rebooted(n):
            continue
        if n.on_flannel:
            back = n.on_flannel.get("since")
            if back and created and possibly_before(created, _ts(back), clock):
                out.append(p)
        # a node the rollback leaves alone kept its CNI: its pods are left alone too
        elif n.lost_bridge or (n.restart and since and created
                               and possibly_at_or_after(created, since, clock)):
            out.append(p)
    return out


def restart_plan(pods: list[dict], rp: RollbackPlan,
                 clock: ClockBounds | None = None) -> pods_mod.RestartPlan:
    """The candidates split by owner under the rollback's policy
    (:func:`runbook.pods.policy_for` ``("rollback")``), pure."""
    return pods_mod.plan_restart(restart_candidates(pods, rp, clock), policy=pods_mod.policy_for("rollback"))


def pods_to_restart(pods: list[dict], rp: RollbackPlan,
                    clock: ClockBounds | None = None) -> tuple[list[dict], list[dict]]:
    """(pods to restart, pods listed only: no owner the policy lets recreate them), pure."""
    p = restart_plan(pods, rp, clock)
    return p.restart, [sk.raw for sk in p.skipped]


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
