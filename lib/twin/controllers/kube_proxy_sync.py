"""k3s's embedded kube-proxy follows the cluster's Services and endpoints on every node.

A real kube-proxy watches Services and EndpointSlices and rewrites its iptables rules
after each change: its iptables proxier (``pkg/proxy/iptables``) runs ``syncProxyRules``
through a bounded-frequency runner, at most once per ``minSyncPeriod`` (1 s by default;
k3s starts its kube-proxy with ``--proxy-mode=iptables``, ``--cluster-cidr`` and
``--hostname-override`` and no sync period of its own) and at least once per
``syncPeriod`` (30 s). A sync after a change is a partial one: the Service chains, not
the base chains and jumps. k3s runs kube-proxy inside its own process (unless
``disable-kube-proxy``), so it stops with k3s, and its rules stay as its last sync wrote
them until something flushes them (``k3s-killall.sh``, ``iptables-restore``, a reboot).

:class:`KubeProxySync` (owned by the network model, :mod:`.network`) does that on the
twin: a store subscriber marks the Services a change concerns; a sync runs at most once
per :data:`MIN_SYNC_SECONDS` cluster seconds, recomputes those Services' ports and, when
any differs, hands the cluster's Service ports to every node where kube-proxy runs
(:meth:`twin.node.NodeModel.resync_kube_services`). A node whose k3s is stopped, down or
runs with ``disable-kube-proxy`` gets nothing and keeps the rules of its last sync; once
its kube-proxy runs again it is synced on the next pass. The twin has no EndpointSlice
controller: a Service port's endpoints are the Ready pods behind its selector
(:meth:`.reach.Reachability.endpoints`, what the EndpointSlice controller publishes as
ready endpoints and what the twin's reach uses for a running kube-proxy).

Cost: a pod change costs a few dict lookups (its namespace's Services by selector pair)
and nothing at all unless its readiness, address or labels changed; a sync recomputes
only the Services marked since the last one (their namespace's pods), and hands one list
to each running node, whose rewrite of its Service chains is deferred until its rules
are read (:meth:`twin.node.kube_proxy.KubeProxy.resync`). Until the first change the
nodes keep the Service ports they were built with (the fixture's), which are the store's.

Example (inside the twin's loop)::

    sync = net.kube_proxy_sync
    await sync.wait_idle()          # the pending sync (if any) has run
    sync.generation, sync.node_generation("fast-skunk")
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from ..node.kube_proxy import KubeService, service_ports
from ..ticker import TaskSet
from .reach import Reachability

log = logging.getLogger("twin.controllers.kube_proxy_sync")

#: kube-proxy's ``iptables.minSyncPeriod`` default (KubeProxyConfiguration v1alpha1
#: defaults; k3s does not set it): cluster seconds between two syncs at least
MIN_SYNC_SECONDS = 1.0

SvcKey = tuple[str, str]          # (namespace, name)
SERVICES = ("", "services")
PODS = ("", "pods")


def _md(obj: dict | None) -> dict:
    return (obj or {}).get("metadata") or {}


def _key(obj: dict) -> SvcKey:
    md = _md(obj)
    return (md.get("namespace") or "", md.get("name") or "")


class KubeProxySync:
    """Syncs every running kube-proxy after Service and endpoint changes (module doc).

    Args:
        net: the network model (its ``rt``, ``reachability`` and store).
        min_sync_seconds: kube-proxy's ``minSyncPeriod`` in cluster seconds.

    Attributes:
        generation: bumped whenever the cluster's Service ports change (0: the ports the
            nodes were built with).
        syncs: how many times one node's kube-proxy synced (for tests and benchmarks).
    """

    def __init__(self, net: Any, *, min_sync_seconds: float = MIN_SYNC_SECONDS) -> None:
        self.net = net
        self.min_sync_seconds = float(min_sync_seconds)
        self.generation = 0
        self.syncs = 0
        self._svc_t: Any = None
        self._pod_t: Any = None
        self._selectors: dict[SvcKey, dict] = {}
        self._by_pair: dict[tuple[str, str, str], set[SvcKey]] = {}
        self._ports: dict[SvcKey, list[KubeService]] | None = None   # None: not computed yet
        self._dirty: set[SvcKey] = set()
        self._programmed: list[KubeService] = []
        self._node_gen: dict[str, int] = {}
        self._last_sync = -math.inf
        self._tasks = TaskSet("kube-proxy-sync")
        self._unsub: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Index the Services' selectors and subscribe to the store (on the twin's loop)."""
        store = self.net.rt.store
        self._svc_t = store.lookup("", "v1", "services")
        self._pod_t = store.lookup("", "v1", "pods")
        for svc in store.iter_objects(self._svc_t):
            self._index(svc)
        self._unsub = store.subscribe(self._on_change)

    async def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        await self._tasks.stop()

    def node_generation(self, name: str) -> int:
        """The :attr:`generation` node ``name``'s kube-proxy last synced to."""
        return self._node_gen.get(name, 0)

    def idle(self) -> bool:
        """Nothing marked and no sync pending (tests wait for it)."""
        return not self._dirty and "sync" not in self._tasks

    async def wait_idle(self) -> None:
        """Wait until the pending sync (if any) has run."""
        while not self.idle():
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ changes
    def _index(self, svc: dict) -> None:
        key = _key(svc)
        self._unindex(key)
        sel = (svc.get("spec") or {}).get("selector") or {}
        if sel:
            self._selectors[key] = dict(sel)
            for k, v in sel.items():
                self._by_pair.setdefault((key[0], k, v), set()).add(key)

    def _unindex(self, key: SvcKey) -> None:
        for k, v in (self._selectors.pop(key, None) or {}).items():
            keys = self._by_pair.get((key[0], k, v))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_pair[(key[0], k, v)]

    @staticmethod
    def _endpoint_facts(pod: dict | None) -> tuple[str, dict] | None:
        """What of a pod an EndpointSlice shows: its address and labels while it is a
        ready endpoint, else None."""
        if pod is None or not Reachability.pod_ready(pod):
            return None
        return ((pod.get("status") or {}).get("podIP") or "", _md(pod).get("labels") or {})

    def _on_change(self, event_type: str, rtype: Any, obj: dict, old: dict | None) -> None:
        kind = rtype.key
        if kind == SERVICES:
            if event_type == "DELETED":
                self._unindex(_key(obj))
            else:
                self._index(obj)
            self._mark({_key(obj)})
        elif kind == PODS:
            before = self._endpoint_facts(old) if event_type != "ADDED" else None
            after = self._endpoint_facts(obj) if event_type != "DELETED" else None
            if before == after:
                return    # neither a ready endpoint before nor after, or nothing it shows changed
            ns = _md(obj).get("namespace") or ""
            hit: set[SvcKey] = set()
            for facts in (before, after):
                if facts is None:
                    continue
                for k, v in facts[1].items():
                    for key in self._by_pair.get((ns, k, v), ()):
                        sel = self._selectors.get(key) or {}
                        if all(facts[1].get(sk) == sv for sk, sv in sel.items()):
                            hit.add(key)
            if hit:
                self._mark(hit)

    def node_event(self, nm: Any, event: str) -> None:
        """A node's k3s started (or the node rebooted): sync its kube-proxy if the
        Service ports changed since its last sync."""
        if event in ("k3s-started", "rebooted") and self.node_generation(nm.name) != self.generation:
            self._kick()

    def _mark(self, keys: set[SvcKey]) -> None:
        self._dirty |= keys
        self._kick()

    def _kick(self) -> None:
        if "sync" in self._tasks or self._unsub is None:
            return
        wait = max(0.0, self._last_sync + self.min_sync_seconds - self.net.rt.clock.cluster_now())
        self._tasks.spawn(self._sync_after(wait), key="sync", name="kube-proxy-sync")

    async def _sync_after(self, wait: float) -> None:
        await self.net.rt.clock.sleep(wait)
        try:
            self.sync()
        except Exception:   # a broken pass must not stop later ones
            log.exception("kube-proxy sync failed")

    # ------------------------------------------------------------------ the sync
    def sync(self) -> int:
        """Recompute the marked Services and sync every running kube-proxy whose rules
        are older than :attr:`generation`. Returns how many nodes synced."""
        self._last_sync = self.net.rt.clock.cluster_now()
        if self._recompute():
            self.generation += 1
            ports = self._ports or {}
            self._programmed = [p for key in sorted(ports) for p in ports[key]]
        if self._ports is None:
            return 0
        n = 0
        for name, nm in self.net.rt.nodes.items():
            if self._node_gen.get(name, 0) != self.generation and nm.resync_kube_services(self._programmed):
                self._node_gen[name] = self.generation
                n += 1
        self.syncs += n
        return n

    def _pods_by_pair(self, namespace: str) -> dict[tuple[str, str], list[dict]]:
        """The ready pods of one namespace by label pair (one pass over its pods)."""
        out: dict[tuple[str, str], list[dict]] = {}
        for pod in self.net.rt.store.iter_objects(self._pod_t, namespace):
            if Reachability.pod_ready(pod):
                for kv in (_md(pod).get("labels") or {}).items():
                    out.setdefault(kv, []).append(pod)
        return out

    def _recompute(self) -> bool:
        """The marked Services' ports now; whether any changed."""
        dirty, self._dirty = self._dirty, set()
        store = self.net.rt.store
        if self._ports is None:
            if not dirty:
                return False
            # The first change: every Service once (later passes recompute the marked ones).
            self._ports = {}
            dirty = {_key(s) for s in store.iter_objects(self._svc_t)} | dirty
        changed = False
        by_pair: dict[str, dict[tuple[str, str], list[dict]]] = {}
        reach = self.net.reachability
        for key in dirty:
            svc = store.peek(self._svc_t, key[0], key[1])
            now: list[KubeService] = []
            if svc is not None:
                sel = (svc.get("spec") or {}).get("selector") or {}
                cands: list[dict] = []
                if sel:
                    if key[0] not in by_pair:
                        by_pair[key[0]] = self._pods_by_pair(key[0])
                    # the rarest selector pair gives the fewest candidates
                    cands = min((by_pair[key[0]].get(kv, []) for kv in sel.items()), key=len)
                now = service_ports(svc, lambda port, svc=svc, cands=cands:
                                    [a for _, a in reach.endpoints(svc, port, cands, ready=True)])
            if now != self._ports.get(key, []):
                changed = True
                if now:
                    self._ports[key] = now
                else:
                    self._ports.pop(key, None)
        return changed
