"""Per-node host-local pod IPAM over each node's ``spec.podCIDR`` (the kubelet's and
flannel's; the Cilium model keeps its own :class:`IPAllocator` over the same ranges)."""
from __future__ import annotations

import ipaddress


class IPAllocator:
    """Per-node host-local IPAM over each node's ``spec.podCIDR``.

    Allocation is idempotent per pod uid (asking twice gives the same address) and never
    hands out an address in use; ``.1`` is left to the bridge (cni0/cilium_host), as
    host-local IPAM does.

    Example:
        >>> a = IPAllocator()
        >>> a.allocate("n1", "10.42.1.0/24", "uid-1")
        '10.42.1.2'
        >>> a.allocate("n1", "10.42.1.0/24", "uid-1")
        '10.42.1.2'
    """

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}
        self._next: dict[str, int] = {}
        self._by_uid: dict[str, tuple[str, str]] = {}

    def reserve(self, node: str, ip: str, uid: str | None = None) -> None:
        """Mark an address as in use (pods that already run, from the fixture)."""
        self._used.setdefault(node, set()).add(ip)
        if uid:
            self._by_uid[uid] = (node, ip)

    def allocate(self, node: str, cidr: str | None, uid: str) -> str | None:
        """An address for pod ``uid`` on ``node``, or None when the range is exhausted."""
        have = self._by_uid.get(uid)
        if have is not None and have[0] == node:
            return have[1]
        if have is not None:
            self.release(uid)
        if not cidr:
            return None
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        used = self._used.setdefault(node, set())
        first = int(net.network_address) + 2
        last = int(net.broadcast_address) - 1 if net.version == 4 else int(net.broadcast_address)
        size = last - first + 1
        if size <= 0:
            return None
        start = self._next.get(node, first)
        if not first <= start <= last:
            start = first
        # Next-fit: continue after the last address handed out, like host-local.
        for i in range(size):
            cand = first + (start - first + i) % size
            ip = str(ipaddress.ip_address(cand))
            if ip not in used:
                used.add(ip)
                self._by_uid[uid] = (node, ip)
                self._next[node] = cand + 1 if cand < last else first
                return ip
        return None

    def release(self, uid: str) -> None:
        have = self._by_uid.pop(uid, None)
        if have is not None:
            self._used.get(have[0], set()).discard(have[1])

    def in_use(self, node: str) -> set[str]:
        return set(self._used.get(node, ()))

