"""Where Longhorn can put a replica it moves off a drained node (pure).

Under the ``block-for-eviction`` drain policies Longhorn rebuilds a replica of the drained
node elsewhere before it lets the drain through (:mod:`runbook.longhorn_drain`). Whether
it *can* is the replica scheduler's answer (longhorn-manager v1.7,
``scheduler/replica_scheduler.go``: ``getNodeInfo``, ``FindDiskCandidates``,
``getDiskCandidates``, ``filterNodeDisksForReplica``, ``IsSchedulableToDisk``,
``getCurrentNodesAndZones``), modelled here from ``nodes.longhorn.io``, the volume and
the scheduling settings:

1. **Nodes:** Ready, ``Schedulable`` (a cordoned node is not: the drained node never takes
   its own replica back), ``spec.allowScheduling``, and tags holding every tag of the
   volume's ``nodeSelector`` (a volume without one may use a tagged node unless
   ``allow-empty-node-selector-volume`` is off).
2. **Disks** of those nodes: ``allowScheduling``, not being evicted, ``Schedulable``,
   tags holding the volume's ``diskSelector`` (``allow-empty-disk-selector-volume``), and
   room: after the replica's actual size more than ``storage-minimal-available-percentage``
   of the disk stays free, and the volume's size fits in what
   ``storage-over-provisioning-percentage`` allows next to what is scheduled already.
3. **Anti-affinity**, in the scheduler's order: a node holding no replica of the volume in
   a zone holding none (``status.zone``, from the node's ``topology.kubernetes.io/zone``
   label; no label is one zone of its own) is always fine. Otherwise
   ``replica-zone-soft-anti-affinity`` off (Longhorn's default is on) ends the search;
   on, a node holding no replica of the volume is next, and with
   ``replica-soft-anti-affinity`` on (default off) any node. A disk already holding a
   replica of the volume is taken only when no other disk is left and
   ``replica-disk-soft-anti-affinity`` is on (default on). A volume's own
   ``replicaSoftAntiAffinity``/``replicaZoneSoftAntiAffinity``/``replicaDiskSoftAntiAffinity``
   (``enabled``/``disabled``) overrides the setting.

The replicas of the drained node do not count as placed (the node is out of the list),
failed or deleted replicas neither. Not modelled: backing-image selectors, v2 data
engine disks, the instance-manager and engine-image readiness of the other nodes (taken
as ready) and ``best-effort`` replica auto-balance.

Example:
    >>> n = nodes_from([node("a", zone="z1"), node("b", zone="z2"), node("c", zone="z2")])
    >>> v = {"metadata": {"name": "pvc-1"}, "spec": {"size": "1073741824"}}
    >>> reps = [replica("pvc-1", "a"), replica("pvc-1", "b")]
    >>> why_unmovable(v, reps, "a", n, Scheduling())   # to c: another node, in a zone holding one
    ''
    >>> why_unmovable(v, reps, "a", n, Scheduling(zone_soft=False))
    'no node in a zone without a replica of the volume may take it (replica-zone-soft-anti-affinity is off; zones holding one: z2)'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["Scheduling", "LonghornNode", "LonghornDisk", "nodes_from", "why_unmovable", "node", "replica"]

#: the scheduling settings this model reads, with longhorn-manager v1.7's defaults (types/setting.go)
SETTINGS = {"replica-soft-anti-affinity": "false", "replica-zone-soft-anti-affinity": "true",
            "replica-disk-soft-anti-affinity": "true", "allow-empty-node-selector-volume": "true",
            "allow-empty-disk-selector-volume": "true", "storage-over-provisioning-percentage": "100",
            "storage-minimal-available-percentage": "25"}


@dataclass(frozen=True)
class Scheduling:
    """Longhorn's scheduling settings (defaults: v1.7's)."""

    node_soft: bool = False
    zone_soft: bool = True
    disk_soft: bool = True
    empty_node_selector: bool = True
    empty_disk_selector: bool = True
    over_provisioning: int = 100
    minimal_available: int = 25

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> "Scheduling":
        """From ``settings.longhorn.io`` values by name (a missing one: its default)."""
        v = {**SETTINGS, **{k: str(x) for k, x in values.items() if x not in (None, "")}}

        def on(name: str) -> bool:
            return v[name].strip().lower() == "true"

        def number(name: str) -> int:
            try:
                return int(v[name])
            except ValueError:
                return int(SETTINGS[name])
        return cls(on("replica-soft-anti-affinity"), on("replica-zone-soft-anti-affinity"),
                   on("replica-disk-soft-anti-affinity"), on("allow-empty-node-selector-volume"),
                   on("allow-empty-disk-selector-volume"), number("storage-over-provisioning-percentage"),
                   number("storage-minimal-available-percentage"))


@dataclass(frozen=True)
class LonghornDisk:
    """One disk of a ``nodes.longhorn.io`` (spec and status joined by name)."""

    uuid: str
    usable: bool            # allowScheduling, not evicting, Schedulable, a filesystem disk
    tags: frozenset[str]
    available: int
    maximum: int
    reserved: int
    scheduled: int


@dataclass(frozen=True)
class LonghornNode:
    """One ``nodes.longhorn.io``: whether the scheduler lists it, its zone, tags and disks."""

    name: str
    listed: bool            # Ready, Schedulable, allowScheduling, not being deleted
    zone: str
    tags: frozenset[str]
    disks: tuple[LonghornDisk, ...] = field(default=())


def _true(conditions: Any, kind: str) -> bool:
    items = conditions.values() if isinstance(conditions, dict) else (conditions or [])
    return any(c.get("type") == kind and c.get("status") == "True" for c in items if isinstance(c, dict))


def _int(x: Any) -> int:
    try:
        return int(x or 0)
    except (TypeError, ValueError):
        return 0


def nodes_from(objs: Iterable[dict]) -> list[LonghornNode]:
    """``nodes.longhorn.io`` objects as the scheduler sees them."""
    out = []
    for o in objs:
        spec, st = o.get("spec") or {}, o.get("status") or {}
        disks = []
        for name, ds in (st.get("diskStatus") or {}).items():
            dsp = (spec.get("disks") or {}).get(name)
            if dsp is None:
                continue
            usable = (bool(dsp.get("allowScheduling")) and not dsp.get("evictionRequested")
                      and _true(ds.get("conditions"), "Schedulable")
                      and (dsp.get("diskType") or "filesystem") == "filesystem")
            disks.append(LonghornDisk(str(ds.get("diskUUID") or name), usable, frozenset(dsp.get("tags") or ()),
                                      _int(ds.get("storageAvailable")), _int(ds.get("storageMaximum")),
                                      _int(dsp.get("storageReserved")), _int(ds.get("storageScheduled"))))
        listed = (not (o.get("metadata") or {}).get("deletionTimestamp") and bool(spec.get("allowScheduling"))
                  and _true(st.get("conditions"), "Ready") and _true(st.get("conditions"), "Schedulable"))
        out.append(LonghornNode(o["metadata"]["name"], listed, str(st.get("zone") or ""),
                                frozenset(spec.get("tags") or ()), tuple(disks)))
    return out


def _selected(tags: frozenset[str], selector: list[str], allow_empty: bool) -> bool:
    """``types.IsSelectorsInTags``: every selector among the tags; no selector fits an
    untagged place, or any place when ``allow_empty``."""
    if not selector:
        return allow_empty or not tags
    return set(selector) <= tags


def _soft(own: Any, setting: bool) -> bool:
    return {"enabled": True, "disabled": False}.get(str(own or ""), setting)


def _room(d: LonghornDisk, size: int, actual: int, s: Scheduling) -> bool:
    """``IsSchedulableToDisk``: enough left free after the copy, and within over-provisioning."""
    return (d.maximum > 0 and d.available > 0
            and d.available - actual > d.maximum * s.minimal_available / 100
            and size + d.scheduled <= (d.maximum - d.reserved) * s.over_provisioning / 100)


def why_unmovable(volume: dict, replicas: Iterable[dict], drained: str, nodes: list[LonghornNode],
                  s: Scheduling) -> str:
    """Why Longhorn cannot place a replica moved off ``drained`` ("" when it can).

    Args:
        volume: the ``volumes.longhorn.io`` object.
        replicas: ``replicas.longhorn.io`` objects (those of other volumes are ignored).
        drained: the node being drained (cordoned: not a candidate, its replicas not counted).
        nodes: every Longhorn node (:func:`nodes_from`).
        s: the scheduling settings.
    """
    name = volume["metadata"]["name"]
    spec, st = volume.get("spec") or {}, volume.get("status") or {}
    size, actual = _int(spec.get("size")), _int(st.get("actualSize"))
    listed = {n.name: n for n in nodes if n.listed and n.name != drained}
    if not listed:
        return "no other Longhorn node is schedulable (Ready, not cordoned, scheduling allowed)"
    mine = [r for r in replicas if (r.get("spec") or {}).get("volumeName") == name
            and not (r.get("metadata") or {}).get("deletionTimestamp") and not (r.get("spec") or {}).get("failedAt")]
    used_nodes = {r["spec"].get("nodeID") for r in mine} & set(listed)
    used_zones = {listed[n].zone for n in used_nodes}
    # disk anti-affinity counts every replica of the volume (filterDisksWithMatchingReplicas)
    used_disks = {(r.get("spec") or {}).get("diskID") for r in replicas
                  if (r.get("spec") or {}).get("volumeName") == name}
    selector = list(spec.get("nodeSelector") or ())
    tagged = [n for n in listed.values() if _selected(n.tags, selector, s.empty_node_selector)]
    if not tagged:
        if not selector:
            return ("no other schedulable node is untagged, and allow-empty-node-selector-volume is off "
                    "(the volume has no nodeSelector)")
        return f"no other schedulable node has the tags of its nodeSelector {selector}"
    dsel = list(spec.get("diskSelector") or ())

    def disks(n: LonghornNode) -> list[LonghornDisk]:
        return [d for d in n.disks if d.usable and _selected(d.tags, dsel, s.empty_disk_selector)
                and _room(d, size, actual, s)]
    fit = [n for n in tagged if disks(n)]
    if not fit:
        return ("no disk on the other schedulable nodes can take it (disk scheduling, diskSelector "
                f"{dsel}, or room: {s.minimal_available}% must stay free, over-provisioning "
                f"{s.over_provisioning}%)")
    disk_soft = _soft(spec.get("replicaDiskSoftAntiAffinity"), s.disk_soft)

    def takes(group: list[LonghornNode]) -> bool:   # filterDisksWithMatchingReplicas
        found = [d for n in group for d in disks(n)]
        return any(d.uuid not in used_disks for d in found) or (disk_soft and bool(found))
    free_zone = [n for n in fit if n.name not in used_nodes and n.zone not in used_zones]
    unused = [n for n in fit if n.name not in used_nodes]
    disk_rule = "no disk left without a replica of the volume (replica-disk-soft-anti-affinity is off)"
    if takes(free_zone):
        return ""
    zones = ", ".join(sorted(z or "(no zone)" for z in used_zones))
    if not _soft(spec.get("replicaZoneSoftAntiAffinity"), s.zone_soft):
        # a node was there, its disks each hold a (failed) replica: the disk rule stopped it
        return disk_rule if free_zone else (
            "no node in a zone without a replica of the volume may take it (replica-zone-soft-anti-"
            f"affinity is off; zones holding one: {zones})")
    if takes(unused):
        return ""
    if not _soft(spec.get("replicaSoftAntiAffinity"), s.node_soft):
        among = f" with its nodeSelector tags {selector}" if selector else ""
        return disk_rule if unused else (
            f"no other node{among} may take it (each holds a replica of the volume already)")
    if takes(fit):
        return ""
    return disk_rule


def node(name: str, *, zone: str = "", tags: Iterable[str] = (), listed: bool = True,
         disk_tags: Iterable[str] = (), available: int = 100 << 30, maximum: int = 200 << 30) -> dict:
    """A ``nodes.longhorn.io`` object with one disk (for examples and tests)."""
    cond = [{"type": "Ready", "status": "True"}, {"type": "Schedulable", "status": "True" if listed else "False"}]
    return {"metadata": {"name": name},
            "spec": {"allowScheduling": True, "tags": sorted(tags),
                     "disks": {"default-disk": {"allowScheduling": True, "evictionRequested": False,
                                                "storageReserved": 0, "tags": sorted(disk_tags),
                                                "diskType": "filesystem"}}},
            "status": {"zone": zone, "conditions": cond,
                       "diskStatus": {"default-disk": {"diskUUID": f"{name}-disk", "storageAvailable": available,
                                                       "storageMaximum": maximum, "storageScheduled": 0,
                                                       "conditions": [{"type": "Schedulable", "status": "True"}]}}}}


def replica(volume: str, node_name: str, *, failed: bool = False) -> dict:
    """A ``replicas.longhorn.io`` object on ``node_name``'s default disk (for examples and tests)."""
    return {"metadata": {"name": f"{volume}-r-{node_name}"},
            "spec": {"volumeName": volume, "nodeID": node_name, "diskID": f"{node_name}-disk",
                     "failedAt": "2026-01-01T00:00:00Z" if failed else ""}}
