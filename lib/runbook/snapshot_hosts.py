"""What a snapshot records of each node over SSH: facts (one command + a pure parser each).

Read-only: every command is a read (``cat``, ``ls``, ``ip -o link``, ``iptables-save``)
through :meth:`runbook.nodes.Node.run`, host keys checked. Secrets never leave this
module unmasked: the k3s config files go through :func:`runbook.k3sconfig.mask_config_text`
(the join token, ``agent-token``, S3 keys, passwords in datastore URLs) and every other
text through :func:`runbook.redact.redact`.

The record of one node (``host`` in ``nodes.json``, see ``docs/snapshot-format.md``)::

    {"reachable": true,
     "k3s_config_files": {"/etc/rancher/k3s/config.yaml": "<masked text>", ...},
     "ip_link": ["1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 ...", ...],
     "interfaces": [{"name": "flannel.1", "type": "ether", "mtu": 1450, "state": "UNKNOWN", ...}],
     "iptables": {"ipv4": {"filter": {"FORWARD": 3, ...}, "nat": {...}}, "ipv6": {...}},
     "cni": {"/etc/cni/net.d": [...], "/var/lib/rancher/k3s/agent/etc/cni/net.d": ["10-flannel.conflist"]},
     "containerd": {"config": "<path>", "present": true, "cni_section": "<text or null>",
                    "template": "<masked config.toml.tmpl or null>"}}

Example:
    >>> iptables_rule_counts("*nat\\n:KUBE-SVC-A - [0:0]\\n-A KUBE-SVC-A -j KUBE-SEP-B\\nCOMMIT\\n")
    {'nat': {'KUBE-SVC-A': 1}}
    >>> effective_config({"/etc/rancher/k3s/config.yaml": "disable: [traefik]\\n",
    ...                   "/etc/rancher/k3s/config.yaml.d/10.yaml": "disable+: [servicelb]\\n"})
    {'disable': ['traefik', 'servicelb']}
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import NodeError
from .facts import parse_ip_link
from .k3sconfig import mask_config_text
from .redact import redact

CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
CONTAINERD_CONFIG = f"{CONTAINERD_DIR}/config.toml"
CONTAINERD_TEMPLATE = f"{CONTAINERD_DIR}/config.toml.tmpl"
#: The table headers of containerd's CNI section: config version 1 (``plugins.cri``),
#: version 2 (containerd 1.x, ``"io.containerd.grpc.v1.cri"``) and version 3 (containerd
#: 2.x, ``'io.containerd.cri.v1.runtime'``, single quotes as k3s writes it).
_CNI_HEADER = re.compile(r"""^\s*\[plugins\.(?:cri|(["'])io\.containerd\.grpc\.v1\.cri\1|"""
                         r"""(["'])io\.containerd\.cri\.v1\.runtime\2)\.cni\]\s*$""")
_TABLE_HEADER = re.compile(r"^\s*\[")


# --------------------------------------------------------------------------- pure parsers
def iptables_rule_counts(text: str) -> dict[str, dict[str, int]]:
    """Per table, every chain declared in an ``iptables-save`` dump and its rule count.

    Built-in and user chains alike (``:NAME POLICY [p:b]`` declares one); rules are the
    ``-A CHAIN ...`` lines. Counter prefixes of ``iptables-save -c`` are accepted.
    """
    out: dict[str, dict[str, int]] = {}
    table: dict[str, int] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = out.setdefault(line[1:].strip(), {})
        elif table is None:
            continue
        elif line.startswith(":"):
            name = line[1:].split()[0] if line[1:].split() else ""
            if name:
                table.setdefault(name, 0)
        else:
            if line.startswith("[") and "]" in line:
                line = line.split("]", 1)[1].strip()
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "-A":
                table[parts[1]] = table.get(parts[1], 0) + 1
    return out


def containerd_cni_section(text: str) -> str | None:
    """The ``[plugins."…cri…".cni]`` table of a containerd ``config.toml``, or None.

    k3s writes that section while it runs flannel (``conf_dir`` = its own CNI folder) and
    leaves it out with ``flannel-backend: none`` (containerd then reads ``/etc/cni/net.d``).
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _CNI_HEADER.match(line):
            body = [line.strip()]
            for nxt in lines[i + 1:]:
                if _TABLE_HEADER.match(nxt):
                    break
                if nxt.strip():
                    body.append(nxt.strip())
            return "\n".join(body) + "\n"
    return None


def effective_config(files: dict[str, str]) -> dict[str, Any]:
    """k3s' merged configuration: ``config.yaml``, then ``config.yaml.d/*.yaml`` in name
    order; a later key replaces an earlier one and ``key+:`` appends to it.

    Files that are not YAML mappings are skipped (the snapshot keeps their text).
    """
    out: dict[str, Any] = {}
    for path in sorted(files, key=lambda p: (".yaml.d/" in p, p)):
        try:
            doc = yaml.safe_load(files[path]) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(doc, dict):
            continue
        for key, value in doc.items():
            key = str(key)
            if key.endswith("+"):
                base = key[:-1]
                prev = out.get(base, [])
                prev = prev if isinstance(prev, list) else [prev]
                out[base] = prev + (value if isinstance(value, list) else [value])
            else:
                out[key] = value
    return out


def listing(text: str) -> list[str]:
    """Names from ``ls -1`` output, in order."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# --------------------------------------------------------------------------- the node record
def _read(node: Any, path: str) -> str | None:
    """A file's text read with sudo, or None when it does not exist."""
    if node.run_expect([0, 1], "test -e %s", path, sudo=True).rc != 0:
        return None
    return node.read_file(path)


def _ls(node: Any, path: str) -> list[str] | None:
    if node.run_expect([0, 1], "test -d %s", path, sudo=True).rc != 0:
        return None
    r = node.run("ls -1 %s", path, sudo=True)
    if not r.ok:
        raise NodeError(f"cannot list {path}", node=node.name, command=r.command, rc=r.rc,
                        stderr=redact(r.stderr))
    return listing(r.stdout)


def host_record(node: Any, *, k3s_config: str, cni_dirs: list[str]) -> dict[str, Any]:
    """Everything the snapshot keeps of one node, read over SSH (read-only).

    Args:
        node: a :class:`runbook.nodes.Node`.
        k3s_config: the path of k3s' ``config.yaml`` (``paths.k3s_config``).
        cni_dirs: the CNI folders to list (``paths.cni_dir``, ``paths.k3s_cni_dir``).

    Raises:
        NodeError: the node cannot be reached or a read fails.

    Example:
        >>> host_record(node, k3s_config="/etc/rancher/k3s/config.yaml",
        ...             cni_dirs=["/etc/cni/net.d"])["iptables"]["ipv4"]["nat"]  # doctest: +SKIP
    """
    files: dict[str, str] = {}
    main = _read(node, k3s_config)
    if main is not None:
        files[k3s_config] = mask_config_text(main)
    drop_in = f"{k3s_config}.d"
    for name in _ls(node, drop_in) or []:
        if name.endswith((".yaml", ".yml")):
            text = _read(node, f"{drop_in}/{name}")
            if text is not None:
                files[f"{drop_in}/{name}"] = mask_config_text(text)
    link_text = node.check_output("ip -o link show")
    iptables: dict[str, Any] = {}
    for family, cmd in (("ipv4", "iptables-save"), ("ipv6", "ip6tables-save")):
        r = node.run(cmd, sudo=True)
        if r.ok:
            iptables[family] = iptables_rule_counts(r.stdout)
        elif family == "ipv4":
            r.check_output()        # raises NodeError with the command and stderr
    config = _read(node, CONTAINERD_CONFIG)
    template = _read(node, CONTAINERD_TEMPLATE)
    return {
        "reachable": True,
        "k3s_config_files": files,
        "ip_link": [redact(ln) for ln in link_text.splitlines() if ln.strip()],
        "interfaces": [{"name": i.name, "type": i.link_type, "mtu": i.mtu, "state": i.state,
                        "parent": i.parent, "up": i.up} for i in parse_ip_link(link_text)],
        "iptables": iptables,
        "cni": {d: _ls(node, d) for d in cni_dirs},
        "containerd": {"config": CONTAINERD_CONFIG, "present": config is not None,
                       "cni_section": containerd_cni_section(config) if config else None,
                       "template": redact(template) if template is not None else None},
    }


def unreachable(reason: str) -> dict[str, Any]:
    """The host record of a node the snapshot did not read over SSH, and why."""
    return {"reachable": False, "reason": reason}
