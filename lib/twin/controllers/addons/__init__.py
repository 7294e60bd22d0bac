"""The add-ons a CNI migration touches, as controllers: one module per add-on.

- :mod:`.component`: the runtime component ``"addons"`` that runs every model below.
- :mod:`.velero`: Backups and Restores as the velero server runs them;
  :mod:`.velero_items` holds the pure selection and restore rules.
- :mod:`.argocd`: Applications, drift and self-heal; :mod:`.argocd_diff` holds the pure
  diff and health rules; :mod:`.applicationsets`: generated Applications.
- :mod:`.metallb`: LoadBalancer IPs from IPAddressPools (and the ``metallb_sticky`` fault).
- :mod:`.longhorn`: Longhorn (longhorn-manager) and the operators that recreate the pods
  their custom resources own; :mod:`.longhorn_rules` (settings, stages, pure rules),
  :mod:`.longhorn_instances` (instance and share managers, the node-to-node path),
  :mod:`.longhorn_volumes` (the volume controller), :mod:`.longhorn_pass` (one volume's
  state machine), :mod:`.longhorn_replicas` (rebuilds), :mod:`.longhorn_workloads`
  (pods mounting volumes: the kubelet's wait, remount deletions).
- :mod:`.common`: object, resource-type and pod-reachability helpers they share.

Each model changes the world only through the store, like a real controller through
the API server, so every change is visible to watches, kubectl and the runbook.
"""
from __future__ import annotations

from .applicationsets import ApplicationSetModel
from .argocd import ArgoCDModel
from .component import AddonControllers
from .longhorn import LonghornModel, OperatorPods
from .metallb import MetalLBModel
from .velero import VeleroModel

__all__ = ["AddonControllers", "ApplicationSetModel", "ArgoCDModel", "LonghornModel",
           "MetalLBModel", "OperatorPods", "VeleroModel"]
