"""Longhorn's instance managers and share managers, their pods, and the network between them.

- :class:`InstanceManagers`: an InstanceManager's ``status.currentState`` follows its pod
  (``instance_manager_controller.go`` syncStatusWithPod): no pod or a terminating one ->
  ``error``; Pending -> ``starting``; Running and every container ready -> ``running``;
  its node down -> ``unknown``. The engine and replica processes live in that pod: each
  time an instance manager stops running, its *epoch* moves on, and every instance
  started under an older epoch is gone. ``status.instanceEngines`` /
  ``instanceReplicas`` list the instances it runs.
- :class:`ShareManagers`: a ShareManager (one per RWX volume) follows its
  ``share-manager-<volume>`` pod (share_manager_controller.go syncShareManagerPod):
  pod gone or terminating -> ``error``; pod Pending -> ``starting``; pod Ready ->
  ``running``. Its ``ownerID`` is the pod's node, where the volume is attached.
- :func:`pod_path` asks the twin's one network model (``NetworkModel.reach``) whether a
  pod reaches an address; :func:`instance_path` uses it between the instance managers'
  pods (an engine reaches a replica in another instance manager through their pod IPs).
"""
from __future__ import annotations

import logging
from typing import Any

from .common import find_type, meta, pod_reachable, pod_ready
from .longhorn_rules import LONGHORN, LONGHORN_NS

log = logging.getLogger("twin.controllers.addons.longhorn")


def _network(rt: Any) -> Any:
    try:
        return rt.component("network")
    except (KeyError, AttributeError):
        return None


def pod_path(rt: Any, src_pod: dict, dst_ip: str | None, port: int) -> tuple[bool, str]:
    """Whether ``src_pod`` reaches ``dst_ip:port`` over the pod network, and why (not).

    The twin's one network model decides (:meth:`twin.controllers.network.NetworkModel.reach`):
    the source pod's sandbox must belong to its node's working CNI, and a pod on another
    node is reached over the overlay both nodes share unless a firewall drops it (so the
    no-CNI window, a NotReady node, a reboot or a blocked tunnel cut the path). Without a
    network model every pod reaches every other.

    Example:
        >>> pod_path(rt, im_pod, "10.42.1.7", 10000)  # doctest: +SKIP
        (True, 'reachable')
    """
    net = _network(rt)
    if net is None or not dst_ip:
        return True, "no network model"
    ok, why = net.reach(src_pod, dst_ip, port, "tcp")
    return bool(ok), why or ("reachable" if ok else "unreachable")


class InstanceManagers:
    """Instance managers: state from their pods, epochs, the instances they run."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.t = find_type(self.store, LONGHORN, "instancemanagers")
        self.pods_t = find_type(self.store, "", "pods")
        self.by_node: dict[str, str] = {}
        self.state: dict[str, str] = {}
        self.epoch: dict[str, int] = {}

    def load(self) -> None:
        if self.t is None:
            return
        for im in self.store.iter_objects(self.t, LONGHORN_NS):
            name = meta(im)["name"]
            self.by_node[(im.get("spec") or {}).get("nodeID", "")] = name
            self.state[name] = (im.get("status") or {}).get("currentState") or "stopped"
            self.epoch[name] = 0
        self.refresh()

    def name(self, node: str) -> str | None:
        return self.by_node.get(node)

    def pod(self, node: str) -> dict | None:
        name = self.by_node.get(node)
        return self.store.peek(self.pods_t, LONGHORN_NS, name) if name else None

    def running(self, node: str) -> bool:
        name = self.by_node.get(node)
        return bool(name) and self.state.get(name) == "running"

    def epoch_of(self, node: str) -> int:
        return self.epoch.get(self.by_node.get(node, ""), 0)

    def ip(self, node: str) -> str | None:
        pod = self.pod(node)
        return ((pod or {}).get("status") or {}).get("podIP")

    def pod_state(self, name: str, node: str) -> str:
        """syncStatusWithPod (and syncStatusWithNode for a node that is down)."""
        nm = self.rt.nodes.get(node) if getattr(self.rt, "nodes", None) else None
        if nm is not None and not nm.up:
            return "unknown"
        pod = self.store.peek(self.pods_t, LONGHORN_NS, name)
        if pod is None or meta(pod).get("deletionTimestamp"):
            return "error"
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Pending":
            return "starting"
        if phase == "Running":
            return "running" if pod_ready(pod) else "starting"
        return "error"

    def refresh(self) -> set[str]:
        """Re-read every instance manager's pod; returns the nodes whose state changed."""
        changed = set()
        for node, name in self.by_node.items():
            new = self.pod_state(name, node)
            old = self.state.get(name)
            if new == old:
                continue
            if old == "running":
                self.epoch[name] = self.epoch.get(name, 0) + 1   # its processes are gone
            self.state[name] = new
            changed.add(node)
            log.info("longhorn: instance manager %s on %s: %s -> %s", name, node, old, new)
            self._write(name, new)
        return changed

    def _write(self, name: str, state: str) -> None:
        ip = self.ip(next((n for n, m in self.by_node.items() if m == name), ""))

        def fn(o: dict) -> None:
            st = o.setdefault("status", {})
            st["currentState"] = state
            if state == "running" and ip:
                st["ip"] = ip
            if state in ("error", "stopped", "starting"):
                st["instanceEngines"], st["instanceReplicas"] = {}, {}
        try:
            self.store.mutate(self.t, LONGHORN_NS, name, fn, subresource="status")
        except Exception:
            log.debug("longhorn: instance manager %s not updated", name, exc_info=True)

    def record_instances(self, node: str, engines: dict[str, int], replicas: dict[str, int]) -> None:
        """Write ``status.instanceEngines``/``instanceReplicas`` (name -> port) of ``node``'s IM."""
        name = self.by_node.get(node)
        if not name or self.state.get(name) != "running":
            return

        def proc(n: str, kind: str, port: int) -> dict:
            return {"spec": {"name": n, "backendStoreDriver": "", "dataEngine": "v1"},
                    "status": {"endpoint": "", "errorMsg": "", "listen": "",
                               "portStart": port, "portEnd": port + (14 if kind == "replica" else 0),
                               "resourceVersion": 1, "state": "running", "type": kind,
                               "conditions": None}}
        want_e = {n: proc(n, "engine", p) for n, p in sorted(engines.items())}
        want_r = {n: proc(n, "replica", p) for n, p in sorted(replicas.items())}
        cur = (self.store.peek(self.t, LONGHORN_NS, name) or {}).get("status") or {}
        if set(cur.get("instanceEngines") or {}) == set(want_e) and \
                set(cur.get("instanceReplicas") or {}) == set(want_r):
            return

        def fn(o: dict) -> None:
            st = o.setdefault("status", {})
            st["instanceEngines"], st["instanceReplicas"] = want_e, want_r
        self.store.mutate(self.t, LONGHORN_NS, name, fn, subresource="status")


def instance_path(rt: Any, ims: InstanceManagers, src: str, dst: str) -> tuple[bool, str]:
    """Whether the instance manager on ``src`` reaches the one on ``dst``, and why (not).

    Same node: one pod, reachable while it runs. Across nodes: both pods have a data
    path (a pod whose sandbox the node's CNI no longer manages has none) and
    :func:`pod_path` (the network model's ``reach``) carries the traffic. Inside the
    network model's ``one_instant`` (a pass over every volume) each pair is traced once.
    """
    net = _network(rt)
    answers = net.instant_answers() if net is not None and hasattr(net, "instant_answers") else None
    if answers is None:
        return _instance_path(rt, ims, src, dst)
    key = ("longhorn-instance-path", id(ims), src, dst)
    if key not in answers:
        answers[key] = _instance_path(rt, ims, src, dst)
    return answers[key]


def _instance_path(rt: Any, ims: InstanceManagers, src: str, dst: str) -> tuple[bool, str]:
    if not ims.running(dst):
        return False, f"instance manager on {dst} is not running"
    if src == dst:
        return True, "same instance manager"
    if not ims.running(src):
        return False, f"instance manager on {src} is not running"
    for node in (src, dst):
        ok, why = pod_reachable(rt, ims.pod(node) or {})
        if not ok:
            return False, f"instance manager pod on {node}: {why}"
    ok, why = pod_path(rt, ims.pod(src) or {}, ims.ip(dst), 10000)
    if not ok:
        return False, f"no pod network between {src} and {dst}: {why}"
    return True, "reachable"


class ShareManagers:
    """Share managers of RWX volumes: state from their pods."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.t = find_type(self.store, LONGHORN, "sharemanagers")
        self.pods_t = find_type(self.store, "", "pods")

    def pod(self, volume: str) -> dict | None:
        return self.store.peek(self.pods_t, LONGHORN_NS, f"share-manager-{volume}")

    def node(self, volume: str) -> str | None:
        """The node of the share-manager pod (where the volume is attached), if scheduled."""
        pod = self.pod(volume)
        if pod is None or meta(pod).get("deletionTimestamp"):
            return None
        return (pod.get("spec") or {}).get("nodeName") or None

    def state_of(self, volume: str, attached_here: bool) -> str:
        pod = self.pod(volume)
        if pod is None or meta(pod).get("deletionTimestamp"):
            return "error"
        if (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod) and attached_here:
            return "running"
        return "starting"

    def sync(self, volume: str, attached_here: bool) -> str:
        """Write the ShareManager's state and owner; returns the state."""
        if self.t is None or self.store.peek(self.t, LONGHORN_NS, volume) is None:
            return "error"
        state = self.state_of(volume, attached_here)
        owner = self.node(volume) or ""
        cur = self.store.peek(self.t, LONGHORN_NS, volume).get("status") or {}
        if cur.get("state") != state or (owner and cur.get("ownerID") != owner):
            def fn(o: dict) -> None:
                st = o.setdefault("status", {})
                st["state"] = state
                if owner:
                    st["ownerID"] = owner
            self.store.mutate(self.t, LONGHORN_NS, volume, fn, subresource="status")
        return state

    def ready(self, volume: str) -> tuple[bool, str]:
        """Whether NFS clients can mount the volume's share now."""
        sm = self.store.peek(self.t, LONGHORN_NS, volume) if self.t is not None else None
        if ((sm or {}).get("status") or {}).get("state") != "running":
            return False, f"rpc error: code = Aborted desc = volume {volume} share not yet available"
        ok, why = pod_reachable(self.rt, self.pod(volume) or {})
        if not ok:
            endpoint = ((sm or {}).get("status") or {}).get("endpoint", "")
            return False, (f"rpc error: code = Internal desc = mount failed: exit status 32: "
                           f"mount.nfs: Connection timed out ({endpoint}; share-manager pod: {why})")
        return True, "share available"
