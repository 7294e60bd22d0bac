"""The params file's schema: one pydantic model per section, and the facts derived from it.

Every field has a description (a unit test checks it) and every model forbids unknown
keys and coerces nothing: a YAML string ``"yes"`` never becomes True for a safety
switch, and a port written as ``"22"`` is a typo worth reporting. :class:`Params`
adds what the phases derive from the file: resolved paths, servers and agents, the
Cilium values, and the loopback guard of a twin target.

Example:
    >>> from runbook.params.schema import Params
    >>> p = Params.model_validate({"target": {"name": "c"},
    ...                            "nodes": [{"name": "n1", "role": "server", "address": "10.0.0.2"}]})
    >>> [n.name for n in p.servers], p.ssh.trust_on_first_use
    (['n1'], False)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from ..errors import ValuesFileError
from ..safety import require_loopback, require_loopback_url
from .model_base import _Model
from .phase_sections import (DEFAULT_PROBE_IMAGE, K3s, Decision, NodeByNode, Rollback, Twin,
                             Verify)
from .yaml_io import YAMLError, kubeconfig_servers, strict_yaml, yaml_problem

__all__ = [
    "Params", "Target", "SSH", "NodeParams", "Paths", "Cilium", "Velero", "ArgoCD",
    "IngressCheck", "LoadBalancerIP", "RegressionCheck", "Checks", "Timeouts", "Limits",
    "Decision", "K3s", "Rollback", "Verify", "DEFAULT_PROBE_IMAGE", "Twin", "NodeByNode", "BaseModel",
    "kpr_enabled", "split_host_port",
]


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
    node_ip: str | None = Field(None, description="The node's InternalIP (as the Node object "
                                                  "reports it) when it differs from the SSH "
                                                  "address; k8sServiceHost is checked against "
                                                  "it. Data only: never connected to.")


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
    chart_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the chart archive you expect (e.g. of the archive you pulled and "
                    "checked); the report compares the installed archive with it. null = compare "
                    "with the runbook's table of official Cilium releases (runbook.chart).")
    release: str = Field("cilium", description="Helm release name.")
    namespace: str = Field("kube-system", description="Release namespace.")
    values_file: str = Field("cilium-values.yaml",
                             description="Helm values file, relative to the params file.")
    helm_path: str | None = Field(None, description="helm binary; null = find it.")
    cli_path: str | None = Field(None, description="Optional cilium CLI; null = not used.")
    migration_cidr: str | None = Field(None, description=(
        "strategy node-by-node only: the NEW pod CIDR Cilium's cluster-pool IPAM hands out "
        "(e.g. 10.44.0.0/16). Flannel's pods keep the cluster CIDR while both overlays run, so "
        "it must overlap neither the cluster CIDR, the service CIDR nor a node network "
        "(01-preflight checks it against the cluster); the pods keep it after the switch."))
    migration_mask_size: int = Field(24, ge=8, le=30, description=(
        "strategy node-by-node only: the per-node block of migration_cidr "
        "(ipam.operator.clusterPoolIPv4MaskSize)."))

    @field_validator("migration_cidr")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import ipaddress

        try:
            net = ipaddress.ip_network(v.strip(), strict=True)
        except ValueError as e:
            raise ValueError(f"migration_cidr {v!r} is not a network address ({e}); write it "
                             "as network/prefix with no host bits, e.g. 10.44.0.0/16") from None
        if net.version != 4:
            raise ValueError("migration_cidr must be IPv4 (the migration's cluster-pool is IPv4 here)")
        return str(net)


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
    cleanup: float = Field(180, gt=0, description="Cilium's cleanup on one node during the "
                                                  "rollback: its pod started, the cleanup run, "
                                                  "the pod gone.")
    storage_healthy: float = Field(900, gt=0, description="Longhorn: every volume detached after "
                                                          "the scale-down, the volume users Ready "
                                                          "again after the scale-up, and every "
                                                          "volume healthy in 04-verify (replicas "
                                                          "rebuilt); the last two share one "
                                                          "deadline, counted from the scale-up.")
    probe_ready: float = Field(180, gt=0, description="04-verify's probe DaemonSet: a Ready "
                                                      "probe pod on every node (the image "
                                                      "pulled where it is missing), and gone "
                                                      "again after the checks.")


class Limits(_Model):
    """Blast-radius caps."""

    agent_batch_size: int = Field(1, ge=1, description="Agents restarted at once.")
    parallel_reads: int = Field(20, ge=1, le=256, description=(
        "Nodes read at once when gathering facts and running checks (read-only SSH "
        "commands, a bounded pool). Changes are never fanned out this way: they keep "
        "one server at a time and agents in agent_batch_size batches."))
    pod_restart_batch: int = Field(10, ge=1, description="Pods restarted at once.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Wait timeouts.")
    lock_seconds: int = Field(1800, ge=1, description="Lifetime of the migration lock (a Lease "
                                                       "renewed by each phase): after it, a crashed "
                                                       "run's lock may be taken over.")
    no_cni_window_max: float = Field(
        600, gt=0, description="Seconds the no-CNI window may stay open, counted from the "
                               "moment 02-reconfigure restarts the first server without flannel "
                               "(journal fact no_cni_window). Past it, reconfigure, install or "
                               "the pod restarts stop wherever they are and the report prints "
                               "this run's rollback command. 600 s: the node controller starts "
                               "evicting pods 300 s after a node turns NotReady, and the install's "
                               "pod restarts need the rest; a window that long means something is "
                               "wrong, and rolling back costs less than waiting.")


#: why ``strategy: node-by-node`` is refused on a real target (it runs on a twin)
NODE_BY_NODE_REFUSED = ("strategy 'node-by-node' is refused on a real target: it has passed "
                        "`runbook rehearse --strategy node-by-node --with-rollback` on twins only (minicloud, "
                        "the HA topology, the official chart 1.19.3), and its k3s-specific steps (Cilium's CNI "
                        "config in k3s's folder, the one-at-a-time k3s restarts of the switch and of its "
                        "reverse) have not been reviewed on a real cluster yet (docs/node-by-node.md, status). "
                        "Use 'big-bang' here; or rehearse node-by-node on a twin of this cluster "
                        "(`runbook snapshot`, then `runbook rehearse --from-snapshot ARCHIVE --strategy "
                        "node-by-node --with-rollback`), read the document's inferred steps, and set "
                        "node_by_node.accepted_on_real_target_by to your name to accept running it here")


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
    rollback: Rollback = Field(default_factory=Rollback, description="How the rollback "
                                                                     "removes Cilium.")
    verify: Verify = Field(default_factory=Verify, description="04-verify's probe DaemonSet.")
    twin: Twin | None = Field(None, description="Only for kind twin.")
    strategy: Literal["big-bang", "node-by-node"] = Field("big-bang", description=(
        "How the cluster moves to Cilium: 'big-bang' (every node at once, one outage; the "
        "default) or 'node-by-node' (both overlays side by side, one node at a time: "
        "docs/node-by-node.md; needs cilium.migration_cidr; rehearsed on twins only, so refused "
        "on a real target unless node_by_node.accepted_on_real_target_by names who accepts it)."))
    node_by_node: NodeByNode = Field(default_factory=NodeByNode, description=(
        "Settings of the node-by-node strategy (ignored by big-bang)."))

    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _strategy_settings(self) -> Params:
        if self.strategy != "node-by-node":
            return self
        if self.target.kind == "real" and not self.node_by_node.accepted_on_real_target_by.strip():
            raise ValueError(NODE_BY_NODE_REFUSED)
        if not self.cilium.migration_cidr:
            raise ValueError("strategy 'node-by-node' needs cilium.migration_cidr: the new pod CIDR "
                             "Cilium hands out while flannel keeps the cluster CIDR (e.g. 10.44.0.0/16)")
        return self

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
            data = strict_yaml().load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValuesFileError(f"cannot read values file {path}: {e}", file=where,
                              field="cilium.values_file") from e
        except YAMLError as e:
            raise ValuesFileError(f"values file is not valid YAML: {yaml_problem(e)}",
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


def kpr_enabled(values: dict[str, Any]) -> bool:
    """True when the values turn kube-proxy replacement on (``true`` or ``"true"``).

    Example:
        >>> kpr_enabled({"kubeProxyReplacement": "true"}), kpr_enabled({})
        (True, False)
    """
    v = values.get("kubeProxyReplacement")
    return v is True or (isinstance(v, str) and v.strip().lower() == "true")
