"""Helper library for the Phase 22 runbook notebooks (k3s: Flannel -> Cilium + Hubble).

One module per external system (see README.md beside this file). Notebooks import the
modules they need, e.g. ``from runbook import params, cluster, nodes``.
"""
from __future__ import annotations

__version__ = "0.1.0"
