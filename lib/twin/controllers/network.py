"""The twin's network model: which CNI works on each node, node readiness, pod sandboxes.

This component (``name = "network"``) is the node/CNI truth of the rehearsal cluster.
It reads the node models (``rt.nodes``, see :mod:`twin.node`) and the Cilium model
(``rt.component("cilium")``, optional) and acts only through the store and the kubelet's
sandbox policy, as a real kubelet + CNI would:

- **Working CNI of a node** (:meth:`NetworkModel.working_cni`): what containerd uses.
  Its CNI folder comes from the ``config.toml`` k3s generated when it started (the k3s
  folder with flannel on or a ``config.toml.tmpl`` naming it, ``/etc/cni/net.d`` with
  ``flannel-backend: none``); the first conflist there decides (:meth:`cni_in_use`):
  ``cilium-cni`` works while the node's cilium agent is Ready; ``flannel`` while k3s runs
  flannel (its *running* settings; agents inherit the server's) with its device; a
  plugin binary missing from the bin dir, no conflist, or anything else: ``None`` ("cni
  plugin not initialized"). A conflist in a folder containerd does not read does nothing.

- **Node Ready condition** (written through the store, ``status`` subresource):
  ``True``/``KubeletReady`` with a working CNI; ``False``/``KubeletNotReady`` with
  "container runtime network not ready: ... cni plugin not initialized" without one
  (after :data:`NODE_STATUS_SECONDS`); ``Unknown``/``NodeStatusUnknown`` "Kubelet stopped
  posting node status." when k3s is stopped or the node is down for longer than
  :data:`NODE_MONITOR_GRACE_SECONDS` (a plain k3s restart is shorter: the node stays
  Ready, as on a cluster). The workloads' node lifecycle then taints the node and evicts
  after the (scaled) 300 s toleration.

- **Sandboxes** (:class:`NetworkSandboxPolicy`, installed with ``kubelet.set_policy``):
  a new non-hostNetwork pod gets its sandbox from the node's working CNI and records it
  in the annotation ``twin.phase22.io/sandbox-cni`` (flannel | cilium); without a CNI it
  stays ``ContainerCreating`` with the kubelet's "cni plugin not initialized" message.
  IPs come from the node's ``spec.podCIDR`` (flannel's host-local IPAM, and Cilium with
  ``ipam: kubernetes``: Cilium keeps its own allocator over the same range, so it can
  hand out an address an old flannel pod still holds, which is defect 5 of the original
  procedure) or from Cilium's cluster pool (``ipam: cluster-pool``). Pods of the Cilium
  release (agents, envoy, operator, hubble) are delegated to the Cilium model.
  hostNetwork pods run whenever k3s runs: that is how a CNI bootstraps. While a node
  has ``05-cilium.conflist`` and its agent pod exists but is not Ready yet (starting,
  or restarting after a reboot), new sandboxes fail with cilium-cni's "unable to connect
  to Cilium agent" instead of falling back to flannel.

- **Reboot**: a rebooted node's pods get new sandboxes from the CNI that works after the
  reboot (their annotation and IP are dropped at reboot; the kubelet then re-creates
  them), which is how Cilium's own migration guide moves pods node by node.

- **Data path** (:meth:`NetworkModel.pod_reachable`): a Running pod is reachable iff it
  is hostNetwork, or its sandbox's network still carries traffic on its node
  (:meth:`NetworkModel.overlays`: flannel while k3s runs it with its device, Cilium
  while its agent is Ready or its devices are still there -- the BPF datapath outlives an
  agent restart; both during a live migration, whatever containerd gives new sandboxes). Old flannel pods after the swap are "unmanaged": Running but unreachable
  until deleted and recreated.
  :meth:`NetworkModel.reach` follows one connection from a node or a pod (service
  translation, NodePorts, the overlay, the ``firewall`` fault; see :mod:`.reach`).

- **kube-proxy** (:mod:`.kube_proxy_sync`, ``kube_proxy_sync``): every node's embedded
  kube-proxy re-syncs its Service chains after Service and endpoint changes while k3s
  runs it (at most once per ``minSyncPeriod``); a stopped one keeps its last sync.

Example (inside the twin's loop)::

    net = rt.component("network")
    net.working_cni("fast-skunk")          # "flannel" | "cilium" | None
    ok, why = net.pod_reachable(pod)       # (False, "unmanaged: ...")
"""
from __future__ import annotations

import contextlib
import json
import logging
from typing import Any, Iterator

from ..node.k3s_network import add_hostport_chains
from .base import Controller
from .kube_proxy_sync import KubeProxySync
from .network_view import NodeView
from .reach import Reachability, Trace
from .kubelet import (NETWORK_NOT_READY_MESSAGE, SANDBOX_CNI_ANNOTATION, DefaultSandboxPolicy,
                      PodFate, settled_fate)
from .scheduler import node_ready_status, now_rfc3339, ready_condition

log = logging.getLogger("twin.controllers.network")

from .node_network import (  # noqa: F401 - the node facts and constants, re-exported
    CILIUM_CONFLIST, FLANNEL_CONFLIST, FLANNEL_DEVICES, NODE_STATUS_SECONDS, NODE_MONITOR_GRACE_SECONDS,
    POD_START_SECONDS, READY_REASON, READY_MESSAGE, NOT_READY_REASON, NOT_READY_MESSAGE,
    CILIUM_CNI_DOWN_MESSAGE, UNKNOWN_REASON, UNKNOWN_MESSAGE, _PRESSURE, NodeNetwork,
    desired_ready, flannel_works)


class NetworkSandboxPolicy:
    """The kubelet's sandbox policy while the network model runs (see module doc)."""

    def __init__(self, net: "NetworkModel", *, start_seconds: float = POD_START_SECONDS) -> None:
        self.net = net
        self.start_seconds = start_seconds

    def kubelet_running(self, node_name: str) -> bool:
        """The kubelet runs inside k3s: not while k3s is down or the node reboots."""
        nm = self.net.node_model(node_name)
        return nm is None or bool(nm.up and nm.unit_state == "active")

    def decide(self, pod: dict, node: dict | None) -> PodFate | None:
        if node is None:
            return None
        name = node["metadata"]["name"]
        nm = self.net.node_model(name)
        if nm is None:
            # A node without a node model (e.g. a generated extra Node): flannel-era default.
            return self.net.fallback.decide(pod, node)
        if not nm.up or nm.unit_state != "active":
            return None    # the kubelet runs inside k3s: nothing happens while it is down
        cil = self.net.cilium
        if cil is not None and cil.owns(pod):
            return cil.decide(pod, node)
        return self.net.generic_fate(pod, node)


class _NodeStatus(Controller):
    """Per-node reconcile: working CNI changes and the Node's Ready condition."""

    def __init__(self, net: "NetworkModel") -> None:
        super().__init__("network", net.rt.clock)
        self.net = net
        self._pending: dict[str, tuple[tuple, float]] = {}

    def reconcile(self, name: str) -> None:
        self.net._reconcile_node(name, self)


class NetworkModel:
    """Runtime component ``network`` (start it after ``workloads``).

    Attributes:
        fallback: the flannel-era policy used for nodes without a node model.
        resandboxed: ``(namespace, name, node)`` of pods whose sandbox a reboot dropped.
    """

    name = "network"

    def __init__(self, *, start_seconds: float = POD_START_SECONDS) -> None:
        self.start_seconds = start_seconds
        self.rt: Any = None
        self.store: Any = None
        self.kubelet: Any = None
        self.cache: Any = None
        self.types: dict[str, Any] = {}
        self.ctrl: _NodeStatus | None = None
        self.policy: NetworkSandboxPolicy | None = None
        self.fallback: Any = None
        self._cni: dict[str, str | None] = {}
        self._last_settings: dict[str, dict] = {}
        self._unsubs: list[Any] = []
        self.resandboxed: list[tuple[str, str, str]] = []
        self.status_writes = 0
        self._conf_cache: dict[str, tuple[tuple, str | None]] = {}
        self._facts_memo: dict[str, NodeNetwork | None] | None = None
        self._answers: dict[Any, Any] | None = None
        self.reachability = Reachability(self)
        self.kube_proxy_sync = KubeProxySync(self)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        wc = rt.component("workloads")
        self.kubelet = wc.kubelet
        self.cache = wc.cache
        for t in self.store.resource_types():
            if t.key in (("", "pods"), ("", "nodes")) and t.version == "v1":
                self.types[t.plural] = t
        self.fallback = DefaultSandboxPolicy(self.kubelet.ipam)
        view = NodeView(self)
        for name, nm in rt.nodes.items():
            self._last_settings[name] = dict(nm.running or {})
            self._unsubs.append(nm.subscribe(self._on_node_event))
            nm.cluster_view = view
        self.ctrl = _NodeStatus(self)
        self.policy = NetworkSandboxPolicy(self, start_seconds=self.start_seconds)
        # Pods already running keep their fate; only pods still waiting are re-decided
        # (the kubelet seeded them), so a large fixture costs nothing here.
        self.kubelet.set_policy(self.policy, reevaluate=False)
        self.ctrl.start()
        for name in rt.nodes:
            self.ctrl.enqueue(name)
        self.kube_proxy_sync.start()
        rt.options["network"] = self

    async def stop(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs.clear()
        for nm in (self.rt.nodes.values() if self.rt else ()):
            nm.cluster_view = None
        if self.ctrl is not None:
            await self.ctrl.stop()
        await self.kube_proxy_sync.stop()

    def describe(self) -> str:
        parts = [f"{n}={self.working_cni(n) or 'none'}" for n in sorted(self.rt.nodes)] if self.rt else []
        return "network model (CNI per node, sandboxes, node readiness): " + ", ".join(parts)

    # ------------------------------------------------------------------ wiring
    @property
    def cilium(self) -> Any:
        """The Cilium model component, or None when the twin runs without it."""
        if self.rt is None:
            return None
        try:
            return self.rt.component("cilium")
        except KeyError:
            return None

    def node_model(self, name: str) -> Any:
        return self.rt.nodes.get(name) if self.rt is not None else None

    def invalidate(self, node: str | None = None) -> None:
        """Re-evaluate a node (all nodes when None): called on node and Cilium changes."""
        if self.ctrl is None:
            return
        for name in ([node] if node else list(self.rt.nodes)):
            self.ctrl.enqueue(name)

    def _on_node_event(self, nm: Any, event: str, info: dict) -> None:
        # Synchronous callback from the node model: record and queue, never write here.
        if nm.running:
            self._last_settings[nm.name] = dict(nm.running)
        if event == "rebooted":
            self._drop_sandboxes(nm.name)
        self.invalidate(nm.name)
        if event == "k3s-started" and self.kubelet is not None:
            # The kubelet is back: pods that waited while it was down get decided now.
            self.kubelet.reevaluate(nm.name)
        self.kube_proxy_sync.node_event(nm, event)
        cil = self.cilium
        if cil is not None:
            cil.node_event(nm, event, info)

    # ------------------------------------------------------------------ facts
    @contextlib.contextmanager
    def one_instant(self) -> Iterator[None]:
        """Within the block each node's facts are read once: for a caller that asks many
        questions about one instant without yielding to the loop (nothing can change the
        nodes meanwhile), e.g. an availability prober's round of requests."""
        outer, outer_answers = self._facts_memo, self._answers
        if outer is None:
            self._facts_memo, self._answers = {}, {}
        try:
            yield
        finally:
            self._facts_memo, self._answers = outer, outer_answers

    def instant_answers(self) -> dict[Any, Any] | None:
        """Inside :meth:`one_instant`, a dict where a caller keeps its own answers about
        that instant (e.g. whether two pods reach each other); None outside one."""
        return self._answers

    def facts(self, name: str) -> NodeNetwork | None:
        """The network facts of node ``name`` (None without a node model)."""
        memo = self._facts_memo
        if memo is not None and name in memo:
            return memo[name]
        f = self._facts(name)
        if memo is not None:
            memo[name] = f
        return f

    def _facts(self, name: str) -> NodeNetwork | None:
        nm = self.node_model(name)
        if nm is None:
            return None
        settings = nm.running or self._last_settings.get(name) or {}
        flannel_conf = nm.exists(FLANNEL_CONFLIST)
        device, flannel_ok = flannel_works(settings, nm.interfaces, True)
        cil = self.cilium
        agent_ready = bool(cil is not None and cil.agent_ready(name))
        conf, plugin, missing = self.cni_in_use(nm)
        if not nm.up:
            cni = None   # a machine that is down forwards nothing
        elif missing:
            cni = None   # containerd loads the config; every sandbox fails to find the plugin
        elif plugin == "cilium-cni":
            cni = "cilium" if agent_ready else None
        elif plugin == "flannel":
            cni = "flannel" if flannel_ok else None
        else:
            cni = None
        # Cilium's datapath outlives its agent: while the agent restarts (an upgrade, a
        # rollout, a CiliumNodeConfig taking effect) the BPF programs on its devices keep
        # forwarding for the endpoints it made (Cilium's upgrade guide: traffic keeps
        # flowing while agents restart); only new sandboxes wait for it. Cilium's cleanup
        # or a reboot removes the devices, and the datapath with them; after an uninstall
        # the stale datapath is counted as not serving.
        cilium_kept = bool(cil is not None and not agent_ready and "cilium_host" in nm.interfaces
                           and "cilium_vxlan" in nm.interfaces and cil.agent_coming_back(name))
        overlays = tuple(o for o, on in (("flannel", flannel_ok), ("cilium", agent_ready or cilium_kept))
                         if on) if nm.up else ()
        return NodeNetwork(node=name, k3s_active=nm.unit_state == "active", up=bool(nm.up),
                           cni=cni, flannel_running=bool(settings.get("flannel")),
                           flannel_device=device, flannel_conf=flannel_conf,
                           cilium_agent_ready=agent_ready, cilium_conf=nm.exists(CILIUM_CONFLIST),
                           cni_conf=conf, cni_plugin=plugin, cni_plugin_missing=missing,
                           overlays=overlays)

    def cni_in_use(self, nm: Any) -> tuple[str | None, str | None, str | None]:
        """What containerd on ``nm`` uses now: ``(conf file, first plugin type, the
        plugin binary missing from its bin dir or None)``. The conf dir and bin dir come
        from the ``config.toml`` k3s wrote when it started (:mod:`twin.node.containerd`):
        a leftover conflist in a folder containerd does not read does nothing."""
        conf = nm.cni_config()
        if conf is None:
            return None, None, None
        try:
            key = (conf, *nm.files.stamp(conf))
        except OSError:
            return conf, None, None
        cached = self._conf_cache.get(nm.name)
        if cached is None or cached[0] != key:
            plugin = None
            try:
                doc = json.loads(nm.read_text(conf))
                plugins = doc.get("plugins") if isinstance(doc, dict) else None
                first = plugins[0] if isinstance(plugins, list) and plugins else doc
                plugin = str(first.get("type")) if isinstance(first, dict) and first.get("type") else None
            except (ValueError, OSError, UnicodeDecodeError):
                plugin = None
            cached = (key, plugin)
            self._conf_cache[nm.name] = cached
        plugin = cached[1]
        bin_dir = nm.k3s.cni_dirs[1] if nm.k3s.cni_dirs else None
        missing = None
        if plugin and bin_dir and not nm.exists(f"{bin_dir}/{plugin}"):
            missing = f'failed to find plugin "{plugin}" in path [{bin_dir}]'
        return conf, plugin, missing

    def working_cni(self, name: str) -> str | None:
        """"cilium", "flannel" or None for node ``name`` (see module doc)."""
        f = self.facts(name)
        return f.cni if f is not None else None

    def overlays(self, name: str) -> tuple[str, ...]:
        """The pod networks that carry traffic on node ``name`` now ("flannel",
        "cilium", both during a live migration, or none): a pod is reachable when its
        sandbox's network is one of them, whatever new sandboxes get."""
        f = self.facts(name)
        return f.overlays if f is not None else ()

    # ------------------------------------------------------------------ data path
    def pod_reachable(self, pod: dict) -> tuple[bool, str]:
        """Whether the CNI that runs now carries traffic to ``pod``, and why (not).

        Example:
            >>> net.pod_reachable(old_flannel_pod)  # doctest: +SKIP
            (False, 'unmanaged: sandbox created by flannel, node fast-skunk now runs cilium; ...')
        """
        st = pod.get("status") or {}
        spec = pod.get("spec") or {}
        md = pod.get("metadata") or {}
        phase = st.get("phase")
        if md.get("deletionTimestamp"):
            return False, "pod is terminating"
        if phase != "Running":
            return False, f"pod is not Running (phase {phase or 'unknown'})"
        node = spec.get("nodeName") or ""
        nm = self.node_model(node)
        if nm is not None and not nm.up:
            return False, f"node {node} is down"
        if spec.get("hostNetwork"):
            return True, "hostNetwork pod: reachable on the node's address"
        sandbox = (md.get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION)
        if not sandbox or not st.get("podIP"):
            return False, "pod has no network sandbox"
        if nm is None:
            n = self.cache.get(("", "nodes"), "", node) if self.cache else None
            ok = n is not None and node_ready_status(n) == "True"
            return ok, "node without a node model: reachable while Ready" if ok else \
                f"node {node} is not Ready"
        cni = self.working_cni(node)
        overlays = self.overlays(node)
        if sandbox in overlays:
            return True, f"managed by {sandbox}"
        if cni is None and not overlays:
            return False, f"no working CNI on node {node} (sandbox created by {sandbox})"
        return False, (f"unmanaged: sandbox created by {sandbox}, node {node} now runs "
                       f"{cni or ' and '.join(overlays)}; the pod must be deleted and recreated")

    def reach(self, src: str | dict, dst_ip: str, port: int, proto: str = "tcp") -> tuple[bool, str]:
        """Whether ``src`` (a node name, or a pod dict) reaches ``dst_ip:port`` now, and why.

        Decided by the CNI in force on each side and its tunnel port, the nodes'
        firewalls (fault ``firewall``), whether the pods' sandboxes belong to the CNI
        that works, service translation (a socket LB Cilium left behind, kube-proxy,
        Cilium's KPR), NodePorts and Service endpoints (see :mod:`.reach`).

        Example:
            >>> net.reach("set-hog", "10.43.0.10", 53, "udp")  # doctest: +SKIP
            (True, 'kube-proxy (in k3s) on set-hog translated 10.43.0.10:53/udp; node set-hog reached ...')
        """
        t = self.reachability.trace(src, dst_ip, int(port), proto)
        return t.ok, t.reason

    def trace(self, src: str | dict, dst_ip: str, port: int, proto: str = "tcp") -> Trace:
        """:meth:`reach` with the details: how it failed and which pod answered."""
        return self.reachability.trace(src, dst_ip, int(port), proto)

    # ------------------------------------------------------------------ sandboxes
    def generic_fate(self, pod: dict, node: dict) -> PodFate | None:
        """The fate of an ordinary pod on a node whose k3s runs."""
        settled = settled_fate(pod, node, self.start_seconds)
        if settled is not None:
            return settled
        name = node["metadata"]["name"]
        cni = self.working_cni(name)
        cil = self.cilium
        nm = self.node_model(name)
        _, plugin, missing = self.cni_in_use(nm) if nm is not None else (None, None, None)
        if missing:
            return PodFate("Pending", False, "ContainerCreating",
                           f"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to "
                           f"setup network for sandbox: plugin type=\"{plugin}\" failed (add): {missing}")
        if cni != "cilium" and plugin == "cilium-cni" and cil is not None and cil.agent_pending(name):
            # containerd uses Cilium's conflist; its plugin needs the agent, which is
            # (re)starting on this node (e.g. after a reboot).
            return PodFate("Pending", False, "ContainerCreating", CILIUM_CNI_DOWN_MESSAGE)
        if cni is None:
            return PodFate("Pending", False, "ContainerCreating", NETWORK_NOT_READY_MESSAGE)
        ip = self.allocate_ip(cni, pod, node)
        if ip is None:
            plugin = "cilium-cni" if cni == "cilium" else "flannel"
            return PodFate("Pending", False, "ContainerCreating",
                           f'Failed to create pod sandbox: plugin type="{plugin}" failed (add): '
                           "failed to allocate for range 0: no IP addresses available in range set")
        if cni == "flannel" and nm is not None:
            # flannel's conflist chains the portmap plugin: a hostPort gets its CNI-* chains.
            add_hostport_chains(nm, pod, ip)
        return PodFate("Running", True, cni=cni, ip=ip, delay=self.start_seconds)

    def allocate_ip(self, cni: str, pod: dict, node: dict) -> str | None:
        md = pod.get("metadata") or {}
        uid = md.get("uid") or f"{md.get('namespace')}/{md.get('name')}"
        cil = self.cilium
        if cni == "cilium" and cil is not None:
            return cil.allocate_ip(uid, node)
        return self.kubelet.ipam.allocate(node["metadata"]["name"],
                                          (node.get("spec") or {}).get("podCIDR"), uid)

    def _drop_sandboxes(self, node: str) -> None:
        """After a reboot every pod sandbox of the node is gone: the kubelet re-creates
        them with the CNI that works then. Done through the store, later on the loop."""
        import asyncio
        asyncio.get_running_loop().call_soon(self._drop_sandboxes_now, node)

    def _drop_sandboxes_now(self, node: str) -> None:
        pods_rt = self.types.get("pods")
        if pods_rt is None:
            return
        for pod in list(self.cache.pods_on(node)):
            spec = pod.get("spec") or {}
            md = pod.get("metadata") or {}
            if spec.get("hostNetwork") or md.get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") not in ("Running", "Pending"):
                continue
            if SANDBOX_CNI_ANNOTATION not in (md.get("annotations") or {}):
                continue
            ns, name = md.get("namespace"), md["name"]

            def drop_ann(p: dict) -> None:
                (p.get("metadata") or {}).get("annotations", {}).pop(SANDBOX_CNI_ANNOTATION, None)

            def drop_ip(p: dict) -> None:
                st = p.setdefault("status", {})
                st.pop("podIP", None)
                st.pop("podIPs", None)
                st["phase"] = "Pending"
                for c in st.get("conditions") or ():
                    if c.get("type") in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
                        c["status"] = "False"
                for cs in st.get("containerStatuses") or ():
                    cs["ready"] = False
                    cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            try:
                self.store.mutate(pods_rt, ns, name, drop_ann)
                self.store.mutate(pods_rt, ns, name, drop_ip, subresource="status")
            except Exception:   # the pod may be gone meanwhile
                log.debug("dropping the sandbox of %s/%s failed", ns, name, exc_info=True)
                continue
            if md.get("uid"):
                self.kubelet.ipam.release(md["uid"])
                cil = self.cilium
                if cil is not None:
                    cil.release_ip(md["uid"])
            self.resandboxed.append((ns or "", name, node))
        self.kubelet.reevaluate(node)

    # ------------------------------------------------------------------ node status
    def _reconcile_node(self, name: str, ctrl: _NodeStatus) -> None:
        node = self.cache.get(("", "nodes"), "", name)
        facts = self.facts(name)
        if node is None or facts is None:
            return
        first = name not in self._cni
        prev = self._cni.get(name)
        self._cni[name] = facts.cni
        if not first and prev != facts.cni:
            log.info("node %s: working CNI %s -> %s", name, prev, facts.cni)
            # Pods waiting for a sandbox (ContainerCreating) can get one now.
            self.kubelet.reevaluate(name)
            cil = self.cilium
            if cil is not None:
                cil.cni_changed(name, facts.cni)
        want = desired_ready(facts)
        cond = ready_condition(node) or {}
        have = (cond.get("status"), cond.get("reason"), cond.get("message"))
        if have == want:
            ctrl._pending.pop(name, None)
            return
        now = self.rt.clock.cluster_now()
        delay = NODE_MONITOR_GRACE_SECONDS if want[0] == "Unknown" else NODE_STATUS_SECONDS
        pend = ctrl._pending.get(name)
        if pend is None or pend[0] != want:
            ctrl._pending[name] = (want, now + delay)
            ctrl.requeue_after(name, delay)
            return
        if pend[1] > now + 1e-6:
            ctrl.requeue_after(name, pend[1] - now)
            return
        ctrl._pending.pop(name, None)
        self._write_ready(name, want)

    def _write_ready(self, name: str, want: tuple[str, str, str]) -> None:
        status, reason, message = want
        now = now_rfc3339()

        def put(n: dict) -> None:
            st = n.setdefault("status", {})
            conds = st.setdefault("conditions", [])
            wanted = {"Ready": (status, reason, message)}
            for ctype, (r, m) in _PRESSURE.items():
                # A node that stops posting has every condition Unknown; a live one posts
                # its pressure conditions again.
                wanted[ctype] = ("Unknown", UNKNOWN_REASON, UNKNOWN_MESSAGE) if status == "Unknown" \
                    else ("False", r, m)
            seen = set()
            for c in conds:
                w = wanted.get(c.get("type"))
                if w is None:
                    continue
                seen.add(c["type"])
                if c.get("type") != "Ready" and status != "Unknown" and c.get("status") != "Unknown":
                    continue   # keep what the kubelet posted
                if c.get("status") != w[0]:
                    c["lastTransitionTime"] = now
                c.update(status=w[0], reason=w[1], message=w[2])
                if status != "Unknown":
                    c["lastHeartbeatTime"] = now
            if "Ready" not in seen:
                conds.append({"type": "Ready", "status": status, "reason": reason, "message": message,
                              "lastHeartbeatTime": now, "lastTransitionTime": now})
        self.store.mutate(self.types["nodes"], None, name, put, subresource="status")
        self.status_writes += 1
        log.info("node %s: Ready=%s (%s)", name, status, reason)
