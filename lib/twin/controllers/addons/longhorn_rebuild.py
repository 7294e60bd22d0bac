"""How a Longhorn v1 replica is rebuilt, and how long it takes: full, delta or fast.

Pure rules (no store, no clock); :mod:`.longhorn_replicas` asks :func:`rebuild_plan` when a
WO replica starts rebuilding. Golden cases: ``tests/unit/twin_addons/golden/longhorn_rebuild.json``.

What Longhorn v1.7.2 does (primary sources, checked in the code):

- longhorn-engine ``pkg/sync/sync.go`` AddReplica: the engine adds the replica as WO and takes a
  system snapshot on every replica, the rebuilding one included (``controller/control.go``
  addReplicaNoLock), so what the volume head held becomes a snapshot file of the same name on
  both sides. ``controller/rebuild.go`` PrepareRebuildReplica lists every snapshot file of a
  healthy replica (never the head) and removes the files the rebuilding replica has that the
  chain does not.
- sparse-tools ``sparse/client.go`` SyncContent, per snapshot file:

  * the file is not in the rebuilding replica's data directory (a new replica, or a snapshot
    taken after it failed): every data extent is read and sent (**full**);
  * it is there, ``fast-replica-rebuild-enabled`` is on, the source's ``.checksum`` file exists,
    the file's change time is the recorded one and the remote's recorded checksum is the same:
    the file is skipped (**fast**);
  * otherwise both replicas read and SHA-512-hash the file batch by batch and only batches whose
    hashes differ are sent (**delta**): little crosses the network, but all of it is read and
    hashed on both nodes.

- Checksums exist only where snapshot hashing made them: ``snapshot-data-integrity`` (default
  ``fast-check``) hashes on its cron job (``snapshot-data-integrity-cronjob``, ``0 0 */7 * *``)
  and, only if ``snapshot-data-integrity-immediate-check-after-snapshot-creation`` is on (default
  off), right after a snapshot is taken. The volume head never has one, a just-taken snapshot
  (the rebuild's own) has none yet, and purging a system snapshot coalesces it into the next
  one, whose checksum is then stale (docs, "Replica Rebuilding", Factors That Affect Rebuilding
  Performance: https://longhorn.io/docs/latest/advanced-resources/rebuilding/ ; "Fast Replica
  Rebuild": https://longhorn.io/docs/latest/advanced-resources/rebuilding/fast-replica-rebuild ;
  longhorn-manager v1.7.2 ``types/setting.go``; longhorn/longhorn#5023 made fast rebuild the
  default).
- Which replica keeps its data: longhorn-manager v1.7.2 ``scheduler/replica_scheduler.go``
  (``IsPotentiallyReusableReplica``, ``isFailedReplicaReusable``) reuses a failed replica on its
  own node and disk (not evicting, fewer than 5 failed rebuilds, its instance manager running);
  ``replica-replenishment-wait-interval`` (600 s) is how long the volume waits for one before it
  makes a new replica elsewhere, which always starts empty.

The time model: bytes sent in full or compared in a delta are priced at
:data:`.longhorn_rules.REBUILD_BYTES_PER_SECOND` (:func:`.longhorn_rules.rebuild_seconds`). A delta sends only what differs (at most what
was written since the failure, which lands in the head) but reads and hashes everything on both
nodes; its speed is the disks' and CPUs' ("Rebuilding time is influenced by CPU performance",
docs above), which the twin does not model, so it is never priced faster than the network copy
of the same bytes. Only skipped (fast) files save time. On a volume whose data sits in the head
(no snapshots, as in the minicloud fixture) a returning replica therefore takes as long as a new
one: that is what Longhorn does there, not a shortcut of the twin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .longhorn_rules import rebuild_seconds

__all__ = ["REBUILD_SETTINGS", "RebuildPlan", "rebuild_plan", "fast_rebuild_on"]

#: The settings a rebuild reads, with Longhorn v1.7.2's defaults (``types/setting.go``). Kept
#: apart from :data:`.longhorn_rules.SETTINGS` because the minicloud fixture holds a Setting
#: object for each of those; these are read from the store when an operator created them.
#: A reused replica skips the snapshot files whose recorded checksums match; that needs
#: snapshot hashing, on (``fast-check``) by default, but a snapshot is hashed only by the
#: cron job (every 7 days) unless the immediate check is on.
REBUILD_SETTINGS: Mapping[str, str] = {
    "fast-replica-rebuild-enabled": "true",
    "snapshot-data-integrity": "fast-check",
    "snapshot-data-integrity-immediate-check-after-snapshot-creation": "false",
    "snapshot-data-integrity-cronjob": "0 0 */7 * *",
}


@dataclass(frozen=True)
class RebuildPlan:
    """What a rebuild moves and how long it takes.

    Attributes:
        kind: ``full`` (nothing reused), ``delta`` (reused data, every byte compared) or
            ``fast`` (reused data, some snapshot files skipped by their checksums).
        copied: bytes read and sent in full (files the replica does not have).
        compared: bytes read and hashed on both sides, only differing batches sent.
        skipped: bytes of snapshot files skipped (same recorded checksum on both sides).
        seconds: cluster seconds, setup included.
        why: one line a person can read in the log.
    """

    kind: str
    copied: int
    compared: int
    skipped: int
    seconds: float
    why: str


def fast_rebuild_on(settings: Mapping[str, str]) -> bool:
    """Whether files may be skipped: ``fast-replica-rebuild-enabled`` on and snapshot hashing
    not ``disabled`` (the setting's own description makes it the prerequisite).

    Example:
        >>> fast_rebuild_on({}), fast_rebuild_on({"snapshot-data-integrity": "disabled"})
        (True, False)
    """
    def get(name: str) -> str:
        return str(settings.get(name, REBUILD_SETTINGS[name])).strip().lower()
    enabled = get("fast-replica-rebuild-enabled") == "true"
    integrity = get("snapshot-data-integrity")
    return enabled and integrity in ("enabled", "fast-check")


def _size(raw: object) -> int:
    try:
        return max(0, int(raw or 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def rebuild_plan(actual_size: int | str | None, *, held_data: bool, failed_at: str = "",
                 snapshots: Iterable[Mapping] = (), fast: bool = True) -> RebuildPlan:
    """Plan one replica rebuild of a volume holding ``actual_size`` bytes.

    Args:
        actual_size: the volume's ``status.actualSize`` (all snapshot files plus the head).
        held_data: the replica comes back with its own data directory (a reused failed replica
            that was healthy once: ``spec.lastHealthyAt`` set); False for a new replica.
        failed_at: RFC 3339 time the replica failed (``spec.lastFailedAt``); snapshots taken
            after it are not in its directory.
        snapshots: the volume's ``snapshots.longhorn.io`` as ``{"name", "size",
            "creationTime", "checksum"}`` (their ``status``); ``checksum`` set = hashed on the
            replicas that hold the file.
        fast: :func:`fast_rebuild_on` of the live settings.

    Example:
        >>> rebuild_plan(1024 ** 3, held_data=False).kind
        'full'
        >>> p = rebuild_plan(1024 ** 3, held_data=True, failed_at="2026-01-02T00:00:00Z",
        ...     snapshots=[{"name": "s1", "size": 768 * 1024 ** 2,
        ...                 "creationTime": "2026-01-01T00:00:00Z", "checksum": "ab12"}])
        >>> p.kind, p.skipped == 768 * 1024 ** 2, p.seconds
        ('fast', True, 5.56)
    """
    total = _size(actual_size)
    if not held_data:
        return _plan("full", total, 0, 0, "a new replica (or one never healthy) has no data to reuse")
    copied = skipped = 0
    listed = 0
    for s in snapshots:
        size = _size(s.get("size"))
        listed += size
        created = str(s.get("creationTime") or "")
        if failed_at and created and created > failed_at:
            copied += size          # taken while the replica was down: not in its directory
        elif fast and s.get("checksum"):
            skipped += size
    # the head and every unhashed snapshot the replica has: compared block by block
    compared = max(0, total - copied - skipped) if listed <= total else max(0, listed - copied - skipped)
    if skipped:
        return _plan("fast", copied, compared, skipped,
                     "reused replica: hashed snapshot files skipped, the rest compared by SHA-512 batches")
    why = "reused replica: no hashed snapshot file to skip, every byte compared by SHA-512 batches"
    if not fast:
        why += " (fast-replica-rebuild-enabled off or snapshot-data-integrity disabled)"
    return _plan("delta", copied, compared, 0, why)


def _plan(kind: str, copied: int, compared: int, skipped: int, why: str) -> RebuildPlan:
    return RebuildPlan(kind, copied, compared, skipped, rebuild_seconds(copied + compared), why)
