"""The strict YAML reader the params use, and where a YAML error sits in a hand-edited file.

Params, values and kubeconfig files are read with ruamel's safe loader in YAML 1.2 mode
(``yes``/``on`` stay strings) with duplicate keys refused. A syntax error is reported
with its line and column and, read from the indentation above it, the dotted key it
sits under, so the operator is pointed at the right section.

Example:
    >>> from runbook.params.yaml_io import strict_yaml
    >>> strict_yaml().load("a: yes")
    {'a': 'yes'}
"""
from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import ParamsError

__all__ = ["strict_yaml", "yaml_problem", "yaml_field_at", "kubeconfig_servers", "YAMLError"]


def strict_yaml() -> YAML:
    """ruamel's safe loader: YAML 1.2 ("yes"/"on" stay strings), duplicate keys are errors."""
    y = YAML(typ="safe", pure=True)
    y.allow_duplicate_keys = False
    return y


_KEY_LINE = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z0-9_.-]+)\s*:(?:\s|$)")


def yaml_field_at(text: str, e: YAMLError) -> str | None:
    """The dotted key the syntax error sits under (``target.kind``), from indentation.

    A YAML syntax error has no parsed structure to name a field from, so the keys of
    the lines above the error are read by their indentation: enough to point an
    operator at the right section of a hand-edited file. None when nothing is found.
    """
    if not isinstance(e, MarkedYAMLError):
        return None
    mark = e.context_mark or e.problem_mark
    if mark is None:
        return None
    stack: list[tuple[int, str]] = []
    for line in text.splitlines()[: mark.line + 1]:
        m = _KEY_LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
    return ".".join(k for _, k in stack) or None


def yaml_problem(e: YAMLError) -> str:
    """One line for a YAML error: ``line L column C: what`` when the error has a mark."""
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        return where + " ".join(str(x) for x in (e.context, e.problem) if x).replace("\n", " ")
    return " ".join(str(e).split())


def kubeconfig_servers(path: Path, context: str | None = None) -> list[str]:
    """The API server URL(s) a kubeconfig would use; ``[]`` if the file does not exist.

    With a resolvable context (given, or ``current-context``) only that cluster's server
    is returned; otherwise every cluster's, so an ambiguous file is checked in full.
    """
    if not path.is_file():
        return []
    try:
        cfg = strict_yaml().load(path.read_text(encoding="utf-8")) or {}
    except (OSError, YAMLError, UnicodeDecodeError) as e:
        raise ParamsError(f"kubeconfig {path} is not readable YAML: {e}",
                          field="target.kubeconfig") from e
    if not isinstance(cfg, dict):
        return []
    clusters = {c.get("name"): (c.get("cluster") or {}).get("server")
                for c in cfg.get("clusters") or [] if isinstance(c, dict)}
    ctx_name = context or cfg.get("current-context")
    for c in cfg.get("contexts") or []:
        if isinstance(c, dict) and c.get("name") == ctx_name:
            server = clusters.get((c.get("context") or {}).get("cluster"))
            if server:
                return [server]
    return [s for s in clusters.values() if s]
