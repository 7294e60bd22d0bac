"""Loading a params file: YAML to :class:`~runbook.params.schema.Params`, with errors a person can act on.

Loading is strict: a malformed file, an unknown key or a wrong type fails here, before
anything is contacted, with one line naming the file, the dotted field and the problem.
A key this project used to accept and has removed says what replaced it.

Example:
    >>> from runbook.params.loading import from_dict
    >>> from_dict({"target": {"name": "c"}, "nodes": []})   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    runbook.errors.ParamsError: field 'nodes': List should have at least 1 item ...
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ParamsError, ParamsFileError, UnknownKeyError
from .schema import Params
from .yaml_io import YAMLError, strict_yaml, yaml_field_at, yaml_problem

__all__ = ["load", "from_dict", "RETIRED_KEYS"]

#: Keys an older params file may still carry, and what an operator does instead.
RETIRED_KEYS: dict[str, str] = {
    "decision.proceed_despite_deferral":
        "removed: overriding a DEFER verdict is a decision of one run, pass "
        "--proceed-despite-deferral to `runbook run` (the notebook parameter "
        "proceed_despite_deferral) and delete this key",
    "twin.ingress_ca_file":
        "removed: each checks.ingress entry names its own ca_file; delete this key",
}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that holds the unknown key at ``loc``."""
    model: Any = Params
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        # unwrap Optional[...] and list[...] down to the model class
        for _ in range(3):
            args = [a for a in getattr(ann, "__args__", ()) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            ann = args[0] if args else ann
        model = ann
    return list(getattr(model, "model_fields", {}))


_UNION_TAGS = {"bool", "int", "float", "str", "list", "dict", "none", "is-instance"}


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    # pydantic adds the validator's function name for model-level errors: drop it
    # and, for Union fields, the member tags ("literal['auto']", "bool")
    loc = tuple(p for p in loc if not (isinstance(p, str) and (
        p.startswith("function-") or "[" in p or p in _UNION_TAGS)))
    field = ".".join(str(p) for p in loc) or "(top level)"
    typ = err.get("type", "")
    if typ == "extra_forbidden" and field in RETIRED_KEYS:
        msg = f"unknown key ({RETIRED_KEYS[field]})"
    elif typ == "extra_forbidden":
        allowed = _allowed_keys(loc)
        msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    elif typ == "missing":
        msg = "required field is missing"
    else:
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if "input" in err and typ not in ("value_error", "assertion_error"):
            shown = repr(err["input"])
            msg += f" (got {shown[:60]})"
    return field, msg


def from_dict(data: Any, *, source: str | Path | None = None) -> Params:
    """Build :class:`Params` from a parsed mapping; errors as for :func:`load`."""
    where = str(source) if source is not None else None
    if not isinstance(data, dict):
        raise ParamsFileError(f"the params file must hold a mapping, not {type(data).__name__}",
                          file=where)
    try:
        p = Params.model_validate(data)
    except ValidationError as e:
        # one message per field: a Union field reports one error per member
        grouped: dict[str, list[str]] = {}
        errs = e.errors(include_url=False)
        for err in errs:
            f, m = _describe(err)
            if m not in grouped.setdefault(f, []):
                grouped[f].append(m)
        items = [(f, " or ".join(ms)) for f, ms in grouped.items()]
        field, msg = items[0]
        more = [f"field '{f}': {m}" for f, m in items[1:4]]
        if len(items) > 4:
            more.append(f"... {len(items) - 4} more")
        text = msg + (f" (also {'; '.join(more)})" if more else "")
        # The exit code follows the error the message leads with: a typo'd key (8) is a
        # different fix from a value of the wrong type (2).
        cls = UnknownKeyError if errs and errs[0].get("type") == "extra_forbidden" else ParamsError
        raise cls(text, file=where, field=field) from None
    if source is not None:
        p._source = Path(source).resolve()
    return p


def load(path: str | os.PathLike[str]) -> Params:
    """Load and type-check a params file, then apply the twin loopback guard.

    Args:
        path: the YAML params file.

    Returns:
        The :class:`Params`; relative paths inside it resolve against its folder.

    Raises:
        ParamsError: wrong type or missing field; one line naming the file, the dotted
            field (e.g. ``nodes.1.role``) and the problem. Subclasses with their own exit
            codes: ParamsFileError (missing file, YAML syntax, empty, not a mapping) and
            UnknownKeyError (a key the schema does not know).
        runbook.errors.LoopbackViolation: a twin params file points at a non-loopback
            address.

    Example:
        >>> p = load("params/twin.yaml")          # doctest: +SKIP
        >>> p.target.kind, p.nodes[0].address     # doctest: +SKIP
        ('twin', '127.0.0.1')
    """
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsFileError("params file does not exist", file=str(src), hint=(
            "for a rehearsal cluster, start a twin first: `.venv/bin/runbook twin up --state-dir .twin` "
            "writes .twin/params.yaml (or run `make rehearse`, which starts its own); for a real "
            "cluster, copy params/minicloud.yaml and edit it")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsFileError(f"cannot read params file: {e}", file=str(src)) from e
    try:
        data = strict_yaml().load(text)
    except YAMLError as e:
        raise ParamsFileError(f"not valid YAML: {yaml_problem(e)}", file=str(src),
                              field=yaml_field_at(text, e)) from e
    if data is None:
        raise ParamsFileError("the params file is empty", file=str(src))
    p = from_dict(data, source=src)
    p.check_loopback()
    return p
