"""Fault switches of the twin, settable at start and while it runs (admin endpoint).

Each switch is read by the component it breaks; nothing else. Names:

- ``ssh_down``: set of node names whose SSH server refuses connections.
- ``api_down_seconds``: cluster seconds the API server refuses connections for, starting
  when it is set (or at the next k3s server restart if ``api_down_on_restart``).
- ``cilium_image_pull_fails``: cilium agents never become Ready (ImagePullBackOff).
- ``velero_partially_failed``: the next Velero Backup ends PartiallyFailed.
- ``metallb_sticky``: MetalLB does not reassign an IP until its controller restarts.
- ``argocd_parent_reverts``: an Argo CD parent app reverts its children's syncPolicy.
- ``firewall``: nodes' firewalls dropping ports from other nodes, a list of
  ``{"node": N, "from": [M, ...] | "*", "ports": ["udp/8473", "tcp/4240", ...]}``
  (N's firewall drops those ports coming from M). Read by the network model's
  reachability: VXLAN blocked means cross-node pod traffic fails while agents are Ready.
- ``containerd_template``: set of node names that have a ``config.toml.tmpl`` hard-coding
  k3s's CNI folder beside containerd's config (as a GPU runtime setup leaves it). Setting
  it writes the file on those nodes (and removes it from the others that got it this
  way); it takes effect at each node's next k3s start.
- ``ssh_command_latency``: wall seconds every command run over SSH waits before it runs
  (0, the default: none). A latency model for measurements: on loopback a command
  costs only the twin's CPU, while on a real node it also waits for the network's
  round trips and for sshd to start the user's shell (and sudo) on the node's own CPU.
  Wall time, not the twin's clock (it stands for the machines, not for the cluster's
  simulated time), and no CPU.
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
    firewall: list = field(default_factory=list)
    containerd_template: set[str] = field(default_factory=set)
    ssh_command_latency: float = 0.0

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
            if name == "ssh_command_latency" and not 0 <= value <= 60:
                raise ValueError(f"ssh_command_latency is wall seconds from 0 to 60, not {value}")
        elif isinstance(current, list):
            value = check_firewall(value)
        setattr(self, name, value)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ssh_down"] = sorted(self.ssh_down)
        d["containerd_template"] = sorted(self.containerd_template)
        return d


def check_firewall(value: Any) -> list[dict]:
    """The ``firewall`` fault's rules, checked (ValueError names what is wrong).

    >>> check_firewall([{"node": "b", "from": ["a"], "ports": ["UDP/8473"]}])
    [{'node': 'b', 'from': ['a'], 'ports': ['udp/8473']}]
    """
    if not isinstance(value, (list, tuple)):
        raise ValueError('firewall: expected a list of {"node": N, "from": [..] | "*", "ports": ["udp/8473"]}')
    rules = []
    for r in value:
        if not isinstance(r, dict) or not isinstance(r.get("node"), str) or not r.get("ports"):
            raise ValueError(f"firewall: bad rule {r!r}: needs node (a name) and ports")
        frm = r.get("from", "*")
        if frm != "*" and not (isinstance(frm, list) and all(isinstance(x, str) for x in frm)):
            raise ValueError(f'firewall: bad rule {r!r}: from is "*" or a list of node names')
        ports = []
        for p in r["ports"]:
            proto, _, num = str(p).lower().partition("/")
            if proto not in ("tcp", "udp") or not num.isdigit() or not 0 < int(num) < 65536:
                raise ValueError(f"firewall: bad port {p!r}: expected udp/N or tcp/N")
            ports.append(f"{proto}/{int(num)}")
        rules.append({"node": r["node"], "from": frm, "ports": ports})
    return rules
