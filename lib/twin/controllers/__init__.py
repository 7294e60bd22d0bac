"""The twin's controllers: workloads (deployments, replicasets, daemonsets, statefulsets),
the scheduler, the pod "kubelet" with its pluggable sandbox policy, and node lifecycle.

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
