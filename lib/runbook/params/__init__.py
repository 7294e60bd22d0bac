"""Typed parameters of a runbook run: ``params/*.yaml`` and the Cilium helm values.

Everything a phase notebook needs to know about its target lives in one YAML file, so
that rehearsing on the twin and running on the real cluster differ only by that file.
Loading is strict: a malformed file, an unknown key or a wrong type fails here, before
anything is contacted, with one line naming the file, the dotted field and the problem.

The package, by responsibility (import from ``runbook.params``, not from the modules):

- ``schema``: the sections, :class:`Params` and what derives from it (paths, servers,
  values, the twin loopback guard);
- ``loading``: YAML to :class:`Params` (:func:`load`, :func:`from_dict`), error messages;
- ``values_check``: the Cilium values against the params (:func:`check_values`,
  :func:`validate`);
- ``run_checks``: run id, ``--confirm`` and the params hash (provenance);
- ``yaml_io``: the strict YAML reader and where a syntax error sits.

Example:
    >>> from runbook import params
    >>> p = params.validate(params.load("params/minicloud.yaml"))   # doctest: +SKIP
    >>> [n.name for n in p.servers]                                  # doctest: +SKIP
    ['set-hog']
    >>> params.check_values(p, p.values())                           # doctest: +SKIP
    [Finding(severity='warning', field='k8sServiceHost', ...)]
"""
from __future__ import annotations

from .loading import RETIRED_KEYS, from_dict, load
from .run_checks import params_hash, require_confirmation, validate_run_id, values_hash
from .schema import (SSH, ArgoCD, BaseModel, Checks, Cilium, Decision, IngressCheck, K3s,
                     Limits, LoadBalancerIP, NodeParams, Params, Paths, RegressionCheck, Target,
                     Rollback, Timeouts, Twin, Velero, kpr_enabled, split_host_port)
from .values_check import FLANNEL_VXLAN_PORT, K3S_LOCAL_APISERVER_PORT, Finding, check_values, validate
from .yaml_io import kubeconfig_servers

__all__ = [
    "Params", "Finding", "load", "validate", "check_values", "params_hash", "values_hash",
    "validate_run_id", "require_confirmation", "kpr_enabled", "FLANNEL_VXLAN_PORT",
    "K3S_LOCAL_APISERVER_PORT", "from_dict", "split_host_port", "kubeconfig_servers",
    "RETIRED_KEYS", "BaseModel",
    # the sections
    "Target", "SSH", "NodeParams", "Paths", "Cilium", "Velero", "ArgoCD", "IngressCheck",
    "LoadBalancerIP", "RegressionCheck", "Checks", "Timeouts", "Limits", "Decision", "K3s",
    "Rollback", "Twin",
]
