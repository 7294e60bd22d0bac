"""The four PATCH flavours of the Kubernetes API, as pure functions on JSON-like data.

None of these functions mutates its arguments; each returns a new object.

* :func:`merge_patch` — RFC 7386 (``application/merge-patch+json``): maps merge
  recursively, ``null`` deletes a key, anything else (lists included) replaces.
* :func:`json_patch` — RFC 6902 (``application/json-patch+json``): add, remove,
  replace, move, copy and test operations addressed by JSON pointers.
* :func:`strategic_merge_patch` — ``application/strategic-merge-patch+json``: like a
  merge patch, except that the lists Kubernetes declares with a merge key are merged
  item by item (containers, initContainers, env, volumes by ``name``; volumeMounts by
  ``mountPath``; container ports by ``containerPort`` and service ports by ``port``;
  conditions by ``type`` ...), ``finalizers`` are merged as a set, and the directives
  ``$patch: delete|replace|merge``, ``$retainKeys``, ``$deleteFromPrimitiveList/<key>``
  and ``$setElementOrder/<key>`` (accepted, order not enforced) are honoured.
* :func:`server_side_apply` — ``application/apply-patch+yaml`` as the twin models it:
  the applied configuration is merged into the live object (maps recursively, lists of
  maps that all carry ``name`` merged by name, other lists replaced), and the fields
  the manager set are recorded in ``metadata.managedFields`` (FieldsV1). A field that
  the same manager applied before and no longer applies is removed, unless another
  manager also claims it: this is what makes ``helm upgrade`` drop a removed env var.
  A field another manager owns whose value the apply changes is a conflict
  (:class:`twin.managed_fields.ApplyConflict`, HTTP 409) unless ``force``, which moves
  its ownership to the applier (:mod:`twin.managed_fields`).

Errors raise :class:`PatchError` (the API server answers 422, or 400 for a malformed
patch document: :attr:`PatchError.code`).

Example:
    >>> merge_patch({"spec": {"syncPolicy": {"automated": {}}, "a": 1}},
    ...             {"spec": {"syncPolicy": {"automated": None}}})
    {'spec': {'syncPolicy': {}, 'a': 1}}
"""
from __future__ import annotations

import copy
import json
from typing import Any

__all__ = [
    "PatchError", "merge_patch", "json_patch", "strategic_merge_patch", "server_side_apply",
    "fields_v1", "MERGE_KEYS",
]


class PatchError(ValueError):
    """A patch that cannot be applied. ``code`` is the HTTP status to answer."""

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


# -- RFC 7386 ---------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch.

    Example:
        >>> merge_patch({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"c": None, "d": 2}})
        {'a': [3], 'b': {'d': 2}}
    """
    if not isinstance(patch, dict):
        return _copy(patch)
    result = _copy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- RFC 6902 ---------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", code=400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    limit = len(container) if for_add else len(container) - 1
    if i > limit:
        raise PatchError(f"array index {i} out of range")
    return i


def _resolve(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for t in tokens:
        if isinstance(node, dict):
            if t not in node:
                raise PatchError(f"path element {t!r} not found")
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(node, t)]
        else:
            raise PatchError(f"cannot descend into a scalar at {t!r}")
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add to a scalar at {last!r}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path element {last!r} not found")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last))
    raise PatchError(f"cannot remove from a scalar at {last!r}")


def json_patch(target: Any, operations: list[dict]) -> Any:
    """Apply an RFC 6902 JSON patch (a list of operations).

    Example:
        >>> json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2},
        ...                         {"op": "test", "path": "/a/1", "value": 2}])
        {'a': [1, 2]}
    """
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations", code=400)
    doc = _copy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed JSON patch operation {op!r}", code=400)
        kind = op["op"]
        tokens = _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind!r} needs a value", code=400)
        if kind == "add":
            doc = _add(doc, tokens, _copy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, tokens)
        elif kind == "replace":
            _resolve(doc, tokens)              # must exist
            if tokens:
                doc, _ = _remove(doc, tokens)
            doc = _add(doc, tokens, _copy(op["value"]))
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"operation {kind!r} needs 'from'", code=400)
            source = _pointer(op["from"])
            if kind == "move":
                if tokens[:len(source)] == source and len(tokens) > len(source):
                    raise PatchError("cannot move a value into one of its children")
                doc, value = _remove(doc, source)
            else:
                value = _copy(_resolve(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            actual = _resolve(doc, tokens)
            if actual != op["value"]:
                raise PatchError(f"test failed at {op['path']!r}: "
                                 f"{json.dumps(actual)} != {json.dumps(op['value'])}")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}", code=400)
    return doc


# -- strategic merge patch --------------------------------------------------------------

# List field name -> merge key (None: the key depends on the items, see _merge_key).
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "ports": None,        # containerPort for containers, port for services
}
# Lists of scalars that Kubernetes merges as sets.
MERGE_PRIMITIVE_LISTS = {"finalizers"}


def _merge_key(field_name: str, *lists: list) -> str | None:
    if field_name not in MERGE_KEYS:
        return None
    key = MERGE_KEYS[field_name]
    if key is not None:
        return key
    for items in lists:
        for item in items:
            if isinstance(item, dict):
                if "containerPort" in item:
                    return "containerPort"
                if "port" in item:
                    return "port"
    return None


def _strip_directives(value: Any) -> Any:
    """A patch value without any ``$`` directive, for insertion as is."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value
                if not (isinstance(v, dict) and v.get("$patch") in ("delete", "replace")
                        and len(v) == 1)]
    return value


def _smp_map(original: dict, patch: dict) -> dict:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive not in (None, "merge"):
        raise PatchError(f"unknown or misplaced $patch directive {directive!r}")
    result = _copy(original)
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else [value]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in drop]
            continue
        if key.startswith("$"):
            raise PatchError(f"unknown directive {key!r}")
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
                continue
            result[key] = _smp_map(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _smp_list(key, current if isinstance(current, list) else [], value)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if retain is not None:
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(name: str, original: list, patch: list) -> list:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" and len(x) == 1 for x in patch):
        return _strip_directives(patch)
    if name in MERGE_PRIMITIVE_LISTS:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(item)
        return result
    key = _merge_key(name, original, patch)
    if key is None:
        return _strip_directives(patch)
    result = _copy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            if isinstance(item, dict) and item.get("$patch") == "delete":
                raise PatchError(f"$patch: delete in {name!r} needs the merge key {key!r}")
            raise PatchError(f"an item of {name!r} lacks its merge key {key!r}")
        idx = next((i for i, cur in enumerate(result)
                    if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        directive = item.get("$patch")
        if directive == "delete":
            if idx is not None:
                del result[idx]
            continue
        if directive == "replace":
            replacement = _strip_directives({k: v for k, v in item.items() if k != "$patch"})
            if idx is None:
                result.append(replacement)
            else:
                result[idx] = replacement
            continue
        if idx is None:
            result.append(_strip_directives(item))
        else:
            result[idx] = _smp_map(result[idx], item)
    return result


def strategic_merge_patch(target: dict, patch: dict) -> dict:
    """Apply a strategic merge patch.

    Example:
        >>> live = {"spec": {"containers": [{"name": "a", "image": "a:1"},
        ...                                 {"name": "b", "image": "b:1"}]}}
        >>> strategic_merge_patch(live, {"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
        {'spec': {'containers': [{'name': 'a', 'image': 'a:1'}, {'name': 'b', 'image': 'b:2'}]}}
    """
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", code=400)
    if patch.get("$patch") == "delete":
        raise PatchError("$patch: delete of the whole object is not supported")
    return _smp_map(target if isinstance(target, dict) else {}, patch)


# -- server-side apply ------------------------------------------------------------------

# Fields the server owns; an apply never records or prunes them.
_UNMANAGED_META = {"name", "namespace", "uid", "resourceVersion", "generation",
                   "creationTimestamp", "managedFields", "deletionTimestamp",
                   "deletionGracePeriodSeconds", "selfLink"}


def _named_list(items: Any) -> bool:
    return (isinstance(items, list) and bool(items)
            and all(isinstance(x, dict) and "name" in x for x in items))


def _item_key(item: dict) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def fields_v1(applied: dict) -> dict:
    """The FieldsV1 set of an applied configuration (what ``managedFields`` records)."""

    def walk(node: dict, top: bool, in_meta: bool) -> dict:
        out: dict = {}
        for key, value in node.items():
            if top and key in ("apiVersion", "kind"):
                continue
            if in_meta and key in _UNMANAGED_META:
                continue
            if value is None:
                continue
            if isinstance(value, dict):
                sub = walk(value, False, top and key == "metadata")
                if top and key == "metadata" and not sub:
                    continue   # name and namespace identify the object; nobody owns them
                out["f:" + key] = sub
            elif _named_list(value):
                out["f:" + key] = {_item_key(item): dict({".": {}}, **walk(item, False, False))
                                   for item in value}
            else:
                out["f:" + key] = {}
        return out

    return walk(applied, True, False)


def _apply_merge(live: Any, applied: Any) -> Any:
    if not isinstance(applied, dict):
        if _named_list(applied) and _named_list(live):
            by_name = {x["name"]: x for x in live}
            merged = [_apply_merge(by_name.get(a["name"], {}), a) for a in applied]
            names = {a["name"] for a in applied}
            # Items another manager added stay (after the applied ones).
            return merged + [_copy(x) for x in live if x["name"] not in names]
        return _copy(applied)
    result = _copy(live) if isinstance(live, dict) else {}
    for key, value in applied.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge(result.get(key), value)
    return result


def _paths(tree: dict, prefix: tuple = ()) -> set[tuple]:
    out = set()
    for key, sub in tree.items():
        if key == ".":
            continue
        path = prefix + (key,)
        out.add(path)
        out |= _paths(sub, path)
    return out


def _prune(live: Any, old: dict, new: dict, others: set[tuple], prefix: tuple) -> None:
    """Remove from ``live`` what ``old`` owned, ``new`` does not, and nobody else owns."""
    for key, sub in old.items():
        if key == ".":
            continue
        path = prefix + (key,)
        in_new = key in new
        if not in_new and path in others:
            continue
        if key.startswith("f:") and isinstance(live, dict):
            name = key[2:]
            if name not in live:
                continue
            if not in_new:
                del live[name]
            elif sub:
                _prune(live[name], sub, new[key], others, path)
        elif key.startswith("k:") and isinstance(live, list):
            try:
                ident = json.loads(key[2:])
            except ValueError:
                continue
            idx = next((i for i, x in enumerate(live) if isinstance(x, dict)
                        and all(x.get(k) == v for k, v in ident.items())), None)
            if idx is None:
                continue
            if not in_new:
                del live[idx]
            elif sub:
                _prune(live[idx], sub, new[key], others, path)


def server_side_apply(live: dict | None, applied: dict, *, field_manager: str,
                      now: str = "", force: bool = False) -> dict:
    """Merge an applied configuration into the live object (or create it from nothing).

    Args:
        live: the stored object, or None when the apply creates it.
        applied: the configuration the client sent (apiVersion, kind, metadata.name ...).
        field_manager: the ``fieldManager`` query parameter (required by real servers).
        now: timestamp recorded in the managedFields entry.
        force: take over fields other managers own instead of failing.

    Raises:
        ApplyConflict: (from :mod:`twin.managed_fields`) the apply would change fields
            other managers own, and ``force`` is false.

    Returns:
        The new object, with a ``metadata.managedFields`` entry for the manager
        (operation ``Apply``). Server-owned metadata (uid, resourceVersion ...) is left as
        in ``live``; the store sets it on create.

    Example:
        >>> live = {"apiVersion": "v1", "kind": "ConfigMap",
        ...         "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
        >>> first = server_side_apply(live, {"apiVersion": "v1", "kind": "ConfigMap",
        ...     "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}, field_manager="helm")
        >>> server_side_apply(first, {"apiVersion": "v1", "kind": "ConfigMap",
        ...     "metadata": {"name": "c"}, "data": {"a": "9"}}, field_manager="helm")["data"]
        {'a': '9'}
    """
    if not isinstance(applied, dict):
        raise PatchError("an apply configuration must be an object", code=400)
    if not field_manager:
        raise PatchError("fieldManager is required for apply patches", code=400)
    base = live if isinstance(live, dict) else {}
    meta = base.get("metadata") or {}
    entries = [e for e in meta.get("managedFields") or () if isinstance(e, dict)]
    mine = next((e for e in entries
                 if e.get("manager") == field_manager and e.get("operation") == "Apply"), None)
    others = [e for e in entries if e is not mine]
    clean = {k: v for k, v in applied.items() if k != "status"}
    if isinstance(clean.get("metadata"), dict):
        clean["metadata"] = {k: v for k, v in clean["metadata"].items()
                             if k not in ("managedFields", "resourceVersion", "uid")}
    new_fields = fields_v1(clean)
    if live is not None:
        from .managed_fields import ApplyConflict, find_conflicts, take_ownership
        conflicts = find_conflicts(base, clean, new_fields, others, field_manager)
        if conflicts and not force:
            raise ApplyConflict(conflicts)
        if conflicts:
            others = take_ownership(others, {c.path for c in conflicts})
    result = _apply_merge(base, clean)
    if mine is not None:
        other_paths: set[tuple] = set()
        for e in others:
            other_paths |= _paths(e.get("fieldsV1") or {})
        _prune(result, mine.get("fieldsV1") or {}, new_fields, other_paths, ())
    entry = {"manager": field_manager, "operation": "Apply",
             "apiVersion": applied.get("apiVersion", base.get("apiVersion", "")),
             "time": now, "fieldsType": "FieldsV1", "fieldsV1": new_fields}
    if not now:
        entry.pop("time")
    result.setdefault("metadata", {})["managedFields"] = _copy(others) + [entry]
    return result
