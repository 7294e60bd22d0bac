"""Workload controllers of the twin: Deployment, ReplicaSet, DaemonSet, StatefulSet.

They follow kube-controller-manager closely enough that ``kubectl rollout status`` and
``helm --wait`` read their status fields as on a cluster. One module per controller:

- :mod:`.component`: the runtime component ``"workloads"`` (cache, scheduler, kubelet,
  node lifecycle and the controllers below, fed by one store subscription).
- :mod:`.deployments`: ReplicaSets per template revision, rollout and its status.
- :mod:`.replicasets`: pods ``<rs>-<5 chars>``.
- :mod:`.daemonsets`: one pod per eligible node, rolling updates.
- :mod:`.statefulsets`: ordered pods ``<sts>-<i>`` and their claims.
- :mod:`.workload_base`: what they share (adoption, pod create/delete, status writes).
- :mod:`.templates`: pure pod-template helpers (hash, defaults, building a pod).

Also: orphans matching a selector are adopted (a StatefulSet only claims its own pod
names); objects created without the apps/v1 spec defaults (``updateStrategy`` ...) get
them (:func:`workload_defaults`), because kubectl and helm read them.

Also: :mod:`.rollouts` (the Deployment controller's maxSurge/maxUnavailable arithmetic),
:mod:`.disruption` (PodDisruptionBudget status and the eviction decision),
:mod:`.jobs` and :mod:`.cronjobs` (``batch/v1``).

Not modelled: ``minReadySeconds`` (a Ready pod counts as available), ControllerRevision
objects, Indexed Jobs, Job pod failure policies and success policies, CronJob time zones.
Garbage collection of dependents (ownerReferences) and graceful pod deletion are the
store's job; stopping a deleted pod is the kubelet's (:mod:`twin.controllers.termination`).
"""
from __future__ import annotations

from .component import WorkloadControllers
from .daemonsets import DaemonSetController, daemonset_node_decision
from .deployments import DeploymentController, deployment_status
from .replicasets import ReplicaSetController, replicaset_status
from .statefulsets import StatefulSetController
from .templates import (daemonset_tolerations, default_tolerations, new_pod, pod_template_hash,
                        resolve_int_or_percent, templates_equal, workload_defaults)

__all__ = [
    "DaemonSetController", "DeploymentController", "ReplicaSetController",
    "StatefulSetController", "WorkloadControllers", "daemonset_node_decision",
    "daemonset_tolerations", "default_tolerations", "deployment_status", "new_pod",
    "pod_template_hash", "replicaset_status", "resolve_int_or_percent", "templates_equal",
    "workload_defaults",
]
