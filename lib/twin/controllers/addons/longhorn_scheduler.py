"""Where longhorn-manager may put a new replica of a volume (its replica scheduler), as a pure rule.

:func:`replica_candidates` follows ``scheduler/replica_scheduler.go`` (longhorn-manager
v1.7.2, FindDiskCandidates), at node level (the twin models one disk per node and no
disk space):

1. ``getNodeInfo``: only nodes whose Longhorn node is Ready (Kubernetes node Ready and
   its longhorn-manager running) and Schedulable. A cordoned node is not schedulable
   while ``disable-scheduling-on-cordoned-node`` is true (the default; node
   controller: condition Schedulable False, reason KubernetesNodeCordoned).
2. ``getNodeCandidates``: of those, the nodes whose instance manager is running and
   whose engine image is deployed.
3. ``getDiskCandidates`` / ``getCurrentNodesAndZones``: the candidate nodes already
   holding a replica of the volume are *used*, their zones (label
   ``topology.kubernetes.io/zone``, none = one zone) too; a node whose only replicas
   of the volume are being evicted is *only evicting*. Then the first tier with a node:

   * an unused node in an unused zone, always first;
   * replica-zone-soft-anti-affinity false: an only-evicting node in an
     only-evicting zone;
   * zone soft, replica-soft-anti-affinity false: an unused node (in a used zone),
     then an only-evicting node;
   * zone soft and node soft: an unused node, then a used one (two replicas of the
     volume on one node).

Within a tier Longhorn takes the disk with the most usable storage; the twin takes the
node holding the fewest bytes of replicas (``load``), then the name.

Example:
    >>> nodes = [{"name": n, "ready": True, "cordoned": n == "a", "instance_manager": True,
    ...           "engine_image": True, "zone": ""} for n in ("a", "b", "c")]
    >>> replica_candidates(nodes, [{"node": "a", "evicting": True}, {"node": "b", "evicting": False}],
    ...                    node_soft=False, zone_soft=True)[0]
    ['c']
"""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["replica_candidates", "soft_anti_affinity"]


def soft_anti_affinity(volume_value: str | None, setting_value: str | None) -> bool:
    """A volume's ``replica(Zone)SoftAntiAffinity`` (``enabled``/``disabled``) overrides the
    global setting; ``ignored`` or unset use the setting.

    Example:
        >>> soft_anti_affinity("ignored", "false"), soft_anti_affinity("enabled", "false")
        (False, True)
    """
    if volume_value in ("enabled", "disabled"):
        return volume_value == "enabled"
    return str(setting_value or "").strip().lower() == "true"


def replica_candidates(nodes: Sequence[Mapping], replicas: Sequence[Mapping], *, node_soft: bool,
                       zone_soft: bool, cordoned_unschedulable: bool = True,
                       load: Mapping[str, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """The nodes a new replica may go to, best first, and why every other node may not.

    Args:
        nodes: one mapping per node: ``name``, ``ready`` (Kubernetes node Ready and its
            longhorn-manager running), ``cordoned``, ``instance_manager`` (running),
            ``engine_image`` (deployed and ready), ``zone`` ("" = none).
        replicas: the volume's replicas that occupy a node: ``node``, ``evicting``
            (``spec.evictionRequested``). Failed replicas being replaced are left out
            by the caller (Longhorn does not count them while replenishing).
        node_soft: replica soft anti-affinity (:func:`soft_anti_affinity`).
        zone_soft: replica zone soft anti-affinity.
        cordoned_unschedulable: the ``disable-scheduling-on-cordoned-node`` setting.
        load: bytes of replicas each node already holds (fewest first within a tier).

    Returns:
        ``(candidates, excluded)``: candidate node names, best first (empty: Longhorn
        cannot schedule the replica: ``ReplicaSchedulingFailure``), and node -> reason.

    Example:
        >>> nodes = [{"name": n, "ready": True, "cordoned": False, "instance_manager": True,
        ...           "engine_image": True, "zone": ""} for n in ("a", "b")]
        >>> replica_candidates(nodes, [{"node": "a", "evicting": False}], node_soft=False, zone_soft=True)
        (['b'], {'a': 'holds a replica of this volume'})
    """
    load = load or {}
    excluded: dict[str, str] = {}
    cand: dict[str, Mapping] = {}
    for n in nodes:
        name = str(n["name"])
        if not n.get("ready"):
            excluded[name] = "not ready (Kubernetes node or its longhorn-manager down)"
        elif n.get("cordoned") and cordoned_unschedulable:
            excluded[name] = "cordoned (disable-scheduling-on-cordoned-node)"
        elif not n.get("instance_manager"):
            excluded[name] = "instance manager not running"
        elif not n.get("engine_image"):
            excluded[name] = "engine image not deployed"
        else:
            cand[name] = n
    zone = {name: str(n.get("zone") or "") for name, n in cand.items()}
    used: set[str] = set()
    used_zones: set[str] = set()
    only_evicting: dict[str, bool] = {}
    only_evicting_zone: dict[str, bool] = {}
    for r in replicas:
        node = str(r.get("node") or "")
        if node not in cand:
            continue
        if r.get("evicting"):
            only_evicting.setdefault(node, node not in used)
            only_evicting_zone.setdefault(zone[node], zone[node] not in used_zones)
        else:
            only_evicting[node] = False
            only_evicting_zone[zone[node]] = False
        used.add(node)
        used_zones.add(zone[node])
    unused = [n for n in cand if n not in used]
    after_eviction = [n for n in cand if only_evicting.get(n)]
    tiers = [[n for n in unused if zone[n] not in used_zones]]
    if not zone_soft:
        tiers.append([n for n in after_eviction if only_evicting_zone.get(zone[n])])
    elif not node_soft:
        tiers += [unused, after_eviction]
    else:
        tiers += [unused, sorted(used)]
    for tier in tiers:
        if tier:
            picked = sorted(set(tier), key=lambda n: (int(load.get(n, 0)), n))
            for n in cand:
                if n not in picked:
                    excluded[n] = ("holds a replica of this volume" if n in used
                                   else "its zone holds a replica of this volume")
            return picked, excluded
    for n in cand:
        excluded[n] = ("holds a replica of this volume" if n in used
                       else "its zone holds a replica of this volume")
    return [], excluded
