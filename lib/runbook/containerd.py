"""Which CNI folder containerd reads on a k3s node, before and after flannel goes.

k3s writes containerd's configuration every time it starts,
``/var/lib/rancher/k3s/agent/etc/containerd/config.toml`` (k3s ``pkg/agent/templates``,
``pkg/agent/config``). With flannel on, its CRI ``cni`` section names k3s's own folders
(``/var/lib/rancher/k3s/agent/etc/cni/net.d`` and k3s's plugin folder); with
``flannel-backend: none`` k3s leaves that section out (``CNIConfDir``/``CNIBinDir`` are
empty), and containerd falls back to ``/etc/cni/net.d`` and ``/opt/cni/bin``: the Cilium
chart's ``cni.confPath`` / ``cni.binPath`` defaults, where its agent writes
``05-cilium.conflist`` and installs ``cilium-cni``.

A ``config.toml.tmpl`` beside it replaces that generation (common for GPU runtimes). When
it hard-codes k3s's folder, containerd keeps reading it after flannel is off: Cilium's
conflist is never read, the node stays NotReady ("cni plugin not initialized") and every
pod on it keeps no network. Two checks guard against it:

* preflight (:func:`template_cni_dirs`): a template whose CNI folders, with flannel off,
  would differ from the values' folders fails the run before anything changes;
* reconfigure (:func:`config_cni_dirs`): after each node's k3s restart, the generated
  ``config.toml`` must name Cilium's folders (a template added after preflight).

Both parsers are pure.

Example:
    >>> config_cni_dirs('[plugins."io.containerd.grpc.v1.cri".cni]\\n  conf_dir = "/x"\\n')
    ('/x', '/opt/cni/bin')
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .nodes import Node

__all__ = ["CONFIG_TOML", "CONFIG_TMPL", "K3S_CNI_CONF_DIR", "DEFAULT_CNI_DIRS", "TemplateVerdict",
           "config_cni_dirs", "template_cni_dirs", "mismatch", "read_config", "read_template",
           "FIX_HINT"]

CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"
CONFIG_TOML = f"{CONTAINERD_DIR}/config.toml"
CONFIG_TMPL = f"{CONTAINERD_DIR}/config.toml.tmpl"
K3S_CNI_CONF_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
#: containerd's own defaults when its CRI plugin has no cni section
DEFAULT_CNI_DIRS = ("/etc/cni/net.d", "/opt/cni/bin")
_CRI_SECTIONS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")
_SECTION = re.compile(r'^\s*\[plugins\."(io\.containerd\.grpc\.v1\.cri|io\.containerd\.cri\.v1\.runtime)"\.cni\]\s*$')
_HEADER = re.compile(r"^\s*\[")
_KEY = re.compile(r'^\s*(conf_dir|bin_dir)\s*=\s*(.+?)\s*$')
_COMMENT = re.compile(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", re.S)
_LOGIC = re.compile(r"\{\{-?\s*(if|else|range|with|define|block)\b")
_EMPTY_WITHOUT_FLANNEL = re.compile(r"\{\{-?\s*\.NodeConfig\.AgentConfig\.CNI(Conf|Bin)Dir\s*-?\}\}")

FIX_HINT = ("edit the node's config.toml.tmpl: set conf_dir and bin_dir of the CRI cni section to "
            "Cilium's folders (the values' cni.confPath and cni.binPath, /etc/cni/net.d and "
            "/opt/cni/bin by default), or use {{ .NodeConfig.AgentConfig.CNIConfDir }} and "
            "{{ .NodeConfig.AgentConfig.CNIBinDir }}, which k3s leaves empty once flannel is off; "
            "or point cni.confPath/cni.binPath in the values at the template's folders. Then "
            "start a new run (this run's journal is bound to the old params)")


def config_cni_dirs(text: str) -> tuple[str, str]:
    """``(conf_dir, bin_dir)`` containerd uses with this ``config.toml`` (its defaults
    without a CRI cni section), pure.

    Raises:
        ValueError: the text is not TOML (containerd would not start either).
    """
    doc = tomllib.loads(text)
    plugins = doc.get("plugins") or {}
    cni: dict = {}
    for key in _CRI_SECTIONS:
        section = plugins.get(key) or {}
        if isinstance(section, dict) and isinstance(section.get("cni"), dict):
            cni = section["cni"]
    return (str(cni.get("conf_dir") or DEFAULT_CNI_DIRS[0]).rstrip("/"),
            str(cni.get("bin_dir") or DEFAULT_CNI_DIRS[1]).rstrip("/"))


@dataclass
class TemplateVerdict:
    """What a ``config.toml.tmpl`` makes containerd read once flannel is off.

    Attributes:
        conf_dir, bin_dir: the folders (containerd's defaults where the template leaves
            them to k3s, which sets nothing without flannel).
        certain: False when the template uses logic (``if``, ``range`` ...) this check
            does not evaluate: a person must read it.
    """

    conf_dir: str
    bin_dir: str
    certain: bool = True


def template_cni_dirs(text: str) -> TemplateVerdict:
    """The CNI folders a ``config.toml.tmpl`` renders with ``flannel-backend: none`` (pure).

    >>> template_cni_dirs('{{ template "base" . }}\\n')
    TemplateVerdict(conf_dir='/etc/cni/net.d', bin_dir='/opt/cni/bin', certain=True)
    >>> template_cni_dirs('[plugins."io.containerd.grpc.v1.cri".cni]\\n'
    ...                   '  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"\\n').conf_dir
    '/var/lib/rancher/k3s/agent/etc/cni/net.d'
    >>> template_cni_dirs('[plugins."io.containerd.grpc.v1.cri".cni]\\n'
    ...                   '  conf_dir = "{{ .NodeConfig.AgentConfig.CNIConfDir }}"\\n').conf_dir
    '/etc/cni/net.d'
    """
    text = _COMMENT.sub("", text)
    found = {"conf_dir": None, "bin_dir": None}
    inside = False
    for line in text.splitlines():
        if _SECTION.match(line):
            inside = True
            continue
        if inside and _HEADER.match(line):
            inside = False
        m = _KEY.match(line) if inside else None
        if m:
            value = m.group(2).strip().strip('"').strip("'")
            value = _EMPTY_WITHOUT_FLANNEL.sub("", value).strip()
            found[m.group(1)] = value or None
    return TemplateVerdict((found["conf_dir"] or DEFAULT_CNI_DIRS[0]).rstrip("/"),
                           (found["bin_dir"] or DEFAULT_CNI_DIRS[1]).rstrip("/"),
                           certain=not _LOGIC.search(text))


def mismatch(have: tuple[str, str], want: tuple[str, str]) -> list[str]:
    """What differs between containerd's ``(conf_dir, bin_dir)`` and Cilium's (pure).

    >>> mismatch(("/var/lib/rancher/k3s/agent/etc/cni/net.d", "/opt/cni/bin"), ("/etc/cni/net.d", "/opt/cni/bin"))
    ['conf_dir /var/lib/rancher/k3s/agent/etc/cni/net.d, Cilium writes its CNI config to /etc/cni/net.d']
    """
    out = []
    if have[0].rstrip("/") != want[0].rstrip("/"):
        out.append(f"conf_dir {have[0]}, Cilium writes its CNI config to {want[0]}")
    if have[1].rstrip("/") != want[1].rstrip("/"):
        out.append(f"bin_dir {have[1]}, Cilium installs cilium-cni in {want[1]}")
    return out


def read_template(n: Node) -> str | None:
    """The node's ``config.toml.tmpl`` (root only), None when there is none."""
    if not n.run("test -e %s", CONFIG_TMPL, sudo=True).ok:
        return None
    return n.run("cat %s", CONFIG_TMPL, sudo=True).check_output()


def read_config(n: Node) -> str:
    """The ``config.toml`` k3s generated at its last start (root only, mode 0600)."""
    return n.run("cat %s", CONFIG_TOML, sudo=True).check_output()


def template_fact(n: Node) -> dict | None:
    """Node fact for preflight: what the node's ``config.toml.tmpl`` renders without flannel
    (``{"conf_dir", "bin_dir", "certain"}``), None without a template (over SSH)."""
    tmpl = read_template(n)
    if tmpl is None:
        return None
    v = template_cni_dirs(tmpl)
    return {"conf_dir": v.conf_dir, "bin_dir": v.bin_dir, "certain": v.certain}


def has_bpftool(n: Node) -> bool:
    """Node fact: ``bpftool`` runs (05-rollback proves with it that no Cilium program or map
    is left)."""
    return n.run("bpftool version", sudo=True).rc not in (126, 127)


def preflight_rows(templates: dict[str, dict | None], want: tuple[str, str]) -> list[tuple[str, str, str]]:
    """Preflight's rows (check, ok|warn|fail, detail) from each node's :func:`template_fact`
    against Cilium's CNI folders ``want`` (``cni.confPath``, ``cni.binPath``), pure.

    >>> rows = preflight_rows({"a1": {"conf_dir": K3S_CNI_CONF_DIR, "bin_dir": "/opt/cni/bin",
    ...                               "certain": True}, "s1": None}, DEFAULT_CNI_DIRS)
    >>> [(c.split(": ")[-1], st) for c, st, _ in rows]
    [("containerd will read Cilium's CNI folder once flannel is off", 'ok'), ('a1', 'fail')]
    """
    check = "containerd will read Cilium's CNI folder once flannel is off"
    rows: list[tuple[str, str, str]] = []
    plain = [name for name, v in templates.items() if v is None]
    for name, v in templates.items():
        if v is None:
            continue
        diffs = mismatch((v["conf_dir"], v["bin_dir"]), want)
        if diffs:
            rows.append((f"{check}: {name}", "fail",
                         f"{CONFIG_TMPL} replaces the config k3s generates and makes containerd use "
                         f"{'; '.join(diffs)}. Once flannel is off containerd would never read "
                         f"Cilium's 05-cilium.conflist: {name} would stay NotReady (\"cni plugin not "
                         f"initialized\") and its pods without a network. Fix: {FIX_HINT}"))
        elif not v["certain"]:
            rows.append((f"{check}: {name}", "warn",
                         f"{CONFIG_TMPL} uses template logic (if/range/with) this check does not "
                         f"evaluate; outside it the CNI folders are {v['conf_dir']} and {v['bin_dir']}: "
                         "read it and make sure it renders Cilium's folders without flannel"))
        else:
            rows.append((f"{check}: {name}", "ok",
                         f"{CONFIG_TMPL} renders {v['conf_dir']} and {v['bin_dir']} without flannel"))
    if plain:
        same = tuple(want) == DEFAULT_CNI_DIRS
        rows.insert(0, (check, "ok" if same else "fail",
                        f"no config.toml.tmpl on {', '.join(plain)}: k3s generates config.toml and "
                        f"leaves the CNI folders to containerd's defaults ({DEFAULT_CNI_DIRS[0]}, "
                        f"{DEFAULT_CNI_DIRS[1]}) once flannel is off"
                        + ("" if same else f"; but Cilium's are {want[0]}, {want[1]}: set cni.confPath "
                                           "and cni.binPath back to the chart's defaults")))
    return rows


def bpftool_row(present: dict[str, bool]) -> tuple[str, str, str]:
    """A preflight row from each node's :func:`has_bpftool` (pure).

    >>> bpftool_row({"s1": True, "a1": False})[1]
    'warn'
    """
    check = "bpftool on every node (the rollback's datapath gate)"
    missing = [n for n, ok in present.items() if not ok]
    if not missing:
        return (check, "ok", "present")
    return (check, "warn", f"missing on {', '.join(missing)}: a rollback could not prove that Cilium's "
                           "BPF state is gone there; install it (Ubuntu: linux-tools-common "
                           "linux-tools-$(uname -r))")
