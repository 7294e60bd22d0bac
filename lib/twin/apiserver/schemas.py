"""The schemas of every served kind: the built-ins from a published package, CRDs from the store.

The built-in kinds' schemas come from the ``kubernetes-validate`` package, which ships
the Kubernetes OpenAPI definitions per release as JSON Schema (``_definitions.json``:
``type: [T, "null"]``, ``$ref: #/$defs/...``, the ``x-kubernetes-*`` extensions kept).
The twin reads the release it claims to be (``K8S_VERSION``), or the nearest one the
package carries. A CRD's schema is its served version's ``openAPIV3Schema`` around the
standard ``apiVersion``/``kind``/``metadata``.

One :class:`SchemaSet` is built per set of served types and cached: the OpenAPI
documents and the validation read it; nothing here runs per listed object.

Example:
    >>> defs = builtin_definitions()
    >>> definition_name(defs, "", "v1", "Pod")
    'io.k8s.api.core.v1.Pod'
"""
from __future__ import annotations

import functools
import importlib.machinery
import json
import re
from pathlib import Path
from typing import Any

from .discovery import K8S_VERSION

DEFS_PREFIX = "#/$defs/"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class SchemaUnavailable(RuntimeError):
    """The package of built-in schemas is not installed."""


def _schema_dir() -> Path:
    # Only the package's folder is needed, so it is found on sys.path, not imported:
    # importing it imports jsonschema, whose optional IRI checker compiles a grammar
    # (over a second of CPU). PathFinder ignores sys.modules, where runbook.lean_imports
    # hides the package for a moment while another thread imports kubernetes.
    try:
        spec = importlib.machinery.PathFinder.find_spec("kubernetes_validate")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:  # pragma: no cover - a dependency in pyproject.toml
        raise SchemaUnavailable("the kubernetes-validate package (built-in schemas) is not "
                                "installed: run `make venv`")
    return Path(locations[0]) / "kubernetes-json-schema"


def _release_dir(root: Path, minor: int) -> Path:
    """``v1.<minor>.0-local``, or the nearest release the package carries."""
    found = {}
    for p in root.iterdir():
        m = re.fullmatch(r"v1\.(\d+)\.0-local", p.name)
        if m and (p / "_definitions.json").is_file():
            found[int(m.group(1))] = p
    if not found:
        raise SchemaUnavailable(f"no Kubernetes JSON schemas under {root}")
    best = min(found, key=lambda v: (abs(v - minor), -v))
    return found[best]


@functools.lru_cache(maxsize=1)
def builtin_definitions() -> dict[str, dict]:
    """Every built-in definition by name (``io.k8s.api.core.v1.Pod`` ...), JSON-Schema form."""
    path = _release_dir(_schema_dir(), int(K8S_VERSION["minor"])) / "_definitions.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)["$defs"]


@functools.lru_cache(maxsize=1)
def _gvk_index() -> dict[tuple[str, str, str], str]:
    out = {}
    for name, d in builtin_definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind") or ():
            out[(gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))] = name
    return out


def definition_name(defs: dict[str, dict], group: str, version: str, kind: str) -> str | None:
    """The definition of a built-in kind, or None (``defs`` is :func:`builtin_definitions`)."""
    del defs
    return _gvk_index().get((group, version, kind))


def crd_definition_name(group: str, version: str, kind: str) -> str:
    """How a real server names a custom resource's schema (reversed group, version, kind)."""
    return ".".join([*reversed(group.split(".")), version, kind])


def crd_definition(crd: dict, version: str) -> dict | None:
    """The JSON-Schema form of one served version of a CRD, or None when not served."""
    spec = crd.get("spec") or {}
    for v in spec.get("versions") or ():
        if v.get("name") != version or not v.get("served", True):
            continue
        schema = json.loads(json.dumps(((v.get("schema") or {}).get("openAPIV3Schema")) or {}))
        schema.setdefault("type", "object")
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "description": "APIVersion defines the "
                               "versioned schema of this representation of an object."}
        props["kind"] = {"type": "string", "description": "Kind is a string value "
                         "representing the REST resource this object represents."}
        props["metadata"] = {"$ref": DEFS_PREFIX + OBJECT_META}
        schema["x-kubernetes-group-version-kind"] = [
            {"group": spec.get("group", ""), "version": version,
             "kind": (spec.get("names") or {}).get("kind", "")}]
        return schema
    return None


def closure(defs: dict[str, dict], roots: list[str]) -> list[str]:
    """The definitions ``roots`` reference, transitively (roots first, then sorted)."""
    seen: dict[str, None] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen[name] = None
        todo.extend(_refs(defs[name]))
    return sorted(seen)


def _refs(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFS_PREFIX):
            out.append(ref[len(DEFS_PREFIX):])
        for v in node.values():
            out.extend(_refs(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_refs(v))
    return out


_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def to_openapi(node: Any, ref_prefix: str, name: str = "") -> Any:
    """A JSON-Schema definition in OpenAPI form (``ref_prefix``: ``#/definitions/`` for v2,
    ``#/components/schemas/`` for v3): single types, the int-or-string and quantity formats
    the real documents use."""
    if name == _INT_OR_STRING:
        return {"type": "string", "format": "int-or-string",
                "description": (node or {}).get("description", "")}
    if name == _QUANTITY:
        return {"type": "string", "description": (node or {}).get("description", "")}
    if isinstance(node, list):
        return [to_openapi(v, ref_prefix) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            if types:
                out["type"] = types[0]
        elif k == "$ref" and isinstance(v, str) and v.startswith(DEFS_PREFIX):
            out["$ref"] = ref_prefix + v[len(DEFS_PREFIX):]
        elif k in ("properties", "patternProperties", "definitions") and isinstance(v, dict):
            out[k] = {pk: to_openapi(pv, ref_prefix) for pk, pv in v.items()}
        elif k in ("enum", "required", "x-kubernetes-group-version-kind",
                   "x-kubernetes-list-map-keys", "example", "default"):
            out[k] = v
        else:
            out[k] = to_openapi(v, ref_prefix)
    if isinstance(out.get("enum"), list):
        out["enum"] = [e for e in out["enum"] if e is not None]
        if not out["enum"]:
            out.pop("enum")
    return out
