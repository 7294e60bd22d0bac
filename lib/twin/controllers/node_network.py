"""One node's network facts and the Ready condition they imply (pure).

:class:`NodeNetwork` is what :meth:`twin.controllers.network.NetworkModel.facts` reports
for a node; :func:`desired_ready` turns it into the ``(status, reason, message)`` a
kubelet posts; :func:`flannel_works` says whether flannel's backend device and conflist
are in place. The constants are the kubelet's and containerd's own words, and the
timings the network model scales.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CILIUM_CONFLIST = "/etc/cni/net.d/05-cilium.conflist"
FLANNEL_CONFLIST = "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist"
# flannel backend -> the device flannel needs (None: no device of its own, e.g. host-gw).
FLANNEL_DEVICES = {"vxlan": "flannel.1", "wireguard-native": "flannel-wg"}

NODE_STATUS_SECONDS = 2.0           # kubelet notices the CNI change and posts node status
NODE_MONITOR_GRACE_SECONDS = 40.0   # kube-controller-manager --node-monitor-grace-period
POD_START_SECONDS = 2.0             # sandbox + container start

READY_REASON = "KubeletReady"
READY_MESSAGE = "kubelet is posting ready status"
NOT_READY_REASON = "KubeletNotReady"
NOT_READY_MESSAGE = ("container runtime network not ready: NetworkReady=false "
                     "reason:NetworkPluginNotReady message:Network plugin returns error: "
                     "cni plugin not initialized")
CILIUM_CNI_DOWN_MESSAGE = (
    'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for '
    'sandbox: plugin type="cilium-cni" name="cilium" failed (add): unable to connect to Cilium '
    'agent: failed to create cilium agent client after 30.000000 seconds timeout: Get '
    '"http:///var/run/cilium/cilium.sock/v1/config": dial unix /var/run/cilium/cilium.sock: '
    'connect: no such file or directory')
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
# The other node conditions and what a live kubelet posts for them.
_PRESSURE = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
}


@dataclass
class NodeNetwork:
    """The network facts of one node (what :meth:`NetworkModel.facts` reports).

    Attributes:
        node: node name.
        k3s_active: the k3s unit runs (the kubelet inside it posts status).
        up: the machine is up (False while rebooting).
        cni: the working CNI: "cilium", "flannel" or None.
        flannel_running: k3s runs (or last ran) with flannel enabled.
        flannel_device: flannel's device exists (flannel.1 for vxlan).
        flannel_conf: flannel's conflist exists.
        cilium_agent_ready: the Cilium model says the node's agent is Ready.
        cilium_conf: ``/etc/cni/net.d/05-cilium.conflist`` exists.
        cni_conf: the CNI config file containerd uses now (first in the conf dir its
            generated ``config.toml`` names), or None.
        cni_plugin: the first plugin ``type`` of that config (``flannel``, ``cilium-cni``).
        cni_plugin_missing: containerd's error when the plugin binary is not in its bin
            dir (sandboxes fail with it), or None.
        overlays: the pod networks that carry traffic on the node now, whatever
            containerd gives new sandboxes: ``flannel`` while k3s runs flannel with its
            device, ``cilium`` while the agent is Ready. During a live migration a node
            has both: pods keep the network of their sandbox (F13 of docs/node-by-node.md).
    """

    node: str
    k3s_active: bool
    up: bool
    cni: str | None
    flannel_running: bool
    flannel_device: bool
    flannel_conf: bool
    cilium_agent_ready: bool
    cilium_conf: bool
    cni_conf: str | None = None
    cni_plugin: str | None = None
    cni_plugin_missing: str | None = None
    overlays: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def desired_ready(facts: NodeNetwork) -> tuple[str, str, str]:
    """``(status, reason, message)`` of the Node's Ready condition for these facts.

    Example:
        >>> f = NodeNetwork("n", True, True, None, False, True, True, False, False)
        >>> desired_ready(f)[:2]
        ('False', 'KubeletNotReady')
    """
    if not facts.k3s_active or not facts.up:
        return ("Unknown", UNKNOWN_REASON, UNKNOWN_MESSAGE)
    if facts.cni is None:
        return ("False", NOT_READY_REASON, NOT_READY_MESSAGE)
    return ("True", READY_REASON, READY_MESSAGE)


def flannel_works(settings: dict, interfaces: Any, conf_exists: bool) -> tuple[bool, bool]:
    """``(device_present, works)`` for flannel from k3s settings and the node's state."""
    backend = str(settings.get("flannel_backend", "vxlan"))
    dev = FLANNEL_DEVICES.get(backend)
    device = dev is None or dev in interfaces
    return device, bool(settings.get("flannel")) and device and conf_exists
