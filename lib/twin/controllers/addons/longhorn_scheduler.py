"""Where longhorn-manager may put a new replica of a volume (its replica scheduler), as a pure rule.

:func:`place_replica` follows ``scheduler/replica_scheduler.go`` (longhorn-manager
v1.7.2, FindDiskCandidates), from what each ``nodes.longhorn.io`` says
(:func:`lh_node_facts`) and the volume:

1. ``getNodeInfo``: only nodes whose Longhorn node is Ready (Kubernetes node Ready and
   its longhorn-manager running), Schedulable (a cordoned node is not while
   ``disable-scheduling-on-cordoned-node`` is true, the default; node controller:
   condition Schedulable False, reason KubernetesNodeCordoned) and whose
   ``spec.allowScheduling`` is true.
2. ``getNodeCandidates``: of those, the nodes whose instance manager is running and
   whose engine image is deployed.
3. ``getDiskCandidates``: nodes whose ``spec.tags`` hold every tag of the volume's
   ``nodeSelector`` (``types.IsSelectorsInTags``; a volume without one may use a tagged
   node unless ``allow-empty-node-selector-volume`` is false). The candidate nodes
   already holding a replica of the volume are *used*, their zones (``status.zone``,
   from the label ``topology.kubernetes.io/zone``; none = one zone) too; a node whose
   only replicas of the volume are being evicted is *only evicting*. Then the first
   tier with a disk that can take the replica:

   * an unused node in an unused zone, always first;
   * replica-zone-soft-anti-affinity false: an only-evicting node in an
     only-evicting zone;
   * zone soft, replica-soft-anti-affinity false: an unused node (in a used zone),
     then an only-evicting node;
   * zone soft and node soft: an unused node, then a used one (two replicas of the
     volume on one node).
4. ``filterNodeDisksForReplica``: a disk of such a node takes it when its spec allows
   scheduling, it is not being evicted, its ``Schedulable`` condition is True, it is a
   filesystem disk (v1 data engine), it has room (:func:`room`: ``IsSchedulableToDisk``
   with the volume's size and actual size; the volume's replicas on the node that the
   disk's ``scheduledReplica`` does not list yet count as scheduled) and its tags hold
   the volume's ``diskSelector`` (``allow-empty-disk-selector-volume``).
   ``filterDisksWithMatchingReplicas``: within the tier, disks holding no replica of the
   volume first; only with ``replica-disk-soft-anti-affinity`` (default true, or the
   volume's ``replicaDiskSoftAntiAffinity``) one that holds one.

Longhorn takes the disk with the most usable storage (available - reserved); the twin
orders the nodes of the tier by the bytes of replicas they hold (``load``), then by name,
and on the chosen node takes its disk with the most usable storage. A node whose
``nodes.longhorn.io`` the twin does not know (``disks`` None: a fixture without them)
is taken to have one disk that can take any replica (the twin's old behaviour).

The runbook models the same rules (``runbook.longhorn_placement``); this module is the
reference it is tested against (``tests/unit/twin_addons/test_longhorn_placement_agrees.py``).

Example:
    >>> nodes = [{"name": n, "ready": True, "cordoned": n == "a", "instance_manager": True,
    ...           "engine_image": True, "zone": ""} for n in ("a", "b", "c")]
    >>> replica_candidates(nodes, [{"node": "a", "evicting": True}, {"node": "b", "evicting": False}],
    ...                    node_soft=False, zone_soft=True)[0]
    ['c']
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .longhorn_rules import SETTINGS

__all__ = ["replica_candidates", "place_replica", "soft_anti_affinity", "lh_node_facts", "room",
           "selectors_in_tags"]


def soft_anti_affinity(volume_value: str | None, setting_value: str | None) -> bool:
    """A volume's ``replica(Zone|Disk)SoftAntiAffinity`` (``enabled``/``disabled``) overrides
    the global setting; ``ignored`` or unset use the setting.

    Example:
        >>> soft_anti_affinity("ignored", "false"), soft_anti_affinity("enabled", "false")
        (False, True)
    """
    if volume_value in ("enabled", "disabled"):
        return volume_value == "enabled"
    return str(setting_value or "").strip().lower() == "true"


def selectors_in_tags(tags: Sequence[str], selectors: Sequence[str], allow_empty: bool) -> bool:
    """``types.IsSelectorsInTags``: every selector is a tag; no selector fits an untagged
    node (disk), or any one when ``allow_empty``.

    Example:
        >>> selectors_in_tags(["ssd"], [], False), selectors_in_tags(["fast", "ssd"], ["ssd"], False)
        (False, True)
    """
    if not selectors:
        return allow_empty or not tags
    return set(selectors) <= set(tags)


def _int(x: Any) -> int:
    try:
        return int(x or 0)
    except (TypeError, ValueError):
        return 0


def _true(conditions: Any, kind: str) -> bool:
    items = conditions.values() if isinstance(conditions, dict) else (conditions or [])
    return any(isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True" for c in items)


def lh_node_facts(obj: Mapping) -> dict[str, Any]:
    """What the replica scheduler reads of one ``nodes.longhorn.io``: ``allow_scheduling``,
    ``tags``, ``zone`` and ``disks`` (spec and status joined by disk name; a disk with a
    spec and no status yet is not listed, as in FindDiskCandidates).

    Example:
        >>> o = {"metadata": {"name": "a"}, "spec": {"allowScheduling": True, "tags": ["ssd"],
        ...      "disks": {"d": {"allowScheduling": True, "diskType": "filesystem", "path": "/var/lib/longhorn/"}}},
        ...      "status": {"zone": "z1", "diskStatus": {"d": {"diskUUID": "u1", "storageMaximum": 100,
        ...      "conditions": [{"type": "Schedulable", "status": "True"}]}}}}
        >>> f = lh_node_facts(o); f["tags"], f["disks"][0]["uuid"], f["disks"][0]["schedulable"]
        (['ssd'], 'u1', True)
    """
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    disks = []
    for name, ds in sorted((st.get("diskStatus") or {}).items()):
        dsp = (spec.get("disks") or {}).get(name)
        if dsp is None or not isinstance(ds, dict):
            continue
        disks.append({"name": name, "uuid": str(ds.get("diskUUID") or ""), "path": str(dsp.get("path") or ""),
                      "allow_scheduling": bool(dsp.get("allowScheduling")),
                      "evicting": bool(dsp.get("evictionRequested")),
                      "schedulable": _true(ds.get("conditions"), "Schedulable"),
                      "type": str(dsp.get("diskType") or "filesystem"), "tags": sorted(dsp.get("tags") or ()),
                      "available": _int(ds.get("storageAvailable")), "maximum": _int(ds.get("storageMaximum")),
                      "reserved": _int(dsp.get("storageReserved")), "scheduled": _int(ds.get("storageScheduled")),
                      "scheduled_replicas": sorted(ds.get("scheduledReplica") or {})})
    return {"allow_scheduling": bool(spec.get("allowScheduling")), "tags": sorted(spec.get("tags") or ()),
            "zone": str(st.get("zone") or ""), "disks": disks,
            "deleting": bool((obj.get("metadata") or {}).get("deletionTimestamp")),
            "lh_ready": _true(st.get("conditions"), "Ready"),
            "lh_schedulable": _true(st.get("conditions"), "Schedulable")}


def room(size: int, required: int, disk: Mapping, over_provisioning: int, minimal_available: int) -> bool:
    """``IsSchedulableToDisk``: more than ``minimal_available`` % of the disk stays free
    after ``required`` bytes (the replica's actual size), and the scheduled volume sizes
    plus ``size`` stay within ``over_provisioning`` % of maximum - reserved.

    Example:
        >>> d = {"maximum": 100, "available": 60, "reserved": 30, "scheduled": 50}
        >>> room(20, 10, d, 100, 25), room(21, 10, d, 100, 25), room(20, 35, d, 100, 25)
        (True, False, False)
    """
    mx, av = _int(disk.get("maximum")), _int(disk.get("available"))
    return (mx > 0 and av > 0 and av - required > int(mx * minimal_available / 100)
            and size + _int(disk.get("scheduled")) <= int((mx - _int(disk.get("reserved"))) * over_provisioning / 100))


def _setting(settings: Mapping[str, str], name: str) -> str:
    return str(settings.get(name) if settings.get(name) not in (None, "") else SETTINGS.get(name, ""))


def _number(settings: Mapping[str, str], name: str) -> int:
    try:
        return int(_setting(settings, name))
    except ValueError:
        return int(SETTINGS[name])


def _usable_disks(n: Mapping, replicas: Sequence[Mapping], volume: Mapping, settings: Mapping[str, str]
                  ) -> tuple[list[dict], str]:
    """The disks of node ``n`` that may take the replica (and, when none, why not)."""
    disks = n.get("disks")
    if disks is None:   # no nodes.longhorn.io known: one disk that takes anything
        return [{"uuid": "", "path": "", "available": 0, "reserved": 0}], ""
    spec, st = volume.get("spec") or {}, volume.get("status") or {}
    size, actual = _int(spec.get("size")), _int(st.get("actualSize"))
    dsel = list(spec.get("diskSelector") or ())
    empty_ok = _setting(settings, "allow-empty-disk-selector-volume").strip().lower() == "true"
    over, minimal = (_number(settings, "storage-over-provisioning-percentage"),
                     _number(settings, "storage-minimal-available-percentage"))
    here = [r for r in replicas if r.get("node") == n["name"]]
    out, why = [], []
    for d in disks:
        if not d.get("allow_scheduling") or d.get("evicting") or not d.get("schedulable"):
            why.append(f"disk {d.get('name')}: scheduling off, evicting or not Schedulable")
            continue
        if d.get("type", "filesystem") != "filesystem":
            why.append(f"disk {d.get('name')}: not a filesystem disk")
            continue
        listed = set(d.get("scheduled_replicas") or ())
        extra = sum(size for r in here if r.get("name") and r["name"] not in listed)
        if not room(size, actual, dict(d, scheduled=_int(d.get("scheduled")) + extra), over, minimal):
            why.append(f"disk {d.get('name')}: insufficient storage")
            continue
        if not selectors_in_tags(d.get("tags") or (), dsel, empty_ok):
            why.append(f"disk {d.get('name')}: tags do not hold the diskSelector {dsel}")
            continue
        out.append(d)
    return out, "no disk can take it (" + "; ".join(why or ["no disk"]) + ")"


def place_replica(nodes: Sequence[Mapping], replicas: Sequence[Mapping], *, node_soft: bool, zone_soft: bool,
                  cordoned_unschedulable: bool = True, load: Mapping[str, int] | None = None,
                  volume: Mapping | None = None, settings: Mapping[str, str] | None = None
                  ) -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """Where a new replica may go, best first, as ``(node, disk)``, and why every other
    node may not (see the module docstring).

    Args:
        nodes: one mapping per node: ``name``, ``ready`` (Kubernetes node Ready and its
            longhorn-manager running), ``cordoned``, ``instance_manager`` (running),
            ``engine_image`` (deployed and ready), ``zone`` ("" = none), and from its
            ``nodes.longhorn.io`` (:func:`lh_node_facts`; absent: not known)
            ``allow_scheduling``, ``tags``, ``disks`` and its conditions ``lh_ready``,
            ``lh_schedulable`` (the node controller's, a pass behind the live facts).
        replicas: the volume's replicas that occupy a node: ``node``, ``evicting``
            (``spec.evictionRequested``), and ``name`` and ``disk`` (``spec.diskID``)
            when known. Failed replicas being replaced are left out by the caller
            (Longhorn does not count them while replenishing).
        node_soft: replica soft anti-affinity (:func:`soft_anti_affinity`).
        zone_soft: replica zone soft anti-affinity.
        cordoned_unschedulable: the ``disable-scheduling-on-cordoned-node`` setting.
        load: bytes of replicas each node already holds (fewest first within a tier).
        volume: the ``volumes.longhorn.io`` (selectors, size, actual size, disk
            anti-affinity); None: no selector, no size.
        settings: Longhorn settings by name (missing: Longhorn's defaults).

    Returns:
        ``(candidates, excluded)``: ``(node, disk)`` pairs best first (the disk is one of
        the node's ``disks``; empty: ``ReplicaSchedulingFailure``), and node -> reason.
    """
    load, volume, settings = load or {}, volume or {}, settings or {}
    vspec = volume.get("spec") or {}
    excluded: dict[str, str] = {}
    cand: dict[str, Mapping] = {}
    for n in nodes:
        name = str(n["name"])
        if not n.get("ready") or n.get("deleting"):
            excluded[name] = "not ready (Kubernetes node or its longhorn-manager down)"
        elif n.get("cordoned") and cordoned_unschedulable:
            excluded[name] = "cordoned (disable-scheduling-on-cordoned-node)"
        elif n.get("lh_ready") is False or n.get("lh_schedulable") is False:
            excluded[name] = "its Longhorn node is not Ready or not Schedulable (status.conditions)"
        elif not n.get("allow_scheduling", True):
            excluded[name] = "replica scheduling disabled on its Longhorn node (spec.allowScheduling)"
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
    selector = list(vspec.get("nodeSelector") or ())
    empty_ok = _setting(settings, "allow-empty-node-selector-volume").strip().lower() == "true"
    disks: dict[str, list[dict]] = {}
    for name in list(cand):
        if not selectors_in_tags(cand[name].get("tags") or (), selector, empty_ok):
            excluded[name] = (f"its tags do not hold the volume's nodeSelector {selector}" if selector else
                              "tagged, and allow-empty-node-selector-volume is false")
            del cand[name]
            continue
        disks[name], why = _usable_disks(cand[name], replicas, volume, settings)
        if not disks[name]:
            excluded[name] = why
    used_disks = {str(r.get("disk")) for r in replicas if r.get("disk")}
    disk_soft = soft_anti_affinity(vspec.get("replicaDiskSoftAntiAffinity"),
                                   _setting(settings, "replica-disk-soft-anti-affinity"))
    unused = [n for n in cand if n not in used]
    after_eviction = [n for n in cand if only_evicting.get(n)]
    tiers = [[n for n in unused if zone[n] not in used_zones]]
    if not zone_soft:
        tiers.append([n for n in after_eviction if only_evicting_zone.get(zone[n])])
    elif not node_soft:
        tiers += [unused, after_eviction]
    else:
        tiers += [unused, sorted(used)]

    def why_not(n: str) -> str:
        if n in used:
            return "holds a replica of this volume"
        if zone[n] in used_zones:
            return "its zone holds a replica of this volume"
        return "its disks hold a replica of this volume (replica-disk-soft-anti-affinity is off)"
    for tier in tiers:
        found = [(n, d) for n in sorted(set(tier)) for d in disks.get(n, [])]
        fresh = [(n, d) for n, d in found if not d.get("uuid") or d["uuid"] not in used_disks]
        allowed = fresh or (found if disk_soft else [])
        if not allowed:
            continue
        best: dict[str, dict] = {}
        for n, d in allowed:
            if n not in best or d["available"] - d["reserved"] > best[n]["available"] - best[n]["reserved"]:
                best[n] = d
        picked = sorted(best, key=lambda n: (int(load.get(n, 0)), n))
        for n in cand:
            if n not in best and n not in excluded:
                excluded[n] = why_not(n)
        return [(n, best[n]) for n in picked], excluded
    for n in cand:
        if n not in excluded:
            excluded[n] = why_not(n)
    return [], excluded


def replica_candidates(nodes: Sequence[Mapping], replicas: Sequence[Mapping], *, node_soft: bool,
                       zone_soft: bool, cordoned_unschedulable: bool = True,
                       load: Mapping[str, int] | None = None, volume: Mapping | None = None,
                       settings: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The nodes a new replica may go to, best first, and why every other node may not
    (:func:`place_replica` without the disks).

    Example:
        >>> nodes = [{"name": n, "ready": True, "cordoned": False, "instance_manager": True,
        ...           "engine_image": True, "zone": ""} for n in ("a", "b")]
        >>> replica_candidates(nodes, [{"node": "a", "evicting": False}], node_soft=False, zone_soft=True)
        (['b'], {'a': 'holds a replica of this volume'})
    """
    placed, excluded = place_replica(nodes, replicas, node_soft=node_soft, zone_soft=zone_soft,
                                     cordoned_unschedulable=cordoned_unschedulable, load=load,
                                     volume=volume, settings=settings)
    return [n for n, _ in placed], excluded
