"""The twin: a rehearsal k3s cluster on loopback (API server, SSH nodes, controllers).

The runbook library never imports this package; only the ``runbook`` CLI and the tests
start a twin, through :class:`Twin` (see ``twin/api.py``).
"""
from __future__ import annotations
