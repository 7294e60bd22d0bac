"""What a real API server refuses before it stores a write, or before it lists.

- Field selectors: each resource supports ``metadata.name`` and ``metadata.namespace``
  plus its own few field labels (pods: ``spec.nodeName``, ``status.phase`` ...); any
  other is ``400 BadRequest: field label not supported: X``. Empty terms (a trailing
  comma) are skipped, as the real parser does.
- Unknown fields (``fieldValidation``): checked against the kind's schema
  (:mod:`.schemas`). ``Strict`` answers ``400 BadRequest`` (``strict decoding error:
  unknown field "spec.foo"``); ``Warn`` (the default) and ``Ignore`` drop them, ``Warn``
  with a ``Warning`` header, as a server decoding into typed objects does. A CRD's
  ``x-kubernetes-preserve-unknown-fields`` keeps them.
- Semantic checks a kind's validation makes, answered ``422 Invalid`` with
  ``details.causes`` (``FieldValueRequired`` ...): a container needs a name and an
  image, a pod at least one container, an apps/v1 workload a selector matching its
  template's labels.

Example:
    >>> unsupported_field_labels("", "pods", "spec.nodeName=n1,status.phase!=Running,")
    []
    >>> unsupported_field_labels("", "pods", "spec.foo=bar")
    ['spec.foo']
"""
from __future__ import annotations

import re
from typing import Any

from ..store import ResourceType
from . import schemas
from .responses import HTTPError

_COMMON_LABELS = frozenset({"metadata.name", "metadata.namespace"})
_EVENT_LABELS = frozenset({
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
    "regarding.apiVersion", "regarding.resourceVersion", "regarding.fieldPath",
    "reportingController"})
#: (group, plural) -> the field labels a real server supports beyond metadata.name/namespace.
FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset({"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                             "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                             "status.podIP", "status.podIPs", "status.nominatedNodeName"}),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "secrets"): frozenset({"type"}),
    ("", "services"): frozenset({"spec.clusterIP", "spec.type"}),
    ("", "events"): _EVENT_LABELS,
    ("events.k8s.io", "events"): _EVENT_LABELS,
    ("", "persistentvolumeclaims"): frozenset(),
    ("", "replicationcontrollers"): frozenset({"status.replicas"}),
    ("apps", "replicasets"): frozenset({"status.replicas"}),
    ("batch", "jobs"): frozenset({"status.successful"}),
    ("certificates.k8s.io", "certificatesigningrequests"): frozenset({"spec.signerName"}),
}
_TERM = re.compile(r"^\s*([A-Za-z0-9_.\-/\[\]]+)\s*(==|!=|=)")


def unsupported_field_labels(group: str, plural: str, selector: str | None,
                             selectable: frozenset[str] = frozenset()) -> list[str]:
    """The field labels of ``selector`` the resource does not support."""
    if not selector:
        return []
    allowed = _COMMON_LABELS | FIELD_LABELS.get((group, plural), frozenset()) | selectable
    bad = []
    for term in re.split(r"(?<!\\),", selector):
        m = _TERM.match(term)
        if m and m.group(1) not in allowed:
            bad.append(m.group(1))
    return bad


def check_field_selector(t: ResourceType, selector: str | None) -> None:
    """Raise the real server's 400 for a field label the resource does not support."""
    bad = unsupported_field_labels(t.group, t.plural, selector)
    if bad:
        raise HTTPError(400, "BadRequest", f"field label not supported: {bad[0]}")


# -- unknown fields -------------------------------------------------------------------------
def _resolve(defs: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        node = defs.get(ref[len(schemas.DEFS_PREFIX):], {}) if ref.startswith(schemas.DEFS_PREFIX) else {}
    return node if isinstance(node, dict) else {}


def _properties(defs: dict, node: dict) -> tuple[dict | None, Any, bool]:
    """(properties or None, additionalProperties, preserve-unknown) of a schema node,
    merging allOf/anyOf/oneOf branches as structural schemas do."""
    props = dict(node["properties"]) if isinstance(node.get("properties"), dict) else None
    addl = node.get("additionalProperties")
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key) or ():
            sub = _resolve(defs, sub)
            if isinstance(sub.get("properties"), dict):
                props = {**(props or {}), **sub["properties"]}
            preserve = preserve or bool(sub.get("x-kubernetes-preserve-unknown-fields"))
    if node.get("x-kubernetes-embedded-resource") and props is not None:
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    return props, addl, preserve


def unknown_fields(defs: dict, node: dict, value: Any, *, prune: bool = False,
                   path: str = "") -> list[str]:
    """Paths (``spec.containers[0].foo``) of the fields of ``value`` that ``node`` does not
    declare; with ``prune`` they are also removed from ``value``.

    A schema without properties (``RawExtension``, free-form JSON, a loose CRD object)
    accepts anything.
    """
    node = _resolve(defs, node)
    out: list[str] = []
    if isinstance(value, dict):
        props, addl, preserve = _properties(defs, node)
        for k in list(value):
            sub = f"{path}.{k}" if path else k
            if props is not None and k in props:
                out.extend(unknown_fields(defs, props[k], value[k], prune=prune, path=sub))
            elif isinstance(addl, dict):
                out.extend(unknown_fields(defs, addl, value[k], prune=prune, path=sub))
            elif props is not None and not preserve and addl is not True:
                out.append(sub)
                if prune:
                    del value[k]
    elif isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                out.extend(unknown_fields(defs, items, v, prune=prune, path=f"{path}[{i}]"))
    return out


# -- semantic validation ----------------------------------------------------------------------
def _cause(field_path: str, reason: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field_path}


def _containers(spec: Any, prefix: str) -> list[dict]:
    causes: list[dict] = []
    if not isinstance(spec, dict):
        return [_cause(prefix, "FieldValueRequired", "Required value")]
    containers = spec.get("containers")
    if not containers:
        causes.append(_cause(f"{prefix}.containers", "FieldValueRequired", "Required value"))
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or ()):
            where = f"{prefix}.{key}[{i}]"
            if not isinstance(c, dict):
                continue
            if not c.get("name"):
                causes.append(_cause(f"{where}.name", "FieldValueRequired", "Required value"))
            if not c.get("image"):
                causes.append(_cause(f"{where}.image", "FieldValueRequired", "Required value"))
    return causes


def _selector_matches(selector: Any, labels: dict) -> bool:
    if not isinstance(selector, dict):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


_WORKLOADS = {("apps", "deployments"), ("apps", "replicasets"), ("apps", "daemonsets"),
              ("apps", "statefulsets")}


def semantic_causes(t: ResourceType, obj: dict) -> list[dict]:
    """The ``details.causes`` a real server's validation of this kind would answer with."""
    spec = obj.get("spec")
    if t.key == ("", "pods"):
        return _containers(spec, "spec")
    if t.key in _WORKLOADS or t.key == ("batch", "jobs"):
        spec = spec if isinstance(spec, dict) else {}
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        causes = _containers(template.get("spec"), "spec.template.spec")
        if t.key in _WORKLOADS:
            sel = spec.get("selector")
            labels = (template.get("metadata") or {}).get("labels") or {}
            if not sel:
                causes.append(_cause("spec.selector", "FieldValueRequired", "Required value"))
            elif not _selector_matches(sel, labels):
                causes.append(_cause("spec.template.metadata.labels", "FieldValueInvalid",
                                     "Invalid value: `selector` does not match template `labels`"))
        return causes
    return []


def invalid(t: ResourceType, name: str, causes: list[dict]) -> HTTPError:
    """The 422 a real server answers for ``causes``."""
    kind = f"{t.kind}.{t.group}" if t.group else t.kind
    msg = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
    if len(causes) > 1:
        msg = f"[{', '.join(c['field'] + ': ' + c['message'] for c in causes)}]"
    return HTTPError(422, "Invalid", f'{kind} "{name}" is invalid: {msg}',
                     {"name": name, "group": t.group, "kind": t.kind, "causes": causes})
