"""The twin's controllers: what kube-controller-manager, the kubelet and the add-ons do.

- :mod:`.base`: the informer-like :class:`Cache` and the work-queue :class:`Controller`.
- :mod:`.scheduler`: the scheduler and node lifecycle (taints, evictions).
- :mod:`.stages`: the lifecycle table (every delay, with the real setting it models).
- :mod:`.kubelet`: pod status and sandboxes, with a pluggable :class:`SandboxPolicy`;
  with :mod:`.pod_status`, :mod:`.pod_runs` (image pulls, container runs),
  :mod:`.programs` (what a container runs), :mod:`.termination` (graceful deletion),
  :mod:`.kubelet_events`, :mod:`.events` (the recorder), :mod:`.logs` (container logs),
  :mod:`.heartbeats` (node Leases, status reports), :mod:`.ipam`, :mod:`.service_reach`.
- :mod:`.workloads`: Deployment, ReplicaSet, DaemonSet, StatefulSet, Job, CronJob and
  disruption (PDB) controllers and the runtime component ``"workloads"`` that runs all
  of the above.
- :mod:`.network`: the node network model (which CNI works where).
- :mod:`.cilium`: the Cilium model (agents, endpoints, operator, status).
- :mod:`.addons`: Velero, Argo CD, MetalLB and operator-owned (Longhorn) pods.

The lead adds :class:`WorkloadControllers` to the twin's components; the node/network
model reaches the kubelet through ``rt.component("workloads").kubelet`` (or
``rt.options["kubelet"]``) to plug a :class:`SandboxPolicy` in.
"""
from __future__ import annotations

from .base import Cache, Controller
from .kubelet import (NETWORK_NOT_READY_MESSAGE, SANDBOX_CNI_ANNOTATION, DefaultSandboxPolicy,
                      IPAllocator, Kubelet, PodFate, SandboxPolicy, build_pod_status)
from .scheduler import NodeLifecycle, Scheduler, node_fits
from .workloads import WorkloadControllers, pod_template_hash

__all__ = [
    "Cache", "Controller", "DefaultSandboxPolicy", "IPAllocator", "Kubelet",
    "NETWORK_NOT_READY_MESSAGE", "NodeLifecycle", "PodFate", "SANDBOX_CNI_ANNOTATION",
    "SandboxPolicy", "Scheduler", "WorkloadControllers", "build_pod_status", "node_fits",
    "pod_template_hash",
]
