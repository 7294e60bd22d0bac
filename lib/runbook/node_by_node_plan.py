"""The node-by-node strategy's plan (pure): values, node order, objects, and where a run resumes.

``docs/node-by-node.md`` derives the procedure from the sources (facts F1-F15); this
module holds what can be decided without a cluster, so every rule is tested offline:

* :func:`migration_values`: the values of the migration-mode install (F2, with
  ``cni.confPath``/``cni.binPath`` set to the folders k3s's containerd reads while
  flannel is on, F6-F8, and kube-proxy replacement off until the switch);
* :func:`final_values`: the values of the switch (F5): the params' values with the
  migration's pod CIDR kept (cluster-pool IPAM cannot move pods to another range);
* :func:`node_order`: agents first, servers last (F4);
* :func:`cnc_manifest` (F3) and :func:`probe_pod_manifest` (step 2.6);
* :func:`resume_point`: from the journal's entries, the node in progress and its next
  step, so a killed run continues there;
* :func:`rollback_order`: the nodes that got anything of step 2, newest first.

Example:
    >>> order = node_order([("set-hog", "server"), ("fast-skunk", "agent"), ("fast-heron", "agent")])
    >>> order
    ['fast-skunk', 'fast-heron', 'set-hog']
    >>> rp = resume_point([{"step": "nbn-cordon", "node": "fast-skunk", "status": "done", "seq": 1}], order)
    >>> rp.node, rp.step
    ('fast-skunk', 'drain')
"""
from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["LABEL", "CNC_NAME", "NODE_STEPS", "SWITCH_STEPS", "STEP_HELM", "STEP_CNC",
           "journal_step", "migration_values", "final_values", "node_order", "cnc_manifest",
           "probe_pod_manifest", "ResumePoint", "resume_point", "rollback_order", "cni_folders",
           "in_cidr", "CONFLIST", "FLANNEL_CONFLIST", "CILIUM_BAK", "needs_revert", "switch_started"]

#: the label the CiliumNodeConfig selects (Cilium's migration guide, step 6)
LABEL = "io.cilium.migration/cilium-default"
#: the CiliumNodeConfig's name (kube-system)
CNC_NAME = "cilium-default"
CNC_API = "cilium.io/v2alpha1"
#: the files the agent writes and renames in the CNI folder (F3, ``cni-exclusive``)
CONFLIST = "05-cilium.conflist"
FLANNEL_CONFLIST = "10-flannel.conflist"
CILIUM_BAK = ".cilium_bak"
#: the probe pods' label (so a rerun finds and deletes a leftover one)
PROBE_LABEL = "phase22.runbook/nbn-probe"

#: one node's steps, in order (docs/node-by-node.md step 2); journaled as ``nbn-<step>``
NODE_STEPS: tuple[str, ...] = ("cordon", "drain", "label", "agent", "pods", "validate", "uncordon")
#: the helm install shares big-bang's step name, so 05-rollback's plan uninstalls it and
#: cleans every node exactly as after a big-bang install
STEP_HELM = "helm-install"
STEP_CNC = "nbn-cnc"
#: the switch's own steps (step 3); the server keys and the leftovers cleanup are
#: 02-reconfigure's steps (``write-file``, ``cleanup-leftovers``), so the rollback's plan
#: reads them as it does after a big-bang run
SWITCH_STEPS: tuple[str, ...] = ("nbn-final-values", "nbn-rollout", "nbn-delete-cnc", "nbn-unlabel",
                                 "nbn-kpr", "nbn-kpr-rollout", "nbn-remove-k3s-conflist")


def journal_step(step: str) -> str:
    """The journal's name of a node step: ``journal_step("drain") == "nbn-drain"``."""
    return f"nbn-{step}"


# ---------------------------------------------------------------------------- values
def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for k in head:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[last] = value


#: the agents' DaemonSet rolls one node at a time while both overlays run, as the
#: strategy moves nodes (the chart's default lets two agents restart at once), unless the
#: values choose their own ``updateStrategy``
ONE_AGENT_AT_A_TIME = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}


def _ipam(v: dict[str, Any], cidr: str, mask: int) -> None:
    ipam = v.get("ipam") if isinstance(v.get("ipam"), dict) else {}
    op = dict(ipam.get("operator") or {})
    op.update({"clusterPoolIPv4PodCIDRList": [cidr], "clusterPoolIPv4MaskSize": mask})
    v["ipam"] = {**ipam, "mode": "cluster-pool", "operator": op}


def migration_values(values: dict[str, Any], *, cidr: str, mask: int, conf_dir: str,
                     bin_dir: str) -> dict[str, Any]:
    """The params' values turned into Cilium's migration mode (F2, step 1.1).

    A new pod CIDR with cluster-pool IPAM; VXLAN on 8473 (flannel keeps 8472); no CNI
    config written (``cni.customConf``) except where a CiliumNodeConfig says so, into
    ``conf_dir``, the folder k3s's containerd reads while flannel is on; nothing removed
    on shutdown (``cni.uninstall=false``); no policy enforcement; no restart of
    unmanaged pods; routing to the old overlay through the host stack; kube-proxy
    replacement off (k3s's kube-proxy serves Services until the switch); and, unless the
    values choose their own, agents restarted one node at a time (``updateStrategy``).

    Example:
        >>> v = migration_values({"kubeProxyReplacement": True}, cidr="10.44.0.0/16", mask=24,
        ...                      conf_dir="/var/lib/rancher/k3s/agent/etc/cni/net.d",
        ...                      bin_dir="/var/lib/rancher/k3s/data/cni")
        >>> v["cni"]["customConf"], v["kubeProxyReplacement"], v["tunnelPort"]
        (True, False, 8473)
    """
    v = copy.deepcopy(values)
    _ipam(v, cidr, mask)
    v.setdefault("updateStrategy", copy.deepcopy(ONE_AGENT_AT_A_TIME))
    port = v.get("tunnelPort")
    for key, value in (("routingMode", "tunnel"), ("tunnelProtocol", "vxlan"),
                       ("tunnelPort", port if isinstance(port, int) and port != 8472 else 8473),
                       ("cni.customConf", True), ("cni.uninstall", False),
                       ("cni.confPath", conf_dir), ("cni.binPath", bin_dir),
                       ("operator.unmanagedPodWatcher.restart", False),
                       ("policyEnforcementMode", "never"), ("bpf.hostLegacyRouting", True),
                       ("kubeProxyReplacement", False)):
        _set(v, key, value)
    return v


def final_values(values: dict[str, Any], *, cidr: str, mask: int) -> dict[str, Any]:
    """The values of the switch (F5, step 3.1): the params' values, with the migration's
    cluster-pool CIDR (the pods already have addresses from it), Cilium writing its CNI
    config everywhere, unmanaged pods restarted and policies enforced as the values say.
    ``cni.confPath``/``cni.binPath`` are the values' own (containerd's defaults once flannel
    is off, F7). Agents restart one node at a time unless the values say otherwise.

    Example:
        >>> final_values({"ipam": {"mode": "kubernetes"}}, cidr="10.44.0.0/16", mask=24)["ipam"]["mode"]
        'cluster-pool'
    """
    v = copy.deepcopy(values)
    _ipam(v, cidr, mask)
    v.setdefault("updateStrategy", copy.deepcopy(ONE_AGENT_AT_A_TIME))
    _set(v, "cni.customConf", False)
    _set(v, "operator.unmanagedPodWatcher.restart", True)
    v.setdefault("policyEnforcementMode", "default")
    return v


def cni_folders(dirs: dict[str, tuple[str, str]]) -> tuple[tuple[str, str] | None, list[str]]:
    """The one ``(conf_dir, bin_dir)`` every node's containerd reads now, and the nodes
    that differ (``cni.confPath``/``cni.binPath`` are cluster-wide values, so they must
    agree: a node that differs is a preflight failure).

    Example:
        >>> cni_folders({"a": ("/x", "/y"), "b": ("/x", "/z")})
        (None, ['a: conf_dir /x, bin_dir /y', 'b: conf_dir /x, bin_dir /z'])
    """
    seen = sorted(set(dirs.values()))
    if len(seen) == 1:
        return seen[0], []
    return None, [f"{n}: conf_dir {c}, bin_dir {b}" for n, (c, b) in sorted(dirs.items())]


def in_cidr(ip: str | None, cidr: str) -> bool:
    """Whether ``ip`` is an address inside ``cidr`` (False for no address)."""
    if not ip:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# ---------------------------------------------------------------------------- objects
def node_order(nodes: Iterable[tuple[str, str]]) -> list[str]:
    """Agents first, servers last, each in params order (F4: not a control-plane node first)."""
    nodes = list(nodes)
    return [n for n, r in nodes if r != "server"] + [n for n, r in nodes if r == "server"]


def cnc_manifest(namespace: str = "kube-system") -> dict[str, Any]:
    """The CiliumNodeConfig of F3: on the labelled nodes only, write the CNI config when
    Ready, take it over exclusively (flannel's conflist renamed ``*.cilium_bak``)."""
    return {"apiVersion": CNC_API, "kind": "CiliumNodeConfig",
            "metadata": {"name": CNC_NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "phase22-runbook"}},
            "spec": {"nodeSelector": {"matchLabels": {LABEL: "true"}},
                     "defaults": {"write-cni-conf-when-ready": f"/host/etc/cni/net.d/{CONFLIST}",
                                  "custom-cni-conf": "false", "cni-chaining-mode": "none",
                                  "cni-exclusive": "true"}}}


def probe_pod_manifest(node: str, *, image: str, namespace: str, run_id: str) -> dict[str, Any]:
    """A pod pinned to ``node`` (``spec.nodeName``: it runs on a cordoned node too) that
    sleeps while the runbook probes from it, then is deleted."""
    name = f"phase22-nbn-probe-{node}"[:63].rstrip("-.")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {PROBE_LABEL: "true", "phase22.runbook/run": run_id[:63]}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "probe", "image": image, "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


# ---------------------------------------------------------------------------- resume
@dataclass
class ResumePoint:
    """Where the per-node loop stands, read from the journal.

    Attributes:
        done: the nodes whose every step is done, in order.
        node: the node in progress (or the next one), None when every node is done.
        step: that node's next step (``cordon`` for a node not started).
        pending: steps of ``node`` recorded but never completed (a killed run): the
            step is repeated, and each step is idempotent.
        started: whether any node step was ever recorded.
    """

    done: list[str] = field(default_factory=list)
    node: str | None = None
    step: str | None = None
    pending: list[str] = field(default_factory=list)
    started: bool = False

    @property
    def finished(self) -> bool:
        return self.node is None

    def __str__(self) -> str:
        if self.finished:
            return f"every node is on Cilium ({', '.join(self.done)})"
        where = f"{self.node}, next step {self.step}"
        if self.pending:
            where += f" (interrupted during {', '.join(self.pending)}: repeated)"
        head = f"done: {', '.join(self.done)}; " if self.done else ""
        return head + ("continue with " if self.started else "start with ") + where


def _done(entries: Sequence[dict[str, Any]], step: str, node: str) -> bool:
    return any(e.get("step") == journal_step(step) and e.get("node") == node
               and e.get("status") == "done" for e in entries)


def resume_point(entries: Sequence[dict[str, Any]], order: Sequence[str]) -> ResumePoint:
    """The node in progress and its next step, from the journal's entries (pure).

    A node is done when its last step (``uncordon``) is done. The first node that is not
    is the one in progress; its next step is the first one not done (a step recorded
    but not completed counts as not done: it is repeated). Entries of the rollback
    phase are ignored.

    Example:
        >>> e = [{"step": f"nbn-{s}", "node": "a", "status": "done"} for s in NODE_STEPS]
        >>> str(resume_point(e + [{"step": "nbn-cordon", "node": "b", "status": "intent"}], ["a", "b"]))
        'done: a; continue with b, next step cordon (interrupted during cordon: repeated)'
    """
    mig = [e for e in entries if e.get("phase") != "rollback"]
    ours = {journal_step(s) for s in NODE_STEPS}
    out = ResumePoint(started=any(e.get("step") in ours for e in mig))
    for node in order:
        if _done(mig, NODE_STEPS[-1], node):
            out.done.append(node)
            continue
        out.node = node
        out.step = next(s for s in NODE_STEPS if not _done(mig, s, node))
        out.pending = [s for s in NODE_STEPS if not _done(mig, s, node) and any(
            e.get("step") == journal_step(s) and e.get("node") == node for e in mig)]
        return out
    return out


def rollback_order(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The nodes that got any of step 2 (cordoned at least), newest first: the order the
    rollback takes them back (:func:`needs_revert` tells which need more than an
    uncordon). A node whose per-node rollback is done (``nbn-rb-uncordon`` after its last
    migration step) is left out.

    Example:
        >>> rollback_order([{"step": "nbn-label", "node": "a", "seq": 3},
        ...                 {"step": "nbn-label", "node": "b", "seq": 9}])
        ['b', 'a']
    """
    touched: dict[str, int] = {}
    for e in entries:
        if e.get("phase") != "rollback" and e.get("step", "").startswith("nbn-") and \
                e.get("step", "").removeprefix("nbn-") in NODE_STEPS and e.get("node"):
            touched[e["node"]] = max(touched.get(e["node"], 0), int(e.get("seq") or 0))
    out = []
    for node, seq in sorted(touched.items(), key=lambda kv: -kv[1]):
        undone = any(e.get("step") == "nbn-rb-uncordon" and e.get("node") == node
                     and e.get("status") == "done" and int(e.get("seq") or 0) > seq for e in entries)
        if not undone:
            out.append(node)
    return out


#: the availability stages of a node-by-node rehearsal: (name, the journal step that opens
#: it, whether that step belongs to the rollback phase); the rehearsal marks "rollback"
#: itself when 05-rollback starts, and "rollback: cleanup" opens with the rollback's first
#: step after the per-node ones (:func:`stage_starts`)
STAGES: tuple[tuple[str, str, bool], ...] = (
    ("node by node", "nbn-cordon", False), ("switch", "nbn-final-values", False),
    ("rollback: unswitch", "nbn-us-cnc", True), ("rollback: node by node", "nbn-rb-cordon", True))
CLEANUP_STAGE = "rollback: cleanup"


def stage_starts(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(stage, recorded_at)`` of each of :data:`STAGES` the run reached (pure): the first
    entry of its step in the migration's phases, or in the rollback's for a rollback stage;
    then :data:`CLEANUP_STAGE`, from the rollback's first step after its last node-by-node
    one (05-rollback's big-bang steps: Argo CD, storage, helm uninstall, ...).

    Example:
        >>> stage_starts([{"step": "nbn-cordon", "recorded_at": "T1", "phase": "install", "seq": 1},
        ...               {"step": "nbn-cordon", "recorded_at": "T2", "phase": "install", "seq": 2},
        ...               {"step": "nbn-rb-cordon", "recorded_at": "T3", "phase": "rollback", "seq": 3},
        ...               {"step": "restart-pods", "recorded_at": "T4", "phase": "rollback", "seq": 4},
        ...               {"step": "helm-uninstall", "recorded_at": "T5", "phase": "rollback", "seq": 5}])
        [('node by node', 'T1'), ('rollback: node by node', 'T3'), ('rollback: cleanup', 'T5')]
    """
    out = []
    for name, step, in_rollback in STAGES:
        first = next((e for e in entries if e.get("step") == step and (e.get("phase") == "rollback") == in_rollback
                      and e.get("recorded_at")), None)
        if first is not None:
            out.append((name, first["recorded_at"]))
    rb = [e for e in entries if e.get("phase") == "rollback" and e.get("recorded_at")]
    last_nbn = max((int(e.get("seq") or 0) for e in rb if str(e.get("step", "")).startswith("nbn-")), default=None)
    if last_nbn is not None:
        # the per-node steps' own pod restarts (restart-pods, nbn-delete-pod) belong to them
        first = next((e for e in rb if int(e.get("seq") or 0) > last_nbn and e.get("step") != "restart-pods"), None)
        if first is not None:
            out.append((CLEANUP_STAGE, first["recorded_at"]))
    return out


def needs_revert(entries: Sequence[dict[str, Any]], node: str) -> bool:
    """Whether ``node`` may be on Cilium (its label or agent step was recorded, in any
    status): it needs the whole per-node rollback, not just an uncordon.

    Example:
        >>> needs_revert([{"step": "nbn-drain", "node": "a"}], "a")
        False
    """
    return any(e.get("phase") != "rollback" and e.get("node") == node
               and e.get("step") in ("nbn-label", "nbn-agent") for e in entries)


def switch_started(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether any step of the switch was recorded (then the per-node rollback no longer
    applies: 05-rollback's big-bang path restores every node)."""
    return any(e.get("phase") != "rollback" and (e.get("step") in SWITCH_STEPS or e.get("step") == "restart-k3s")
               for e in entries)
