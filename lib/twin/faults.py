"""Fault switches of the twin, settable at start and while it runs (admin endpoint).

Each switch is read by the component it breaks; nothing else. Names:

- ``ssh_down``: set of node names whose SSH server refuses connections.
- ``api_down_seconds``: cluster seconds the API server refuses connections for, starting
  when it is set (or at the next k3s server restart if ``api_down_on_restart``).
- ``cilium_image_pull_fails``: cilium agents never become Ready (ImagePullBackOff).
- ``velero_partially_failed``: the next Velero Backup ends PartiallyFailed.
- ``metallb_sticky``: MetalLB does not reassign an IP until its controller restarts.
- ``argocd_parent_reverts``: an Argo CD parent app reverts its children's syncPolicy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Faults:
    ssh_down: set[str] = field(default_factory=set)
    api_down_seconds: float = 0.0
    api_down_on_restart: bool = False
    cilium_image_pull_fails: bool = False
    velero_partially_failed: bool = False
    metallb_sticky: bool = False
    argocd_parent_reverts: bool = False

    def set(self, name: str, value: Any) -> None:
        """Set one switch by name, with a clear error for an unknown name."""
        if name not in self.__dataclass_fields__:
            raise KeyError(f"unknown fault {name!r}; known: {', '.join(self.__dataclass_fields__)}")
        current = getattr(self, name)
        if isinstance(current, set):
            value = set(value if isinstance(value, (list, tuple, set)) else [value])
        elif isinstance(current, bool):
            value = bool(value)
        elif isinstance(current, float):
            value = float(value)
        setattr(self, name, value)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ssh_down"] = sorted(self.ssh_down)
        return d
