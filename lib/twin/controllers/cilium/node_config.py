"""What one agent pod runs with: ``cilium-config`` plus the CiliumNodeConfigs that select
its node, resolved once when the pod starts (pure).

Source: cilium/cilium ``pkg/option/resolver.go`` (``readNodeConfigs``), run by the
agent pod's ``config`` init container (``cilium-dbg build-config``, sources
``config-map:<ns>/cilium-config`` then ``cilium-node-config:<ns>``), and
``Documentation/configuration/per-node-config.rst``:

- a CiliumNodeConfig (``cilium.io/v2`` or ``v2alpha1``, namespaced) is read from the
  agent's own namespace; one with empty ``spec.defaults`` is ignored;
- its ``spec.nodeSelector`` is a LabelSelector matched against the Node's labels; an
  empty selector (``{}``) selects every node, an absent one selects none;
- several matching objects apply in lexicographic order of their names, the later one
  winning a key; their keys override the ConfigMap's;
- the result is written once, before the agent starts: creating, changing or deleting a
  CiliumNodeConfig changes nothing until the agent pod is re-created ("will not cause
  changes to take effect until pods are deleted and re-created").

Also where an agent's container path lands on the host (:func:`host_path`): the agent
writes ``write-cni-conf-when-ready`` (``/host/etc/cni/net.d/05-cilium.conflist``) inside
its container, i.e. into the ``hostPath`` of the volume mounted there (the chart's
``cni.confPath``), and ``install-cni-binaries`` copies ``cilium-cni`` into the
``cni-path`` volume (``cni.binPath``).

Example:
    >>> cnc = {"metadata": {"name": "cilium-default"},
    ...        "spec": {"nodeSelector": {"matchLabels": {"io.cilium.migration/cilium-default": "true"}},
    ...                 "defaults": {"custom-cni-conf": "false"}}}
    >>> overrides_for([cnc], {"io.cilium.migration/cilium-default": "true"})
    ({'custom-cni-conf': 'false'}, ['cilium-default'])
    >>> overrides_for([cnc], {})
    ({}, [])
"""
from __future__ import annotations

import posixpath
from typing import Any, Iterable

from ...selectors import SelectorError, from_label_selector

AGENT_CONTAINER = "cilium-agent"
CNI_INSTALL_CONTAINER = "install-cni-binaries"
CNI_BIN_MOUNT = "/host/opt/cni/bin"
CONF_MOUNT = "/host/etc/cni/net.d"   # the chart's cni.hostConfDirMountPath
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"


def selects(cnc: dict, labels: dict) -> bool:
    """Whether CiliumNodeConfig ``cnc`` selects a node with ``labels`` (absent selector:
    no node; ``{}``: every node; an invalid selector: no node)."""
    sel = (cnc.get("spec") or {}).get("nodeSelector")
    if sel is None:
        return False
    try:
        return from_label_selector(sel).matches(labels or {})
    except (SelectorError, ValueError, TypeError, AttributeError):
        return False


def overrides_for(cncs: Iterable[dict], labels: dict) -> tuple[dict[str, str], list[str]]:
    """The keys the CiliumNodeConfigs ``cncs`` override on a node with ``labels``, and the
    names of the objects that apply (in the order they were applied)."""
    matching = {}
    for cnc in cncs:
        defaults = (cnc.get("spec") or {}).get("defaults") or {}
        name = (cnc.get("metadata") or {}).get("name") or ""
        if defaults and selects(cnc, labels):
            matching[name] = defaults
    out: dict[str, str] = {}
    names = sorted(matching)
    for name in names:
        for k, v in matching[name].items():
            out[str(k)] = str(v) if not isinstance(v, bool) else str(v).lower()
    return out, names


def _volumes(pod: dict) -> dict[str, dict]:
    return {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or ()}


def _mounts(pod: dict, container: str) -> list[dict]:
    spec = pod.get("spec") or {}
    for c in list(spec.get("containers") or ()) + list(spec.get("initContainers") or ()):
        if c.get("name") == container:
            return list(c.get("volumeMounts") or ())
    return []


def host_path(pod: dict, container: str, path: str) -> str | None:
    """Where ``path`` inside ``container`` of ``pod`` lands on the node: through the
    deepest volume mount holding it, when that volume is a ``hostPath`` (None: the path
    is in the container's own filesystem or another kind of volume).

    Example:
        >>> pod = {"spec": {"volumes": [{"name": "etc-cni-netd",
        ...                              "hostPath": {"path": "/var/lib/rancher/k3s/agent/etc/cni/net.d"}}],
        ...                 "containers": [{"name": "cilium-agent", "volumeMounts": [
        ...                     {"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"}]}]}}
        >>> host_path(pod, "cilium-agent", "/host/etc/cni/net.d/05-cilium.conflist")
        '/var/lib/rancher/k3s/agent/etc/cni/net.d/05-cilium.conflist'
    """
    path = posixpath.normpath(path)
    best: tuple[int, str] | None = None
    vols = _volumes(pod)
    for m in _mounts(pod, container):
        mp = posixpath.normpath(str(m.get("mountPath") or ""))
        if not mp or not (path == mp or path.startswith(mp.rstrip("/") + "/")):
            continue
        hp = (vols.get(m.get("name")) or {}).get("hostPath")
        if not hp or not hp.get("path"):
            continue
        rest = path[len(mp):].lstrip("/")
        target = posixpath.join(posixpath.normpath(hp["path"]), rest) if rest else posixpath.normpath(hp["path"])
        if best is None or len(mp) > best[0]:
            best = (len(mp), target)
    return best[1] if best else None


def cni_bin_dir(pod: dict) -> str:
    """The host folder ``install-cni-binaries`` copies ``cilium-cni`` into (the
    ``cni-path`` volume, the chart's ``cni.binPath``; ``/opt/cni/bin`` without one)."""
    return host_path(pod, CNI_INSTALL_CONTAINER, CNI_BIN_MOUNT) or DEFAULT_BIN_DIR


def cni_conf_host_path(pod: dict, write_path: str) -> str | None:
    """The host file the agent's ``write-cni-conf-when-ready`` names (None: not set, or
    not on a hostPath volume, so nothing the node's containerd could read)."""
    if not write_path:
        return None
    return host_path(pod, AGENT_CONTAINER, write_path)


def snapshot(configmap_data: dict | None, cncs: Iterable[dict], labels: dict) -> dict[str, Any]:
    """What the ``config`` init container of a starting agent pod resolves: the
    ConfigMap's keys with the node's overrides on top, and which objects applied.

    Example:
        >>> snapshot({"custom-cni-conf": "true"}, [], {})["data"]
        {'custom-cni-conf': 'true'}
    """
    data = {str(k): str(v) for k, v in (configmap_data or {}).items()}
    over, names = overrides_for(cncs, labels)
    data.update(over)
    return {"data": data, "overrides": over, "sources": names}
