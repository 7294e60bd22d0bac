"""The node's ipsets (``ipset list``): kernel sets kube-router's network-policy controller
keeps, one per selector of a NetworkPolicy (``KUBE-SRC-*``, ``KUBE-DST-*``).

While kube-router runs inside k3s (``disable-network-policy`` unset) the sets follow the
cluster's NetworkPolicies: they are brought up to date whenever someone looks (a command
or a read), which nobody can tell from a controller that syncs continuously. Disabling
network policy stops that and removes nothing (k3s K#7244): the sets stay as last synced
until ``ipset destroy`` or a reboot. ``k3s-killall.sh`` removes the ``KUBE-``/``CNI-``
iptables rules; the sets are kernel objects that only ``ipset destroy`` or a reboot clear.

The cluster side (which policies select which pods) comes from the node's
``cluster_view`` (the network model), when the twin runs one.

Example:
    >>> node.ipsets.names()  # doctest: +SKIP
    ['KUBE-DST-3NZMGJNSV3DLUS5W', 'KUBE-SRC-3NZMGJNSV3DLUS5W']
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import NodeModel


@dataclass
class IpSet:
    name: str
    kind: str = "hash:ip"
    members: list[str] = field(default_factory=list)

    def listing(self) -> str:
        """The block ``ipset list NAME`` prints."""
        size = 200 + 16 * len(self.members)
        return (f"Name: {self.name}\nType: {self.kind}\nRevision: 5\n"
                f"Header: family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x{abs(hash(self.name)) % (1 << 32):08x}\n"
                f"Size in memory: {size}\nReferences: 0\nNumber of entries: {len(self.members)}\n"
                "Members:\n" + "".join(f"{m} timeout 0\n" for m in self.members))


class IpSets:
    """The sets of one node (see the module doc). Part of :class:`NodeModel`."""

    def __init__(self, node: NodeModel) -> None:
        self.node = node
        self.sets: dict[str, IpSet] = {}

    def reset(self) -> None:
        """A booted kernel has no sets."""
        self.sets.clear()

    def sync(self) -> None:
        """While kube-router runs here, make the sets match the cluster's policies."""
        node = self.node
        view = getattr(node, "cluster_view", None)
        if not node.running.get("network_policy") or view is None:
            return
        want = view.policy_ipsets()
        for name, members in want.items():
            s = self.sets.setdefault(name, IpSet(name))
            s.members = sorted(members)
        for name in [n for n in self.sets if n.startswith(("KUBE-SRC-", "KUBE-DST-")) and n not in want]:
            del self.sets[name]

    def names(self) -> list[str]:
        self.sync()
        return sorted(self.sets)

    def referenced(self, name: str) -> bool:
        """Whether an iptables rule matches on the set (then the kernel keeps it)."""
        pat = re.compile(rf"--match-set {re.escape(name)}\b")
        return bool(pat.search(self.node.iptables.save()))

    def destroy(self, name: str | None) -> str | None:
        """``ipset destroy [NAME]``: None, or the error ipset prints."""
        self.sync()
        names = [name] if name else list(self.sets)
        for n in names:
            if n not in self.sets:
                return f"ipset v7.19: The set with the given name does not exist\n"
            if self.referenced(n):
                return f"ipset v7.19: Set cannot be destroyed: it is in use by a kernel component\n"
        for n in names:
            del self.sets[n]
        return None
