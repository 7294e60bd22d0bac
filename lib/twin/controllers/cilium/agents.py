"""The Cilium agent (and cilium-envoy) on each node: when it becomes Ready, how it
crash-loops, and what a Ready agent does to its node.

A node's **agent** becomes Ready (after :data:`~.config.AGENT_READY_SECONDS`) only when,
checked in the order a real agent meets them:

1. the ``cilium_image_pull_fails`` fault is off (else ``ImagePullBackOff``, never Ready);
2. the node's kernel is >= 5.10 (else ``CrashLoopBackOff``, kernel message);
3. ``KUBERNETES_SERVICE_HOST:PORT`` reach the API server: a server's InternalIP with
   6443, or 127.0.0.1 with 6444 (k3s's apiserver proxy on every node), the server's k3s
   running (else ``CrashLoopBackOff`` "unable to reach the API server at H:P");
4. no other VXLAN device holds the tunnel port: ``flannel.1`` holds 8472, so with the
   default port the agent crash-loops with "failed to create vxlan device: address
   already in use (port 8472 is used by flannel.1)" until ``flannel.1`` is deleted;
5. the cilium.io CRDs exist (the operator registers them): until then the agent runs
   but is not Ready ("waiting for CRDs").

A crash-looping agent's ``restartCount`` grows with the kubelet's back-off
(10 s, 20 s, ... 300 s cluster time). Once Ready (per boot of the node) it stays Ready
until its pod goes or the node reboots.

**A Ready agent** sets its node up (:mod:`.datapath`: ``05-cilium.conflist``, the CNI
binary, the sysctl override, ``cilium_host``/``cilium_net``/``cilium_vxlan`` with their
routes, BPF programs on the NIC and the cgroup root, pinned maps) and the ``CILIUM_*``
iptables chains, and publishes a ``CiliumNode`` (cluster-scoped, ``spec.addresses``,
``spec.ipam.podCIDRs``). Kube-proxy replacement is active only with
``kube-proxy-replacement: "true"``; the ``KUBE-SVC-*`` chains k3s's kube-proxy left stay
in ``iptables-save``. ``helm uninstall`` removes the pods; everything else stays (as on
a node): the socket LB keeps translating services to the backends of that moment until
``cilium-dbg post-uninstall-cleanup`` (:mod:`.cleanup`) or a reboot; a reboot clears
interfaces, chains and BPF, not the files.

**cilium-envoy** is Ready with the agent of its node. **hubble-relay/hubble-ui** get
their sandbox from the node's working CNI like any pod and are Ready once some agent is
Ready. The operator's own rules are in :mod:`.cilium_operator`.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from typing import Any

from ..kubelet import IPAllocator, PodFate, has_sandbox, node_internal_ip
from . import datapath, node_config
from .config import (AGENT_READY_SECONDS, BACKOFF_BASE, BACKOFF_MAX, CONFIG_MAP,
                     CRASH_RUN_SECONDS, ENVOY_READY_SECONDS, FLANNEL_VXLAN_PORT,
                     IMAGE_PULL_SECONDS, MIN_KERNEL, NAMESPACE, OPERATOR_READY_SECONDS,
                     CiliumConfig, api_reachable, container_env, is_ready, kernel_tuple,
                     labels_of, pod_app)

CILIUM_CONFLIST = datapath.CILIUM_CONFLIST

# What the real agent programs, per table: (chain, feeder parent) pairs.
CILIUM_CHAINS: dict[str, tuple[tuple[str, str], ...]] = {
    "filter": (("CILIUM_INPUT", "INPUT"), ("CILIUM_FORWARD", "FORWARD"), ("CILIUM_OUTPUT", "OUTPUT")),
    "nat": (("CILIUM_PRE_nat", "PREROUTING"), ("CILIUM_OUTPUT_nat", "OUTPUT"),
            ("CILIUM_POST_nat", "POSTROUTING")),
    "mangle": (("CILIUM_PRE_mangle", "PREROUTING"), ("CILIUM_POST_mangle", "POSTROUTING")),
    "raw": (("CILIUM_PRE_raw", "PREROUTING"), ("CILIUM_OUTPUT_raw", "OUTPUT")),
}


class Agents:
    """Part of :class:`~.model.CiliumModel`: agent readiness, pod fates, crash loops,
    the node's artifacts, the CiliumNode and Cilium's pod IPAM.

    Uses the model's ``rt``, ``store``, ``cache``, ``kubelet``, ``crds_registered`` and
    owns ``_agents`` (node -> agent pod key), ``_ready_boot`` (agent pod key -> node boot
    it became Ready in), ``_crash`` (pod key -> [count, state, since, node]),
    ``_pool_index`` and ``ipam``.
    """

    rt: Any
    store: Any
    cache: Any
    kubelet: Any
    ipam: IPAllocator
    crds_registered: bool
    _agents: dict[str, tuple[str, str]]
    _ready_boot: dict[tuple[str, str], int]
    _apps: dict[tuple[str, str], tuple[str, str]]
    _crash: dict[tuple[str, str], list]
    _pool_index: dict[str, int]
    _start_cfg: dict[tuple[str, str], dict]

    # ------------------------------------------------------------------ per-node config
    def _node_configs(self, namespace: str) -> list[dict]:
        t = self._type("cilium.io", "ciliumnodeconfigs")
        return list(self.store.iter_objects(t, namespace)) if t is not None else []

    def _agent_started(self, key: tuple[str, str], node: dict) -> None:
        """The agent pod ``key`` starts on ``node``: its ``config`` init container
        resolves the CiliumNodeConfigs that select the node, once (:mod:`.node_config`)."""
        if key in self._start_cfg:
            return
        cm = self._configmap(NAMESPACE, CONFIG_MAP)
        snap = node_config.snapshot(cm.get("data") if cm else None, self._node_configs(key[0]),
                                    labels_of(node))
        self._start_cfg[key] = snap

    def _agent_stopping(self, key: tuple[str, str], pod: dict, node: str) -> None:
        """Agent pod ``key`` goes: its preStop hook (``/cni-uninstall.sh``) removes
        Cilium's CNI configurations from the mounted folder only when the pod started
        with ``cni-uninstall: "true"`` and the ConfigMap's ``custom-cni-conf`` (its
        ``CILIUM_CUSTOM_CNI_CONF``) is not ``"true"``. The chart's default,
        ``cni.uninstall: false``, keeps them (as migration mode needs)."""
        data = (self._start_cfg.get(key) or {}).get("data") or {}
        if str(data.get("cni-uninstall", "")).strip().lower() != "true":
            return
        cm = self._configmap(NAMESPACE, CONFIG_MAP)
        if str(((cm or {}).get("data") or {}).get("custom-cni-conf", "")).strip().lower() == "true":
            return
        folder = node_config.host_path(pod, node_config.AGENT_CONTAINER, node_config.CONF_MOUNT)
        if folder and self.ctrl is not None:
            self.ctrl.enqueue(("cni-uninstall", node, folder))

    def agent_overrides(self, node: str) -> dict[str, str]:
        """The CiliumNodeConfig keys the agent pod on ``node`` started with ({}: none)."""
        key = self._agents.get(node)
        return dict((self._start_cfg.get(key) or {}).get("overrides") or {}) if key else {}

    def agent_config(self, node: str) -> CiliumConfig:
        """What the agent on ``node`` runs with (see :meth:`pod_config`)."""
        return self.pod_config(self._agents.get(node))

    def pod_config(self, key: tuple[str, str] | None) -> CiliumConfig:
        """What agent pod ``key`` runs with: ``cilium-config`` (read live: a real agent
        reads it at start too, and the runbook restarts agents after changing it) with
        the CiliumNodeConfig overrides resolved when the pod started."""
        over = (self._start_cfg.get(key) or {}).get("overrides") if key else None
        if not over:
            return self.config()
        cm = self._configmap(NAMESPACE, CONFIG_MAP)
        if cm is None:
            return CiliumConfig()
        data = dict(cm.get("data") or {})
        data.update(over)
        return CiliumConfig.from_data(data)

    def _agent_pod(self, node: str) -> dict | None:
        key = self._agents.get(node)
        return self.cache.get(("", "pods"), *key) if key else None

    def agent_ready(self, node: str) -> bool:
        """The node's agent pod is Ready for the node's current boot."""
        pod = self._agent_pod(node)
        if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp") or not is_ready(pod):
            return False
        nm = self.rt.nodes.get(node)
        key = (pod["metadata"].get("namespace") or "", pod["metadata"]["name"])
        boot = self._ready_boot.get(key)
        return nm is None or boot is None or boot == nm.boot_count

    def agent_coming_back(self, node: str) -> bool:
        """The node's agent is being restarted, not removed: a pod of it is on the node
        (starting, not Ready, terminating) or a DaemonSet of agents is still there. Its BPF
        datapath keeps forwarding meanwhile (network model); after ``helm uninstall`` the
        twin counts the stale datapath as not serving."""
        if self._agents.get(node) is not None:
            return True
        for ds in list((self.cache.objects.get(("apps", "daemonsets")) or {}).values()):
            tmpl = ((ds.get("spec") or {}).get("template") or {}).get("metadata") or {}
            if (tmpl.get("labels") or {}).get("k8s-app") == "cilium":
                return True
        return False

    def agent_pending(self, node: str) -> bool:
        """An agent pod exists on ``node`` but is not Ready (yet)."""
        pod = self._agent_pod(node)
        return pod is not None and not (pod.get("metadata") or {}).get("deletionTimestamp") \
            and not self.agent_ready(node)

    # ------------------------------------------------------------------ IPAM
    def node_pod_cidrs(self, node: dict, cfg: CiliumConfig | None = None) -> list[str]:
        """The pod CIDRs Cilium uses on ``node``: its podCIDR (ipam kubernetes) or its
        slice of the cluster pool (ipam cluster-pool, allocated by the operator)."""
        cfg = cfg or self.config()
        name = node["metadata"]["name"]
        if cfg.ipam == "cluster-pool":
            if name not in self._pool_index:
                self._pool_index[name] = len(self._pool_index)
            i = self._pool_index[name]
            for pool in cfg.pool_cidrs:
                try:
                    net = ipaddress.ip_network(pool, strict=False)
                except ValueError:
                    continue
                if net.version != 4 or cfg.pool_mask < net.prefixlen:
                    continue
                count = 2 ** (cfg.pool_mask - net.prefixlen)
                if i < count:
                    sub = ipaddress.ip_network(
                        (int(net.network_address) + i * 2 ** (32 - cfg.pool_mask), cfg.pool_mask))
                    return [str(sub)]
                i -= count
            return []
        spec = node.get("spec") or {}
        return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))

    def allocate_ip(self, uid: str, node: dict) -> str | None:
        """A pod IP from Cilium's own allocator. With ``ipam: kubernetes`` it covers the
        node's podCIDR without knowing flannel's leases, so an old flannel pod's address
        can be handed out again (defect 5)."""
        cidrs = self.node_pod_cidrs(node)
        return self.ipam.allocate("cilium/" + node["metadata"]["name"], cidrs[0] if cidrs else None, uid)

    def release_ip(self, uid: str) -> None:
        self.ipam.release(uid)

    # ------------------------------------------------------------------ pod fates
    def _problem(self, pod: dict, nm: Any, cfg: CiliumConfig, container: str, *,
                 agent: bool) -> str | None:
        """Why this agent/operator cannot become Ready now (None: it can)."""
        if self.rt.faults.cilium_image_pull_fails:
            return "image pull: " + _pull_message(pod)
        if agent:
            k = kernel_tuple(nm.kernel)
            if k < MIN_KERNEL:
                return (f"kernel version: NOT OK: minimal supported kernel version is >= "
                        f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]}; kernel version that is running is: {nm.kernel}")
        host = container_env(pod, container, "KUBERNETES_SERVICE_HOST", self._configmap)
        port = container_env(pod, container, "KUBERNETES_SERVICE_PORT", self._configmap)
        ok, addr = api_reachable(host, port, node=nm, servers=self._servers())
        if not ok:
            return f"unable to reach the API server at {addr}: dial tcp {addr}: connect: connection refused"
        if agent:
            if not cfg.present:
                return f"configmap {NAMESPACE}/{CONFIG_MAP} not found"
            if cfg.tunnel and cfg.tunnel_protocol in ("vxlan", "geneve"):
                for i in nm.interfaces.values():
                    if i.name.startswith("cilium_") or i.kind != "vxlan":
                        continue
                    if int(i.info.get("vxlan_port", FLANNEL_VXLAN_PORT)) == cfg.tunnel_port:
                        return (f"failed to create {cfg.tunnel_protocol} device: address already in use "
                                f"(port {cfg.tunnel_port} is used by {i.name})")
        return None

    def decide(self, pod: dict, node: dict) -> PodFate | None:
        """The fate of a Cilium pod on ``node`` (k3s runs there; see module doc)."""
        app = pod_app(pod)
        name = node["metadata"]["name"]
        nm = self.rt.nodes.get(name)
        md = pod["metadata"]
        key = (md.get("namespace") or "", md["name"])
        ip = node_internal_ip(node)
        cfg = self.config()
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        if app in ("hubble-relay", "hubble-ui") or not host_network or nm is None:
            net = self.network
            fate = net.generic_fate(pod, node) if net is not None else None
            if fate is None or fate.phase != "Running":
                return fate
            if self.rt.faults.cilium_image_pull_fails and not has_sandbox(pod):
                return PodFate("Pending", False, "ImagePullBackOff", _pull_message(pod), cni=None,
                               ip=None, delay=IMAGE_PULL_SECONDS)
            if not any(self.agent_ready(n) for n in self._agents):
                fate.ready = False
            return fate
        if self.rt.faults.cilium_image_pull_fails:
            self._crash.pop(key, None)
            return PodFate("Pending", False, "ImagePullBackOff", _pull_message(pod), cni="host",
                           ip=ip, delay=IMAGE_PULL_SECONDS)
        if app == "cilium-envoy":
            ok = self.agent_ready(name)
            return PodFate("Running", ok, cni="host", ip=ip,
                           delay=ENVOY_READY_SECONDS if ok else IMAGE_PULL_SECONDS)
        agent = app == "cilium"
        container = "cilium-agent" if agent else "cilium-operator"
        if agent:
            self._agent_started(key, node)
            cfg = self.pod_config(key)
        if agent and is_ready(pod):
            boot = self._ready_boot.get(key)
            if boot is None or boot == nm.boot_count:
                # A Ready agent holds its devices and its API connection: it stays Ready.
                return PodFate("Running", True, cni="host", ip=ip)
            # The node rebooted under it: the container restarts and starts over (the
            # stale boot stays recorded, so agent_ready() is False until it is Ready again).
            return PodFate("Running", False, cni="host", ip=ip)
        if not agent and is_ready(pod):
            return PodFate("Running", True, cni="host", ip=ip)
        problem = self._problem(pod, nm, cfg, container, agent=agent)
        if problem is None and agent and not self.crds_registered:
            self._crash.pop(key, None)
            # The agent blocks "Waiting until all Cilium CRDs are available".
            return PodFate("Running", False, cni="host", ip=ip, delay=IMAGE_PULL_SECONDS)
        if problem is None:
            self._crash.pop(key, None)
            return PodFate("Running", True, cni="host", ip=ip,
                           delay=AGENT_READY_SECONDS if agent else OPERATOR_READY_SECONDS)
        entry = self._crash.get(key)
        if entry is None:
            entry = self._crash[key] = [0, "crash", self.rt.clock.cluster_now(), name]
            delay = IMAGE_PULL_SECONDS
        else:
            entry[3] = name
            delay = 0.0
        if entry[1] == "running":
            # Between two crashes the container runs for a moment (not Ready).
            return PodFate("Running", False, cni="host", ip=ip, delay=delay)
        return PodFate("Running", False, "CrashLoopBackOff", problem, cni="host", ip=ip, delay=delay,
                       logs=crash_log(problem))

    def _advance_crash_loops(self, now: float) -> None:
        """The kubelet's CrashLoopBackOff clock: a crashed container restarts after the
        back-off, runs a moment, and crashes again (the kubelet re-decides its pod)."""
        for key, entry in list(self._crash.items()):
            count, state, since, node = entry
            if state == "crash" and now - since >= min(BACKOFF_MAX, BACKOFF_BASE * 2 ** count):
                entry[1], entry[2] = "running", now
                self.kubelet.enqueue(key)
            elif state == "running" and now - since >= CRASH_RUN_SECONDS:
                entry[0], entry[1], entry[2] = count + 1, "crash", now
                self.kubelet.enqueue(key)

    def _ensure_node_artifacts(self, nm: Any, cfg: CiliumConfig, node: dict | None = None) -> None:
        """What a Ready agent keeps on its node (idempotent; see :mod:`.datapath`)."""
        router = local = None
        remote: list[str] = []
        if node is not None:
            local = self.node_pod_cidrs(node, cfg)
            router = self.ipam.allocate("cilium/" + nm.name, local[0] if local else None, f"router/{nm.name}")
            for other in self.cache.all(("", "nodes")):
                if other["metadata"]["name"] != nm.name:
                    remote += self.node_pod_cidrs(other, cfg)
        self._write_cni_conf(nm, cfg)
        pod = self._agent_pod(nm.name)
        bin_dir = node_config.cni_bin_dir(pod) if pod is not None else node_config.DEFAULT_BIN_DIR
        datapath.install(nm, cfg, router_ip=router, local=list(local or []), remote=sorted(remote),
                         cni_conf=None, bin_dir=bin_dir)
        for table, chains in CILIUM_CHAINS.items():
            for chain, parent in chains:
                rules = [f'-A {parent} -m comment --comment "cilium-feeder: {chain}" -j {chain}']
                if chain == "CILIUM_FORWARD":
                    rules.append('-A CILIUM_FORWARD -o cilium_host -m comment --comment '
                                 '"cilium: any->cluster on cilium_host forward accept" -j ACCEPT')
                nm.add_chain(table, chain, rules)

    def _write_cni_conf(self, nm: Any, cfg: CiliumConfig | None = None) -> None:
        """The CNI config manager of the node's Ready agent (:func:`.datapath.write_cni_conf`):
        it writes once; only with cni-exclusive does it watch the folder and write (and
        rename) again on every change there (daemon/cmd/cni/config.go)."""
        key = self._agents.get(nm.name)
        pod = self._agent_pod(nm.name)
        snap = self._start_cfg.get(key) if key else None
        if pod is None or snap is None:
            return
        cfg = cfg or self.pod_config(key)
        conf = node_config.cni_conf_host_path(pod, cfg.write_cni_conf)
        if not conf or (snap.get("cni_written") == conf and not cfg.cni_exclusive):
            return
        snap["cni_written"] = conf
        datapath.write_cni_conf(nm, conf, exclusive=cfg.cni_exclusive)

    def _publish_cilium_node(self, node: dict, nm: Any, cfg: CiliumConfig) -> None:
        t = self._type("cilium.io", "ciliumnodes")
        if t is None:
            return
        name = node["metadata"]["name"]
        cidrs = self.node_pod_cidrs(node, cfg)
        router = self.ipam.allocate("cilium/" + name, cidrs[0] if cidrs else None, f"router/{name}")
        health = self.ipam.allocate("cilium/" + name, cidrs[0] if cidrs else None, f"health/{name}")
        addresses = [{"type": "InternalIP", "ip": node_internal_ip(node) or nm.spec.ip}]
        if router:
            addresses.append({"type": "CiliumInternalIP", "ip": router})
        spec = {"addresses": addresses, "alibaba-cloud": {}, "azure": {}, "encryption": {}, "eni": {},
                "health": {"ipv4": health} if health else {}, "ingress": {},
                "ipam": {"podCIDRs": cidrs, "pools": {}},
                "bootid": hashlib.sha256(f"{name}/{nm.boot_count}".encode()).hexdigest()[:32]}
        status = {"alibaba-cloud": {}, "azure": {}, "eni": {},
                  "ipam": {"operator-status": {}}}
        existing = self.store.peek(t, None, name)
        if existing is None:
            obj = {"apiVersion": f"cilium.io/{t.version}", "kind": "CiliumNode",
                   "metadata": {"name": name, "labels": dict(labels_of(node)),
                                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                     "uid": node["metadata"].get("uid", "")}]},
                   "spec": spec, "status": status}
            self.store.create(obj, rtype=t)
            return
        if existing.get("spec") != spec:
            def put(o: dict) -> None:
                o["spec"] = spec
            self.store.mutate(t, None, name, put)


def crash_log(problem: str) -> tuple[str, ...]:
    """The last lines a crashing agent/operator logs for ``problem``, in the agent's words
    (they become ``kubectl logs``, ``--previous`` and, with FallbackToLogsOnError, the
    crash's termination message)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
    head = f"time={now}"
    if "address already in use" in problem:
        m = re.search(r"port (\d+) is used by (\S+?)\)", problem)
        port = m.group(1) if m else str(FLANNEL_VXLAN_PORT)
        kind = "geneve" if "geneve" in problem else "vxlan"
        dev = f"cilium_{kind}"
        err = (f"failed to setup {kind} tunnel device: setting up {kind} device: creating {kind} device "
               f"{dev}: setting up device {dev}: address already in use")
        return (f'{head} level=info msg="Setting up tunnel device" module=agent.datapath device={dev} port={port}',
                f'{head} level=error msg="Start hook failed" module=agent error="{err}"',
                f'{head} level=fatal msg="failed to start: {err}" module=agent')
    if problem.startswith("kernel version"):
        return (f'{head} level=fatal msg="{problem}" module=agent.datapath',)
    if problem.startswith("unable to reach the API server"):
        addr = problem.split(" at ", 1)[-1].split(":", 2)
        target = ":".join(addr[:2]) if len(addr) >= 2 else problem
        return (f'{head} level=info msg="Establishing connection to apiserver" module=agent.infra.k8s-client host=https://{target}',
                f'{head} level=error msg="Unable to contact k8s api-server" module=agent.infra.k8s-client '
                f'error="Get \\"https://{target}/api/v1/namespaces/kube-system\\": dial tcp {target}: connect: connection refused"',
                f'{head} level=fatal msg="failed to start: unable to create k8s client: unable to connect to '
                f'apiserver: dial tcp {target}: connect: connection refused" module=agent')
    return (f'{head} level=fatal msg="failed to start: {problem}" module=agent',)


def _pull_message(pod: dict) -> str:
    images = [c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or ()]
    image = images[0] if images else "quay.io/cilium/cilium"
    return f'Back-off pulling image "{image}"'
