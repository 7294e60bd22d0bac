"""Helm, driven through its binary with ONE runner (:meth:`Helm._run`).

Every helm call goes through ``_run``: it builds the environment (an explicit
``KUBECONFIG`` and a per-run ``HELM_*``/``XDG_*`` home, so a run never reads or writes the
operator's ``~/.config/helm``), applies the timeout, captures stdout/stderr for the
evidence (redacted in every display), and raises :class:`HelmError` with stderr on a
non-zero exit. :meth:`Helm.command_line` returns the exact command a person would type,
so a notebook can show it before running it.

Example:
    >>> h = Helm.from_params(params, run_dir="reports/r1")            # doctest: +SKIP
    >>> print(h.command_line("upgrade_install", "cilium", "cilium/cilium",
    ...       version="1.19.3", values_file="cilium-values.yaml"))   # doctest: +SKIP
    helm upgrade --install cilium cilium/cilium --version 1.19.3 --namespace kube-system ...
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import HelmError
from .evidence import redact_text
from .results import ProcessResult
from .safety import require_loopback_url
from .tools import find_binary


@dataclass
class HelmResult(ProcessResult):
    """One helm invocation (display and ``ok`` from :class:`runbook.results.ProcessResult`).

    Attributes:
        command: argv (the binary first); rc; stdout; stderr; duration (seconds).
    """

    command: list[str]
    rc: int
    stdout: str
    stderr: str
    duration: float

    summary_limit = 1000
    html_limit = 4000
    duration_digits = 1

    @property
    def command_line(self) -> str:
        """The argv shell-quoted, redacted (``--set`` values may hold secrets)."""
        return redact_text(shlex.join(self.command))

    def shown_command(self) -> str:
        return self.command_line

    def __repr__(self) -> str:
        return f"HelmResult({self.command_line!r}, rc={self.rc}, duration={self.duration:.1f})"


def _wait_args(wait: bool | str) -> list[str]:
    # helm v4: --wait takes a strategy (watcher, hookOnly, legacy); bare --wait = watcher.
    if wait is True:
        return ["--wait"]
    if isinstance(wait, str) and wait:
        return [f"--wait={wait}"]
    return []


def _set_args(set_values: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []
    for k, v in (set_values or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        out += ["--set", f"{k}={v}"]
    return out


@dataclass
class Helm:
    """The helm binary, bound to one kubeconfig/context and a per-run helm home.

    Args:
        binary: path to helm; None = :func:`runbook.tools.find_binary` ("helm").
        kubeconfig: passed as ``KUBECONFIG`` (never inherited from the environment).
        context: ``--kube-context``; None = the kubeconfig's current context.
        namespace: default namespace of releases.
        env_home: folder for helm's config/cache/data; None = a fresh temporary folder.
        use_user_config: use the operator's own ``~/.config/helm`` (off by default).
        kind: target kind; ``twin`` refuses non-loopback repository URLs.
        timeout: seconds before a helm process is killed (default 900).
        op_timeout: helm's own ``--timeout`` when a call does not give one
            (``from_params`` uses ``limits.timeouts.helm``).
    """

    binary: str | None = None
    kubeconfig: str | os.PathLike[str] | None = None
    context: str | None = None
    namespace: str = "kube-system"
    env_home: str | os.PathLike[str] | None = None
    use_user_config: bool = False
    kind: str = "real"
    timeout: float = 900
    op_timeout: str = "10m"
    results: list[HelmResult] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.binary = find_binary("helm", self.binary)
        if self.env_home is None and not self.use_user_config:
            self.env_home = tempfile.mkdtemp(prefix="phase22-helm-")
        if self.env_home is not None:
            Path(self.env_home).mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def from_params(cls, params: Any, *, run_dir: str | os.PathLike[str] | None = None) -> "Helm":
        """Build from validated params; helm's home goes to ``<run_dir>/helm``."""
        c = params.cilium
        kubeconfig = getattr(params, "kubeconfig_path", None) or params.target.kubeconfig
        timeouts = getattr(getattr(params, "limits", None), "timeouts", None)
        helm_timeout = getattr(timeouts, "helm", None) if timeouts is not None else None
        return cls(binary=getattr(c, "helm_path", None), kubeconfig=str(kubeconfig),
                   context=getattr(params.target, "context", None), namespace=c.namespace,
                   env_home=Path(run_dir) / "helm" if run_dir else None,
                   kind=params.target.kind,
                   timeout=(float(helm_timeout) + 60) if helm_timeout else 900,
                   op_timeout=f"{int(helm_timeout)}s" if helm_timeout else "10m")

    # ------------------------------------------------------------------ the runner
    def env(self) -> dict[str, str]:
        """The environment helm runs with (no inherited KUBECONFIG or HELM_*)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HELM_", "KUBECONFIG"))}
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        if self.env_home is not None and not self.use_user_config:
            home = Path(self.env_home)
            env.update(
                HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                HELM_DATA_HOME=str(home / "data"),
                HELM_REPOSITORY_CONFIG=str(home / "config" / "repositories.yaml"),
                HELM_REPOSITORY_CACHE=str(home / "cache" / "repository"),
                XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
                XDG_DATA_HOME=str(home / "data"))
        return env

    def _argv(self, args: list[str], *, cluster: bool = True) -> list[str]:
        argv = [str(self.binary), *args]
        if cluster and self.context:
            argv += ["--kube-context", self.context]
        return argv

    def _run(self, args: list[str], *, cluster: bool = True, check: bool = True,
             timeout: float | None = None) -> HelmResult:
        """Run ``helm <args>``; the single place helm is executed.

        Raises:
            HelmError: non-zero exit (with stderr), timeout, or binary not runnable.
        """
        argv = self._argv(args, cluster=cluster)
        start = time.monotonic()
        shown = redact_text(shlex.join(["helm", *argv[1:]]))
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                               timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise HelmError(f"helm timed out after {e.timeout}s: {shown}", command=argv,
                            stderr=redact_text((e.stderr or b"").decode("utf-8", "replace")
                                               if isinstance(e.stderr, bytes) else (e.stderr or ""))
                            ) from e
        except OSError as e:
            raise HelmError(f"cannot run helm ({self.binary}): {e}", command=argv,
                            hint="check cilium.helm_path in the params") from e
        result = HelmResult(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - start)
        self.results.append(result)
        if check and p.returncode != 0:
            raise HelmError(f"helm failed: {shown}", command=argv, rc=p.returncode,
                            stderr=redact_text(p.stderr))
        return result

    # ------------------------------------------------------------------ command lines
    def command_line(self, method: str, *args: Any, **kwargs: Any) -> str:
        """The exact command a person would type for ``method(*args, **kwargs)``.

        Example:
            >>> Helm(binary="/bin/true", env_home="/tmp/h").command_line(
            ...     "repo_add", "cilium", "https://helm.cilium.io/")
            'helm repo add cilium https://helm.cilium.io/ --force-update'
        """
        builder = getattr(self, f"_{method}_args", None)
        if builder is None:
            raise ValueError(f"no helm command {method!r}")
        built = builder(*args, **kwargs)
        cluster = method not in ("repo_add", "repo_update", "template")
        return redact_text(shlex.join(["helm", *self._argv(built, cluster=cluster)[1:]]))

    def _repo_add_args(self, name: str, url: str, *, ca_file: str | None = None) -> list[str]:
        args = ["repo", "add", name, url, "--force-update"]
        if ca_file:
            args += ["--ca-file", str(ca_file)]
        return args

    def _repo_update_args(self, name: str) -> list[str]:
        return ["repo", "update", name]

    def _upgrade_install_args(self, release: str, chart: str, *, version: str | None = None,
                              values_file: str | os.PathLike[str] | None = None,
                              namespace: str | None = None, wait: bool | str = True,
                              timeout: str | None = None, reuse_values: bool = False,
                              set_values: Mapping[str, Any] | None = None,
                              dry_run: bool | str = False) -> list[str]:
        args = ["upgrade", "--install", release, chart]
        if version:
            args += ["--version", version]
        args += ["--namespace", namespace or self.namespace]
        if values_file:
            args += ["--values", str(values_file)]
        if reuse_values:
            args.append("--reuse-values")
        args += _set_args(set_values)
        args += _wait_args(wait)
        args += ["--timeout", timeout or self.op_timeout]
        if dry_run:
            args.append(f"--dry-run={dry_run if isinstance(dry_run, str) else 'server'}")
        return args

    def _template_args(self, release: str, chart: str, *, version: str | None = None,
                       values_file: str | os.PathLike[str] | None = None,
                       namespace: str | None = None,
                       set_values: Mapping[str, Any] | None = None,
                       kube_version: str | None = None) -> list[str]:
        args = ["template", release, chart, "--namespace", namespace or self.namespace]
        if version:
            args += ["--version", version]
        if values_file:
            args += ["--values", str(values_file)]
        if kube_version:
            args += ["--kube-version", kube_version]
        return args + _set_args(set_values)

    def _status_args(self, release: str, *, namespace: str | None = None) -> list[str]:
        return ["status", release, "--namespace", namespace or self.namespace, "-o", "json"]

    def _get_values_args(self, release: str, *, all: bool = False,  # noqa: A002 - helm's flag
                         namespace: str | None = None) -> list[str]:
        args = ["get", "values", release, "--namespace", namespace or self.namespace, "-o", "json"]
        return args + (["--all"] if all else [])

    def _history_args(self, release: str, *, namespace: str | None = None) -> list[str]:
        return ["history", release, "--namespace", namespace or self.namespace, "-o", "json"]

    def _list_args(self, *, namespace: str | None = None) -> list[str]:
        # helm v4 lists releases in every status by default (v3 needed --all).
        return ["list", "--namespace", namespace or self.namespace, "-o", "json"]

    def _uninstall_args(self, release: str, *, namespace: str | None = None,
                        wait: bool | str = True, timeout: str = "5m",
                        ignore_not_found: bool = True) -> list[str]:
        args = ["uninstall", release, "--namespace", namespace or self.namespace]
        args += _wait_args(wait) + ["--timeout", timeout]
        if ignore_not_found:
            args.append("--ignore-not-found")
        return args

    # ------------------------------------------------------------------ operations
    def repo_add(self, name: str, url: str, *, ca_file: str | None = None) -> HelmResult:
        """``helm repo add NAME URL --force-update`` (a twin target needs a loopback URL)."""
        require_loopback_url(url, kind=self.kind, what=f"helm repository {name}")
        return self._run(self._repo_add_args(name, url, ca_file=ca_file), cluster=False)

    def repo_update(self, name: str) -> HelmResult:
        """``helm repo update NAME``."""
        return self._run(self._repo_update_args(name), cluster=False)

    def upgrade_install(self, release: str, chart: str, **kw: Any) -> HelmResult:
        """``helm upgrade --install`` with a pinned version, values, wait and timeout.

        Keyword Args:
            version, values_file, namespace, wait (True, False or a helm v4 strategy such
            as ``"legacy"``), timeout (``"10m"``; default ``op_timeout``), reuse_values, set_values (dict),
            dry_run (True = ``--dry-run=server``, or ``"client"``).

        Raises:
            HelmError: helm failed; ``stderr`` holds helm's explanation.
        """
        if "://" in chart:
            require_loopback_url(chart, kind=self.kind, what=f"helm chart {chart}")
        return self._run(self._upgrade_install_args(release, chart, **kw))

    def template(self, release: str, chart: str, **kw: Any) -> str:
        """``helm template`` (no cluster needed): the manifests, to show the plan."""
        return self._run(self._template_args(release, chart, **kw), cluster=False).stdout

    def status(self, release: str, *, namespace: str | None = None) -> dict[str, Any]:
        """``helm status -o json`` as a dict."""
        return json.loads(self._run(self._status_args(release, namespace=namespace)).stdout)

    def get_values(self, release: str, all: bool = False,  # noqa: A002
                   *, namespace: str | None = None) -> dict[str, Any]:
        """``helm get values -o json`` (user-supplied values; ``all=True`` for computed)."""
        out = self._run(self._get_values_args(release, all=all, namespace=namespace)).stdout
        return json.loads(out or "null") or {}

    def history(self, release: str, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """``helm history -o json``: the revisions, oldest first."""
        return json.loads(self._run(self._history_args(release, namespace=namespace)).stdout or "[]")

    def releases(self, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """``helm list -o json`` in the namespace (every status)."""
        return json.loads(self._run(self._list_args(namespace=namespace)).stdout or "[]")

    def is_installed(self, release: str, *, namespace: str | None = None) -> bool:
        """True when ``release`` exists in the namespace (any status)."""
        return any(r.get("name") == release for r in self.releases(namespace=namespace))

    def uninstall(self, release: str, *, namespace: str | None = None, wait: bool | str = True,
                  timeout: str = "5m", ignore_not_found: bool = True) -> HelmResult:
        """``helm uninstall`` (idempotent by default: an absent release is fine)."""
        return self._run(self._uninstall_args(release, namespace=namespace, wait=wait,
                                              timeout=timeout, ignore_not_found=ignore_not_found))
