"""Typed parameters of a runbook run: ``params/*.yaml`` and the Cilium helm values.

Everything a phase notebook needs to know about its target lives in one YAML file, so
that rehearsing on the twin and running on the real cluster differ only by that file.
Loading is strict: a malformed file, an unknown key or a wrong type fails here, before
anything is contacted, with one line naming the file, the dotted field and the problem.

Example:
    >>> from runbook import params
    >>> p = params.validate(params.load("params/minicloud.yaml"))   # doctest: +SKIP
    >>> [n.name for n in p.servers]                                  # doctest: +SKIP
    ['set-hog']
    >>> params.check_values(p, p.values())                           # doctest: +SKIP
    [Finding(severity='warning', field='k8sServiceHost', ...)]
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import (ConfirmationRequired, ParamsError, ParamsFileError, RunIdError,
                     UnknownKeyError, ValuesFileError, ValuesMismatch)
from .safety import is_loopback, require_loopback, require_loopback_url

__all__ = [
    "Params", "Finding", "load", "validate", "check_values", "params_hash", "values_hash",
    "validate_run_id", "require_confirmation", "kpr_enabled", "FLANNEL_VXLAN_PORT",
]

#: flannel's VXLAN UDP port, which is also Cilium's default when ``tunnelPort`` is unset.
FLANNEL_VXLAN_PORT = 8472
#: k3s serves an apiserver proxy on every node (servers and agents) at 127.0.0.1:6444.
K3S_LOCAL_APISERVER_PORT = 6444


class _Model(BaseModel):
    # strict: a YAML string "yes" must not silently become True for a safety switch, and
    # a port written as "22" is a typo worth reporting rather than guessing.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# --------------------------------------------------------------------------- sections
class Target(_Model):
    """Which cluster the run acts on."""

    name: str = Field(description="Cluster name. With --execute on a real target, "
                                  "--confirm must equal it.", min_length=1)
    kind: Literal["real", "twin"] = Field(
        "real", description="'real' for a real cluster, 'twin' for the loopback rehearsal "
                            "cluster (then every endpoint must be loopback).")
    kubeconfig: str = Field("~/.kube/config", description="Kubeconfig path; a relative path "
                            "resolves against the params file's folder.")
    context: str | None = Field(None, description="Kubeconfig context; null = current-context.")


class SSH(_Model):
    """How the runbook reaches the nodes (paramiko, host keys always verified)."""

    user: str = Field("ubuntu", description="SSH user (not root: writes go through sudo).")
    key_path: str = Field("~/.ssh/id_ed25519", description="Private key file for the SSH user.")
    known_hosts: str = Field("~/.ssh/known_hosts",
                             description="known_hosts file the host keys are checked against.")
    trust_on_first_use: bool = Field(
        False, description="Accept and record an UNKNOWN host key (never a mismatched one). "
                           "Off by default: an unknown key is refused.")
    connect_timeout: float = Field(10, gt=0, description="SSH connect timeout, seconds.")
    sudo: bool = Field(True, description="Run privileged commands and file writes via sudo.")


class NodeParams(_Model):
    """One k3s node."""

    # A Kubernetes node name is a DNS-1123 subdomain: no spaces, quotes or shell syntax,
    # so a typo or a pasted command cannot reach a command line, a file name or a log.
    name: str = Field(description="Kubernetes node name (lowercase DNS-1123: letters, "
                                  "digits, '-' and '.').", min_length=1, max_length=253,
                      pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    role: Literal["server", "agent"] = Field(description="k3s role: 'server' or 'agent'.")
    address: str = Field(description="SSH address (IP or host name).", min_length=1)
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str | None = Field(None, description="Override of ssh.user for this node.")
    key_path: str | None = Field(None, description="Override of ssh.key_path for this node.")
    node_ip: str | None = Field(None, description="The node's InternalIP when it differs from "
                                                  "the SSH address (checked against "
                                                  "k8sServiceHost).")


class Paths(_Model):
    """Remote paths on the nodes."""

    k3s_config: str = Field("/etc/rancher/k3s/config.yaml", description="k3s config file.")
    cni_dir: str = Field("/etc/cni/net.d", description="Host CNI config dir (Cilium writes "
                                                       "05-cilium.conflist here).")
    k3s_cni_dir: str = Field("/var/lib/rancher/k3s/agent/etc/cni/net.d",
                             description="k3s' own CNI config dir (10-flannel.conflist).")
    flannel_dir: str = Field("/var/lib/rancher/k3s/agent/etc/flannel",
                             description="k3s flannel state (net-conf.json).")
    cni_leases_dir: str = Field("/var/lib/cni/networks/cbr0",
                                description="host-local IPAM leases of the flannel bridge.")
    backup_dir: str = Field("/var/backups/phase22",
                            description="Where file backups are written on each node.")


class Cilium(_Model):
    """The Cilium helm release."""

    version: str = Field("1.19.3", description="Chart version, pinned.")
    chart_repo_url: str = Field("https://helm.cilium.io/", description="Helm repository URL.")
    chart_repo_name: str = Field("cilium", description="Local name of the helm repository.")
    chart: str = Field("cilium", description="Chart name in the repository.")
    release: str = Field("cilium", description="Helm release name.")
    namespace: str = Field("kube-system", description="Release namespace.")
    values_file: str = Field("cilium-values.yaml",
                             description="Helm values file, relative to the params file.")
    helm_path: str | None = Field(None, description="helm binary; null = find it.")
    cli_path: str | None = Field(None, description="Optional cilium CLI; null = not used.")


class Velero(_Model):
    """The pre-migration Velero backup."""

    namespace: str = Field("velero", description="Velero namespace.")
    backup_name_template: str = Field("phase22-{run_id}",
                                      description="Backup name; {run_id} is substituted.")
    storage_location: str = Field("default", description="BackupStorageLocation name.")
    include_cluster_resources: bool = Field(True, description="spec.includeClusterResources.")
    ttl: str = Field("720h", description="Backup TTL (Go duration).")

    def backup_name(self, run_id: str) -> str:
        """The backup name for ``run_id`` (e.g. ``phase22-2026-11-26``)."""
        return self.backup_name_template.format(run_id=run_id)


class ArgoCD(_Model):
    """Argo CD auto-sync pause/resume."""

    namespace: str = Field("argocd", description="Argo CD namespace.")
    pause_parents: bool = Field(True, description="Also pause app-of-apps parents, which "
                                                  "would otherwise revert the children.")


class IngressCheck(_Model):
    """An HTTPS probe of one ingress host."""

    url: str = Field(description="URL to GET, e.g. https://homer.10.0.0.200.nip.io/.")
    expect_status: int = Field(200, ge=100, le=599, description="Expected HTTP status.")
    ca_file: str | None = Field(None, description="CA bundle to verify the certificate; "
                                                  "null = system trust.")
    resolve_to: str | None = Field(None, description="Connect to this 'host' or 'host:port' "
                                                     "instead of resolving the URL's host.")


class LoadBalancerIP(_Model):
    """A LoadBalancer Service whose external IP must survive the migration."""

    namespace: str = Field(description="Service namespace.")
    name: str = Field(description="Service name.")
    ip: str = Field(description="Expected status.loadBalancer.ingress IP.")


class RegressionCheck(_Model):
    """An extra check run before and after: an HTTP GET or a command on a node."""

    name: str = Field(description="Short name shown in the report.")
    kind: Literal["http", "command"] = Field(description="'http' or 'command'.")
    url: str | None = Field(None, description="For kind http: the URL.")
    resolve_to: str | None = Field(None, description="For kind http: 'host[:port]' override.")
    ca_file: str | None = Field(None, description="For kind http: CA bundle.")
    node: str | None = Field(None, description="For kind command: node name to run it on.")
    command: list[str] | None = Field(None, description="For kind command: argv, each "
                                                        "element quoted, never a shell string.")
    expect_status: int = Field(200, description="For kind http: expected status.")
    expect_output: str | None = Field(None, description="Substring the output must contain.")

    @model_validator(mode="after")
    def _kind_fields(self) -> RegressionCheck:
        if self.kind == "http" and not self.url:
            raise ValueError("a check of kind http needs 'url'")
        if self.kind == "command" and (not self.node or not self.command):
            raise ValueError("a check of kind command needs 'node' and 'command'")
        return self


class Checks(_Model):
    """Data-path and regression checks (defect 7: status alone proves no data path)."""

    ingress: list[IngressCheck] = Field(default_factory=list, description="Ingress probes.")
    loadbalancer_ips: list[LoadBalancerIP] = Field(default_factory=list,
                                                   description="LB IPs that must not change.")
    regression: list[RegressionCheck] = Field(default_factory=list,
                                              description="Extra checks.")


class Timeouts(_Model):
    """Timeouts of each wait, in seconds."""

    api_ready: float = Field(120, gt=0, description="API back after a server restart.")
    node_ready: float = Field(300, gt=0, description="A node Ready after a restart.")
    helm: float = Field(600, gt=0, description="helm upgrade --install --wait.")
    agents_ready: float = Field(300, gt=0, description="All cilium agents Ready.")
    pods_ready: float = Field(600, gt=0, description="Restarted pods Ready.")
    velero: float = Field(600, gt=0, description="Velero backup/restore terminal phase.")
    ssh_command: float = Field(60, gt=0, description="One command on a node.")


class Limits(_Model):
    """Blast-radius caps."""

    agent_batch_size: int = Field(1, ge=1, description="Agents restarted at once.")
    pod_restart_batch: int = Field(10, ge=1, description="Pods restarted at once.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Wait timeouts.")
    lock_seconds: int = Field(1800, ge=1, description="Lifetime of the migration lock (a Lease "
                                                       "renewed by each phase): after it, a crashed "
                                                       "run's lock may be taken over.")


class Decision(_Model):
    """The 'when to execute' criteria of the Phase 22 text."""

    pod_threshold: int = Field(500, ge=0, description="Execute only at or above this many "
                                                      "pods (below it the gain is small).")
    networkpolicies_required: bool = Field(False, description="The workloads need "
                                                              "NetworkPolicy enforcement.")
    multi_service_traffic: bool = Field(False, description="There is multi-service traffic "
                                                           "worth observing with Hubble.")
    fresh_cluster_max_pods: int = Field(20, ge=0, description="At or below this many pods "
                                                              "the cluster counts as fresh.")
    proceed_despite_deferral: bool = Field(False, description="Go on even when the verdict "
                                                              "is DEFER (rehearsals).")


class K3s(_Model):
    """The server-only k3s options the migration sets (agents inherit them, defect 1)."""

    flannel_backend: str = Field("none", description="k3s flannel-backend on servers; "
                                                     "'none' hands networking to Cilium.")
    disable_network_policy: bool = Field(True, description="Stop k3s' embedded kube-router "
                                                           "network-policy controller.")
    disable_kube_proxy: Union[Literal["auto"], bool] = Field(
        "auto", description="disable-kube-proxy on servers; 'auto' follows the values' "
                            "kubeProxyReplacement (defect 2).")


class Twin(_Model):
    """Extra facts of a twin target (written by `runbook twin up`)."""

    state_dir: str | None = Field(None, description="The twin's state folder.")
    chart_repo_url: str | None = Field(None, description="Overrides cilium.chart_repo_url.")
    admin_url: str | None = Field(None, description="The twin's fault/admin endpoint.")
    ingress_ca_file: str | None = Field(None, description="Default CA for ingress checks.")


class Params(_Model):
    """The whole params file. Load it with :func:`load`, never by hand."""

    target: Target = Field(description="The cluster acted on.")
    ssh: SSH = Field(default_factory=SSH, description="SSH settings.")
    nodes: list[NodeParams] = Field(min_length=1, description="Every k3s node.")
    paths: Paths = Field(default_factory=Paths, description="Remote paths on the nodes.")
    cilium: Cilium = Field(default_factory=Cilium, description="The Cilium release.")
    velero: Velero = Field(default_factory=Velero, description="Velero backup.")
    argocd: ArgoCD = Field(default_factory=ArgoCD, description="Argo CD pause/resume.")
    checks: Checks = Field(default_factory=Checks, description="Data-path checks.")
    limits: Limits = Field(default_factory=Limits, description="Batches and timeouts.")
    decision: Decision = Field(default_factory=Decision, description="Execute/defer criteria.")
    k3s: K3s = Field(default_factory=K3s, description="k3s server options to set.")
    twin: Twin | None = Field(None, description="Only for kind twin.")

    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        names = [n.name for n in self.nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate node names: {', '.join(dup)}")
        if not any(n.role == "server" for n in self.nodes):
            raise ValueError("no node has role 'server'")
        for c in self.checks.regression:
            if c.node is not None and c.node not in names:
                raise ValueError(f"regression check {c.name!r} names unknown node {c.node!r}")
        if self.twin is not None and self.target.kind != "twin":
            raise ValueError("a 'twin' section needs target.kind: twin")
        return self

    # ------------------------------------------------------------------ derived facts
    @property
    def source(self) -> Path | None:
        """The params file this was loaded from (None when built in code)."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """Folder relative paths resolve against: the params file's folder, else cwd."""
        return self._source.parent if self._source else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        """Expand ``~`` and resolve ``value`` against :attr:`base_dir`."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def kubeconfig_path(self) -> Path:
        """The kubeconfig, resolved."""
        return self.resolve_path(self.target.kubeconfig)

    @property
    def values_path(self) -> Path:
        """The Cilium values file, resolved."""
        return self.resolve_path(self.cilium.values_file)

    @property
    def chart_repo_url(self) -> str:
        """The helm repository actually used (a twin may override it)."""
        if self.twin is not None and self.twin.chart_repo_url:
            return self.twin.chart_repo_url
        return self.cilium.chart_repo_url

    @property
    def servers(self) -> list[NodeParams]:
        """Server nodes, in file order (restarted first, one at a time)."""
        return [n for n in self.nodes if n.role == "server"]

    @property
    def agents(self) -> list[NodeParams]:
        """Agent nodes, in file order."""
        return [n for n in self.nodes if n.role == "agent"]

    def node(self, name: str) -> NodeParams:
        """The node called ``name``; KeyError names the known nodes otherwise."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in the params (known: {', '.join(self.node_names)})")

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def values(self) -> dict[str, Any]:
        """Load the Cilium helm values file named by ``cilium.values_file``.

        Raises:
            ValuesFileError: the file is missing, unreadable, not YAML or not a mapping;
                the message names the params file and the field ``cilium.values_file``.
        """
        path = self.values_path
        where = str(self._source) if self._source else None
        if not path.is_file():
            raise ValuesFileError(f"values file {path} does not exist", file=where,
                              field="cilium.values_file",
                              hint="fix cilium.values_file (relative paths start at the "
                                   "params file's folder)")
        try:
            data = _yaml_safe().load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValuesFileError(f"cannot read values file {path}: {e}", file=where,
                              field="cilium.values_file") from e
        except YAMLError as e:
            raise ValuesFileError(f"values file is not valid YAML: {_yaml_problem(e)}",
                              file=str(path), field="cilium.values_file") from e
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValuesFileError(f"values file {path} must hold a mapping, not "
                              f"{type(data).__name__}", file=where, field="cilium.values_file")
        return data

    def disable_kube_proxy(self, values: dict[str, Any] | None = None) -> bool:
        """Whether servers get ``disable-kube-proxy: true`` (auto follows the values' KPR)."""
        setting = self.k3s.disable_kube_proxy
        if setting == "auto":
            return kpr_enabled(self.values() if values is None else values)
        return bool(setting)

    def check_loopback(self) -> None:
        """For a twin target, refuse every endpoint that is not loopback.

        Checks the node addresses, the kubeconfig's server URL (when the file exists; the
        cluster module checks again when it connects), the chart repository, the twin's
        admin URL, and every check URL (through its ``resolve_to`` when one is given).

        Raises:
            runbook.errors.LoopbackViolation: naming the file and the field.
        """
        kind = self.target.kind
        if kind != "twin":
            return
        where = f"{self._source}: " if self._source else ""
        for i, n in enumerate(self.nodes):
            require_loopback(n.address, kind=kind, what=f"{where}field nodes.{i}.address")
        repo = self.chart_repo_url
        # a local chart (file:// or a path) opens no connection; anything else must be loopback
        if urlsplit(repo).scheme not in ("", "file"):
            field = "twin.chart_repo_url" if repo != self.cilium.chart_repo_url else \
                "cilium.chart_repo_url"
            require_loopback_url(repo, kind=kind, what=f"{where}field {field}")
        if self.twin and self.twin.admin_url:
            require_loopback_url(self.twin.admin_url, kind=kind, what=f"{where}field twin.admin_url")
        for i, c in enumerate(self.checks.ingress):
            _require_loopback_probe(c.url, c.resolve_to, kind, f"{where}field checks.ingress.{i}")
        for i, r in enumerate(self.checks.regression):
            if r.kind == "http" and r.url:
                _require_loopback_probe(r.url, r.resolve_to, kind,
                                        f"{where}field checks.regression.{i}")
        for server in kubeconfig_servers(self.kubeconfig_path, self.target.context):
            require_loopback_url(server, kind=kind,
                                 what=f"{where}field target.kubeconfig (server {server})")


def _require_loopback_probe(url: str, resolve_to: str | None, kind: str, what: str) -> None:
    # With resolve_to the URL's host is only the SNI/Host header; the socket goes to
    # resolve_to. Without it the URL's host is resolved, e.g. *.nip.io -> 10.0.0.200.
    if resolve_to:
        require_loopback(split_host_port(resolve_to)[0], kind=kind, what=what + ".resolve_to")
    else:
        require_loopback_url(url, kind=kind, what=what + ".url")


def split_host_port(value: str) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.

    Example:
        >>> split_host_port("127.0.0.1:8443"), split_host_port("[::1]:9"), split_host_port("::1")
        (('127.0.0.1', 8443), ('::1', 9), ('::1', None))
    """
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if v.count(":") == 1:
        host, port = v.split(":")
        return host, int(port) if port else None
    return v, None


def kubeconfig_servers(path: Path, context: str | None = None) -> list[str]:
    """The API server URL(s) a kubeconfig would use; ``[]`` if the file does not exist.

    With a resolvable context (given, or ``current-context``) only that cluster's server
    is returned; otherwise every cluster's, so an ambiguous file is checked in full.
    """
    if not path.is_file():
        return []
    try:
        cfg = _yaml_safe().load(path.read_text(encoding="utf-8")) or {}
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


# --------------------------------------------------------------------------- loading
def _yaml_safe() -> YAML:
    # ruamel's safe loader (YAML 1.2: "yes"/"on" stay strings) and duplicate keys are errors.
    y = YAML(typ="safe", pure=True)
    y.allow_duplicate_keys = False
    return y


_KEY_LINE = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z0-9_.-]+)\s*:(?:\s|$)")


def _yaml_field_at(text: str, e: YAMLError) -> str | None:
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


def _yaml_problem(e: YAMLError) -> str:
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        return where + " ".join(str(x) for x in (e.context, e.problem) if x).replace("\n", " ")
    return " ".join(str(e).split())


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
    if typ == "extra_forbidden":
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
        raise ParamsFileError("params file does not exist", file=str(src)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsFileError(f"cannot read params file: {e}", file=str(src)) from e
    try:
        data = _yaml_safe().load(text)
    except YAMLError as e:
        raise ParamsFileError(f"not valid YAML: {_yaml_problem(e)}", file=str(src),
                              field=_yaml_field_at(text, e)) from e
    if data is None:
        raise ParamsFileError("the params file is empty", file=str(src))
    p = from_dict(data, source=src)
    p.check_loopback()
    return p


# --------------------------------------------------------------------------- values
@dataclass
class Finding:
    """One observation about the values against the params.

    Attributes:
        severity: ``error`` (refuse to run), ``warning`` (run, but read it) or ``info``.
        field: the values key (dotted) or params field concerned.
        message: what is wrong and why it matters.
        hint: how to fix it.
    """

    severity: Literal["error", "warning", "info"]
    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.field}: {self.message}" + (
            f" (fix: {self.hint})" if self.hint else "")


def _get(values: dict[str, Any], dotted: str, default: Any = None) -> Any:
    cur: Any = values
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def kpr_enabled(values: dict[str, Any]) -> bool:
    """True when the values turn kube-proxy replacement on (``true`` or ``"true"``)."""
    v = values.get("kubeProxyReplacement")
    return v is True or (isinstance(v, str) and v.strip().lower() == "true")


def check_values(params: Params, values: dict[str, Any]) -> list[Finding]:
    """Compare the Cilium values with the params and the known k3s/Cilium pitfalls.

    Args:
        params: the loaded params.
        values: the helm values (``params.values()``).

    Returns:
        Findings, errors first. Errors are contradictions that would break the cluster;
        :func:`validate` refuses them.

    Example:
        >>> [str(f) for f in check_values(p, {"kubeProxyReplacement": "strict"})]  # doctest: +SKIP
        ['ERROR kubeProxyReplacement: "strict" is gone since Cilium 1.14 ...']
    """
    out: list[Finding] = []
    add = out.append
    kpr_raw = values.get("kubeProxyReplacement")
    kpr = kpr_enabled(values)
    if kpr_raw is not None and not isinstance(kpr_raw, bool) and str(kpr_raw).lower() not in (
            "true", "false"):
        add(Finding("error", "kubeProxyReplacement",
                    f"{kpr_raw!r} is not accepted by the 1.19 chart (only true or false; "
                    "'strict'/'partial' were removed)", "use kubeProxyReplacement: true"))
    dkp = params.k3s.disable_kube_proxy
    if kpr and dkp is False:
        add(Finding("error", "k3s.disable_kube_proxy",
                    "kube-proxy replacement is on but the params keep k3s' embedded kube-proxy "
                    "(disable_kube_proxy: false): both would program services (defect 2)",
                    "set k3s.disable_kube_proxy: auto (or true)"))
    if not kpr and dkp is True:
        add(Finding("error", "k3s.disable_kube_proxy",
                    "disable-kube-proxy would be set but kube-proxy replacement is off: "
                    "nothing would implement Services",
                    "set kubeProxyReplacement: true, or k3s.disable_kube_proxy: auto"))
    host = values.get("k8sServiceHost")
    port = values.get("k8sServicePort")
    if values.get("k8sServiceHostRef") and host:
        add(Finding("error", "k8sServiceHostRef",
                    "k8sServiceHostRef cannot be set together with k8sServiceHost",
                    "keep only k8sServiceHost"))
    if kpr and not host:
        add(Finding("error", "k8sServiceHost",
                    "kube-proxy replacement needs k8sServiceHost: without kube-proxy the "
                    "agents cannot reach the API through the kubernetes Service",
                    "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
    if host:
        host_s = str(host).strip()
        servers = list(dict.fromkeys(a for n in params.servers for a in (n.address, n.node_ip) if a))
        # a server reached by host name, without node_ip, cannot be compared with an IP
        unverifiable = [n.name for n in params.servers if not n.node_ip and not _is_ip(n.address)]
        try:
            port_i = int(port) if port is not None else None
        except (TypeError, ValueError):
            port_i = None
            add(Finding("error", "k8sServicePort", f"{port!r} is not a port number",
                        "k8sServicePort: 6444"))
        if host_s == "auto":
            add(Finding("error", "k8sServiceHost", "'auto' works only on kubeadm clusters",
                        "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
        elif host_s in ("127.0.0.1", "localhost") and params.target.kind == "real":
            if port_i != K3S_LOCAL_APISERVER_PORT:
                add(Finding("error", "k8sServicePort",
                            f"127.0.0.1:{port} is not served on k3s agents; k3s' local "
                            "apiserver proxy listens on 127.0.0.1:6444 on every node",
                            "k8sServicePort: 6444"))
        elif host_s in servers or is_loopback(host_s):
            if len(servers) > 1 or params.target.kind == "real":
                add(Finding("warning", "k8sServiceHost",
                            f"{host_s} is a single server: Cilium loses the API when that "
                            "server is down (defect 13)",
                            "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
        elif unverifiable:
            add(Finding("warning", "k8sServiceHost",
                        f"cannot tell whether {host_s} is a server: "
                        f"{', '.join(unverifiable)} is addressed by name",
                        "set nodes[].node_ip, or use k8sServiceHost: 127.0.0.1 with port 6444"))
        else:
            add(Finding("error", "k8sServiceHost",
                        f"{host_s} is neither a server node's address "
                        f"({', '.join(servers)}) nor 127.0.0.1",
                        "k8sServiceHost: 127.0.0.1 with k8sServicePort: 6444"))
    if "tunnel" in values:
        add(Finding("error", "tunnel", "the old 'tunnel' key is rejected by the 1.19 chart",
                    "use routingMode: tunnel and tunnelProtocol: vxlan"))
    routing = str(values.get("routingMode") or "tunnel")
    proto = str(values.get("tunnelProtocol") or "vxlan")
    tport = values.get("tunnelPort") or FLANNEL_VXLAN_PORT  # 0/absent = protocol default
    if routing == "tunnel" and proto == "vxlan" and str(tport) == str(FLANNEL_VXLAN_PORT):
        flannel_off = params.k3s.flannel_backend.strip().lower() == "none"
        add(Finding("warning" if flannel_off else "error", "tunnelPort",
                    f"Cilium's VXLAN would use UDP {FLANNEL_VXLAN_PORT}, flannel's port: it "
                    "collides while flannel.1 exists (defect 4)"
                    + ("; tolerated because the runbook deletes flannel.1 before the install"
                       if flannel_off else "; flannel stays on (k3s.flannel_backend is not none)"),
                    "tunnelPort: 8473"))
    hubble_on = _get(values, "hubble.enabled", True) is not False
    relay_on = _get(values, "hubble.relay.enabled", False) is True
    ui_on = _get(values, "hubble.ui.enabled", False) is True
    if relay_on and not hubble_on:
        add(Finding("error", "hubble.enabled", "hubble.relay needs hubble.enabled",
                    "hubble.enabled: true"))
    if ui_on and not relay_on:
        add(Finding("error", "hubble.relay.enabled", "hubble.ui needs hubble.relay",
                    "hubble.relay.enabled: true"))
    name = _get(values, "cluster.name")
    if name is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", str(name)):
        add(Finding("error", "cluster.name", f"{name!r} must be DNS-like, 1-32 characters",
                    "cluster.name: default"))
    if str(_get(values, "ipam.mode", "cluster-pool")) == "kubernetes":
        add(Finding("info", "ipam.mode",
                    "ipam kubernetes reuses flannel's podCIDRs: old pods keep addresses Cilium "
                    "may hand out again until they restart (defect 5)",
                    "the install phase restarts every non-hostNetwork pod promptly"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])


def validate(params: Params, values: dict[str, Any] | None = None) -> Params:
    """Refuse params whose values contradict them; returns ``params`` for chaining.

    Raises:
        ValuesFileError: the values file is missing or malformed (a ParamsError).
        ValuesMismatch: :func:`check_values` found an error; the message names the values
            file and the field, and lists every error on one line.
        runbook.errors.LoopbackViolation: a twin target points off loopback.
    """
    params.check_loopback()
    if values is None:
        values = params.values()
    errors = [f for f in check_values(params, values) if f.severity == "error"]
    if errors:
        first = errors[0]
        text = "; ".join(f"{f.field}: {f.message}" for f in errors)
        text = text.removeprefix(f"{first.field}: ")
        # A contradiction has two sides: the error names the values file (``file``) and
        # the text names the params file, so the operator knows both places to look.
        if params.source:
            text += f" (params file: {params.source})"
        raise ValuesMismatch(text, file=str(params.values_path), field=first.field,
                             hint=first.hint or None)
    return params


# --------------------------------------------------------------------------- provenance
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode()


def values_hash(values: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the values."""
    return hashlib.sha256(_canonical(values)).hexdigest()


def params_hash(params: Params, values: dict[str, Any] | None = None) -> str:
    """sha256 over the canonical JSON of the params and of the values (provenance).

    Formatting, comments and key order do not change it; any value does.
    """
    if values is None:
        values = params.values()
    doc = {"params": params.model_dump(mode="json"), "values": values}
    return hashlib.sha256(_canonical(doc)).hexdigest()


_RUN_ID = re.compile(r"[A-Za-z0-9._-]+")


def validate_run_id(run_id: str) -> str:
    """Accept a run id that is a plain folder name; return it.

    Raises:
        RunIdError: empty, ``.``/``..``, a path separator, or a character outside
            ``[A-Za-z0-9._-]``.
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunIdError("the run id is empty", field="run_id")
    if "/" in run_id or "\\" in run_id or os.sep in run_id:
        raise RunIdError(f"run id {run_id!r} contains a path separator", field="run_id",
                         hint="use letters, digits, '.', '_' and '-' only")
    if run_id in (".", "..") or ".." in run_id:
        raise RunIdError(f"run id {run_id!r} contains '..'", field="run_id",
                         hint="use letters, digits, '.', '_' and '-' only")
    if not _RUN_ID.fullmatch(run_id):
        bad = sorted({c for c in run_id if not _RUN_ID.fullmatch(c)})
        raise RunIdError(f"run id {run_id!r} has characters outside [A-Za-z0-9._-]: "
                         f"{' '.join(repr(c) for c in bad)}", field="run_id")
    return run_id


def require_confirmation(params: Params, execute: bool, confirm: str | None) -> None:
    """Refuse ``execute`` on a real target unless ``confirm`` equals the cluster name.

    Raises:
        ConfirmationRequired: kind real, execute set, and confirm != target.name.
    """
    if params.target.kind == "real" and execute and (confirm or "") != params.target.name:
        given = f" (got {confirm!r})" if confirm else ""
        src = f" (target.name in {params.source})" if params.source else ""
        raise ConfirmationRequired(
            f"--execute on the real cluster {params.target.name!r}{src} needs --confirm "
            f"{params.target.name}{given}", field="confirm",
            hint=f"re-run with --confirm {params.target.name} once the dry run looks right")
