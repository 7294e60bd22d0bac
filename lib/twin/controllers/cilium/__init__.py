"""The twin's Cilium model: what the objects the real ``helm`` installs do on the nodes.

The chart (the stand-in or the official archive: both render the same names) creates
DaemonSets ``cilium`` and ``cilium-envoy``, Deployments ``cilium-operator``,
``hubble-relay`` and ``hubble-ui``, and the ``cilium-config`` ConfigMap; the workload
controllers turn them into pods. The component (``name = "cilium"``) decides what
happens to those pods and what a Ready agent does to its node. One module per part:

- :mod:`.model`: the component :class:`CiliumModel` (indexes, events, work queue, ticker).
- :mod:`.agents`: agent and envoy readiness, crash loops, node artifacts, CiliumNode, IPAM.
- :mod:`.endpoints`: CiliumEndpoints of the pods in Cilium's sandboxes.
- :mod:`.cilium_operator`: the operator registers the CRDs and runs the unmanaged-pod watcher.
- :mod:`.status`: :class:`AgentStatus`, what ``cilium status`` would say about an agent.
- :mod:`.config`: what the agent reads (``cilium-config``, the API address) and its rules.
- :mod:`.crds`: the cilium.io CRDs the operator registers.

- :mod:`.node_config`: CiliumNodeConfig overrides resolved when an agent pod starts,
  and where the agent's container paths land on the host (``cni.confPath``/``binPath``).

Not modelled: CiliumIdentity objects (identities are computed, not published), CNI
chaining modes other than ``none``, ``read-cni-conf``.

Example (inside the twin's loop)::

    cil = rt.component("cilium")
    cil.agent_status("fast-skunk")   # AgentStatus(ready=False, reason="failed to create vxlan ...")
"""
from __future__ import annotations

from .config import (CiliumConfig, api_reachable, container_env, kernel_tuple, parse_duration,
                     pod_app)
from .crds import CRDS, CRDSpec, crd_object
from .endpoints import identity_for
from .model import CiliumModel
from .status import AgentStatus

__all__ = ["AgentStatus", "CRDS", "CRDSpec", "CiliumConfig", "CiliumModel", "api_reachable",
           "container_env", "crd_object", "identity_for", "kernel_tuple", "parse_duration",
           "pod_app"]
