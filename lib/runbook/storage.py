"""Longhorn through a CNI swap: the facts (volumes, replicas, who mounts what) and the plan.

Why a plan at all. A Longhorn volume is an engine (in the instance-manager pod of the node
it is attached to) talking over the pod network to its replicas (in the instance-manager
pods of other nodes). Changing the CNI cuts that traffic twice:

* during the no-CNI window no pod traffic crosses nodes: an attached volume loses its
  remote replicas (``degraded``) and, without a local one, is ``faulted`` and detached;
* a pod keeps the network of the CNI that created its sandbox. An instance-manager pod
  started under flannel has no data path under Cilium, and longhorn-manager does not
  notice: it derives an instance manager's state from its pod's phase and readiness only
  (``instance_manager_controller.go``, syncStatusWithPod). Its engines never reach their
  replicas again until the pod is recreated.

Longhorn's own guidance for planned node and network maintenance is to shut down the
workloads that use Longhorn volumes first (longhorn.io "Node Maintenance": "it's
recommended to shut down the workloads with Longhorn volume before performing the node
maintenance"), and to check that every volume is ``healthy`` afterwards. With no engine
or replica running, an instance manager is stateless ("they're stateless and won't cause
interruption"); longhorn-manager itself deletes and recreates an instance-manager pod in
exactly that state when its settings change (``handlePod``: only when no instance runs
in it), and stops a share manager whose RWX volume no pod uses.

So the plan (:func:`plan`) is:

1. preflight: every volume ``healthy`` (a detached volume reports ``unknown``: it only
   must not be ``faulted``), the volumes whose replicas span nodes listed;
2. before 02-reconfigure opens the window: scale every workload that mounts a Longhorn
   volume to 0, each replica count journaled first, and wait until every volume is
   detached (nothing is written while the network is down);
3. 03-install: once Cilium runs, Longhorn's instance-manager pods, which then hold no
   engine or replica, are recreated so they come up under Cilium
   (:func:`runbook.storage_ops.recycle_managers`, journaled). This is the one place the
   runbook deletes a custom resource's pod, and only Longhorn's, only detached;
4. 04-verify: the workloads back to their journaled counts first, then a check that
   every volume is ``healthy``; both waits share one ``limits.timeouts.storage_healthy``
   counted from the scale-up (:class:`runbook.storage_ops.StorageBudget`);
5. 05-rollback does 2, 3 and 4 around its own swap back to flannel, and restores the
   journaled counts whatever happened before.

This module holds the facts and the pure plan; :mod:`runbook.storage_ops` changes things.

Example:
    >>> vol = {"metadata": {"name": "pvc-1"}, "spec": {"accessMode": "rwo"},
    ...        "status": {"state": "attached", "robustness": "healthy", "currentNodeID": "a"}}
    >>> reps = [{"spec": {"volumeName": "pvc-1", "nodeID": n}} for n in ("a", "b")]
    >>> row = volume_rows([vol], reps)[0]
    >>> row.spans_nodes, row.problem()
    (True, '')
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from .presentation import frame_html

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["LONGHORN_API", "LONGHORN_NS", "CSI_DRIVER", "MANAGER_KINDS", "PAUSABLE_OWNERS",
           "VolumeRow", "Workload", "StoragePlan", "installed", "volume_rows", "read_volumes",
           "volume_users", "read_users", "plan", "health_problems", "is_manager_pod", "owner_text",
           "is_instance_manager_pdb"]

LONGHORN_API = "longhorn.io/v1beta2"
LONGHORN_NS = "longhorn-system"
CSI_DRIVER = "driver.longhorn.io"
#: Longhorn custom resources that own pods (recreated by longhorn-manager)
MANAGER_KINDS = ("InstanceManager", "ShareManager")
#: operators that own a StatefulSet and honour ``spec.paused`` (prometheus-operator): the
#: StatefulSet can only be scaled while its owner is paused, or the operator scales it back
PAUSABLE_OWNERS = {"Prometheus": ("monitoring.coreos.com/v1", "prometheuses"),
                   "Alertmanager": ("monitoring.coreos.com/v1", "alertmanagers"),
                   "ThanosRuler": ("monitoring.coreos.com/v1", "thanosrulers")}


# ----------------------------------------------------------------------------- facts
def installed(cluster: Cluster) -> bool:
    """Whether the API serves ``volumes.longhorn.io``."""
    doc = cluster.request("GET", f"/apis/{LONGHORN_API}", ok_missing=True)
    return bool(doc) and any(r.get("name") == "volumes" for r in doc.get("resources") or ())


@dataclass
class VolumeRow:
    """One Longhorn volume as the plan sees it."""

    name: str
    state: str
    robustness: str
    node: str
    access: str
    replica_nodes: list[str] = field(default_factory=list)

    @property
    def spans_nodes(self) -> bool:
        return len(set(self.replica_nodes)) > 1

    def problem(self) -> str:
        """Why this volume is not fit for the swap ("" when it is).

        ``healthy``, or detached (Longhorn reports a detached volume's robustness as
        ``unknown``); ``degraded``, ``faulted`` or a volume in transit is not."""
        if self.robustness == "healthy":
            return ""
        if self.state == "detached" and self.robustness in ("unknown", ""):
            return ""
        return f"{self.name}: {self.state or 'no state'}, robustness {self.robustness or 'none'}"

    def detached(self) -> bool:
        return self.state == "detached"


def volume_rows(volumes: list[dict], replicas: list[dict]) -> list[VolumeRow]:
    """Volumes with the nodes of their replicas (pure)."""
    by_vol: dict[str, list[str]] = {}
    for r in replicas:
        sp = r.get("spec") or {}
        if sp.get("nodeID"):
            by_vol.setdefault(sp.get("volumeName", ""), []).append(sp["nodeID"])
    out = []
    for v in volumes:
        st, sp = v.get("status") or {}, v.get("spec") or {}
        name = v["metadata"]["name"]
        out.append(VolumeRow(name, st.get("state", ""), st.get("robustness", ""),
                             st.get("currentNodeID", ""), sp.get("accessMode", ""),
                             sorted(by_vol.get(name, []))))
    return sorted(out, key=lambda r: r.name)


def read_volumes(cluster: Cluster) -> list[VolumeRow]:
    """Every ``volumes.longhorn.io`` with its replicas' nodes (nothing without Longhorn)."""
    vols = list(cluster.iter_collection(LONGHORN_API, "volumes", LONGHORN_NS))
    reps = list(cluster.iter_collection(LONGHORN_API, "replicas", LONGHORN_NS))
    return volume_rows(vols, reps)


def health_problems(rows: list[VolumeRow]) -> list[str]:
    """One line per volume not fit for the swap (see :meth:`VolumeRow.problem`)."""
    return [p for p in (r.problem() for r in rows) if p]


def owner_text(pod: dict) -> str:
    """``Kind/name`` of the pod's controlling owner ("" without one)."""
    own = _owner(pod)
    return f"{own[0]}/{own[1]}" if own else ""


def is_instance_manager_pdb(pdb: dict) -> bool:
    """Whether a PodDisruptionBudget is one longhorn-manager keeps on an instance manager
    (it removes it itself when a drain may proceed: :mod:`runbook.longhorn_drain`).

    >>> is_instance_manager_pdb({"metadata": {"namespace": "longhorn-system", "name": "instance-manager-1"},
    ...     "spec": {"selector": {"matchLabels": {"longhorn.io/component": "instance-manager"}}}})
    True
    """
    md, spec = pdb.get("metadata") or {}, pdb.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return md.get("namespace") == LONGHORN_NS and labels.get("longhorn.io/component") == "instance-manager"


def is_manager_pod(pod: dict) -> bool:
    """A pod owned by a Longhorn InstanceManager or ShareManager."""
    return any(r.get("kind") in MANAGER_KINDS and str(r.get("apiVersion", "")).startswith("longhorn.io/")
               for r in pod["metadata"].get("ownerReferences") or ())


@dataclass
class Workload:
    """A workload whose pods mount Longhorn volumes.

    Attributes:
        kind, namespace, name: the Deployment or StatefulSet.
        replicas: its ``spec.replicas`` now.
        volumes: the Longhorn volumes its pods mount.
        owner: ``(kind, name)`` of a custom resource that owns it (prometheus-operator).
    """

    kind: str
    namespace: str
    name: str
    replicas: int
    volumes: list[str]
    owner: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def _owner(obj: dict) -> tuple[str, str] | None:
    refs = obj["metadata"].get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return (ref.get("kind"), ref.get("name")) if ref else None


def volume_users(pods: list[dict], pvcs: list[dict], pvs: list[dict], replicasets: list[dict],
                 workloads: dict[tuple[str, str, str], dict]) -> tuple[list[Workload], list[str]]:
    """The workloads whose pods mount Longhorn volumes, and the pods no workload scales
    (a bare pod, a Job, a DaemonSet, a workload owned by an unknown operator), pure.

    Args:
        workloads: ``(kind, namespace, name) -> object`` of the Deployments and StatefulSets.
    """
    pv_handle = {p["metadata"]["name"]: ((p.get("spec") or {}).get("csi") or {}).get("volumeHandle")
                 for p in pvs if ((p.get("spec") or {}).get("csi") or {}).get("driver") == CSI_DRIVER}
    claim_vol = {(c["metadata"]["namespace"], c["metadata"]["name"]): pv_handle.get((c.get("spec") or {}).get("volumeName"))
                 for c in pvcs}
    rs_owner = {(r["metadata"]["namespace"], r["metadata"]["name"]): _owner(r) for r in replicasets}
    found: dict[tuple[str, str, str], Workload] = {}
    loose: list[str] = []
    for p in pods:
        md = p["metadata"]
        ns = md.get("namespace", "")
        vols = sorted({claim_vol.get((ns, (v.get("persistentVolumeClaim") or {}).get("claimName")))
                       for v in (p.get("spec") or {}).get("volumes") or () if v.get("persistentVolumeClaim")} - {None})
        if not vols or is_manager_pod(p):
            continue
        own = _owner(p)
        if own and own[0] == "ReplicaSet":
            own = rs_owner.get((ns, own[1]))
        if not own or own[0] not in ("Deployment", "StatefulSet"):
            loose.append(f"{ns}/{md['name']} ({own[0] + '/' + own[1] if own else 'no owner'}) mounts "
                         f"{', '.join(vols)}: no workload to scale down")
            continue
        obj = workloads.get((own[0], ns, own[1]))
        if obj is None:
            loose.append(f"{ns}/{md['name']}: its {own[0]} {own[1]} is gone")
            continue
        wo = _owner(obj)
        if wo and wo[0] not in PAUSABLE_OWNERS:
            loose.append(f"{own[0]} {ns}/{own[1]} is owned by {wo[0]}/{wo[1]}, whose operator would "
                         "scale it back: scale it through that operator")
            continue
        w = found.setdefault((own[0], ns, own[1]), Workload(
            own[0], ns, own[1], int((obj.get("spec") or {}).get("replicas", 1) or 0), [], wo))
        w.volumes = sorted(set(w.volumes) | set(vols))
    return sorted(found.values(), key=lambda w: w.key), sorted(set(loose))


def read_users(cluster: Cluster) -> tuple[list[Workload], list[str]]:
    """:func:`volume_users` from the cluster."""
    wl = {}
    for kind, res in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
        for o in cluster.list(res):
            wl[(kind, o["metadata"]["namespace"], o["metadata"]["name"])] = o
    return volume_users(cluster.list("pods"), cluster.list("persistentvolumeclaims"),
                        cluster.list("persistentvolumes"), cluster.list("replicasets"), wl)


# ----------------------------------------------------------------------------- plan
@dataclass
class StoragePlan:
    """What the run does for Longhorn (nothing when it is not installed)."""

    installed: bool
    volumes: list[VolumeRow] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return health_problems(self.volumes)

    @property
    def multi_node(self) -> list[VolumeRow]:
        return [v for v in self.volumes if v.spans_nodes]

    def steps(self) -> list[str]:
        """The plan in words, phase by phase (what a dry run shows)."""
        if not self.installed:
            return ["Longhorn is not installed: nothing to do for storage"]
        n = sum(w.replicas for w in self.workloads)
        return [
            f"01-preflight: every one of the {len(self.volumes)} volumes healthy (or cleanly detached); "
            f"{len(self.multi_node)} have replicas on more than one node and would lose them in the no-CNI window",
            f"02-reconfigure, before the window: scale {len(self.workloads)} workload(s) ({n} pod(s)) that mount "
            "Longhorn volumes to 0, each replica count journaled first; wait until every volume is detached",
            "03-install, once Cilium runs: recreate Longhorn's instance-manager pods (then holding no engine "
            "or replica) so they come up under Cilium",
            "04-verify: scale the workloads back to their journaled counts, then every volume must be "
            "healthy within limits.timeouts.storage_healthy (one budget from the scale-up for both waits)",
            "05-rollback: the same around the swap back to flannel; it restores the journaled counts in any case",
        ] + ([f"left for a person: {x}" for x in self.loose] if self.loose else [])

    def volume_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"volume": v.name, "state": v.state, "robustness": v.robustness,
                              "attached to": v.node or "-", "access": v.access,
                              "replica nodes": ", ".join(v.replica_nodes),
                              "spans nodes": v.spans_nodes} for v in self.volumes],
                            columns=["volume", "state", "robustness", "attached to", "access",
                                     "replica nodes", "spans nodes"])

    def workload_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"workload": w.key, "replicas (journaled)": w.replicas,
                              "owner paused": f"{w.owner[0]}/{w.owner[1]}" if w.owner else "-",
                              "volumes": len(w.volumes)} for w in self.workloads],
                            columns=["workload", "replicas (journaled)", "owner paused", "volumes"])

    def __repr__(self) -> str:
        return "\n".join(self.steps())

    def _repr_html_(self) -> str:
        if not self.installed:
            return "<p>Longhorn is not installed: nothing to do for storage.</p>"
        items = "".join(f"<li>{html.escape(s)}</li>" for s in self.steps())
        return (f"<h4>Storage plan (Longhorn)</h4><ol>{items}</ol>"
                f"<h4>Volumes whose replicas span nodes ({len(self.multi_node)})</h4>"
                + frame_html(self.volume_frame()[self.volume_frame()["spans nodes"]])
                + f"<h4>Workloads scaled down for the swap ({len(self.workloads)})</h4>"
                + frame_html(self.workload_frame()))


def plan(cluster: Cluster) -> StoragePlan:
    """The storage plan of this cluster (read-only)."""
    if not installed(cluster):
        return StoragePlan(False)
    users, loose = read_users(cluster)
    return StoragePlan(True, read_volumes(cluster), users, loose)
