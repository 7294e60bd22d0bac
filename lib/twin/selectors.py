"""Label and field selectors, parsed once and matched against stored objects.

Label selectors follow the Kubernetes string syntax (``labelSelector=`` query
parameter): comma-separated requirements, each one of ``key``, ``!key``, ``key=v``,
``key==v``, ``key!=v``, ``key in (a,b)``, ``key notin (a,b)``, ``key>n`` and ``key<n``.
They also come as structured ``LabelSelector`` objects (``spec.selector`` of a
Deployment) with ``matchLabels``/``matchExpressions``: :func:`from_label_selector`.

Field selectors (``fieldSelector=``) are ``field=value``, ``field==value`` or
``field!=value`` terms. The twin resolves any dotted path (``spec.nodeName``,
``involvedObject.name`` ...); a missing field compares as the empty string, which is
what a real server does for ``spec.nodeName=`` (unscheduled pods).

Example:
    >>> sel = parse_label_selector("app in (web,api),tier!=db,!canary")
    >>> sel.matches({"app": "web", "tier": "front"})
    True
    >>> parse_field_selector("status.phase!=Running").matches({"status": {"phase": "Pending"}})
    True
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A qualified label key: optional DNS subdomain prefix + "/" + name (63 chars max).
_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_SET_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_OP_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s*(?P<op>==|!=|=|>|<)\s*(?P<value>[^\s!=<>()]*)$")


class SelectorError(ValueError):
    """A selector string that does not parse (the API server answers 400)."""


def _check_key(key: str) -> str:
    if "/" in key:
        prefix, _, name = key.partition("/")
        if not prefix or len(prefix) > 253 or not _PREFIX_RE.match(prefix):
            raise SelectorError(f"invalid label key {key!r}: bad prefix")
    else:
        name = key
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


@dataclass(frozen=True)
class Requirement:
    """One label requirement. ``op`` is one of =, !=, in, notin, exists, !, gt, lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            # A real server matches objects that lack the label too.
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("gt", "lt"):
            if not present:
                return False
            try:
                number = int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            bound = int(self.values[0])
            return number > bound if self.op == "gt" else number < bound
        raise SelectorError(f"unknown operator {self.op!r}")  # pragma: no cover


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: dict) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels"))


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str          # "=" or "!="
    value: str

    def matches(self, obj: dict) -> bool:
        actual = field_value(obj, self.path)
        return (actual == self.value) if self.op == "=" else (actual != self.value)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: dict) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def equals(self, path: str) -> str | None:
        """The value required by a ``path=value`` term, if any (used for indexes)."""
        for r in self.requirements:
            if r.path == path and r.op == "=":
                return r.value
        return None


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parenthesis in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unbalanced parenthesis in {text!r}")
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a label selector string; raises :class:`SelectorError`.

    Example:
        >>> parse_label_selector("name=x,owner=helm").matches({"name": "x", "owner": "helm"})
        True
    """
    if text is None or not text.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise SelectorError(f"empty requirement in {text!r}")
        m = _SET_RE.match(term)
        if m:
            values = tuple(v.strip() for v in m["values"].split(","))
            if values == ("",):
                values = ()
            if not values and m["op"] == "in":
                raise SelectorError(f"{term!r}: 'in' needs at least one value")
            reqs.append(Requirement(_check_key(m["key"]), m["op"],
                                    tuple(sorted(_check_value(v) for v in values))))
            continue
        if term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip()), "!"))
            continue
        m = _OP_RE.match(term)
        if m:
            op = {"==": "=", "=": "=", "!=": "!=", ">": "gt", "<": "lt"}[m["op"]]
            value = m["value"]
            if op in ("gt", "lt"):
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(f"{term!r}: {m['op']} needs an integer") from None
            else:
                _check_value(value)
            reqs.append(Requirement(_check_key(m["key"]), op, (value,)))
            continue
        if re.search(r"[\s=!<>()]", term):
            raise SelectorError(f"unable to parse requirement {term!r}")
        reqs.append(Requirement(_check_key(term), "exists"))
    return LabelSelector(tuple(reqs))


def from_label_selector(selector: dict | None) -> LabelSelector | None:
    """Turn a structured ``LabelSelector`` (matchLabels/matchExpressions) into one.

    ``None`` stays ``None`` (callers decide: a Service without selector selects
    nothing); ``{}`` selects everything, as in Kubernetes.
    """
    if selector is None:
        return None
    reqs: list[Requirement] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        reqs.append(Requirement(key, "=", (str(value),)))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"unknown operator {expr.get('operator')!r}")
        reqs.append(Requirement(expr["key"], op, tuple(sorted(expr.get("values") or ()))))
    return LabelSelector(tuple(reqs))


def format_label_selector(selector: dict | None) -> str:
    """The string form of a structured selector (for ``status.selector`` of scale)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr["key"]
        values = ",".join(sorted(expr.get("values") or ()))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


def _unescape(value: str) -> str:
    # Field selector values may escape the separators with a backslash.
    out: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is None or nxt not in "\\,=":
                raise SelectorError(f"invalid escape in field selector value {value!r}")
            out.append(nxt)
        else:
            out.append(ch)
    return "".join(out)


def _split_unescaped_commas(text: str) -> list[str]:
    return [p for p in re.split(r"(?<!\\),", text)]


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse a field selector string; raises :class:`SelectorError`.

    Example:
        >>> parse_field_selector("spec.nodeName=n1").equals("spec.nodeName")
        'n1'
    """
    if text is None or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for raw in _split_unescaped_commas(text):
        term = raw.strip()
        if not term:
            continue   # "a=b," and "a=b,,c=d": a real server skips empty terms
        m = re.match(r"^([A-Za-z0-9_.\-/\[\]]+)\s*(==|!=|=)(.*)$", term)
        if not m:
            raise SelectorError(f"invalid field selector term {term!r}")
        op = "!=" if m[2] == "!=" else "="
        reqs.append(FieldRequirement(m[1], op, _unescape(m[3].strip())))
    return FieldSelector(tuple(reqs))


def field_value(obj: dict, path: str) -> str:
    """The string value of a dotted path; missing fields are ``""``."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
        if node is None:
            return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (dict, list)):
        return ""
    return str(node)
