"""Velero (``velero.io/v1``): backups and restores, as the velero server runs them.

* A ``Backup`` goes New -> InProgress -> Completed over a few cluster seconds while a
  velero server pod (label ``name=velero`` in the Backup's namespace) is Ready and
  reachable; until then it stays New, as with a velero server that is down.
  ``status`` gets ``startTimestamp``, ``completionTimestamp``, ``expiration``
  (start + ``spec.ttl``, default 720h), ``formatVersion``, ``version`` and
  ``progress.totalItems/itemsBackedUp``. Items are what Velero would include:
  every namespaced object of the included namespaces, the Namespace objects, and
  cluster-scoped objects when ``includeClusterResources`` is true (or unset while
  all namespaces are included); nodes, events, backups, restores and
  backuprepositories are never included (Velero's built-in exclusions). The items
  are kept in memory (by resource/namespace/name) for restores.
* Fault ``velero_partially_failed`` (one-shot): the next Backup that starts ends
  ``PartiallyFailed`` with ``status.errors`` > 0 and ``warnings``, and the switch
  goes back to false (set it again for another failure). As on real
  Velero, ``failureReason`` stays empty for PartiallyFailed; the errors are also
  visible as ``PodVolumeBackup`` objects in phase Failed, labelled
  ``velero.io/backup-name``, whose ``status.message`` says what failed (that is what
  ``velero backup describe --details`` shows).
* A missing, ``ReadOnly`` or ``Unavailable`` storage location gives
  ``FailedValidation`` with Velero's ``validationErrors``.
* A ``Restore`` (``spec.backupName``, ``existingResourcePolicy: none|update``,
  ``includeClusterResources``, ``includedNamespaces``/``excludedNamespaces``) goes
  New -> InProgress -> Completed. It recreates objects missing from the cluster
  (without the old uid, resourceVersion or status; Services lose their clusterIP and
  nodePorts, as Velero does), labelled ``velero.io/backup-name`` and
  ``velero.io/restore-name``. An object that exists is never overwritten unless
  ``existingResourcePolicy: update`` (then its labels, annotations and spec/data are
  replaced by the backed-up ones); an existing object that differs from the backup
  and is not updated gives one warning. Objects created after the backup are never
  deleted. Pods, ReplicaSets, Endpoints, EndpointSlices and ControllerRevisions
  owned by a controller are skipped: their owners recreate them. Progress:
  ``totalItems`` = items considered, ``itemsRestored`` = items created or updated.
  An unknown backup, one that is not Completed/PartiallyFailed, or one this twin did
  not take (no contents in memory) gives ``FailedValidation``.

The selection and restore rules are pure functions in :mod:`.velero_items`.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from typing import Any

from ...store import json_copy
from ...ticker import TaskSet
from .common import create_like_the_api, find_type, meta, now_rfc3339, pod_reachable, types_by_key
from .velero_items import (VELERO, VELERO_EXCLUDED, BackupItem, ItemFilter, clean_for_restore,
                           parse_go_duration, restore_decision, restore_order, strip_server_fields)

log = logging.getLogger("twin.controllers.addons")


class VeleroModel:
    """Backups and restores (see the module docstring)."""

    step_seconds = 1.0        # cluster seconds between progress updates
    steps = 3

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.contents: dict[tuple[str, str], list[BackupItem]] = {}
        self._tasks = TaskSet("velero")   # by (plural, namespace, name)

    # -- events ---------------------------------------------------------------------
    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        key = rtype.key
        if key not in ((VELERO, "backups"), (VELERO, "restores")) or etype == "DELETED":
            if etype == "DELETED" and key == (VELERO, "backups"):
                self.contents.pop((meta(obj).get("namespace"), meta(obj).get("name")), None)
            return
        phase = (obj.get("status") or {}).get("phase") or "New"
        if phase != "New":
            return
        tkey = (key[1], meta(obj).get("namespace") or "", meta(obj).get("name") or "")
        if tkey in self._tasks:
            return
        run = self._backup if key[1] == "backups" else self._restore
        self._tasks.spawn(self._guarded(run, key[1], *tkey[1:]), key=tkey,
                          name=f"velero-{tkey[0]}-{tkey[2]}")

    async def _guarded(self, run: Any, plural: str, ns: str, name: str) -> None:
        """Run one backup/restore; a crash of the model marks it Failed (as Velero does
        with an internal error) instead of leaving it InProgress forever."""
        try:
            await run(ns, name)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("velero: %s %s/%s failed", plural, ns, name)
            reason = f"twin velero model error: {e}"

            def failed(o: dict) -> None:
                st = o.setdefault("status", {})
                st["phase"] = "Failed"
                st["failureReason"] = reason
                st["completionTimestamp"] = now_rfc3339()
            try:
                self._write(plural, ns, name, failed)
            except Exception:
                log.exception("velero: could not mark %s/%s Failed", ns, name)

    async def stop(self) -> None:
        await self._tasks.stop()

    def busy(self) -> bool:
        return bool(self._tasks)

    # -- server -----------------------------------------------------------------------
    def server_ready(self, ns: str) -> tuple[bool, str]:
        pods = find_type(self.store, "", "pods")
        seen = []
        for p in self.store.iter_objects(pods, ns):
            labels = meta(p).get("labels") or {}
            if labels.get("name") == "velero" or labels.get("deploy") == "velero":
                ok, why = pod_reachable(self.rt, p)
                if ok:
                    return True, why
                seen.append(why)
        return False, "; ".join(seen) or f"no velero server pod in namespace {ns}"

    async def _wait_server(self, ns: str) -> None:
        while True:
            ok, _ = self.server_ready(ns)
            if ok:
                return
            await self.rt.clock.sleep(1.0)

    def _write(self, plural: str, ns: str, name: str, fn: Any) -> dict | None:
        rtype = find_type(self.store, VELERO, plural)
        if rtype is None or self.store.peek(rtype, ns, name) is None:
            return None
        return self.store.mutate(rtype, ns, name, fn)

    # -- backups ------------------------------------------------------------------------
    async def collect(self, spec: dict, batch: int = 2000) -> list[BackupItem]:
        """The items a Backup with ``spec`` includes (copies). Yields to the event loop
        every ``batch`` objects, so a large cluster's API stays responsive meanwhile
        (like Velero, the backup is not one atomic snapshot)."""
        flt = ItemFilter.from_spec(spec)
        items: list[BackupItem] = []
        n = 0
        for t in list(types_by_key(self.store).values()):
            if t.key in VELERO_EXCLUDED:
                continue
            for obj in self.store.iter_objects(t):
                n += 1
                if n % batch == 0:
                    await asyncio.sleep(0)
                ns = meta(obj).get("namespace") or ""
                if flt.includes(t.group, t.plural, t.namespaced, ns, obj):
                    item = json_copy(obj)
                    item["apiVersion"], item["kind"] = t.api_version, t.kind
                    items.append(BackupItem(t.group, t.plural, t.namespaced, item))
        return items

    async def _backup(self, ns: str, name: str) -> None:
        # The server picks a new backup up within about a second: it is "New" meanwhile.
        await self.rt.clock.sleep(0.1)
        if self._write("backups", ns, name, lambda o: o.setdefault("status", {}).setdefault("phase", "New")) is None:
            return
        await self.rt.clock.sleep(1.0)
        await self._wait_server(ns)
        btype = find_type(self.store, VELERO, "backups")
        obj = self.store.try_get(btype, ns, name)
        if obj is None or ((obj.get("status") or {}).get("phase") or "New") != "New":
            return
        spec = obj.get("spec") or {}
        location = spec.get("storageLocation") or self._default_location(ns)
        problems = []
        if not location:
            problems.append("an existing backup storage location wasn't specified at backup "
                            "creation time and the default 'default' wasn't found. Please "
                            "address this issue (see `velero backup-location -h` for options) "
                            "and create a new backup.")
        elif not self._location_exists(ns, location):
            problems.append(f"an existing backup storage location wasn't specified at backup "
                            f"creation time and the server default '{location}' doesn't exist. "
                            "Please address this issue (see `velero backup-location -h` for "
                            "options) and create a new backup. Error: "
                            f"backupstoragelocations.velero.io \"{location}\" not found")
        else:
            bsl = self.store.peek(find_type(self.store, VELERO, "backupstoragelocations"), ns, location)
            if ((bsl or {}).get("spec") or {}).get("accessMode") == "ReadOnly":
                problems.append(f"backup can't be created because backup storage location "
                                f"{location} is currently in read-only mode")
            elif ((bsl or {}).get("status") or {}).get("phase") == "Unavailable":
                problems.append(f"backup can't be created because BackupStorageLocation "
                                f"{location} is in Unavailable status.")
        if problems:
            def invalid(o: dict) -> None:
                o["status"] = {"phase": "FailedValidation", "validationErrors": problems,
                               "version": 1, "formatVersion": "1.1.0"}
            self._write("backups", ns, name, invalid)
            return
        partially = bool(self.rt.faults.velero_partially_failed)
        if partially:
            # One-shot, as documented in twin.faults: "the next Backup ends PartiallyFailed".
            self.rt.faults.velero_partially_failed = False
        ttl = parse_go_duration(spec.get("ttl"), 720 * 3600.0)
        started = now_rfc3339()

        def begin(o: dict) -> None:
            o.setdefault("metadata", {}).setdefault("labels", {})["velero.io/storage-location"] = location
            o.setdefault("spec", {}).setdefault("storageLocation", location)
            o["spec"].setdefault("ttl", spec.get("ttl") or "720h0m0s")
            o["status"] = {"phase": "InProgress", "startTimestamp": started,
                           "expiration": now_rfc3339(ttl), "formatVersion": "1.1.0",
                           "version": 1, "progress": {}}
        self._write("backups", ns, name, begin)
        items = await self.collect(spec)
        total = len(items)
        for i in range(1, self.steps + 1):
            await self.rt.clock.sleep(self.step_seconds)
            done = total * i // (self.steps + 1)

            def progress(o: dict, done: int = done) -> None:
                o.setdefault("status", {})["progress"] = {"totalItems": total, "itemsBackedUp": done}
            if self._write("backups", ns, name, progress) is None:
                return
        errors, warnings = 0, 0
        if partially:
            errors, warnings = self._fail_pod_volumes(ns, name, location)
        self.contents[(ns, name)] = items

        def finish(o: dict) -> None:
            st = o.setdefault("status", {})
            st["phase"] = "PartiallyFailed" if partially else "Completed"
            st["completionTimestamp"] = now_rfc3339()
            st["progress"] = {"totalItems": total, "itemsBackedUp": total}
            if errors:
                st["errors"] = errors
            if warnings:
                st["warnings"] = warnings
        self._write("backups", ns, name, finish)
        log.info("velero: backup %s/%s %s, %d items", ns, name,
                 "PartiallyFailed" if partially else "Completed", total)

    def _default_location(self, ns: str) -> str | None:
        bsl = find_type(self.store, VELERO, "backupstoragelocations")
        if bsl is None:
            return None
        for o in self.store.iter_objects(bsl, ns):
            if (o.get("spec") or {}).get("default"):
                return meta(o).get("name")
        return None

    def _location_exists(self, ns: str, name: str) -> bool:
        bsl = find_type(self.store, VELERO, "backupstoragelocations")
        return bsl is not None and self.store.peek(bsl, ns, name) is not None

    def _fail_pod_volumes(self, ns: str, backup: str, location: str) -> tuple[int, int]:
        """Record the failed pod volume backups of a PartiallyFailed backup (the errors a
        person reads in ``velero backup describe --details``). Returns (errors, warnings)."""
        pvb = find_type(self.store, VELERO, "podvolumebackups")
        pods = find_type(self.store, "", "pods")
        victims = []
        for p in self.store.iter_objects(pods):
            vols = [v for v in (p.get("spec") or {}).get("volumes") or () if v.get("persistentVolumeClaim")]
            if vols and (p.get("spec") or {}).get("nodeName"):
                victims.append((p, vols[0]))
            if len(victims) >= 2:
                break
        errors = max(1, len(victims))
        if pvb is not None:
            for i, (p, vol) in enumerate(victims):
                pm = meta(p)
                body = {"apiVersion": f"{VELERO}/v1", "kind": "PodVolumeBackup",
                        "metadata": {"name": f"{backup}-{hashlib.sha256(f'{backup}{i}'.encode()).hexdigest()[:5]}",
                                     "namespace": ns,
                                     "labels": {"velero.io/backup-name": backup,
                                                "velero.io/pvc-name": vol["persistentVolumeClaim"].get("claimName", "")}},
                        "spec": {"backupStorageLocation": location, "node": p["spec"]["nodeName"],
                                 "pod": {"kind": "Pod", "namespace": pm.get("namespace"),
                                         "name": pm.get("name"), "uid": pm.get("uid")},
                                 "volume": vol.get("name"), "uploaderType": "kopia",
                                 "repoIdentifier": ""},
                        "status": {"phase": "Failed", "startTimestamp": now_rfc3339(),
                                   "completionTimestamp": now_rfc3339(),
                                   "message": "error to initialize data path: error to boost backup "
                                              "repository connection default--kopia: error to "
                                              "connect backup repo: dial tcp: i/o timeout"}}
                try:
                    self.store.create(body)
                except Exception:  # an existing one from a rerun is fine
                    log.debug("podvolumebackup for %s not created", backup, exc_info=True)
        return errors, 1

    # -- restores -----------------------------------------------------------------------
    async def _restore(self, ns: str, name: str) -> None:
        await self.rt.clock.sleep(0.1)
        if self._write("restores", ns, name, lambda o: o.setdefault("status", {}).setdefault("phase", "New")) is None:
            return
        await self.rt.clock.sleep(1.0)
        await self._wait_server(ns)
        rtype = find_type(self.store, VELERO, "restores")
        obj = self.store.try_get(rtype, ns, name)
        if obj is None or ((obj.get("status") or {}).get("phase") or "New") != "New":
            return
        spec = obj.get("spec") or {}
        backup_name = spec.get("backupName") or ""
        policy = spec.get("existingResourcePolicy") or "none"
        problems = []
        btype = find_type(self.store, VELERO, "backups")
        backup = self.store.try_get(btype, ns, backup_name) if (btype and backup_name) else None
        if not backup_name:
            problems.append("Either a backup or schedule must be specified as a source for the "
                            "restore, but not both")
        elif backup is None:
            problems.append(f"Error retrieving backup: backups.velero.io \"{backup_name}\" not found")
        elif (backup.get("status") or {}).get("phase") not in ("Completed", "PartiallyFailed"):
            problems.append(f"backup {backup_name} is in phase "
                            f"{(backup.get('status') or {}).get('phase') or 'New'}: only Completed "
                            "or PartiallyFailed backups can be restored")
        elif (ns, backup_name) not in self.contents:
            problems.append(f"backup {backup_name} has no contents in this twin (it was not "
                            "taken by this twin's velero)")
        if policy not in ("none", "update"):
            problems.append(f"Invalid existingResourcePolicy: {policy}")
        if problems:
            def invalid(o: dict) -> None:
                o["status"] = {"phase": "FailedValidation", "validationErrors": problems}
            self._write("restores", ns, name, invalid)
            return
        started = now_rfc3339()
        self._write("restores", ns, name, lambda o: o.__setitem__(
            "status", {"phase": "InProgress", "startTimestamp": started, "progress": {}}))
        flt = ItemFilter.from_spec(spec)
        selected = [it for it in self.contents[(ns, backup_name)]
                    if flt.includes(it.group, it.plural, it.namespaced, it.key[2], it.obj)]
        plan = restore_order(selected)
        total, restored, warnings, errors = 0, 0, 0, 0
        chunk = max(1, len(plan) // self.steps + 1)
        for i, item in enumerate(plan):
            if i and i % chunk == 0:
                await self.rt.clock.sleep(self.step_seconds)

                def progress(o: dict, t: int = total, r: int = restored) -> None:
                    o.setdefault("status", {})["progress"] = {"totalItems": t, "itemsRestored": r}
                if self._write("restores", ns, name, progress) is None:
                    return
            res = self._restore_item(item, policy, backup_name, name)
            if i % 500 == 499:
                await asyncio.sleep(0)      # keep the API responsive on large restores
            if res == "skip-owned":
                continue
            total += 1
            if res in ("create", "update"):
                restored += 1
            elif res == "skip-exists":
                warnings += 1
            elif res == "error":
                errors += 1
        await self.rt.clock.sleep(self.step_seconds)

        def finish(o: dict) -> None:
            st = o.setdefault("status", {})
            st["phase"] = "PartiallyFailed" if errors else "Completed"
            st["completionTimestamp"] = now_rfc3339()
            st["progress"] = {"totalItems": total, "itemsRestored": restored}
            if warnings:
                st["warnings"] = warnings
            if errors:
                st["errors"] = errors
        self._write("restores", ns, name, finish)
        log.info("velero: restore %s/%s: %d/%d restored, %d warnings, %d errors",
                 ns, name, restored, total, warnings, errors)

    def _restore_item(self, item: BackupItem, policy: str, backup: str, restore: str) -> str:
        rtype = find_type(self.store, item.group, item.plural)
        if rtype is None:
            return "error"
        _, _, ns, nm = item.key
        live = self.store.peek(rtype, ns, nm)
        d = restore_decision(item.group, item.plural, item.obj, live, policy)
        try:
            if d.action == "create":
                body = clean_for_restore(item.group, item.plural, item.obj)
                body.setdefault("metadata", {}).setdefault("labels", {}).update(
                    {"velero.io/backup-name": backup, "velero.io/restore-name": restore})
                body["apiVersion"], body["kind"] = rtype.api_version, rtype.kind
                create_like_the_api(self.rt, body, rtype)
            elif d.action == "update":
                want = strip_server_fields(item.obj)

                def apply(o: dict) -> None:
                    md = o.setdefault("metadata", {})
                    md["labels"] = dict((want.get("metadata") or {}).get("labels") or {},
                                        **{"velero.io/backup-name": backup,
                                           "velero.io/restore-name": restore})
                    md["annotations"] = dict((want.get("metadata") or {}).get("annotations") or {})
                    for k, v in want.items():
                        if k in ("apiVersion", "kind", "metadata", "status"):
                            continue
                        if k == "spec" and item.plural == "services":
                            v = dict(v)
                            for f in ("clusterIP", "clusterIPs"):
                                if f in (o.get("spec") or {}):
                                    v[f] = o["spec"][f]
                        o[k] = copy.deepcopy(v)
                self.store.mutate(rtype, ns, nm, apply)
        except Exception as e:  # one bad item must not stop the restore (Velero counts it)
            log.info("velero: restore of %s failed: %s", item.key, e)
            return "error"
        return d.action
