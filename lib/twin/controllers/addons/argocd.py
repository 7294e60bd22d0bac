"""Argo CD (``argoproj.io/v1alpha1``): Applications, their drift and self-heal.

* Each Application's desired state is the spec/labels (and any other top-level
  field but status) of the objects in its ``status.resources``, taken when the
  twin starts (or when the app first lists the object). That is "git".
* Drift = a desired field missing or different in the live object, or the object
  deleted. Fields added by others (controllers' annotations, ...) are not drift, as
  with Argo CD's diff that only looks at the fields git sets; annotations are not
  compared at all. ``spec.ignoreDifferences`` (``jsonPointers``) is honoured.
* ``syncPolicy.automated.selfHeal`` (and ``enabled`` not false) while an
  ``argocd-application-controller`` pod is Ready and reachable: after the self-heal
  timeout (5 cluster s) the drifted objects are re-applied (deleted ones recreated)
  and the sync is recorded: a ``status.history`` entry (id, revision, deployedAt,
  deployStartedAt, source; the last ``revisionHistoryLimit`` kept, default 10, ids keep
  counting), ``operationState`` (Succeeded, with syncResult.resources),
  ``sync.status`` OutOfSync -> Synced and ``reconciledAt``. ``AddonControllers.argocd
  .sync_count(ns, name)`` counts the self-heal syncs.
* ``status.health`` follows Argo CD's built-in health checks of the owned objects
  (Deployment/StatefulSet/DaemonSet rollouts, PVC phase, LoadBalancer Services and
  Ingresses without an address, missing objects, child Applications): the worst wins.
* Without selfHeal (manual apps, paused apps with ``automated: null``, ``automated``
  without selfHeal) nothing is re-applied: ``sync.status`` becomes OutOfSync (and the
  drifted ``status.resources[].status``), back to Synced when the drift goes away.
* App-of-apps parents own Application/ApplicationSet objects. By default a parent
  ignores differences in its children's sync policy (``/spec/syncPolicy``, and
  ``/spec/template/spec/syncPolicy`` of an ApplicationSet), as an installation with
  that ``ignoreDifferences`` entry does: pausing a child is not reverted. Fault
  ``argocd_parent_reverts`` removes that implicit entry: a self-healing parent then
  reverts its children's syncPolicy (argo-cd#3895), which is what breaks a naive pause.

Generated Applications follow their ApplicationSet (:mod:`.applicationsets`); the
diff rules are pure functions in :mod:`.argocd_diff`.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from ..base import Controller
from .argocd_diff import (ARGO, HEALTH_ORDER, AppKey, ResKey, apply_desired, desired_of, drift,
                          ignored_pointers, resource_health, self_heals)
from .common import controller_pod_ready, create_like_the_api, find_type, meta, now_rfc3339

log = logging.getLogger("twin.controllers.addons")


class ArgoCDModel(Controller):
    """Applications: drift detection and self-heal (see the module docstring)."""

    self_heal_seconds = 5.0

    def __init__(self, rt: Any) -> None:
        super().__init__("argocd", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.desired: dict[AppKey, dict[ResKey, dict]] = {}
        self.owners: dict[ResKey, set[AppKey]] = {}
        self.syncs: dict[AppKey, int] = {}
        self._drift_since: dict[AppKey, float] = {}

    # -- index --------------------------------------------------------------------------
    def _app_type(self) -> Any:
        return find_type(self.store, ARGO, "applications")

    def _live(self, rk: ResKey, version: str | None = None) -> dict | None:
        group, kind, ns, name = rk
        t = self.store.kind_type(group, kind)
        if t is None:
            return None
        return self.store.peek(t, ns if t.namespaced else None, name)

    def index_app(self, app: dict) -> None:
        """Take the desired state of the app's resources not known yet."""
        ak = (meta(app).get("namespace") or "", meta(app).get("name") or "")
        want = self.desired.setdefault(ak, {})
        for r in (app.get("status") or {}).get("resources") or ():
            rk = (r.get("group") or "", r.get("kind") or "", r.get("namespace") or "", r.get("name") or "")
            if rk in want:
                continue
            live = self._live(rk)
            if live is None:
                continue
            want[rk] = desired_of(live)
            self.owners.setdefault(rk, set()).add(ak)

    def load(self) -> None:
        t = self._app_type()
        if t is None:
            return
        for app in list(self.store.iter_objects(t)):
            self.index_app(app)
            self.enqueue((meta(app).get("namespace") or "", meta(app).get("name") or ""))

    def sync_count(self, namespace: str, name: str) -> int:
        return self.syncs.get((namespace, name), 0)

    # -- events ------------------------------------------------------------------------
    def on_event(self, etype: str, kind: Any, obj: dict, old: dict | None) -> None:  # type: ignore[override]
        md = meta(obj)
        if kind.key == (ARGO, "applications"):
            ak = (md.get("namespace") or "", md.get("name") or "")
            if etype == "DELETED":
                for rk in self.desired.pop(ak, {}):
                    self.owners.get(rk, set()).discard(ak)
                self.syncs.pop(ak, None)
            else:
                self.index_app(obj)
                self.enqueue(ak)
        rk = (kind.group, kind.kind, md.get("namespace") or "", md.get("name") or "")
        for ak in self.owners.get(rk, ()):
            self.enqueue(ak)

    def controller_ready(self) -> bool:
        return controller_pod_ready(self.rt, "argocd", "argocd-application-controller")

    # -- reconcile ----------------------------------------------------------------------
    def reconcile(self, key: AppKey) -> None:  # type: ignore[override]
        t = self._app_type()
        app = self.store.peek(t, key[0], key[1]) if t else None
        if app is None:
            return
        reverts = bool(self.rt.faults.argocd_parent_reverts)
        self._set_health(key)
        drifted = []
        for rk, want in self.desired.get(key, {}).items():
            if drift(want, self._live(rk), ignored_pointers(app, rk, reverts)):
                drifted.append(rk)
        if not drifted:
            self._drift_since.pop(key, None)
            self._set_sync_status(key, "Synced", [])
            return
        self._set_sync_status(key, "OutOfSync", drifted)
        if not self_heals(app):
            self._drift_since.pop(key, None)
            return
        if not self.controller_ready():
            self.requeue_after(key, 2.0)
            return
        now = self.clock.cluster_now()
        since = self._drift_since.setdefault(key, now)
        if now - since < self.self_heal_seconds:
            self.requeue_after(key, self.self_heal_seconds - (now - since) + 0.01)
            return
        self._drift_since.pop(key, None)
        self._sync(key, app, drifted, reverts)

    def _set_health(self, key: AppKey) -> None:
        """status.health (the worst resource health) and each resource's health."""
        t = self._app_type()
        healths = {rk: resource_health(rk[1], self._live(rk)) for rk in self.desired.get(key, {})}
        worst = max((h[0] for h in healths.values()), key=HEALTH_ORDER.index, default="Healthy")

        def fn(o: dict) -> None:
            st = o.setdefault("status", {})
            for r in st.get("resources") or ():
                rk = (r.get("group") or "", r.get("kind") or "", r.get("namespace") or "", r.get("name") or "")
                if rk in healths:
                    status, msg = healths[rk]
                    r["health"] = {"status": status, **({"message": msg} if msg else {})}
            health = st.setdefault("health", {})
            if health.get("status") != worst:
                health["status"] = worst
                health["lastTransitionTime"] = now_rfc3339()
        self.store.mutate(t, key[0], key[1], fn)

    def _set_sync_status(self, key: AppKey, status: str, drifted: list[ResKey]) -> None:
        t = self._app_type()
        bad = set(drifted)

        def fn(o: dict) -> None:
            st = o.setdefault("status", {})
            sync = st.setdefault("sync", {})
            changed = sync.get("status") != status
            sync["status"] = status
            for r in st.get("resources") or ():
                rk = (r.get("group") or "", r.get("kind") or "", r.get("namespace") or "", r.get("name") or "")
                want = "OutOfSync" if rk in bad else "Synced"
                if rk in self.desired.get(key, {}) and r.get("status") != want:
                    r["status"] = want
                    changed = True
            if changed:
                st["reconciledAt"] = now_rfc3339()
        self.store.mutate(t, key[0], key[1], fn)

    def _create_namespaces(self, app: dict, drifted: list[ResKey]) -> None:
        """``syncOptions: [CreateNamespace=true]``: the namespaces the sync writes into."""
        opts = ((app.get("spec") or {}).get("syncPolicy") or {}).get("syncOptions") or ()
        if "CreateNamespace=true" not in opts:
            return
        nst = find_type(self.store, "", "namespaces")
        wanted = {rk[2] for rk in drifted if rk[2]}
        dest = ((app.get("spec") or {}).get("destination") or {}).get("namespace")
        if dest:
            wanted.add(dest)
        for ns in sorted(wanted):
            if self.store.peek(nst, None, ns) is None:
                try:
                    self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                except Exception:
                    log.debug("argocd: namespace %s not created", ns, exc_info=True)

    def _sync(self, key: AppKey, app: dict, drifted: list[ResKey], reverts: bool) -> None:
        started = now_rfc3339()
        results = []
        self._create_namespaces(app, drifted)
        # Namespaces first, then the rest, as Argo CD's sync waves order kinds.
        drifted = sorted(drifted, key=lambda rk: rk[1] != "Namespace")
        for rk in drifted:
            want = self.desired[key][rk]
            live = self._live(rk)
            ignore = ignored_pointers(app, rk, reverts)
            rtype = self.store.kind_type(rk[0], rk[1])
            if rtype is None:
                results.append((rk, "SyncFailed", f"the server could not find the requested resource {rk[1]}"))
                continue
            try:
                if live is None:
                    body = copy.deepcopy(want)
                    body["apiVersion"], body["kind"] = rtype.api_version, rtype.kind
                    create_like_the_api(self.rt, body, rtype)
                    results.append((rk, "Synced", f"{rk[1].lower()}/{rk[3]} created"))
                else:
                    new = apply_desired(want, live, ignore)
                    self.store.mutate(rtype, rk[2] if rtype.namespaced else None, rk[3],
                                      lambda o, new=new: (o.clear(), o.update(new)))
                    results.append((rk, "Synced", f"{rk[1].lower()}/{rk[3]} configured"))
            except Exception as e:
                results.append((rk, "SyncFailed", str(e)))
        self.syncs[key] = self.syncs.get(key, 0) + 1
        ok = all(r[1] == "Synced" for r in results)
        finished = now_rfc3339()
        t = self._app_type()

        def record(o: dict) -> None:
            st = o.setdefault("status", {})
            spec = o.get("spec") or {}
            revision = (st.get("sync") or {}).get("revision") or \
                (spec.get("source") or {}).get("targetRevision") or "HEAD"
            hist = list(st.get("history") or [])
            next_id = max([h.get("id", -1) for h in hist] or [-1]) + 1
            hist.append({"id": next_id, "revision": revision, "deployedAt": finished,
                         "deployStartedAt": started,
                         "source": copy.deepcopy(spec.get("source") or {}),
                         "initiatedBy": {"automated": True}})
            limit = spec.get("revisionHistoryLimit", 10)
            st["history"] = hist[-int(limit):] if limit else hist
            st["operationState"] = {
                "operation": {"initiatedBy": {"automated": True}, "retry": {},
                              "sync": {"revision": revision, "syncStrategy": {"hook": {}}}},
                "phase": "Succeeded" if ok else "Failed",
                "message": "successfully synced (all tasks run)" if ok else
                           "one or more objects failed to apply",
                "startedAt": started, "finishedAt": finished,
                "syncResult": {"revision": revision,
                               "source": copy.deepcopy(spec.get("source") or {}),
                               "resources": [{"group": rk[0], "kind": rk[1], "namespace": rk[2],
                                              "name": rk[3], "status": s, "message": m,
                                              "syncPhase": "Sync", "hookPhase": "Running"}
                                             for rk, s, m in results]}}
            st.setdefault("sync", {})["status"] = "Synced" if ok else "OutOfSync"
            for r in st.get("resources") or ():
                r["status"] = "Synced" if ok else r.get("status")
            st["reconciledAt"] = finished
        self.store.mutate(t, key[0], key[1], record)
        if not ok:
            # Argo CD retries a failed automated sync (with backoff); so do we.
            self.requeue_after(key, 2 * self.self_heal_seconds)
        log.info("argocd: %s/%s self-healed %d object(s)%s", key[0], key[1], len(drifted),
                 "" if ok else " (some failed: retrying)")
