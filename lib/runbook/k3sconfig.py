"""Plan the k3s ``config.yaml`` edits of the migration, node by node.

The Phase 22 text wrote ``flannel-backend: none`` and ``disable-network-policy: true``
on every node and never ``disable-kube-proxy``. The right edit (docs/cilium-on-k3s.md §1, defects 1
and 2) is:

* servers get the three server-only options; ``disable-kube-proxy: true`` exactly when
  Cilium's kube-proxy replacement is on (``params.k3s.disable_kube_proxy``, ``auto``
  follows the values);
* agents get nothing: they inherit those settings from the server. If an agent carries
  them anyway (the naive step), they are removed: k3s skips them there and they mislead
  whoever reads the file later.

This module is pure: it turns texts into plans. The nodes module reads and writes the
files, the journal records the backups. Editing is a round trip that keeps comments, key
order, ``disable:`` lists and every byte of the lines it does not change: ruamel.yaml
parses the file and locates each top-level key; only the lines of the keys that change
are rewritten, and ruamel parses the result again to prove it means exactly the wanted
settings. (Re-dumping the whole document with ruamel would re-indent sequences and move
full-line comments, which it attaches to the preceding key; byte-for-byte rollback and
readable diffs need untouched lines to stay untouched.)

Secrets: ``token``, ``agent-token``, the ``datastore-endpoint`` password and similar
values are masked in diffs, in ``changes`` and in ``repr``; ``new_text`` keeps the real
value because it is what gets written to the node (never print it).

Example:
    >>> from runbook import k3sconfig, params
    >>> p = params.load("params/minicloud.yaml")                        # doctest: +SKIP
    >>> plans = k3sconfig.plan({"set-hog": server_text, "fast-skunk": agent_text}, p)  # doctest: +SKIP
    >>> print(plans[0].diff)                                            # doctest: +SKIP
    --- a/etc/rancher/k3s/config.yaml
    +++ b/etc/rancher/k3s/config.yaml
    ...
    +flannel-backend: none
"""
from __future__ import annotations

import difflib
import html
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from .errors import RunbookError
from .redact import MASK, redact, register_secret

if TYPE_CHECKING:  # pragma: no cover
    from .params import Params

__all__ = ["NodePlan", "K3sConfigError", "plan", "plan_node", "rollback_plan", "parse", "to_frame",
           "wanted_server_settings", "mask_config_text", "SERVER_ONLY_KEYS", "unit_for"]

#: k3s options that only servers accept; agents get them from the server.
SERVER_ONLY_KEYS = ("flannel-backend", "disable-network-policy", "disable-kube-proxy")
#: config keys whose whole value is a secret
SECRET_KEYS = ("token", "agent-token", "etcd-s3-access-key", "etcd-s3-secret-key",
               "etcd-s3-session-token")
#: config keys holding a URL whose password part is a secret
URL_SECRET_KEYS = ("datastore-endpoint", "etcd-s3-proxy")

DEFAULT_PATH = "/etc/rancher/k3s/config.yaml"

_WHY = {
    "flannel-backend": "stops k3s' embedded flannel so Cilium owns pod networking",
    "disable-network-policy": "stops k3s' kube-router network-policy controller; Cilium enforces policies",
    "disable-kube-proxy": "stops k3s' embedded kube-proxy: Cilium replaces it",
}
AGENT_NOOP_REASON = ("agents inherit flannel/network-policy/kube-proxy settings from the "
                     "server")


class K3sConfigError(RunbookError, ValueError):
    """A k3s config.yaml that cannot be planned (not YAML, not a mapping, duplicate keys)."""

    exit_code = 21


@dataclass
class NodePlan:
    """The planned ``config.yaml`` change on one node.

    Attributes:
        node: node name. role: ``server`` or ``agent``. path: the file on the node.
        old_text: current content ("" when the file is absent). Holds secrets.
        new_text: content to write (== old_text when noop). Holds secrets: write it,
            never print it.
        diff: unified diff ``a/<path>`` -> ``b/<path>``, secrets masked.
        changes: the changes in words, secrets masked.
        noop: nothing to do. reason: why (for a no-op) or a one-line summary.
    """

    node: str
    role: str
    old_text: str = field(repr=False)
    new_text: str = field(repr=False)
    diff: str
    changes: list[str]
    noop: bool
    reason: str
    path: str = DEFAULT_PATH

    def __repr__(self) -> str:  # explicit: old_text/new_text hold the join token
        return (f"NodePlan(node={self.node!r}, role={self.role!r}, noop={self.noop}, "
                f"changes={self.changes!r}, reason={self.reason!r})")

    def __str__(self) -> str:
        head = f"{self.node} ({self.role}) {self.path}: "
        if self.noop:
            return head + "no change - " + self.reason
        return head + "; ".join(self.changes) + ("\n" + self.diff if self.diff else "")

    def _repr_html_(self) -> str:
        title = html.escape(f"{self.node} ({self.role}) {self.path}")
        if self.noop:
            return f"<p><b>{title}</b>: no change &mdash; {html.escape(self.reason)}</p>"
        items = "".join(f"<li>{html.escape(c)}</li>" for c in self.changes)
        return (f"<p><b>{title}</b></p><ul>{items}</ul>"
                f"<pre>{html.escape(self.diff)}</pre>")

    @property
    def masked_new_text(self) -> str:
        """``new_text`` with secrets masked, for display."""
        return mask_config_text(self.new_text)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary without the texts (for the journal and the evidence)."""
        return {"node": self.node, "role": self.role, "path": self.path, "noop": self.noop,
                "reason": self.reason, "changes": list(self.changes), "diff": self.diff}


# --------------------------------------------------------------------------- parsing
def unit_for(role: str) -> str:
    """The systemd unit of k3s on a node of ``role``.

    >>> unit_for("server"), unit_for("agent")
    ('k3s', 'k3s-agent')
    """
    return "k3s" if role == "server" else "k3s-agent"


def _rt() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.allow_duplicate_keys = False
    return y


def _load_rt(text: str, *, node: str = "", path: str = DEFAULT_PATH) -> CommentedMap:
    try:
        data = _rt().load(text) if text.strip() else None
    except YAMLError as e:
        raise K3sConfigError(f"{node or '?'}:{path} is not valid YAML: "
                             f"{' '.join(str(e).split())[:300]}") from e
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        raise K3sConfigError(f"{node or '?'}:{path} must hold a mapping of k3s options, not "
                             f"{type(data).__name__}")
    _register_secrets(data)
    return data


def parse(text: str | None) -> dict[str, Any]:
    """Parse a k3s ``config.yaml`` into a plain dict (a fact: no secrets masked).

    Example:
        >>> parse("flannel-backend: none\\ndisable:\\n  - traefik\\n")
        {'flannel-backend': 'none', 'disable': ['traefik']}
    """
    return _plain(_load_rt(text or ""))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    return str(obj)


def _register_secrets(data: CommentedMap) -> None:
    # Whoever later prints any output (command output, errors) must not show these.
    for k in SECRET_KEYS:
        if data.get(k):
            register_secret(str(data[k]))
    for k in URL_SECRET_KEYS:
        if data.get(k):
            pw = urlsplit(str(data[k])).password
            if pw:
                register_secret(pw)


_LINE_KEY = re.compile(r"^(?P<indent>\s*)(?P<q>['\"]?)(?P<key>[A-Za-z0-9_.-]+)(?P=q)"
                       r"(?P<sep>\s*:\s?)(?P<val>.*)$")


def mask_config_text(text: str) -> str:
    """Mask secret values of a k3s config text (or a diff of one), line by line.

    Example:
        >>> mask_config_text("token: K10abc::server:xyz\\nnode-ip: 10.0.0.4\\n")
        'token: ********\\nnode-ip: 10.0.0.4\\n'
    """
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        prefix = ""
        if body[:1] in ("+", "-", " ") and not body.startswith(("+++", "---")):
            prefix, body = body[:1], body[1:]
        m = _LINE_KEY.match(body)
        if m and m.group("key") in SECRET_KEYS and m.group("val").strip():
            body = f"{m.group('indent')}{m.group('q')}{m.group('key')}{m.group('q')}" \
                   f"{m.group('sep')}{MASK}"
        elif m and m.group("key") in URL_SECRET_KEYS:
            body = re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1" + MASK + "@", body)
        out.append(prefix + body + end)
    # second layer: anything recognisable or registered (join tokens, bearer headers)
    return redact("".join(out))


# --------------------------------------------------------------------------- wanted state
def wanted_server_settings(params: Params, values: dict[str, Any] | None = None
                           ) -> dict[str, Any]:
    """The server-only keys a server should have; ``None`` means "absent".

    Example:
        >>> wanted_server_settings(p, {"kubeProxyReplacement": True})    # doctest: +SKIP
        {'flannel-backend': 'none', 'disable-network-policy': True, 'disable-kube-proxy': True}
    """
    if values is None and params.k3s.disable_kube_proxy == "auto":
        values = params.values()
    return {
        "flannel-backend": params.k3s.flannel_backend,
        "disable-network-policy": True if params.k3s.disable_network_policy else None,
        "disable-kube-proxy": True if params.disable_kube_proxy(values) else None,
    }


def _same(current: Any, wanted: Any) -> bool:
    if wanted is True:
        return current is True or (isinstance(current, str) and current.strip().lower() == "true")
    return current is not None and str(current) == str(wanted)


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    s = str(value)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", s) and s.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "y", "n"):
        return s
    return json.dumps(s)


def _show(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return f"{key}: {MASK}"
    return f"{key}: {_render(value)}"


# --------------------------------------------------------------------------- text edits
def _key_spans(text: str, data: CommentedMap) -> dict[str, tuple[int, int]] | None:
    """Line span [start, end) of each top-level key, or None if not a block mapping."""
    lines = text.splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    for k in data:
        try:
            line, col = data.lc.key(k)
        except (KeyError, TypeError, AttributeError):
            return None
        if col != 0 or line >= len(lines):
            return None
        starts.append((line, str(k)))
    if data.fa.flow_style():
        return None
    starts.sort()
    spans: dict[str, tuple[int, int]] = {}
    for i, (line, k) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(lines)
        # full-line comments and blank lines just before the next key belong to it
        while end > line + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        spans[k] = (line, end)
    return spans


def _apply_edits(text: str, data: CommentedMap, edits: dict[str, Any]) -> str | None:
    """Rewrite only the lines of the edited keys; ``None`` value = remove the key."""
    spans = _key_spans(text, data)
    if spans is None:
        return None
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    replace: dict[int, tuple[int, list[str]]] = {}
    appended: list[str] = []
    for key, value in edits.items():
        if key in spans:
            start, end = spans[key]
            if value is None:
                replace[start] = (end, [])
            else:
                first = lines[start].rstrip("\r\n")
                m = re.search(r"\s+#.*$", first) if end - start == 1 else None
                comment = m.group(0) if m and not first.lstrip().startswith("#") else ""
                replace[start] = (end, [f"{key}: {_render(value)}{comment}{newline}"])
        elif value is not None:
            appended.append(f"{key}: {_render(value)}{newline}")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in replace:
            end, new = replace[i]
            out.extend(new)
            i = end
            continue
        out.append(lines[i])
        i += 1
    if appended:
        if out and not out[-1].endswith("\n"):
            out[-1] += newline
        out.extend(appended)
    return "".join(out)


def _dump_edits(data: CommentedMap, edits: dict[str, Any]) -> str:
    """Fallback for flow-style files: edit the ruamel document and dump it."""
    import io
    for key, value in edits.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    buf = io.StringIO()
    _rt().dump(data, buf)
    return buf.getvalue()


def _edit(text: str, edits: dict[str, Any], *, node: str, path: str) -> str:
    data = _load_rt(text, node=node, path=path)
    expected = _plain(data)
    for k, v in edits.items():
        if v is None:
            expected.pop(k, None)
        else:
            expected[k] = v
    new = _apply_edits(text, data, edits)
    if new is None or parse(new) != expected:
        new = _dump_edits(_load_rt(text, node=node, path=path), edits)
        if parse(new) != expected:  # pragma: no cover - would be a bug in this module
            raise K3sConfigError(f"{node}:{path}: the edited config does not parse back to "
                                 "the wanted settings; edit it by hand")
    return new


# --------------------------------------------------------------------------- diffs
def unified_diff(old: str, new: str, path: str = DEFAULT_PATH) -> str:
    """A git-style unified diff ``a/<path>`` -> ``b/<path>`` with secrets masked."""
    if old == new:
        return ""

    def _lines(t: str) -> list[str]:
        ls = t.splitlines(keepends=True)
        if ls and not ls[-1].endswith("\n"):
            ls[-1] += "\n\\ No newline at end of file\n"
        return ls

    rel = path.lstrip("/")
    diff = "".join(difflib.unified_diff(_lines(old), _lines(new), fromfile=f"a/{rel}",
                                        tofile=f"b/{rel}"))
    return mask_config_text(diff)


# --------------------------------------------------------------------------- planning
def plan_node(node: str, role: str, text: str | None, params: Params,
              values: dict[str, Any] | None = None) -> NodePlan:
    """Plan one node's config change (see :func:`plan`)."""
    path = params.paths.k3s_config
    old = text or ""
    data = _plain(_load_rt(old, node=node, path=path))
    edits: dict[str, Any] = {}
    changes: list[str] = []
    if role == "server":
        wanted = wanted_server_settings(params, values)
        for key, want in wanted.items():
            cur = data.get(key)
            if want is None:
                if key in data and cur not in (False, None) and str(cur).lower() != "false":
                    edits[key] = None
                    changes.append(f"remove {_show(key, cur)} (kube-proxy replacement is off)"
                                   if key == "disable-kube-proxy" else
                                   f"remove {_show(key, cur)} (not wanted by the params)")
            elif not _same(cur, want):
                edits[key] = want
                verb = "add" if key not in data else f"change {_render(cur)} ->"
                changes.append(f"{verb} {_show(key, want)}" if verb == "add" else
                               f"change {key}: {_render(cur)} -> {_render(want)}")
                changes[-1] += f" ({_WHY[key]})"
        if not edits:
            have = [_show(k, v) for k, v in wanted.items() if v is not None]
            reason = "k3s config already has " + ", ".join(have)
            if wanted["disable-kube-proxy"] is None:
                reason += " and no disable-kube-proxy (kube-proxy replacement is off)"
            return NodePlan(node, role, old, old, "", [], True, reason, path)
        reason = f"server: {len(changes)} change(s) to the server-only options"
    else:
        for key in SERVER_ONLY_KEYS:
            if key in data:
                edits[key] = None
                changes.append(f"remove {_show(key, data[key])} (server-only: agents skip it "
                               "and inherit the server's setting)")
        if not edits:
            return NodePlan(node, role, old, old, "", [], True, AGENT_NOOP_REASON, path)
        reason = "agent: remove server-only options written by the naive Phase 22 step"
    new = _edit(old, edits, node=node, path=path)
    return NodePlan(node, role, old, new, unified_diff(old, new, path), changes, False,
                    reason, path)


def plan(nodes_configs: dict[str, str | None], params: Params,
         values: dict[str, Any] | None = None) -> list[NodePlan]:
    """Plan the ``config.yaml`` of each node, servers first, in params order.

    Args:
        nodes_configs: node name -> current file text (``""`` or ``None`` if absent).
        params: the run's params (roles, path, ``k3s`` section).
        values: the Cilium values; read from ``params.values()`` when needed and omitted.

    Returns:
        One :class:`NodePlan` per node given, servers first.

    Raises:
        K3sConfigError: a node not in the params, or a config that is not a YAML mapping.

    Example:
        >>> plans = plan({"set-hog": "write-kubeconfig-mode: '0644'\\n"}, p)   # doctest: +SKIP
        >>> plans[0].changes                                                  # doctest: +SKIP
        ['add flannel-backend: none (...)', 'add disable-network-policy: true (...)', ...]
    """
    known = {n.name: n for n in params.nodes}
    unknown = sorted(set(nodes_configs) - set(known))
    if unknown:
        raise K3sConfigError(f"nodes not in the params: {', '.join(unknown)}")
    if values is None and params.k3s.disable_kube_proxy == "auto":
        values = params.values()
    order = [n for n in params.servers + params.agents if n.name in nodes_configs]
    return [plan_node(n.name, n.role, nodes_configs[n.name], params, values) for n in order]


def to_frame(plans: list[NodePlan]) -> Any:
    """The plans as a pandas DataFrame (node, role, path, noop, changes, reason), masked.

    Example:
        >>> to_frame(plan(configs, p))        # doctest: +SKIP
    """
    import pandas as pd  # local: pandas is heavy and only notebooks need the table

    return pd.DataFrame([{"node": pl.node, "role": pl.role, "path": pl.path, "noop": pl.noop,
                          "changes": "; ".join(pl.changes) or "-", "reason": pl.reason}
                         for pl in plans])


def rollback_plan(current_text: str | None, backup_text: str, *, node: str = "",
                  role: str = "", path: str = DEFAULT_PATH) -> NodePlan:
    """Plan restoring ``backup_text`` byte-for-byte over ``current_text``.

    ``new_text`` is exactly the backup (no YAML processing); ``changes`` lists the keys
    that differ, secrets masked.
    """
    cur = current_text or ""
    if cur == backup_text:
        return NodePlan(node, role, cur, backup_text, "", [], True,
                        "config already identical to the backup", path)
    changes: list[str] = []
    try:
        a, b = parse(cur), parse(backup_text)
        for k in b:
            if k not in a:
                changes.append(f"restore {_show(k, b[k])}")
            elif a[k] != b[k]:
                changes.append(f"restore {_show(k, b[k])} (now {_show(k, a[k]).split(': ', 1)[1]})")
        changes.extend(f"remove {_show(k, a[k])}" for k in a if k not in b)
    except K3sConfigError:
        pass
    if not changes:
        changes.append("restore the backup byte-for-byte (formatting/comments differ)")
    return NodePlan(node, role, cur, backup_text, unified_diff(cur, backup_text, path),
                    changes, False, "restore the pre-migration config from its backup", path)
