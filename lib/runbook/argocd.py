"""Argo CD auto-sync: record each Application's exact policy, pause, and restore it exactly.

The original procedure paused every app with ``automated: null`` and re-enabled all of
them with ``prune: true, selfHeal: true`` (defect 12): that throws away each app's own
``prune``/``selfHeal``/``allowEmpty``/``enabled`` and can turn pruning on for apps
that never had it. Here :func:`pause` writes every app's ``spec.syncPolicy.automated``
(exactly as found, or ``None`` for manual apps) into the journal BEFORE it changes
anything, and :func:`resume` puts back exactly that, for exactly those apps.

Two Argo CD features can undo a pause, and :func:`risks` reports them before anything
is paused:

- an app-of-apps parent with ``selfHeal`` reverts edits to its children's syncPolicy
  (argo-cd#3895): the parent is paused first;
- an ApplicationSet regenerates its apps' spec from its template: the ApplicationSet's
  template policy is paused and recorded too.

Example:
    >>> apps = argocd.list_apps(c)                    # doctest: +SKIP
    >>> argocd.pause(c, journal, execute=True)        # doctest: +SKIP
    >>> argocd.resume(c, journal, execute=True)       # doctest: +SKIP
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from .cluster import Cluster
from .errors import ArgoCDError

if TYPE_CHECKING:
    from .session import Session

JOURNAL_KEY = "argocd_previous_policies"
APPSET_KEY = "argocd_previous_appset_policies"


@dataclass
class App:
    """One Application and its exact auto-sync policy."""

    namespace: str
    name: str
    automated: dict | None           # spec.syncPolicy.automated exactly as found (None = manual)
    parent: str | None = None        # the app-of-apps parent managing this Application
    appset: str | None = None        # the ApplicationSet that generated it
    children: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def auto_sync(self) -> bool:
        return self.automated is not None and self.automated.get("enabled", True) is not False

    def policy_words(self) -> str:
        if self.automated is None:
            return "manual"
        flags = [k for k in ("prune", "selfHeal", "allowEmpty") if self.automated.get(k)]
        if self.automated.get("enabled") is False:
            flags.append("enabled=false")
        return "auto" + (f" ({', '.join(flags)})" if flags else "")


def _words(automated: dict | None) -> str:
    """An ``automated`` block in words (``auto (prune, selfHeal)``, ``manual``)."""
    return App("", "", automated).policy_words()


@dataclass
class Risk:
    app: str
    kind: str      # app-of-apps-parent | applicationset
    detail: str


def _automated(app: dict) -> dict | None:
    sp = (app.get("spec") or {}).get("syncPolicy") or {}
    auto = sp.get("automated")
    return copy.deepcopy(auto) if auto is not None else None


def _parent_of(app: dict) -> str | None:
    md = app.get("metadata") or {}
    tracking = (md.get("annotations") or {}).get("argocd.argoproj.io/tracking-id", "")
    if tracking and ":argoproj.io/Application:" in tracking:
        return tracking.split(":", 1)[0]
    return (md.get("labels") or {}).get("app.kubernetes.io/instance") or None


def list_apps(cluster: Cluster, namespace: str = "argocd") -> list[App]:
    """Every Application with its exact policy, parent and ApplicationSet (if any)."""
    raw = cluster.list("applications", namespace)
    names = {a["metadata"]["name"] for a in raw}
    apps = []
    for a in raw:
        md = a["metadata"]
        parent = _parent_of(a)
        if parent not in names or parent == md["name"]:
            parent = None
        appset = next((r["name"] for r in md.get("ownerReferences") or []
                       if r.get("kind") == "ApplicationSet"), None)
        apps.append(App(namespace=md.get("namespace", namespace), name=md["name"],
                        automated=_automated(a), parent=parent, appset=appset))
    by_name = {a.name: a for a in apps}
    for a in apps:
        if a.parent:
            by_name[a.parent].children.append(a.name)
    # a parent may also list its child Applications in status.resources
    for a in raw:
        for r in (a.get("status") or {}).get("resources") or []:
            if r.get("kind") == "Application" and r.get("name") in by_name:
                child = by_name[r["name"]]
                if child.parent is None and r["name"] != a["metadata"]["name"]:
                    child.parent = a["metadata"]["name"]
                    by_name[a["metadata"]["name"]].children.append(child.name)
    return sorted(apps, key=lambda x: x.key)


def table(apps: list[App]) -> pd.DataFrame:
    """A table of apps: policy in words, the exact automated dict, parent, ApplicationSet."""
    return pd.DataFrame([{"app": a.key, "policy": a.policy_words(), "automated": a.automated,
                          "parent": a.parent or "", "applicationset": a.appset or "",
                          "children": len(a.children)} for a in apps],
                        columns=["app", "policy", "automated", "parent", "applicationset", "children"])


def risks(apps: list[App]) -> list[Risk]:
    """What could revert a pause: self-healing app-of-apps parents and ApplicationSets."""
    out = []
    for a in apps:
        if a.children:
            heal = bool(a.automated and a.automated.get("selfHeal"))
            out.append(Risk(a.key, "app-of-apps-parent",
                            f"manages {len(a.children)} Application(s)"
                            + (" with selfHeal: it reverts edits to their syncPolicy" if heal else "")))
        if a.appset:
            out.append(Risk(a.key, "applicationset",
                            f"generated by ApplicationSet {a.appset}: its template rewrites the app's "
                            "syncPolicy unless the ApplicationSet is paused too"))
    return out


def _order(apps: list[App]) -> list[App]:
    """Parents first, so a parent cannot revert a child paused before it."""
    return sorted(apps, key=lambda a: (0 if a.children else 1, a.key))


def pause(cluster: Cluster, journal: Any, *, namespace: str = "argocd", execute: bool = False,
          pause_parents: bool = True) -> pd.DataFrame:
    """Disable auto-sync on every app that has it, recording the previous policies first.

    The journal keeps the FIRST recorded policy of each app (a rerun after a partial pause
    must not record "paused" as the original). Returns the plan (dry run) or what was done.

    Raises:
        ArgoCDError: a self-healing parent would revert the pause and ``pause_parents`` is off.
    """
    apps = list_apps(cluster, namespace)
    blocking = [a for a in apps if a.children and a.auto_sync and not pause_parents]
    if blocking:
        raise ArgoCDError(
            "app-of-apps parent(s) with auto-sync would revert the pause of their children: "
            + ", ".join(a.key for a in blocking),
            hint="set argocd.pause_parents: true in the params (the parent is paused first and "
                 "restored last), or pause them by hand and re-run")
    rows = []
    if execute:
        journal.setdefault(JOURNAL_KEY, {a.key: a.automated for a in apps})
        appsets = sorted({a.appset for a in apps if a.appset})
        recorded_sets = {}
        for s in appsets:
            obj = cluster.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applicationsets/{s}",
                                  ok_missing=True)
            if obj:
                tpl_sp = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("syncPolicy") or {}
                recorded_sets[s] = copy.deepcopy(tpl_sp.get("automated"))
        journal.setdefault(APPSET_KEY, recorded_sets)
        for s, auto in recorded_sets.items():
            if auto is not None:
                entry = journal.record("argocd-pause", f"pause ApplicationSet {namespace}/{s} template",
                                       before=auto)
                cluster.request("PATCH", f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applicationsets/{s}",
                                body={"spec": {"template": {"spec": {"syncPolicy": {"automated": None}}}}},
                                content_type="application/merge-patch+json")
                journal.complete(entry)
    for a in _order(apps):
        if a.automated is None:
            rows.append({"app": a.key, "before": a.policy_words(), "action": "none (manual already)"})
            continue
        if execute:
            entry = journal.record("argocd-pause", f"pause auto-sync of {a.key}", before=a.automated)
            cluster.patch("applications", a.name, {"spec": {"syncPolicy": {"automated": None}}}, a.namespace)
            journal.complete(entry)
        rows.append({"app": a.key, "before": a.policy_words(),
                     "action": "paused" if execute else "would pause (automated: null)"})
    return pd.DataFrame(rows, columns=["app", "before", "action"])


def _set_automated(cluster: Cluster, path: str, obj: dict, pointer: str, value: dict | None) -> None:
    """Set exactly ``value`` at ``pointer`` (JSON patch: no merge with what is there)."""
    node: Any = obj
    parts = pointer.strip("/").split("/")
    ops: list[dict] = []
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict) or node.get(p) is None:
            # build the missing parents in one "add"
            sub: Any = value
            for q in reversed(parts[i + 1:]):
                sub = {q: sub}
            if value is None:
                return  # nothing to remove
            ops.append({"op": "add", "path": "/" + "/".join(parts[:i + 1]), "value": sub})
            break
        node = node[p]
    else:
        last = parts[-1]
        if value is None:
            if isinstance(node, dict) and last in node:
                ops.append({"op": "remove", "path": pointer})
        else:
            ops.append({"op": "add", "path": pointer, "value": value})
    if ops:
        cluster.request("PATCH", path, body=ops, content_type="application/json-patch+json")


def resume(cluster: Cluster, journal: Any, *, namespace: str = "argocd",
           execute: bool = False) -> pd.DataFrame:
    """Restore every recorded app's policy exactly as it was, children first, parents last.

    Apps that were not recorded are not touched. Returns a table of what was (or would
    be) restored, with a ``matches`` column checked after the change.
    """
    recorded: dict[str, dict | None] = journal.get(JOURNAL_KEY) or {}
    if not recorded:
        return pd.DataFrame(columns=["app", "restore", "matches"])
    # ApplicationSet templates first: a set regenerates its apps from the template
    if execute:
        for aset, want in (journal.get(APPSET_KEY) or {}).items():
            path = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applicationsets/{aset}"
            obj = cluster.request("GET", path, ok_missing=True)
            if obj is None:
                continue
            cur = ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("syncPolicy") or {}).get("automated")
            if cur != want:
                entry = journal.record("argocd-resume", f"restore ApplicationSet {namespace}/{aset} template",
                                       after=want)
                _set_automated(cluster, path, obj, "/spec/template/spec/syncPolicy/automated", want)
                journal.complete(entry)
    apps = {a.key: a for a in list_apps(cluster, namespace)}
    order = sorted(recorded, key=lambda k: (1 if apps.get(k) and apps[k].children else 0, k))
    rows = []
    for key in order:
        want = recorded[key]
        ns, name = key.split("/", 1)
        path = f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/{name}"
        obj = cluster.request("GET", path, ok_missing=True)
        if obj is None:
            rows.append({"app": key, "restore": "app no longer exists", "matches": False})
            continue
        if _automated(obj) == want:
            rows.append({"app": key, "restore": "already as recorded", "matches": True})
            continue
        if execute:
            entry = journal.record("argocd-resume", f"restore auto-sync of {key}", before=_automated(obj),
                                   after=want)
            _set_automated(cluster, path, obj, "/spec/syncPolicy/automated", want)
            journal.complete(entry)
            now = _automated(cluster.request("GET", path))
            rows.append({"app": key, "restore": f"set back to {_words(want)}", "matches": now == want})
        else:
            rows.append({"app": key, "restore": f"would set back to {_words(want)}", "matches": False})
    return pd.DataFrame(rows, columns=["app", "restore", "matches"])


def drift(cluster: Cluster, journal: Any, namespace: str = "argocd") -> list[str]:
    """Apps whose current policy differs from the recorded original (empty = exact)."""
    recorded: dict[str, dict | None] = journal.get(JOURNAL_KEY) or {}
    current = {a.key: a.automated for a in list_apps(cluster, namespace)}
    return [f"{k}: recorded {v}, now {current.get(k, '<missing>')}" for k, v in recorded.items()
            if current.get(k, "<missing>") != v]


def resume_for_session(s: Session) -> tuple[pd.DataFrame, list[str]]:
    """Restore each Argo CD app's policy exactly from the session's journal.

    Returns ``(table with a matches column, drift)``; both empty when the cluster has no
    Argo CD. Used by 04-verify (after a successful migration) and 05-rollback.
    """
    ns = s.params.argocd.namespace
    if not s.cluster.has_resource("applications"):
        return pd.DataFrame(columns=["app", "restore", "matches"]), []
    table = resume(s.cluster, s.journal, namespace=ns, execute=s.execute)
    return table, drift(s.cluster, s.journal, ns)
