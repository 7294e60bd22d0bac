"""The add-ons a CNI migration touches: Velero, Argo CD and MetalLB, as controllers.

One runtime component (``name = "addons"``) runs three small models. Each changes the
world only through the store, like a real controller through the API server, so every
change is visible to watches, kubectl and the runbook.

Velero (``velero.io/v1``)
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

Argo CD (``argoproj.io/v1alpha1``)
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
    * ApplicationSets (list generators, ``{{.key}}``/``{{key}}`` placeholders): while an
      ``argocd-applicationset-controller`` pod is Ready and reachable, each generated
      Application (owned by the ApplicationSet) gets the spec its template renders,
      about a cluster second after the ApplicationSet or the Application changes,
      unless ``syncPolicy.applicationsSync`` is create-only/create-delete; pointers in
      ``ignoreApplicationDifferences`` keep the live value. So pausing a generated app
      only sticks once the template's ``syncPolicy.automated`` is paused too.

MetalLB (``metallb.io/v1beta1``)
    * LoadBalancer Services (without another ``loadBalancerClass``) get
      ``status.loadBalancer.ingress[0].ip`` (ipMode VIP) and the annotation
      ``metallb.universe.tf/ip-allocated-from-pool`` from the IPAddressPools in
      ``metallb-system`` (``spec.addresses``: ``a-b`` ranges or CIDRs; ``autoAssign``;
      ``avoidBuggyIPs``), honouring ``metallb.universe.tf/loadBalancerIPs`` (or
      ``metallb.io/loadBalancerIPs``), ``spec.loadBalancerIP`` and
      ``metallb.universe.tf/address-pool``. IPs already in Service status at start are
      registered as allocated, so they stay stable; a service whose IP is cleared gets
      the same IP back when it is still free. Pool ``status`` counts are kept.
    * Only while a metallb controller pod (``metallb-system``, labels
      ``app.kubernetes.io/name=metallb`` + ``app.kubernetes.io/component=controller``)
      is Ready and reachable; otherwise new LoadBalancer services stay ``<pending>``.
    * Fault ``metallb_sticky`` models "the IP did not reattach after the CNI swap":
        1. a LoadBalancer Service whose IP is removed (status cleared) while the fault
           is on is not reassigned until the controller restarts (a controller pod with
           a new uid becomes Ready);
        2. the first controller restart after the fault is switched on (e.g. the
           "restart every pod" step after the swap) drops the IPs of all LoadBalancer
           Services it manages; they stay ``<pending>`` until ANOTHER restart.
      Remediation (the original step 4): ``kubectl -n metallb-system delete pod -l
      app.kubernetes.io/component=controller`` (or ``rollout restart``) once; the IPs
      come back (same addresses when free). Switching the fault off re-arms nothing
      and unsticks nothing: stuck services still wait for a restart.

Reachability: a pod counts as reachable when it is Ready and, if the twin runs a
network model (component ``"network"`` with ``pod_reachable(pod) -> (bool, reason)``),
that model says its sandbox's CNI works on its node. Without a network model, Ready is
enough.
"""
from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..selectors import from_label_selector
from ..store import json_copy
from .base import Controller

log = logging.getLogger("twin.controllers.addons")

VELERO = "velero.io"
ARGO = "argoproj.io"
METALLB = "metallb.io"
POOL_ANNOTATION = "metallb.universe.tf/ip-allocated-from-pool"
LB_IPS_ANNOTATIONS = ("metallb.universe.tf/loadBalancerIPs", "metallb.io/loadBalancerIPs")
POOL_REQUEST_ANNOTATIONS = ("metallb.universe.tf/address-pool", "metallb.io/address-pool")


# ============================================================================ helpers
def now_rfc3339(offset_seconds: float = 0.0) -> str:
    t = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict | None) -> dict:
    return (obj or {}).get("metadata") or {}


def pod_ready(pod: dict) -> bool:
    if _meta(pod).get("deletionTimestamp"):
        return False
    st = pod.get("status") or {}
    if st.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in st.get("conditions") or ())


def pod_reachable(rt: Any, pod: dict) -> tuple[bool, str]:
    """Ready, and (when the twin has a network model) its data path works."""
    name = f"{_meta(pod).get('namespace')}/{_meta(pod).get('name')}"
    if not pod_ready(pod):
        return False, f"pod {name} is not Ready"
    try:
        net = rt.component("network")
    except (KeyError, AttributeError):
        net = None
    fn = getattr(net, "pod_reachable", None)
    if fn is None:
        return True, f"pod {name} is Ready"
    try:
        ok, reason = fn(pod)
    except Exception:  # a broken model must not take the add-ons down
        log.exception("network.pod_reachable failed for %s", name)
        return False, f"pod {name}: network model error"
    return bool(ok), reason or ("reachable" if ok else "unreachable")


def parse_go_duration(text: str | None, default: float) -> float:
    """Seconds of a Go duration such as ``720h0m0s`` (``default`` when empty/invalid).

    >>> parse_go_duration("720h0m0s", 0)
    2592000.0
    >>> parse_go_duration("1h30m", 0)
    5400.0
    """
    if not text:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        return default
    return sum(float(n) * units[u] for n, u in parts)


def _types_by_key(store: Any) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for t in store.resource_types():
        # Prefer the storage version (the one whose bucket rtype it is) when several.
        out.setdefault(t.key, t)
    return out


def _rtype(store: Any, group: str, plural: str) -> Any:
    for t in store.resource_types():
        if t.key == (group, plural):
            return t
    return None


def _strip_server_fields(obj: dict) -> dict:
    """A copy without what the server owns (uid, resourceVersion, status, ...)."""
    out = json_copy(obj)
    md = out.setdefault("metadata", {})
    for k in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        md.pop(k, None)
    out.pop("status", None)
    return out


def _content(obj: dict) -> dict:
    """What a restore/diff compares: labels, annotations and every non-meta field."""
    md = _meta(obj)
    return {"labels": md.get("labels") or {}, "annotations": md.get("annotations") or {},
            **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}}


def create_like_the_api(rt: Any, body: dict, rtype: Any) -> dict:
    """Create ``body`` in the store with the defaults the API server adds on create
    (a Service gets its cluster IP and node ports), as a controller's POST would."""
    if rtype.key == ("", "services"):
        try:
            api = rt.component("apiserver")
        except (KeyError, AttributeError):
            api = None
        allocate = getattr(api, "allocate_service", None)
        if allocate is not None:
            allocate(body)
    return rt.store.create(body, rtype=rtype)


# ============================================================================ Velero
#: Resources Velero never backs up (its built-in exclusions).
VELERO_EXCLUDED = frozenset({
    ("", "nodes"), ("", "events"), ("events.k8s.io", "events"),
    (VELERO, "backups"), (VELERO, "restores"), (VELERO, "backuprepositories"),
    (VELERO, "resticrepositories"), ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
})

#: Velero's default restore order: these first, in this order, then the rest.
RESTORE_PRIORITY = (
    ("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"),
    ("storage.k8s.io", "storageclasses"), ("", "persistentvolumes"),
    ("", "persistentvolumeclaims"), ("", "serviceaccounts"), ("", "secrets"),
    ("", "configmaps"), ("", "limitranges"), ("", "pods"), ("apps", "replicasets"),
    ("", "endpoints"), ("", "services"),
)

#: Kinds skipped on restore when a controller owns them (the owner recreates them).
OWNED_SKIP = frozenset({("", "pods"), ("apps", "replicasets"), ("", "endpoints"),
                        ("discovery.k8s.io", "endpointslices"),
                        ("apps", "controllerrevisions")})


def _resource_matches(patterns: Iterable[str], group: str, plural: str) -> bool:
    for p in patterns:
        p = p.strip().lower()
        if p == "*" or p == plural or p == (f"{plural}.{group}" if group else plural):
            return True
    return False


@dataclass
class ItemFilter:
    """Which items a Backup/Restore spec selects (namespaces, resources, cluster scope).

    Example:
        >>> f = ItemFilter.from_spec({"includedNamespaces": ["*"], "excludedNamespaces": ["kube-system"]})
        >>> f.includes("", "configmaps", True, "default"), f.includes("", "configmaps", True, "kube-system")
        (True, False)
        >>> f.includes("", "nodes", False, "")
        False
    """

    included_ns: list[str] = field(default_factory=lambda: ["*"])
    excluded_ns: list[str] = field(default_factory=list)
    included_res: list[str] = field(default_factory=lambda: ["*"])
    excluded_res: list[str] = field(default_factory=list)
    cluster: bool | None = None
    labels: Any = None

    @classmethod
    def from_spec(cls, spec: dict) -> "ItemFilter":
        sel = spec.get("labelSelector")
        return cls(included_ns=list(spec.get("includedNamespaces") or ["*"]),
                   excluded_ns=list(spec.get("excludedNamespaces") or []),
                   included_res=list(spec.get("includedResources") or ["*"]),
                   excluded_res=list(spec.get("excludedResources") or []),
                   cluster=spec.get("includeClusterResources"),
                   labels=from_label_selector(sel) if isinstance(sel, dict) else None)

    @property
    def all_namespaces(self) -> bool:
        return "*" in self.included_ns and not self.excluded_ns

    def namespace_ok(self, ns: str) -> bool:
        if ns in self.excluded_ns:
            return False
        return "*" in self.included_ns or ns in self.included_ns

    def includes(self, group: str, plural: str, namespaced: bool, ns: str,
                 obj: dict | None = None) -> bool:
        if (group, plural) in VELERO_EXCLUDED:
            return False
        if _resource_matches(self.excluded_res, group, plural):
            return False
        if not _resource_matches(self.included_res, group, plural):
            return False
        if self.labels is not None and obj is not None and not self.labels.matches_object(obj):
            return False
        if namespaced:
            return self.namespace_ok(ns)
        if (group, plural) == ("", "namespaces"):
            # The Namespace objects of included namespaces always go along.
            return obj is None or self.namespace_ok(_meta(obj).get("name") or "")
        if self.cluster is None:
            return self.all_namespaces
        return bool(self.cluster)


@dataclass
class BackupItem:
    group: str
    plural: str
    namespaced: bool
    obj: dict

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.plural, _meta(self.obj).get("namespace") or "",
                _meta(self.obj).get("name") or "")


@dataclass
class RestoreDecision:
    """What a restore does with one backed-up item.

    action: ``create`` | ``update`` | ``skip-owned`` | ``skip-identical`` | ``skip-exists``
    (the last one counts a warning).
    """

    action: str
    reason: str

    @property
    def restores(self) -> bool:
        return self.action in ("create", "update")


def restore_decision(group: str, plural: str, backed: dict, live: dict | None,
                     policy: str) -> RestoreDecision:
    """Decide one item of a restore (pure).

    Example:
        >>> cm = {"metadata": {"name": "a", "namespace": "d"}, "data": {"k": "1"}}
        >>> restore_decision("", "configmaps", cm, None, "none").action
        'create'
        >>> restore_decision("", "configmaps", cm, dict(cm, data={"k": "2"}), "none").action
        'skip-exists'
        >>> restore_decision("", "configmaps", cm, dict(cm, data={"k": "2"}), "update").action
        'update'
    """
    owner = next((r for r in _meta(backed).get("ownerReferences") or () if r.get("controller")), None)
    if (group, plural) in OWNED_SKIP and owner is not None:
        return RestoreDecision("skip-owned", f"owned by {owner.get('kind')} {owner.get('name')}")
    if live is None:
        return RestoreDecision("create", "not in the cluster")
    want, have = _content(clean_for_restore(group, plural, backed)), _content(live)
    # Restore labels are not a difference worth a warning.
    for c in (want, have):
        c["labels"] = {k: v for k, v in c["labels"].items() if not k.startswith("velero.io/")}
    if plural == "services":
        for c in (want, have):
            c["spec"] = _service_spec_portable(c.get("spec") or {})
    if want == have:
        return RestoreDecision("skip-identical", "already exists, identical")
    if policy == "update":
        return RestoreDecision("update", "exists and differs; existingResourcePolicy: update")
    return RestoreDecision("skip-exists", "already exists and differs from the backup "
                                          "(not overwritten: existingResourcePolicy is none)")


def _service_spec_portable(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    if spec.get("clusterIP") != "None":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    spec.pop("healthCheckNodePort", None)
    for p in spec.get("ports") or ():
        p.pop("nodePort", None)
    return spec


def clean_for_restore(group: str, plural: str, obj: dict) -> dict:
    """The object as Velero creates it: no server fields; Services without clusterIP
    (unless headless) and nodePorts, so the new cluster allocates them."""
    out = _strip_server_fields(obj)
    if (group, plural) == ("", "services"):
        out["spec"] = _service_spec_portable(out.get("spec") or {})
    if (group, plural) == ("", "pods"):
        # The scheduler places a restored pod again (its old node may be gone).
        (out.get("spec") or {}).pop("nodeName", None)
    return out


def restore_order(items: list[BackupItem]) -> list[BackupItem]:
    """Velero's priority order, then the remaining resources by name; cluster-scoped
    before namespaced within a resource, then by namespace/name."""
    prio = {k: i for i, k in enumerate(RESTORE_PRIORITY)}
    return sorted(items, key=lambda it: (prio.get((it.group, it.plural), len(prio)),
                                         it.plural, it.group, it.key[2], it.key[3]))


class VeleroModel:
    """Backups and restores (see the module docstring)."""

    step_seconds = 1.0        # cluster seconds between progress updates
    steps = 3

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.store = rt.store
        self.contents: dict[tuple[str, str], list[BackupItem]] = {}
        self._tasks: dict[tuple[str, str, str], asyncio.Task] = {}

    # -- events ---------------------------------------------------------------------
    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        key = rtype.key
        if key not in ((VELERO, "backups"), (VELERO, "restores")) or etype == "DELETED":
            if etype == "DELETED" and key == (VELERO, "backups"):
                self.contents.pop((_meta(obj).get("namespace"), _meta(obj).get("name")), None)
            return
        phase = (obj.get("status") or {}).get("phase") or "New"
        if phase != "New":
            return
        tkey = (key[1], _meta(obj).get("namespace") or "", _meta(obj).get("name") or "")
        if tkey in self._tasks:
            return
        run = self._backup if key[1] == "backups" else self._restore
        task = asyncio.get_running_loop().create_task(self._guarded(run, key[1], *tkey[1:]),
                                                      name=f"velero-{tkey[0]}-{tkey[2]}")
        self._tasks[tkey] = task
        task.add_done_callback(lambda t, k=tkey: self._tasks.pop(k, None))

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
        for t in list(self._tasks.values()):
            t.cancel()
        for t in list(self._tasks.values()):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

    def busy(self) -> bool:
        return bool(self._tasks)

    # -- server -----------------------------------------------------------------------
    def server_ready(self, ns: str) -> tuple[bool, str]:
        pods = _rtype(self.store, "", "pods")
        seen = []
        for p in self.store.iter_objects(pods, ns):
            labels = _meta(p).get("labels") or {}
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
        rtype = _rtype(self.store, VELERO, plural)
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
        for t in list(_types_by_key(self.store).values()):
            if t.key in VELERO_EXCLUDED:
                continue
            for obj in self.store.iter_objects(t):
                n += 1
                if n % batch == 0:
                    await asyncio.sleep(0)
                ns = _meta(obj).get("namespace") or ""
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
        btype = _rtype(self.store, VELERO, "backups")
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
            bsl = self.store.peek(_rtype(self.store, VELERO, "backupstoragelocations"), ns, location)
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
        bsl = _rtype(self.store, VELERO, "backupstoragelocations")
        if bsl is None:
            return None
        for o in self.store.iter_objects(bsl, ns):
            if (o.get("spec") or {}).get("default"):
                return _meta(o).get("name")
        return None

    def _location_exists(self, ns: str, name: str) -> bool:
        bsl = _rtype(self.store, VELERO, "backupstoragelocations")
        return bsl is not None and self.store.peek(bsl, ns, name) is not None

    def _fail_pod_volumes(self, ns: str, backup: str, location: str) -> tuple[int, int]:
        """Record the failed pod volume backups of a PartiallyFailed backup (the errors a
        person reads in ``velero backup describe --details``). Returns (errors, warnings)."""
        pvb = _rtype(self.store, VELERO, "podvolumebackups")
        pods = _rtype(self.store, "", "pods")
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
                pm = _meta(p)
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
        rtype = _rtype(self.store, VELERO, "restores")
        obj = self.store.try_get(rtype, ns, name)
        if obj is None or ((obj.get("status") or {}).get("phase") or "New") != "New":
            return
        spec = obj.get("spec") or {}
        backup_name = spec.get("backupName") or ""
        policy = spec.get("existingResourcePolicy") or "none"
        problems = []
        btype = _rtype(self.store, VELERO, "backups")
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
        rtype = _rtype(self.store, item.group, item.plural)
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
                want = _strip_server_fields(item.obj)

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


# ============================================================================ Argo CD
ResKey = tuple[str, str, str, str]          # (group, kind, namespace, name)
AppKey = tuple[str, str]                    # (namespace, name)
CHILD_POLICY_POINTERS = {("argoproj.io", "Application"): "/spec/syncPolicy",
                         ("argoproj.io", "ApplicationSet"): "/spec/template/spec/syncPolicy"}


def desired_of(obj: dict) -> dict:
    """The "git" copy of a live object: labels and every top-level field but status and
    metadata (annotations left out: controllers write them), without what the server
    allocates (a Service's cluster IPs and node ports, a PVC's bound volume), which git
    never holds."""
    md = _meta(obj)
    out = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
           "metadata": {"name": md.get("name")}}
    if md.get("namespace"):
        out["metadata"]["namespace"] = md["namespace"]
    if md.get("labels"):
        out["metadata"]["labels"] = json_copy(md["labels"])
    for k, v in obj.items():
        if k not in ("apiVersion", "kind", "metadata", "status"):
            out[k] = json_copy(v)
    spec = out.get("spec")
    if isinstance(spec, dict):
        if obj.get("kind") == "Service":
            out["spec"] = _service_spec_portable(spec)
            for k in ("ipFamilies", "ipFamilyPolicy"):
                out["spec"].pop(k, None)
        elif obj.get("kind") == "PersistentVolumeClaim":
            spec.pop("volumeName", None)
    return out


def _subset(want: Any, have: Any) -> bool:
    """Every field of ``want`` is in ``have`` with the same value (lists: same length,
    element-wise subset)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(_subset(a, b) for a, b in zip(want, have))
    return want == have


def _pointer_parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/") if p]


def _remove_pointer(obj: dict, pointer: str) -> None:
    parts = _pointer_parts(pointer)
    node: Any = obj
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return
        node = node[p]
    if isinstance(node, dict) and parts:
        node.pop(parts[-1], None)


def _get_pointer(obj: dict, pointer: str) -> tuple[bool, Any]:
    node: Any = obj
    for p in _pointer_parts(pointer):
        if not isinstance(node, dict) or p not in node:
            return False, None
        node = node[p]
    return True, node


def _set_pointer(obj: dict, pointer: str, value: Any) -> None:
    parts = _pointer_parts(pointer)
    node = obj
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)


def drift(want: dict, live: dict | None, ignore: Iterable[str] = ()) -> bool:
    """Whether ``live`` drifted from ``want`` (pure).

    Example:
        >>> want = desired_of({"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"replicas": 2}})
        >>> drift(want, {"kind": "Deployment", "metadata": {"name": "a", "annotations": {"x": "y"}},
        ...              "spec": {"replicas": 2, "paused": False}})
        False
        >>> drift(want, {"metadata": {"name": "a"}, "spec": {"replicas": 0}})
        True
        >>> drift(want, None)
        True
    """
    if live is None:
        return True
    want = copy.deepcopy(want)
    want.pop("apiVersion", None)
    want.pop("kind", None)
    for p in ignore:
        _remove_pointer(want, p)
    return not _subset(want, live)


def apply_desired(want: dict, live: dict, ignore: Iterable[str] = ()) -> dict:
    """``live`` with ``want``'s fields put back (dicts merged, other values replaced),
    keeping the live value at every ignored pointer."""
    def merge(dst: Any, src: Any) -> Any:
        if isinstance(src, dict) and isinstance(dst, dict):
            for k, v in src.items():
                dst[k] = merge(dst.get(k), v)
            return dst
        return copy.deepcopy(src)
    out = copy.deepcopy(live)
    w = copy.deepcopy(want)
    w.pop("apiVersion", None)
    w.pop("kind", None)
    for p in ignore:
        _remove_pointer(w, p)
    merge(out, w)
    return out


def _automated(app: dict) -> dict | None:
    auto = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
    if auto is None or auto.get("enabled", True) is False:
        return None
    return auto


def self_heals(app: dict) -> bool:
    auto = _automated(app)
    return bool(auto and auto.get("selfHeal"))


def _ignored_pointers(app: dict, rk: ResKey, parent_reverts: bool) -> list[str]:
    out = []
    for d in (app.get("spec") or {}).get("ignoreDifferences") or ():
        if (d.get("group") or "") != rk[0] or d.get("kind") != rk[1]:
            continue
        if d.get("name") and d["name"] != rk[3]:
            continue
        if d.get("namespace") and d["namespace"] != rk[2]:
            continue
        out.extend(d.get("jsonPointers") or ())
    implicit = CHILD_POLICY_POINTERS.get((rk[0], rk[1]))
    if implicit and not parent_reverts:
        out.append(implicit)
    return out


HEALTH_ORDER = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")


def resource_health(kind: str, obj: dict | None) -> tuple[str, str]:
    """Argo CD's built-in health of one live object: (status, message).

    Example:
        >>> resource_health("Deployment", {"spec": {"replicas": 2}, "status": {"updatedReplicas": 2,
        ...                 "availableReplicas": 1, "replicas": 2}})[0]
        'Progressing'
        >>> resource_health("Service", None)[0]
        'Missing'
    """
    if obj is None:
        return "Missing", ""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Deployment":
        if spec.get("paused"):
            return "Suspended", "Deployment is paused"
        want = spec.get("replicas", 1)
        if st.get("updatedReplicas", 0) < want:
            return "Progressing", (f"Waiting for rollout to finish: {st.get('updatedReplicas', 0)} out "
                                   f"of {want} new replicas have been updated...")
        if st.get("availableReplicas", 0) < st.get("updatedReplicas", 0):
            return "Progressing", (f"Waiting for rollout to finish: {st.get('availableReplicas', 0)} of "
                                   f"{st.get('updatedReplicas', 0)} updated replicas are available...")
    elif kind == "StatefulSet":
        want = spec.get("replicas", 1)
        if st.get("readyReplicas", 0) < want:
            return "Progressing", f"Waiting for {want - st.get('readyReplicas', 0)} pods to be ready..."
    elif kind == "DaemonSet":
        if st.get("numberAvailable", 0) < st.get("desiredNumberScheduled", 0):
            return "Progressing", (f"Waiting for daemon set rollout to finish: {st.get('numberAvailable', 0)} "
                                   f"of {st.get('desiredNumberScheduled', 0)} updated pods are available...")
    elif kind == "PersistentVolumeClaim":
        if st.get("phase") == "Pending":
            return "Progressing", "PVC is pending"
        if st.get("phase") == "Lost":
            return "Degraded", "PVC is lost"
    elif kind in ("Service", "Ingress"):
        if (kind == "Ingress" or spec.get("type") == "LoadBalancer") and \
                not ((st.get("loadBalancer") or {}).get("ingress")):
            return "Progressing", "Waiting for the load balancer address"
    elif kind == "Application":
        h = (st.get("health") or {}).get("status")
        if h in HEALTH_ORDER:
            return h, (st.get("health") or {}).get("message", "")
    return "Healthy", ""


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
        return _rtype(self.store, ARGO, "applications")

    def _live(self, rk: ResKey, version: str | None = None) -> dict | None:
        group, kind, ns, name = rk
        t = None
        for rt_ in self.store.resource_types():
            if rt_.group == group and rt_.kind == kind:
                t = rt_
                break
        if t is None:
            return None
        return self.store.peek(t, ns if t.namespaced else None, name)

    def index_app(self, app: dict) -> None:
        """Take the desired state of the app's resources not known yet."""
        ak = (_meta(app).get("namespace") or "", _meta(app).get("name") or "")
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
            self.enqueue((_meta(app).get("namespace") or "", _meta(app).get("name") or ""))

    def sync_count(self, namespace: str, name: str) -> int:
        return self.syncs.get((namespace, name), 0)

    # -- events ------------------------------------------------------------------------
    def on_event(self, etype: str, kind: Any, obj: dict, old: dict | None) -> None:  # type: ignore[override]
        md = _meta(obj)
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
        pods = _rtype(self.store, "", "pods")
        found = False
        for p in self.store.iter_objects(pods, "argocd"):
            if (_meta(p).get("labels") or {}).get("app.kubernetes.io/name") == "argocd-application-controller":
                found = True
                if pod_reachable(self.rt, p)[0]:
                    return True
        return not found   # a fixture without Argo CD pods: the controller is assumed up

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
            if drift(want, self._live(rk), _ignored_pointers(app, rk, reverts)):
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
        nst = _rtype(self.store, "", "namespaces")
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
            ignore = _ignored_pointers(app, rk, reverts)
            rtype = next((t for t in self.store.resource_types()
                          if t.group == rk[0] and t.kind == rk[1]), None)
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


def render_template(value: Any, params: dict[str, Any]) -> Any:
    """Fill an ApplicationSet template with one generator element: ``{{.key}}`` (Go
    templates) and ``{{key}}`` (fasttemplate) placeholders in every string.

    >>> render_template({"name": "{{.name}}-app", "n": ["{{ path }}"]}, {"name": "a", "path": "p"})
    {'name': 'a-app', 'n': ['p']}
    """
    if isinstance(value, dict):
        return {k: render_template(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [render_template(v, params) for v in value]
    if isinstance(value, str) and "{{" in value:
        def sub(m: re.Match) -> str:
            key = m.group(1)
            return str(params.get(key, m.group(0)))
        return re.sub(r"\{\{\s*\.?([A-Za-z0-9_.-]+)\s*\}\}", sub, value)
    return value


def generated_apps(appset: dict) -> dict[str, dict]:
    """Application name -> the spec the ApplicationSet's list generators render (other
    generators are not modelled: they render nothing here)."""
    spec = appset.get("spec") or {}
    tpl = spec.get("template") or {}
    out = {}
    for gen in spec.get("generators") or ():
        for el in ((gen.get("list") or {}).get("elements") or ()):
            if not isinstance(el, dict):
                continue
            name = render_template((tpl.get("metadata") or {}).get("name") or "", el)
            if name and "{{" not in name:
                out[name] = render_template(copy.deepcopy(tpl.get("spec") or {}), el)
    return out


class ApplicationSetModel(Controller):
    """The ApplicationSet controller: keeps each generated Application's spec equal to
    what the template renders (``applicationsSync: create-only|create-delete`` and
    ``ignoreApplicationDifferences`` jsonPointers honoured). This is why pausing a
    generated app without pausing its ApplicationSet's template does not stick."""

    delay_seconds = 1.0

    def __init__(self, rt: Any) -> None:
        super().__init__("applicationsets", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.regenerated = 0

    def on_event(self, etype: str, kind: Any, obj: dict, old: dict | None) -> None:  # type: ignore[override]
        md = _meta(obj)
        if kind.key == (ARGO, "applicationsets") and etype != "DELETED":
            self.requeue_after((md.get("namespace") or "", md.get("name") or ""), self.delay_seconds)
        elif kind.key == (ARGO, "applications") and etype != "DELETED":
            for ref in md.get("ownerReferences") or ():
                if ref.get("kind") == "ApplicationSet":
                    self.requeue_after((md.get("namespace") or "", ref.get("name") or ""),
                                       self.delay_seconds)

    def controller_ready(self) -> bool:
        pods = _rtype(self.store, "", "pods")
        found = False
        for p in self.store.iter_objects(pods, "argocd"):
            if (_meta(p).get("labels") or {}).get("app.kubernetes.io/name") == "argocd-applicationset-controller":
                found = True
                if pod_reachable(self.rt, p)[0]:
                    return True
        return not found

    def reconcile(self, key: Any) -> None:  # type: ignore[override]
        st = _rtype(self.store, ARGO, "applicationsets")
        at = _rtype(self.store, ARGO, "applications")
        appset = self.store.peek(st, key[0], key[1]) if st else None
        if appset is None or at is None:
            return
        policy = ((appset.get("spec") or {}).get("syncPolicy") or {}).get("applicationsSync")
        if policy in ("create-only", "create-delete"):
            return
        if not self.controller_ready():
            self.requeue_after(key, 2.0)
            return
        ignore = [p for d in (appset.get("spec") or {}).get("ignoreApplicationDifferences") or ()
                  if not d.get("name") for p in d.get("jsonPointers") or ()]
        for name, want in generated_apps(appset).items():
            app = self.store.peek(at, key[0], name)
            if app is None or not any(r.get("kind") == "ApplicationSet" and r.get("name") == key[1]
                                      for r in _meta(app).get("ownerReferences") or ()):
                continue
            new_spec = copy.deepcopy(want)
            for p in ignore:
                if p.startswith("/spec/"):
                    found, live_val = _get_pointer(app, p)
                    sub = "/" + p[len("/spec/"):]
                    if found:
                        _set_pointer(new_spec, sub, live_val)
                    else:
                        _remove_pointer(new_spec, sub)
            if (app.get("spec") or {}) == new_spec:
                continue
            self.store.mutate(at, key[0], name, lambda o, s=new_spec: o.__setitem__("spec", s))
            self.regenerated += 1
            log.info("argocd: ApplicationSet %s/%s regenerated Application %s", key[0], key[1], name)


# ============================================================================ MetalLB
class PoolError(ValueError):
    """An IPAddressPool address entry that cannot be parsed."""


def parse_pool_addresses(entries: Iterable[str], *, avoid_buggy: bool = False) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of an IPAddressPool's ``spec.addresses`` in order (CIDR or ``a-b``).

    Example:
        >>> [str(a) for a in parse_pool_addresses(["10.0.0.200-10.0.0.202", "10.0.1.0/31"])]
        ['10.0.0.200', '10.0.0.201', '10.0.0.202', '10.0.1.0', '10.0.1.1']
        >>> len(parse_pool_addresses(["10.0.2.0/24"], avoid_buggy=True))
        254
    """
    out: list = []
    seen = set()
    for raw in entries:
        text = str(raw).strip()
        try:
            if "-" in text:
                a, b = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
                if a.version != b.version or int(b) < int(a):
                    raise PoolError(f"invalid range {text!r}")
                if int(b) - int(a) > 1 << 20:
                    raise PoolError(f"range {text!r} is too large for the twin")
                addrs = [ipaddress.ip_address(i) for i in range(int(a), int(b) + 1)]
            else:
                net = ipaddress.ip_network(text, strict=False)
                if net.num_addresses > 1 << 20:
                    raise PoolError(f"CIDR {text!r} is too large for the twin")
                addrs = list(net)   # MetalLB hands out network and broadcast addresses too
        except ValueError as e:
            if isinstance(e, PoolError):
                raise
            raise PoolError(f"invalid address entry {text!r}: {e}") from None
        for ad in addrs:
            if avoid_buggy and ad.version == 4 and str(ad).split(".")[-1] in ("0", "255"):
                continue
            if ad not in seen:
                seen.add(ad)
                out.append(ad)
    return out


@dataclass
class Pool:
    name: str
    addresses: list
    auto_assign: bool = True


class IPAM:
    """MetalLB's allocator: pools, owner per IP, stable preference for a previous IP.

    Example:
        >>> ipam = IPAM([Pool("default", parse_pool_addresses(["10.0.0.200-10.0.0.202"]))])
        >>> ipam.reserve("10.0.0.200", ("ingress-nginx", "ingress-nginx-controller"))
        'default'
        >>> ipam.allocate(("demo", "web"))
        ('10.0.0.201', 'default')
        >>> ipam.allocate(("demo", "other"), requested=["10.0.0.201"])
        Traceback (most recent call last):
        ...
        twin.controllers.addons.PoolError: 10.0.0.201 is already allocated to demo/web
    """

    def __init__(self, pools: list[Pool]) -> None:
        self.pools = pools
        self.owner: dict[str, tuple[str, str]] = {}
        self.previous: dict[tuple[str, str], str] = {}

    def pool_of(self, ip: str) -> Pool | None:
        addr = ipaddress.ip_address(ip)
        return next((p for p in self.pools if addr in p.addresses), None)

    def reserve(self, ip: str, svc: tuple[str, str]) -> str | None:
        """Register an IP already in a Service's status; returns its pool name."""
        pool = self.pool_of(ip)
        if pool is None:
            return None
        self.owner[ip] = svc
        self.previous[svc] = ip
        return pool.name

    def held_by(self, svc: tuple[str, str]) -> str | None:
        return next((ip for ip, s in self.owner.items() if s == svc), None)

    def release(self, svc: tuple[str, str]) -> None:
        for ip in [ip for ip, s in self.owner.items() if s == svc]:
            del self.owner[ip]

    def allocate(self, svc: tuple[str, str], *, requested: list[str] | None = None,
                 pool_name: str | None = None) -> tuple[str, str]:
        """An IP for ``svc``: a requested one, else its previous one when free, else the
        first free address of an auto-assign pool. Raises PoolError."""
        held = self.held_by(svc)
        pools = [p for p in self.pools if pool_name in (None, p.name)]
        if pool_name and not pools:
            raise PoolError(f"unknown pool {pool_name!r}")
        if requested:
            for ip in requested:
                pool = self.pool_of(ip)
                if pool is None or pool not in pools:
                    raise PoolError(f"{ip} is not allowed in config")
                other = self.owner.get(ip)
                if other is not None and other != svc:
                    raise PoolError(f"{ip} is already allocated to {other[0]}/{other[1]}")
            self.release(svc)
            for ip in requested:
                self.owner[ip] = svc
            self.previous[svc] = requested[0]
            return requested[0], self.pool_of(requested[0]).name  # type: ignore[union-attr]
        if held is not None and any(self.pool_of(held) is p for p in pools):
            return held, self.pool_of(held).name  # type: ignore[union-attr]
        prev = self.previous.get(svc)
        if prev and prev not in self.owner:
            pool = self.pool_of(prev)
            if pool is not None and pool in pools:
                self.release(svc)
                self.owner[prev] = svc
                return prev, pool.name
        for pool in pools:
            if not pool.auto_assign and not pool_name:
                continue
            for addr in pool.addresses:
                ip = str(addr)
                if ip not in self.owner:
                    self.release(svc)
                    self.owner[ip] = svc
                    self.previous[svc] = ip
                    return ip, pool.name
        raise PoolError("no available IPs")

    def counts(self, pool: Pool) -> tuple[int, int]:
        used = sum(1 for a in pool.addresses if str(a) in self.owner and a.version == 4)
        total = sum(1 for a in pool.addresses if a.version == 4)
        return used, total - used


def requested_ips(svc: dict) -> list[str]:
    ann = _meta(svc).get("annotations") or {}
    for k in LB_IPS_ANNOTATIONS:
        if ann.get(k):
            return [x.strip() for x in ann[k].split(",") if x.strip()]
    ip = (svc.get("spec") or {}).get("loadBalancerIP")
    return [ip] if ip else []


def lb_ips(svc: dict) -> list[str]:
    return [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
            if i.get("ip")]


def is_metallb_service(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") in (None, "", "metallb")


class MetalLBModel(Controller):
    """LoadBalancer IPs from IPAddressPools (see the module docstring)."""

    namespace = "metallb-system"

    def __init__(self, rt: Any) -> None:
        super().__init__("metallb", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.ipam = IPAM([])
        self.ready_uids: set[str] = set()     # controller pods Ready+reachable now
        self.seen_uids: set[str] = set()      # every controller pod uid ever seen Ready
        self.restarts = 0
        self.stuck: dict[tuple[str, str], set[str]] = {}   # svc -> controller uids when stuck
        self._sticky_fired = False
        self._clearing: set[tuple[str, str]] = set()
        self._svc_type = _rtype(self.store, "", "services")

    # -- pools ----------------------------------------------------------------------------
    def load_pools(self) -> None:
        t = _rtype(self.store, METALLB, "ipaddresspools")
        pools = []
        if t is not None:
            for o in sorted(self.store.iter_objects(t, self.namespace), key=lambda o: _meta(o).get("name")):
                spec = o.get("spec") or {}
                try:
                    addrs = parse_pool_addresses(spec.get("addresses") or (),
                                                 avoid_buggy=bool(spec.get("avoidBuggyIPs")))
                except PoolError as e:
                    log.warning("metallb: pool %s ignored: %s", _meta(o).get("name"), e)
                    continue
                pools.append(Pool(_meta(o).get("name"), addrs, spec.get("autoAssign", True) is not False))
        owner, previous = self.ipam.owner, self.ipam.previous
        self.ipam = IPAM(pools)
        self.ipam.previous = previous
        for ip, svc in owner.items():
            if self.ipam.pool_of(ip) is not None:
                self.ipam.owner[ip] = svc

    def load(self) -> None:
        self.load_pools()
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc):
                key = (_meta(svc).get("namespace"), _meta(svc).get("name"))
                for ip in lb_ips(svc):
                    self.ipam.reserve(ip, key)
        self.ready_uids = self._ready_controller_uids()
        self.seen_uids |= self.ready_uids
        self._write_pool_status()
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc) and not lb_ips(svc):
                self.enqueue((_meta(svc).get("namespace"), _meta(svc).get("name")))

    # -- controller pod -------------------------------------------------------------------
    def _ready_controller_uids(self) -> set[str]:
        pods = _rtype(self.store, "", "pods")
        out = set()
        for p in self.store.iter_objects(pods, self.namespace):
            labels = _meta(p).get("labels") or {}
            if labels.get("app.kubernetes.io/component") != "controller":
                continue
            if labels.get("app.kubernetes.io/name", "metallb") != "metallb":
                continue
            if pod_reachable(self.rt, p)[0]:
                out.add(_meta(p).get("uid"))
        return out

    def controller_ready(self) -> bool:
        return bool(self.ready_uids)

    def check_controller(self) -> None:
        """Notice controller pods becoming Ready (a restart when the uid is new)."""
        if not self.rt.faults.metallb_sticky:
            self._sticky_fired = False
        now = self._ready_controller_uids()
        new = now - self.seen_uids
        was_ready = bool(self.ready_uids)
        self.ready_uids = now
        if new and self.seen_uids:
            self.restarts += 1
            log.info("metallb: controller restarted (%s)", ", ".join(sorted(new)))
            if self.stuck:
                for svc in list(self.stuck):
                    if not (now - self.stuck[svc]):
                        continue
                    del self.stuck[svc]
                    self.enqueue(svc)
            elif self.rt.faults.metallb_sticky and not self._sticky_fired:
                self._sticky_fired = True
                self._drop_all(now)
        self.seen_uids |= now
        if now and (new or not was_ready):
            for svc in self.store.iter_objects(self._svc_type):
                if is_metallb_service(svc) and not lb_ips(svc):
                    self.enqueue((_meta(svc).get("namespace"), _meta(svc).get("name")))

    def _drop_all(self, uids: set[str]) -> None:
        """The fault: a controller restart loses every IP it manages."""
        for svc in list(self.store.iter_objects(self._svc_type)):
            key = (_meta(svc).get("namespace"), _meta(svc).get("name"))
            if not is_metallb_service(svc) or not lb_ips(svc):
                continue
            self.stuck[key] = set(uids)
            self.ipam.release(key)
            self._clear_status(key)
        log.info("metallb: fault metallb_sticky: %d service IP(s) dropped until the next "
                 "controller restart", len(self.stuck))
        self._write_pool_status()

    def _clear_status(self, key: tuple[str, str]) -> None:
        def fn(o: dict) -> None:
            o.setdefault("status", {})["loadBalancer"] = {}
            (o.get("metadata") or {}).get("annotations", {}).pop(POOL_ANNOTATION, None)
        self._clearing.add(key)
        try:
            self.store.mutate(self._svc_type, key[0], key[1], fn)
        finally:
            self._clearing.discard(key)

    # -- events ---------------------------------------------------------------------------
    def on_event(self, etype: str, kind: Any, obj: dict, old: dict | None) -> None:  # type: ignore[override]
        md = _meta(obj)
        if kind.key == (METALLB, "ipaddresspools"):
            self.load_pools()
            self._write_pool_status()
            for svc in self.store.iter_objects(self._svc_type):
                if is_metallb_service(svc) and not lb_ips(svc):
                    self.enqueue((_meta(svc).get("namespace"), _meta(svc).get("name")))
            return
        if kind.key == ("", "pods") and md.get("namespace") == self.namespace:
            self.enqueue("__controller__")
            return
        if kind.key != ("", "services"):
            return
        key = (md.get("namespace"), md.get("name"))
        if etype == "DELETED" or not is_metallb_service(obj):
            if self.ipam.held_by(key) is not None:
                self.ipam.release(key)
                self.ipam.previous.pop(key, None)
                self.stuck.pop(key, None)
                self._write_pool_status()
                self._enqueue_pending()     # a freed address may serve a waiting service
            if etype != "DELETED" and old is not None and is_metallb_service(old) and lb_ips(obj):
                self.enqueue(key)   # no longer a LoadBalancer: clear its status
            return
        if key in self._clearing:
            return
        if old is not None and lb_ips(old) and not lb_ips(obj):
            # Someone removed the IP (e.g. kubectl patch --subresource=status).
            self.ipam.release(key)
            if self.rt.faults.metallb_sticky:
                self.stuck[key] = set(self.ready_uids)
                log.info("metallb: %s/%s lost its IP; sticky until the controller restarts", *key)
                self._write_pool_status()
                return
        if not lb_ips(obj) or (requested_ips(obj) and set(requested_ips(obj)) != set(lb_ips(obj))):
            self.enqueue(key)

    # -- reconcile ------------------------------------------------------------------------
    def reconcile(self, key: Any) -> None:  # type: ignore[override]
        if key == "__controller__":
            self.check_controller()
            return
        svc = self.store.peek(self._svc_type, key[0], key[1])
        if svc is None:
            return
        if not is_metallb_service(svc):
            if lb_ips(svc) and (_meta(svc).get("annotations") or {}).get(POOL_ANNOTATION):
                self._clear_status(key)
            return
        if key in self.stuck or not self.controller_ready():
            return   # <pending>; the controller's return (or restart) requeues it
        req = requested_ips(svc)
        if lb_ips(svc) and (not req or set(req) == set(lb_ips(svc))):
            return
        pool_name = next((( _meta(svc).get("annotations") or {}).get(k) for k in POOL_REQUEST_ANNOTATIONS
                          if (_meta(svc).get("annotations") or {}).get(k)), None)
        try:
            ip, pool = self.ipam.allocate(key, requested=req or None, pool_name=pool_name)
        except PoolError as e:
            self._event(svc, "Warning", "AllocationFailed", f"Failed to allocate IP for "
                        f"\"{key[0]}/{key[1]}\": {e}")
            return

        def fn(o: dict) -> None:
            o.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
            o.setdefault("metadata", {}).setdefault("annotations", {})[POOL_ANNOTATION] = pool
        self.store.mutate(self._svc_type, key[0], key[1], fn)
        self._event(svc, "Normal", "IPAllocated", f"Assigned IP [\"{ip}\"]")
        self._write_pool_status()

    def _enqueue_pending(self) -> None:
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc) and not lb_ips(svc):
                self.enqueue((_meta(svc).get("namespace"), _meta(svc).get("name")))

    def _write_pool_status(self) -> None:
        t = _rtype(self.store, METALLB, "ipaddresspools")
        if t is None:
            return
        for pool in self.ipam.pools:
            used, free = self.ipam.counts(pool)
            if self.store.peek(t, self.namespace, pool.name) is None:
                continue

            def fn(o: dict, used: int = used, free: int = free) -> None:
                o["status"] = {"assignedIPv4": used, "assignedIPv6": 0,
                               "availableIPv4": free, "availableIPv6": 0}
            self.store.mutate(t, self.namespace, pool.name, fn, subresource="status")

    def _event(self, svc: dict, etype: str, reason: str, message: str) -> None:
        md = _meta(svc)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md.get('name')}.", "namespace": md.get("namespace")},
              "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": md.get("name"),
                                 "namespace": md.get("namespace"), "uid": md.get("uid")},
              "reason": reason, "message": message, "type": etype, "count": 1,
              "source": {"component": "metallb-controller"},
              "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
              "reportingComponent": "metallb-controller"}
        try:
            self.store.create(ev)
        except Exception:
            log.debug("metallb: event not recorded", exc_info=True)



# ============================================================================ operators
class OperatorPods:
    """Operators recreate the pods their custom resources own (Longhorn instance managers ...).

    A pod whose controlling owner is a custom resource (not a Deployment, ReplicaSet,
    DaemonSet, StatefulSet or Job) is recreated under the same name, on the same node,
    a couple of cluster seconds after it is deleted, as long as its owner still exists:
    that is what longhorn-manager does for an InstanceManager's pod. Without this, the
    runbook's "restart every unmanaged pod" step would lose those pods on the twin.
    """

    delay = 2.0   # cluster seconds an operator takes to notice and recreate

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._tasks: set[asyncio.Task] = set()

    def on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        if etype != "DELETED" or (rtype.group, rtype.plural) != ("", "pods"):
            return
        ref = next((r for r in _meta(obj).get("ownerReferences") or () if r.get("controller")), None)
        if ref is None:
            return
        group = ref.get("apiVersion", "").split("/")[0] if "/" in ref.get("apiVersion", "") else ""
        if group in ("", "apps", "batch"):
            return
        task = asyncio.get_running_loop().create_task(self._recreate(obj, ref))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recreate(self, pod: dict, ref: dict) -> None:
        await self.rt.clock.sleep(self.delay)
        store = self.rt.store
        md = _meta(pod)
        owner_t = store.lookup_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if owner_t is None or store.try_get(owner_t, md.get("namespace"), ref.get("name", "")) is None:
            return  # the owner is gone: the operator has nothing to recreate
        pod_t = store.lookup("", "v1", "pods")
        if store.try_get(pod_t, md.get("namespace"), md["name"]) is not None:
            return
        ann = {k: v for k, v in (md.get("annotations") or {}).items() if not k.startswith("twin.phase22.io/")}
        fresh = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                              "labels": dict(md.get("labels") or {}), "annotations": ann,
                              "ownerReferences": list(md.get("ownerReferences") or [])},
                 "spec": dict(pod.get("spec") or {})}
        try:
            store.create(fresh)
        except Exception:
            log.debug("operator pods: %s/%s not recreated", md.get("namespace"), md["name"], exc_info=True)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()


# ============================================================================ component
class AddonControllers:
    """Runtime component ``"addons"``: the Velero, Argo CD and MetalLB models.

    Example:
        >>> from twin.api import Twin, _build_components       # doctest: +SKIP
        >>> Twin(d, components=lambda rt: [*_build_components(rt), AddonControllers()])  # doctest: +SKIP
    """

    name = "addons"
    tick_seconds = 1.0   # cluster seconds between readiness re-checks

    def __init__(self) -> None:
        self.rt: Any = None
        self.velero: VeleroModel | None = None
        self.argocd: ArgoCDModel | None = None
        self.appsets: ApplicationSetModel | None = None
        self.metallb: MetalLBModel | None = None
        self.operators: OperatorPods | None = None
        self._unsubscribe: Any = None
        self._ticker: asyncio.Task | None = None

    async def start(self, rt: Any) -> None:
        self.rt = rt
        self.velero = VeleroModel(rt)
        self.argocd = ArgoCDModel(rt)
        self.appsets = ApplicationSetModel(rt)
        self.metallb = MetalLBModel(rt)
        self.operators = OperatorPods(rt)
        self.argocd.load()
        self.metallb.load()
        self._unsubscribe = rt.store.subscribe(self._on_event)
        self.argocd.start()
        self.appsets.start()
        self.metallb.start()
        # Backups/Restores created before we subscribed (e.g. in a fixture) get processed too.
        for plural in ("backups", "restores"):
            t = _rtype(rt.store, VELERO, plural)
            for o in list(rt.store.iter_objects(t)) if t else ():
                self.velero.on_event("ADDED", t, o, None)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="addons-tick")

    def _on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        for model in (self.velero, self.argocd, self.appsets, self.metallb, self.operators):
            if model is None:
                continue
            try:
                model.on_event(etype, rtype, obj, old)
            except Exception:
                log.exception("addons: %s failed on %s %s", type(model).__name__, etype,
                              _meta(obj).get("name"))

    async def _tick(self) -> None:
        # Reachability can change without a store event (the network model's CNI state),
        # so the controller pods are looked at again now and then.
        while True:
            await self.rt.clock.sleep(self.tick_seconds)
            if self.metallb is not None:
                self.metallb.enqueue("__controller__")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except (asyncio.CancelledError, Exception):
                pass
        if self._unsubscribe is not None:
            self._unsubscribe()
        for m in (self.argocd, self.appsets, self.metallb):
            if m is not None:
                await m.stop()
        if self.velero is not None:
            await self.velero.stop()
        if self.operators is not None:
            await self.operators.stop()

    def idle(self) -> bool:
        return all(m is None or m.idle() for m in (self.argocd, self.appsets)) and not (self.velero and self.velero.busy())

    def describe(self) -> str:
        pools = len(self.metallb.ipam.pools) if self.metallb else 0
        apps = len(self.argocd.desired) if self.argocd else 0
        return (f"velero, argocd ({apps} applications), metallb ({pools} pool(s), "
                f"controller {'Ready' if self.metallb and self.metallb.controller_ready() else 'not Ready'})")
