"""Node heartbeats: the kubelet's Lease in ``kube-node-lease`` and its status reports.

What every running kubelet does (:mod:`.stages` rows ``node.lease-renew`` and
``node.status-report``):

- it holds ``kube-node-lease/<node>`` (``holderIdentity`` the node,
  ``leaseDurationSeconds`` 40, owned by its Node) and renews ``spec.renewTime`` every
  10 cluster seconds;
- with the Lease carrying the heartbeat, it reports an unchanged node status only every
  5 cluster minutes: the conditions' ``lastHeartbeatTime`` move then, while
  ``lastTransitionTime`` moves only when a condition changes (the network model writes
  those transitions);
- a node whose kubelet is down (k3s stopped, rebooting) renews nothing, so its Lease
  goes stale as on a cluster.

At scale the renewals are spread, not bursty: one pass per second renews the leases
that are due, and beyond :data:`FULL_RATE_NODES` nodes the renew interval stretches
with the node count (``10 s * nodes / 50``, at most 30 s, still within the 40 s lease
duration), so a 500-node twin writes about 17 leases per cluster second instead of 50.
Leases and heartbeats are plain store writes; nothing watches leases but clients.
"""
from __future__ import annotations

import logging
import zlib
from typing import Any

from ..store import NotFound
from .events import micro_time
from .scheduler import now_rfc3339
from .stages import seconds

log = logging.getLogger("twin.controllers.heartbeats")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
FULL_RATE_NODES = 50
MAX_RENEW_SECONDS = 30.0
TICK_SECONDS = 1.0


def renew_interval(nodes: int) -> float:
    """Cluster seconds between two renewals of one node's Lease.

    Example:
        >>> renew_interval(3), renew_interval(100), renew_interval(500)
        (10.0, 20.0, 30.0)
    """
    base = seconds("node.lease-renew")
    if nodes <= FULL_RATE_NODES:
        return base
    return min(MAX_RENEW_SECONDS, base * nodes / FULL_RATE_NODES)


class Heartbeats:
    """Renews the node Leases and refreshes heartbeat times (one :meth:`tick` per
    cluster second, run by the workloads component's ticker)."""

    def __init__(self, store: Any, cache: Any, clock: Any, kubelet: Any) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.kubelet = kubelet
        self.lease_t = store.lookup("coordination.k8s.io", "v1", "leases")
        self.node_t = store.lookup("", "v1", "nodes")
        self._renewed: dict[str, float] = {}     # node -> cluster time of the last renewal
        self._reported: dict[str, float] = {}    # node -> cluster time of the last status report
        self.renewals = 0
        self.reports = 0

    def tick(self) -> None:
        if self.lease_t is None:
            return
        now = self.clock.cluster_now()
        nodes = list(self.cache.all(("", "nodes")))
        every = renew_interval(len(nodes))
        report_every = seconds("node.status-report")
        have_ns = self._namespace()
        for node in nodes:
            name = node["metadata"]["name"]
            if not self.kubelet.kubelet_running(name):
                continue
            last = self._renewed.get(name)
            if have_ns and (last is None or now - last >= every):
                self._renew(node, name)
                self._renewed[name] = now
            seen = self._reported.get(name)
            if seen is None:
                # Spread the first reports over the report period, as kubelets started
                # at different times would.
                self._reported[name] = now - (zlib.crc32(name.encode()) % int(report_every))
            elif now - seen >= report_every:
                self._report(name)
                self._reported[name] = now
        for gone in [n for n in self._renewed if self.cache.get(("", "nodes"), "", n) is None]:
            self._renewed.pop(gone, None)
            self._reported.pop(gone, None)

    def _namespace(self) -> bool:
        ns_t = self.store.lookup("", "v1", "namespaces")
        if self.store.peek(ns_t, None, LEASE_NAMESPACE) is not None:
            return True
        try:
            self.store.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": LEASE_NAMESPACE}}, rtype=ns_t)
            return True
        except Exception:    # being deleted: no leases until it is back
            log.debug("namespace %s unavailable", LEASE_NAMESPACE, exc_info=True)
            return False

    def _renew(self, node: dict, name: str) -> None:
        now = micro_time()
        if self.store.peek(self.lease_t, LEASE_NAMESPACE, name) is None:
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                                  "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                       "uid": node["metadata"].get("uid", "")}]},
                     "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION,
                              "renewTime": now}}
            try:
                self.store.create(lease, rtype=self.lease_t)
            except Exception:
                log.debug("lease %s not created", name, exc_info=True)
                return
        else:
            try:
                self.store.mutate(self.lease_t, LEASE_NAMESPACE, name,
                                  lambda o: o.setdefault("spec", {}).__setitem__("renewTime", now))
            except NotFound:
                return
        self.renewals += 1

    def _report(self, name: str) -> None:
        now = now_rfc3339()

        def beat(n: dict) -> None:
            for c in (n.get("status") or {}).get("conditions") or ():
                if c.get("status") != "Unknown":
                    c["lastHeartbeatTime"] = now
        try:
            self.store.mutate(self.node_t, None, name, beat, subresource="status")
            self.reports += 1
        except NotFound:
            pass
