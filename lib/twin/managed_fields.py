"""Field ownership (``metadata.managedFields``) as a real API server keeps it: pure functions.

Every write names a field manager (``fieldManager``, else the client's User-Agent up to
its first ``/``). A write that is not an apply (create, update, patch) gives its manager
an ``Update`` entry owning the fields it set or changed, taken from whoever owned them.
An apply (:func:`twin.patch.server_side_apply`) owns what its configuration names; a
field another manager owns whose value the apply would change is a *conflict*: 409 with
one ``FieldManagerConflict`` cause per field, unless the apply is forced, which moves
the ownership to the applier. Fields that no longer exist leave every entry.

Field sets are FieldsV1 trees (``{"f:spec": {"f:replicas": {}}}``); lists of objects with
a ``name`` are keyed ``k:{"name":"x"}``, other lists are atomic leaves, as in
:mod:`twin.patch`.

Example:
    >>> old = {"data": {"a": "1"}}
    >>> changed_fields(old, {"data": {"a": "2", "b": "3"}})
    {'f:data': {'f:a': {}, 'f:b': {}}}
    >>> path_string(("f:spec", "f:containers", 'k:{"name":"web"}', "f:image"))
    '.spec.containers[name="web"].image'
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_SERVER_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "name",
                "namespace", "generateName"}


@dataclass(frozen=True)
class Conflict:
    """A field another manager owns whose value an apply would change."""

    manager: str
    operation: str
    api_version: str
    path: tuple[str, ...]

    @property
    def who(self) -> str:
        """The manager as a real server prints it in conflict messages."""
        if self.operation == "Update":
            return f'conflict with "{self.manager}" using {self.api_version}'
        return f'conflict with "{self.manager}"'


class ApplyConflict(Exception):
    """An apply changes fields other managers own (HTTP 409)."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        super().__init__(conflict_message(conflicts))

    def causes(self) -> list[dict]:
        """``details.causes`` of the 409 Status."""
        return [{"reason": "FieldManagerConflict", "message": c.who, "field": path_string(c.path)}
                for c in self.conflicts]


def conflict_message(conflicts: list[Conflict]) -> str:
    """The Status message a real server answers an apply conflict with."""
    if len(conflicts) == 1:
        c = conflicts[0]
        return f"Apply failed with 1 conflict: {c.who}: {path_string(c.path)}"
    by_who: dict[str, list[str]] = {}
    for c in conflicts:
        by_who.setdefault(c.who, []).append(path_string(c.path))
    lines = []
    for who in sorted(by_who):
        lines.append(f"{who}:")
        lines.extend(f"- {p}" for p in by_who[who])
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


def path_string(path: tuple[str, ...]) -> str:
    """A FieldsV1 path as structured-merge-diff prints it (``.spec.ports[port=80]``)."""
    out = []
    for part in path:
        if part.startswith("f:"):
            out.append("." + part[2:])
        elif part.startswith("k:"):
            try:
                ident = json.loads(part[2:])
            except ValueError:
                ident = {}
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in ident.items()) + "]")
        elif part.startswith("v:"):
            out.append(f"[={part[2:]}]")
    return "".join(out)


def manager_from_user_agent(user_agent: str) -> str:
    """The default field manager of a write without ``fieldManager``."""
    return (user_agent or "unknown").split("/")[0][:128] or "unknown"


# -- trees --------------------------------------------------------------------------------
def _named_list(items: Any) -> bool:
    return (isinstance(items, list) and bool(items)
            and all(isinstance(x, dict) and "name" in x for x in items))


def _item_key(item: dict) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def changed_fields(old: Any, new: Any, *, top: bool = True, in_meta: bool = False) -> dict:
    """The FieldsV1 tree of what ``new`` sets differently from ``old`` (status excluded)."""
    out: dict = {}
    if not isinstance(new, dict):
        return out
    old = old if isinstance(old, dict) else {}
    for key, value in new.items():
        if top and key in ("apiVersion", "kind", "status"):
            continue
        if in_meta and key in _SERVER_META:
            continue
        if value is None or (key in old and old[key] == value):
            continue
        prev = old.get(key)
        if isinstance(value, dict):
            sub = changed_fields(prev, value, top=False, in_meta=top and key == "metadata")
            if not sub and (isinstance(prev, dict) or (top and key == "metadata")):
                continue   # only unowned parts changed (metadata.resourceVersion ...)
            out["f:" + key] = sub
        elif _named_list(value):
            prev_items = {x.get("name"): x for x in prev} if _named_list(prev) else {}
            items = {}
            for item in value:
                before = prev_items.get(item["name"])
                if before == item:
                    continue
                sub = changed_fields(before, item, top=False)
                items[_item_key(item)] = {".": {}, **sub} if before is None else sub
            out["f:" + key] = items
        else:
            out["f:" + key] = {}
    return out


def leaf_paths(tree: dict, prefix: tuple = ()) -> set[tuple]:
    """Paths of the fields a tree owns as values (not only as parents)."""
    out: set[tuple] = set()
    for key, sub in tree.items():
        if key == ".":
            continue
        path = prefix + (key,)
        children = {k: v for k, v in sub.items() if k != "."} if isinstance(sub, dict) else {}
        if not children:
            out.add(path)
        else:
            out |= leaf_paths(children, path)
    return out


def all_paths(tree: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for key, sub in tree.items():
        if key == ".":
            continue
        path = prefix + (key,)
        out.add(path)
        if isinstance(sub, dict):
            out |= all_paths(sub, path)
    return out


def merge_trees(a: dict, b: dict) -> dict:
    out = json.loads(json.dumps(a))
    for k, v in b.items():
        out[k] = merge_trees(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def remove_paths(tree: dict, paths: set[tuple], prefix: tuple = ()) -> dict:
    """``tree`` without ``paths`` (and without the parents they leave empty)."""
    out: dict = {}
    for key, sub in tree.items():
        path = prefix + (key,)
        if key != "." and path in paths:
            continue
        if isinstance(sub, dict) and sub:
            kept = remove_paths(sub, paths, path)
            if kept:
                out[key] = kept
            continue
        out[key] = sub
    return out


def value_at(obj: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) of a FieldsV1 path in an object."""
    node = obj
    for part in path:
        if part.startswith("f:") and isinstance(node, dict):
            if part[2:] not in node:
                return False, None
            node = node[part[2:]]
        elif part.startswith("k:") and isinstance(node, list):
            try:
                ident = json.loads(part[2:])
            except ValueError:
                return False, None
            node = next((x for x in node if isinstance(x, dict)
                         and all(x.get(k) == v for k, v in ident.items())), None)
            if node is None:
                return False, None
        else:
            return False, None
    return True, node


def _prune_missing(tree: dict, obj: Any, prefix: tuple = ()) -> dict:
    out: dict = {}
    for key, sub in tree.items():
        if key == ".":
            out[key] = sub
            continue
        found, _v = value_at(obj, prefix + (key,))
        if not found:
            continue
        if isinstance(sub, dict) and sub:
            kept = _prune_missing(sub, obj, prefix + (key,))
            if not kept:
                continue   # everything below it is gone
            out[key] = kept
        else:
            out[key] = sub
    return out


# -- entries ------------------------------------------------------------------------------
def find_conflicts(live: dict, applied: dict, applied_fields: dict, entries: list[dict],
                   manager: str) -> list[Conflict]:
    """The fields of ``applied_fields`` that other managers own and the apply would change."""
    mine = leaf_paths(applied_fields)
    out = []
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Apply":
            continue
        owned = all_paths(e.get("fieldsV1") or {})
        for path in sorted(mine & owned):
            found, current = value_at(live, path)
            _f, wanted = value_at(applied, path)
            if isinstance(wanted, dict):
                continue   # a map is owned through its fields, never as a value
            if found and current != wanted:
                out.append(Conflict(e.get("manager", ""), e.get("operation", ""),
                                    e.get("apiVersion", ""), path))
    return out


def take_ownership(entries: list[dict], paths: set[tuple], keep: dict | None = None) -> list[dict]:
    """``entries`` with ``paths`` removed from every entry but ``keep``; empty entries go."""
    out = []
    for e in entries:
        if e is keep:
            out.append(e)
            continue
        fields = remove_paths(e.get("fieldsV1") or {}, paths)
        if fields:
            out.append({**e, "fieldsV1": fields})
    return out


def record_update(old: dict | None, new: dict, *, manager: str, api_version: str, now: str,
                  subresource: str | None = None) -> dict:
    """``new`` with its managedFields after a non-apply write by ``manager``.

    The manager's ``Update`` entry gains the fields the write changed; those fields leave
    the other entries; fields that no longer exist leave every entry.
    """
    meta = new.setdefault("metadata", {})
    prior = (old or {}).get("metadata", {}).get("managedFields") or []
    entries = [e for e in prior if isinstance(e, dict)]
    changed = changed_fields(old or {}, new) if subresource is None else \
        changed_fields({"x": (old or {}).get("status")}, {"x": new.get("status")}, top=False)
    if subresource is not None:
        changed = {"f:status": changed.get("f:x", {})} if changed else {}
    if changed:
        gone = leaf_paths(changed)
        entries = [{**e, "fieldsV1": remove_paths(e.get("fieldsV1") or {}, gone)} for e in entries]
    mine = next((e for e in entries if e.get("manager") == manager
                 and e.get("operation") == "Update" and e.get("subresource", "") == (subresource or "")
                 and e.get("apiVersion") == api_version), None)
    if changed:
        if mine is None:
            mine = {"manager": manager, "operation": "Update", "apiVersion": api_version,
                    "time": now, "fieldsType": "FieldsV1", "fieldsV1": {}}
            if subresource:
                mine["subresource"] = subresource
            entries.append(mine)
        mine["fieldsV1"] = merge_trees(mine.get("fieldsV1") or {}, changed)
        mine["time"] = now
    kept = []
    for e in entries:
        fields = _prune_missing(e.get("fieldsV1") or {}, new)
        if fields:
            kept.append({**e, "fieldsV1": fields})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)
    return new
