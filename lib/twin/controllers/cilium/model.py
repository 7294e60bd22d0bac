"""The runtime component ``"cilium"``: one Cilium model, fed by the store and the nodes.

:class:`CiliumModel` composes the parts (:mod:`.agents`, :mod:`.endpoints`,
:mod:`.cilium_operator`, :mod:`.status`) with what binds them: its indexes of Cilium
pods, the store subscription, one work queue, and a ticker for what no event announces
(crash-loop back-off, fault switches, the operator's watcher).

The network model's sandbox policy delegates every pod labelled
``app.kubernetes.io/part-of=cilium`` or with a Cilium ``k8s-app`` label to
:meth:`CiliumModel.decide` (:mod:`.agents`).
"""
from __future__ import annotations

import logging
from typing import Any

from ...ticker import Ticker
from ..base import Controller
from ..kubelet import SANDBOX_CNI_ANNOTATION, IPAllocator
from . import datapath
from .agents import Agents
from .cilium_operator import Operator
from .config import CONFIG_MAP, NAMESPACE, TICK_SECONDS, CiliumConfig, is_ready, labels_of, pod_app
from .endpoints import Endpoints
from .status import AgentStatusFacts

log = logging.getLogger("twin.controllers.cilium")


class _CiliumController(Controller):
    def __init__(self, model: "CiliumModel") -> None:
        super().__init__("cilium", model.rt.clock)
        self.model = model

    def reconcile(self, key: Any) -> None:
        self.model._reconcile(key)


class CiliumModel(Agents, Endpoints, Operator, AgentStatusFacts):
    """Runtime component ``cilium`` (start it after ``network``).

    Attributes:
        crds_registered: the operator has registered the cilium.io CRDs.
        watcher_restarts: ``(namespace, name)`` of pods the unmanaged-pod watcher deleted.
    """

    name = "cilium"

    def __init__(self) -> None:
        self.rt: Any = None
        self.store: Any = None
        self.kubelet: Any = None
        self.cache: Any = None
        self.ctrl: _CiliumController | None = None
        self.ipam = IPAllocator()
        self.crds_registered = False
        self.watcher_restarts: list[tuple[str, str]] = []
        self._agents: dict[str, tuple[str, str]] = {}        # node -> agent pod key
        self._ready_boot: dict[tuple[str, str], int] = {}    # agent pod key -> node boot
        self._apps: dict[tuple[str, str], tuple[str, str]] = {}   # pod key -> (app, node)
        self._crash: dict[tuple[str, str], list] = {}       # pod key -> [count, state, since, node]
        self._dns: set[tuple[str, str]] = set()
        self._pool_index: dict[str, int] = {}
        self._start_cfg: dict[tuple[str, str], dict] = {}   # agent pod key -> resolved at start
        self._unsub: Any = None
        self._ticker: Ticker | None = None
        self._watcher_due = 0.0
        self._pull_fault = False
        self._types: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        wc = rt.component("workloads")
        self.kubelet = wc.kubelet
        self.cache = wc.cache
        self.ctrl = _CiliumController(self)
        for pod in self.cache.all(("", "pods")):
            self._index_pod("ADDED", pod, None)
        self.crds_registered = self._rtype("cilium.io", "ciliumnodes") is not None
        self._pull_fault = bool(rt.faults.cilium_image_pull_fails)
        self._unsub = self.store.subscribe(self._on_change)
        self.ctrl.start()
        # Crash-loop back-off, fault switches and the operator's unmanaged-pod watcher
        # move with time, not with store events.
        self._ticker = Ticker("cilium-ticker", TICK_SECONDS, self._tick_once, sleep=rt.clock.sleep,
                              logger=log)
        self._ticker.start()
        try:
            rt.component("network").invalidate()
        except KeyError:
            log.warning("cilium model started without the network model: pods are not delegated")
        rt.options["cilium"] = self

    async def stop(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if self._ticker is not None:
            await self._ticker.stop()
            self._ticker = None
        if self.ctrl is not None:
            await self.ctrl.stop()

    def describe(self) -> str:
        ready = sorted(n for n in self._agents if self.agent_ready(n))
        return (f"cilium model: agents Ready on {len(ready)}/{len(self.rt.nodes) if self.rt else 0} "
                f"nodes, CRDs {'registered' if self.crds_registered else 'absent'}")

    # ------------------------------------------------------------------ helpers
    def _rtype(self, group: str, plural: str) -> Any:
        for t in self.store.resource_types():
            if t.key == (group, plural):
                return t
        return None

    def _type(self, group: str, plural: str) -> Any:
        t = self._types.get((group, plural))
        if t is None or self.store.lookup(t.group, t.version, t.plural) is None:
            t = self._rtype(group, plural)
            if t is not None:
                self._types[(group, plural)] = t
        return t

    @property
    def network(self) -> Any:
        try:
            return self.rt.component("network")
        except KeyError:
            return None

    def config(self) -> CiliumConfig:
        """The current ``cilium-config`` (defaults when the ConfigMap is absent)."""
        cm = self._configmap(NAMESPACE, CONFIG_MAP)
        return CiliumConfig.from_data(cm.get("data") if cm else None)

    def _configmap(self, ns: str | None, name: str | None) -> dict | None:
        t = self._type("", "configmaps")
        if t is None or not name:
            return None
        return self.store.peek(t, ns or NAMESPACE, name)

    def _servers(self) -> list[Any]:
        return [n for n in self.rt.nodes.values() if n.role == "server"]

    def owns(self, pod: dict) -> bool:
        """Whether ``pod`` belongs to the Cilium release (its fate is decided here)."""
        return pod_app(pod) is not None

    # ------------------------------------------------------------------ events
    def node_event(self, nm: Any, event: str, info: dict) -> None:
        """Called by the network model on each node model event."""
        if self.ctrl is None:
            return
        self.ctrl.enqueue(("node", nm.name))
        if nm.role == "server" and event in ("k3s-started", "k3s-stopped", "rebooted"):
            # Every agent and the operator talk to the servers: re-check them all.
            self.ctrl.enqueue(("all",))

    def cni_changed(self, node: str, cni: str | None) -> None:
        """Called by the network model when a node's working CNI changes."""
        if self.ctrl is not None:
            self.ctrl.enqueue(("node", node))

    def _index_pod(self, etype: str, pod: dict, old: dict | None) -> None:
        md = pod.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        node = (pod.get("spec") or {}).get("nodeName") or ""
        app = pod_app(pod)
        if labels_of(pod).get("k8s-app") == "kube-dns":
            if etype == "DELETED":
                self._dns.discard(key)
            else:
                self._dns.add(key)
        if app is None:
            return
        if etype == "DELETED":
            self._apps.pop(key, None)
            self._crash.pop(key, None)
            self._ready_boot.pop(key, None)
            if app == "cilium" and node:
                self._agent_stopping(key, pod, node)
            self._start_cfg.pop(key, None)
            if app == "cilium" and node and self._agents.get(node) == key:
                del self._agents[node]
                # A surge/rolling update may already have the next agent on this node.
                for other in self.cache.pods_on(node):
                    okey = (other["metadata"].get("namespace") or "", other["metadata"]["name"])
                    if okey != key and pod_app(other) == "cilium":
                        self._agents[node] = okey
            return
        self._apps[key] = (app, node)
        if app == "cilium" and node:
            cur = self._agents.get(node)
            if cur is None or cur == key or self.cache.get(("", "pods"), *cur) is None:
                self._agents[node] = key
            elif (self.cache.get(("", "pods"), *cur) or {}).get("metadata", {}).get("deletionTimestamp"):
                self._agents[node] = key

    def _on_change(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        # Synchronous store callback: index and queue only, never write here.
        k = rtype.key
        if k == ("", "pods"):
            self._on_pod(etype, obj, old)
        elif k == ("", "configmaps"):
            md = obj.get("metadata") or {}
            if md.get("name") == CONFIG_MAP and md.get("namespace") == NAMESPACE:
                self.ctrl.enqueue(("all",))
        elif k == ("apiextensions.k8s.io", "customresourcedefinitions"):
            if (obj.get("spec") or {}).get("group") == "cilium.io":
                registered = self._rtype("cilium.io", "ciliumnodes") is not None
                if registered != self.crds_registered:
                    self.crds_registered = registered
                    self.ctrl.enqueue(("all",))

    def _on_pod(self, etype: str, pod: dict, old: dict | None) -> None:
        self._index_pod(etype, pod, old)
        md = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName") or ""
        app = pod_app(pod)
        if app is not None:
            was = is_ready(old) if old is not None else False
            now = is_ready(pod) if etype != "DELETED" else False
            if app == "cilium" and now and not was:
                nm = self.rt.nodes.get(node)
                self._ready_boot[(md.get("namespace") or "", md["name"])] = nm.boot_count if nm else 0
            newly_bound = old is not None and not (old.get("spec") or {}).get("nodeName")
            if was != now or etype == "DELETED" or newly_bound:
                if app == "cilium" and node:
                    self.ctrl.enqueue(("node", node))
                    self.ctrl.enqueue(("hubble",))
                elif app == "operator" and now and not was:
                    self.ctrl.enqueue(("crds",))
            if (pod.get("spec") or {}).get("hostNetwork"):
                return
            # hubble-relay and hubble-ui are ordinary pods too: Cilium manages their endpoints.
        # An ordinary pod: a CiliumEndpoint follows its Cilium sandbox.
        ann = md.get("annotations") or {}
        if etype != "DELETED" and ann.get(SANDBOX_CNI_ANNOTATION) == "cilium" and node:
            old_ann = ((old or {}).get("metadata") or {}).get("annotations") or {}
            old_ip = ((old or {}).get("status") or {}).get("podIP")
            if old is None or old_ann.get(SANDBOX_CNI_ANNOTATION) != "cilium" or \
                    old_ip != (pod.get("status") or {}).get("podIP"):
                self.ctrl.enqueue(("cep", md.get("namespace") or "", md["name"]))
        elif etype == "DELETED" and md.get("uid"):
            self.ipam.release(md["uid"])

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, key: tuple) -> None:
        kind = key[0]
        if kind == "all":
            for node in self.rt.nodes:
                self._reconcile_node(node)
            self._reevaluate_hubble()
        elif kind == "node":
            self._reconcile_node(key[1])
        elif kind == "hubble":
            self._reevaluate_hubble()
        elif kind == "crds":
            self._register_crds()
        elif kind == "cep":
            self._sync_cep(key[1], key[2])
        elif kind == "cni-uninstall":
            nm = self.rt.nodes.get(key[1])
            if nm is not None:
                datapath.cni_uninstall(nm, key[2])

    def _reconcile_node(self, node: str) -> None:
        self.kubelet.reevaluate(node)
        net = self.network
        if net is not None:
            net.invalidate(node)
        nm = self.rt.nodes.get(node)
        if nm is None:
            return
        if not self.agent_ready(node):
            if nm.bpf.lb_live and net is not None:
                # The agent stopped: the kernel keeps its datapath, the socket LB with
                # the services as they are now.
                datapath.agent_gone(nm, net.reachability.lb_snapshot())
            return
        cfg = self.agent_config(node)
        n = self.cache.get(("", "nodes"), "", node)
        self._ensure_node_artifacts(nm, cfg, n)
        if n is not None:
            self._publish_cilium_node(n, nm, cfg)
        for pod in self.cache.pods_on(node):
            if ((pod.get("metadata") or {}).get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION) == "cilium":
                self._sync_cep(pod["metadata"].get("namespace") or "", pod["metadata"]["name"])

    def _reevaluate_hubble(self) -> None:
        nodes = {node for app, node in self._apps.values() if app in ("hubble-relay", "hubble-ui") and node}
        for node in nodes:
            self.kubelet.reevaluate(node)

    # ------------------------------------------------------------------ time
    def _tick_once(self) -> None:
        now = self.rt.clock.cluster_now()
        self._advance_crash_loops(now)
        fault = bool(self.rt.faults.cilium_image_pull_fails)
        if fault != self._pull_fault:
            # Fault switches have no events: notice a flip here and re-decide every pod.
            self._pull_fault = fault
            self.ctrl.enqueue(("all",))
        if self.crds_registered is False and self.operator_ready():
            self.ctrl.enqueue(("crds",))
        self._unmanaged_watcher(now)
