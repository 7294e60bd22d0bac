"""Install: Cilium with helm, wait for it, restart every unmanaged pod, close the window.

The plan (:func:`plan`) is the exact helm command lines, the values file as written
(with the comments that explain each correction) and the pinned chart version; a dry
run shows it and changes nothing. With ``execute``:

1. :func:`helm_install`: ``helm repo add`` + ``repo update`` (the repository of the
   params: for a twin, its chart repository on loopback), then ``helm upgrade
   --install ... --version X --wait --timeout T``, journaled as ``helm-install``. A
   release already deployed with the same chart version and the same values is left
   alone (a rerun makes no new revision).
2. :func:`wait_ready`: every agent, envoy, the operator, relay and UI Ready (what
   ``cilium status --wait`` waits for); on timeout the gate lists each agent pod with
   its reason.
3. :func:`restart_pods`: every non-hostNetwork pod without a CiliumEndpoint is deleted
   in batches (kube-system first: everything needs DNS) so its owner recreates it
   under Cilium (defect 6), as :mod:`runbook.pods`' install policy allows; then the
   no-CNI window closes (fact ``no_cni_window``).
4. :func:`managed_check` and :func:`nodes_ready_check` feed the final gates.

``--wait`` proves that the release's pods are Ready, nothing more (defect 7): not that
pods can talk across nodes, not that Services or kube-proxy replacement work, not that
the old pods are managed. The restart and the verify phase's probes cover that.

Example:
    >>> ip = install.plan(s)                       # doctest: +SKIP
    >>> ip                                         # the commands and the values
    >>> install.helm_install(s, ip)                # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from . import chart, checks, cilium, deadline, outage, pods, storage
from .cluster import node_ready
from .errors import GateFailed, HelmError, WaitTimeout
from .helm import Helm
from .presentation import frame_html

if TYPE_CHECKING:
    from .session import Session

__all__ = ["InstallPlan", "plan", "helm_install", "wait_ready", "cli_status", "restart_pods",
           "close_window", "ManagedCheck", "managed_check", "nodes_ready_check", "HELM_WAIT_PROVES"]

STEP_HELM = "helm-install"

#: What ``helm --wait`` does and does not prove (shown in the notebook, defect 7).
HELM_WAIT_PROVES = pd.DataFrame([
    ("the DaemonSets (agent, envoy) have a Ready pod on every node", "yes"),
    ("the operator, hubble-relay and hubble-ui Deployments have their replicas Ready", "yes"),
    ("pods on different nodes can reach each other (VXLAN on UDP 8473)", "no: verify probes it"),
    ("Services work without kube-proxy (kube-proxy replacement)", "no: verify checks KUBE-SVC and probes"),
    ("the pods started under flannel are managed by Cilium", "no: they keep flannel's dead "
     "sandbox until restarted (defect 6)"),
    ("LoadBalancer IPs and ingress hosts answer", "no: verify probes every one"),
], columns=["what", "does helm --wait prove it?"])


@dataclass
class InstallPlan:
    """The helm release as it will be installed.

    Attributes:
        release, namespace, chart (``<repo name>/<chart>``), version (pinned),
        repo_name, repo_url, values_file (path), values_text (the file, comments
        included), values_sha256, timeout (helm's ``--timeout``), commands (the exact
        command lines, in order).
    """

    release: str
    namespace: str
    chart: str
    version: str
    repo_name: str
    repo_url: str
    values_file: str
    values_text: str = field(repr=False)
    values_sha256: str
    timeout: str
    commands: list[str]

    def journal_data(self) -> dict[str, Any]:
        return {"release": self.release, "chart": self.chart, "version": self.version,
                "repo_url": self.repo_url, "namespace": self.namespace,
                "values_file": self.values_file, "values_sha256": self.values_sha256}

    def frame(self) -> pd.DataFrame:
        rows = [("release", f"{self.namespace}/{self.release}"), ("chart", self.chart),
                ("version (pinned)", self.version), ("repository", self.repo_url),
                ("values file", self.values_file), ("values sha256", self.values_sha256[:16] + "..."),
                ("helm --timeout", self.timeout)]
        return pd.DataFrame(rows, columns=["item", "value"])

    def __repr__(self) -> str:
        return "\n".join(f"$ {c}" for c in self.commands)

    def _repr_html_(self) -> str:
        cmds = "\n".join(f"$ {c}" for c in self.commands)
        return f"<pre>{html.escape(cmds)}</pre>" + frame_html(self.frame())


class ValuesView:
    """The values file as written (its comments explain each correction of the text)."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def __repr__(self) -> str:
        return f"# {self.path}\n{self.text}"

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(self.path)}</b></p><pre>{html.escape(self.text)}</pre>"


def _helm(s: Session) -> Helm:
    h = getattr(s, "_helm", None)
    if h is None:
        h = Helm.from_params(s.params, run_dir=s.run_dir)
        try:
            s._helm = h
        except AttributeError:  # a session that does not take attributes: build per call
            pass
    return h


#: the values files node_by_node.plan writes into the run folder, the final state's first
NBN_FINAL_VALUES = ("nbn-kpr-values.yaml", "nbn-final-values.yaml")


def values_file(s: Session) -> Path:
    """The values the release must end with: the params' file (big-bang), or under
    node-by-node the final values its switch installed (the params' values with the
    migration's pod CIDR), written into the run folder by ``node_by_node.plan``."""
    if s.params.strategy == "node-by-node":
        for name in NBN_FINAL_VALUES:
            f = Path(s.run_dir) / name
            if f.exists():
                return f
    return s.params.values_path


def _planned_values(s: Session, ip: InstallPlan) -> dict[str, Any]:
    if ip.values_file == str(s.params.values_path):
        return s.values
    return yaml.safe_load(ip.values_text) or {}


def plan(s: Session) -> InstallPlan:
    """The exact helm commands, the values and the pinned version (read-only)."""
    p, c = s.params, s.params.cilium
    h = _helm(s)
    vf = values_file(s)
    text = vf.read_text(encoding="utf-8")
    chart = f"{c.chart_repo_name}/{c.chart}"
    timeout = f"{int(p.limits.timeouts.helm)}s"
    cmds = [h.command_line("repo_add", c.chart_repo_name, p.chart_repo_url),
            h.command_line("repo_update", c.chart_repo_name),
            h.command_line("upgrade_install", c.release, chart, version=c.version,
                           values_file=str(vf), namespace=c.namespace, wait=True,
                           timeout=timeout)]
    return InstallPlan(release=c.release, namespace=c.namespace, chart=chart, version=c.version,
                       repo_name=c.chart_repo_name, repo_url=p.chart_repo_url,
                       values_file=str(vf), values_text=text,
                       values_sha256=hashlib.sha256(text.encode()).hexdigest(), timeout=timeout,
                       commands=cmds)


def values_view(s: Session) -> ValuesView:
    """The values file text for display (no secrets live there; the chart makes its own)."""
    return ValuesView(str(s.params.values_path), s.params.values_path.read_text(encoding="utf-8"))


@dataclass
class HelmOutcome:
    """What :func:`helm_install` did: ``installed``, ``upgraded`` or ``already deployed``."""

    action: str
    revision: int | None
    seconds: float
    results: list[Any] = field(default_factory=list)
    #: the archive installed and whether it is the official one (:mod:`runbook.chart`)
    chart: Any = None

    def _repr_html_(self) -> str:
        body = "".join(r._repr_html_() for r in self.results)
        ident = self.chart._repr_html_() if self.chart is not None else ""
        return (f"<p>helm: <b>{html.escape(self.action)}</b> (revision {self.revision}, "
                f"{self.seconds:.1f}s)</p>" + ident + body)

    def __repr__(self) -> str:
        return f"HelmOutcome({self.action!r}, revision={self.revision}, seconds={self.seconds:.1f})"


def _deployed_same(h: Helm, ip: InstallPlan, values: dict[str, Any], *,
                   installed: bool | None = None) -> tuple[bool, int | None]:
    """True when the release is deployed with the planned chart version and values.

    ``installed``: whether ``helm list`` shows the release, when the caller asked already
    (so the page shows ``helm list`` once); None asks helm here."""
    if installed is None:
        installed = h.is_installed(ip.release, namespace=ip.namespace)
    if not installed:
        return False, None
    st = h.status(ip.release, namespace=ip.namespace)
    info = st.get("info") or {}
    chart_meta = ((st.get("chart") or {}).get("metadata") or {})
    version = chart_meta.get("version")
    if version is None:  # helm status omits the chart in some versions: ask history
        hist = h.history(ip.release, namespace=ip.namespace)
        last = hist[-1] if hist else {}
        version = str(last.get("chart", "")).rsplit("-", 1)[-1] or None
    same = (info.get("status") == "deployed" and version == ip.version
            and h.get_values(ip.release, namespace=ip.namespace) == values)
    return same, st.get("version")


def helm_install(s: Session, ip: InstallPlan) -> HelmOutcome | None:
    """``helm repo add/update`` and ``helm upgrade --install --wait`` (journaled).

    Raises:
        GateFailed: helm's ``--wait`` timed out or failed; lists each Cilium pod that is
            not Ready with its reason (e.g. ImagePullBackOff), so the on-call engineer
            sees why without a kubectl session.
    """
    if not s.require_execute("the helm install"):
        return None
    h = _helm(s)
    t0 = time.monotonic()
    h.repo_add(ip.repo_name, ip.repo_url)
    h.repo_update(ip.repo_name)
    existed = h.is_installed(ip.release, namespace=ip.namespace)
    same, rev = _deployed_same(h, ip, _planned_values(s, ip), installed=existed)
    if same:
        s.journal.set("cilium_installed", True)
        return HelmOutcome("already deployed with this version and these values", rev,
                           time.monotonic() - t0, list(h.results), _identify_chart(s, ip))
    entry = s.journal.record(STEP_HELM, f"helm upgrade --install {ip.release} {ip.chart} "
                             f"--version {ip.version}", data=ip.journal_data())
    try:
        with deadline.watch(s, "03-install, helm upgrade --install --wait"):
            helm_timeout = deadline.cap(s, s.params.limits.timeouts.helm)
            h.upgrade_install(ip.release, ip.chart, version=ip.version, values_file=ip.values_file,
                              namespace=ip.namespace, wait=True,
                              timeout=ip.timeout if helm_timeout >= s.params.limits.timeouts.helm
                              else f"{int(helm_timeout)}s")
    except deadline.DeadlineExceeded as e:
        s.journal.fail(entry, e)
        raise
    except HelmError as e:
        s.journal.fail(entry, e)
        st = cilium.status(s.cluster, ip.namespace)
        why = (e.stderr or str(e)).strip()
        details = [f"helm: {why.splitlines()[-1][:300]}" if why else "helm failed"]
        details += [f"{c.kind}/{c.name}: {c.ready}/{c.desired} ready" for c in st.components if not c.ok]
        details += st.agent_problems
        try:
            # through s.gate so the failed gate is recorded for the report like any other
            s.gate(False, f"helm upgrade --install {ip.release} --wait succeeded within {ip.timeout}",
                        name="helm-install", details=details,
                        hint="read each pod's reason above (ImagePullBackOff: the nodes cannot pull the "
                             "images; 'address already in use': flannel.1 still exists). The nodes have "
                             "no CNI now: fix and re-run 03-install, or run 05-rollback to bring flannel "
                             "back.")
        except GateFailed as gf:
            raise gf from e
    hist = h.history(ip.release, namespace=ip.namespace)
    revision = hist[-1].get("revision") if hist else None
    s.journal.complete(entry, result={"revision": revision})
    s.journal.set("cilium_installed", True)
    s.figure("helm_seconds", round(time.monotonic() - t0, 1))
    return HelmOutcome("upgraded" if existed else "installed", revision, time.monotonic() - t0,
                       list(h.results), _identify_chart(s, ip))


def _identify_chart(s: Session, ip: InstallPlan) -> Any:
    """The installed archive's identity (fact ``cilium_chart``); a failure to tell is itself
    something to look at, never a reason to fail an install that worked."""
    try:
        return chart.record(s, repo=ip.repo_name, repo_url=ip.repo_url, chart=ip.chart.split("/")[-1],
                            version=ip.version)
    except Exception as e:  # noqa: BLE001 - the index then says "not identified"
        print(f"the installed chart could not be identified: {type(e).__name__}: {e}")
        return None


def wait_ready(s: Session) -> cilium.CiliumStatus:
    """Wait for agents, envoy, operator, relay and UI (``cilium status --wait``).

    Raises:
        GateFailed: on timeout (``limits.timeouts.agents_ready``), one line per pod.
    """
    if not s.execute:
        print("DRY RUN: the status is read once, not waited for.")
        return cilium.status(s.cluster, s.params.cilium.namespace)
    try:
        with deadline.watch(s, "03-install, waiting for the Cilium agents"):
            st = cilium.wait_ready(s.cluster, namespace=s.params.cilium.namespace,
                                   timeout=deadline.cap(s, s.params.limits.timeouts.agents_ready),
                                   progress=s.progress)
    except deadline.DeadlineExceeded:
        raise
    except GateFailed as e:
        # recorded like every gate, so the report index shows which gate stopped the run
        s.gate(False, e.gate, name="cilium-ready", details=e.details, hint=e.hint)
        raise  # pragma: no cover - s.gate raised already
    s.gate(True, "every Cilium component Ready (agents, envoy, operator, relay, UI)",
                name="cilium-ready")
    return st


def cli_status(s: Session) -> Any:
    """``cilium status`` through the CLI when ``cilium.cli_path`` is set, else a note."""
    return cilium.cli_status(s.params.cilium.cli_path, str(s.params.kubeconfig_path))


#: the journal's words for one batch of the install's restart
RESTART_ACTION = "delete {n} unmanaged pod(s) so their controllers recreate them under Cilium"


def restart_plan(s: Session) -> pods.RestartPlan:
    """The unmanaged pods split by owner under the install's policy (:mod:`runbook.pods`)."""
    return pods.plan_restart(cilium.restart_candidates(s.cluster), policy=pods.policy_for("install"))


def restart_plan_frame(s: Session) -> pd.DataFrame:
    """The pods that will be restarted (and those left for a person), by namespace."""
    rp = restart_plan(s)
    rows = [{"namespace": p["metadata"]["namespace"], "action": "restart"} for p in rp.restart]
    rows += [{"namespace": sk.raw["metadata"]["namespace"],
              "action": f"owned by {sk.owner_kind}: by its operator" if sk.owner_kind
              else "no controller: by hand"} for sk in rp.skipped]
    if not rows:
        return pd.DataFrame(columns=["namespace", "action", "pods"])
    df = pd.DataFrame(rows).groupby(["namespace", "action"]).size().rename("pods").reset_index()
    # the order the restart follows: kube-system (DNS) first
    df["_first"] = df["namespace"] != "kube-system"
    return df.sort_values(["action", "_first", "namespace"]).drop(columns="_first").reset_index(drop=True)


def restart_pods(s: Session) -> pods.RestartResult | None:
    """Delete the unmanaged pods in batches of ``limits.pod_restart_batch`` (journaled
    per batch as ``restart-pods``) and wait for their replacements to be Ready; the
    pods the owner policy leaves alone are listed with their owners."""
    if not s.require_execute("restarting the unmanaged pods"):
        return None
    # no check after: the window closes right after this step when every pod is managed
    with deadline.watch(s, "03-install, restarting the unmanaged pods", after=False):
        res = pods.restart(s.cluster, restart_plan(s), action=RESTART_ACTION,
                           batch_size=s.params.limits.pod_restart_batch, execute=True, journal=s.journal,
                           timeout=deadline.cap(s, s.params.limits.timeouts.pods_ready),
                           timeout_scope="run", progress=s.progress)
    s.figure("pods_restarted", len(res.deleted))
    # Longhorn's manager pods are the storage plan's (runbook.storage), not a person's
    text = pods.follow_up_text([sk for sk in res.skipped if not storage.is_manager_pod(sk.raw)],
                               after="the install")
    if text:
        checks.flag(s, "pods-skipped", text)
    return res


@dataclass
class ManagedCheck:
    """CiliumEndpoints against non-hostNetwork pods (Running or Pending)."""

    managed: int
    total: int
    unmanaged: list[str]

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.managed == self.total

    def _repr_html_(self) -> str:
        color = "#116611" if self.ok else "#b00020"
        items = "".join(f"<li>{html.escape(u)}</li>" for u in self.unmanaged[:30])
        return (f"<p style='color:{color}'>Cluster Pods: <b>{self.managed}/{self.total}</b> managed "
                f"by Cilium</p>" + (f"<ul>{items}</ul>" if items else ""))

    def __repr__(self) -> str:
        return f"Cluster Pods: {self.managed}/{self.total} managed by Cilium"


def managed_check(s: Session) -> ManagedCheck:
    """``managed == all non-hostNetwork pods`` from the API (CiliumEndpoints vs pods)."""
    if not s.cluster.has_resource("ciliumendpoints"):
        pods = [p for p in s.cluster.list("pods") if not (p.get("spec") or {}).get("hostNetwork")
                and (p.get("status") or {}).get("phase") in ("Running", "Pending")]
        return ManagedCheck(0, len(pods), ["no CiliumEndpoint resource: Cilium is not installed"])
    managed, total, unmanaged = cilium.unmanaged_pods(s.cluster)
    s.figure("pods_managed", f"{managed}/{total}")
    return ManagedCheck(managed, total, [cilium.pod_problem(p) for p in unmanaged])


def close_window(s: Session, check: ManagedCheck) -> dict[str, Any] | None:
    """Close the no-CNI window (fact ``no_cni_window``) once every pod is managed."""
    win = s.journal.get("no_cni_window") or None
    if not s.execute or win is None or not check.ok:
        return win
    if win.get("closed_at"):
        s.figure("no_cni_window_seconds", win.get("seconds"))
        return win
    win = outage.close_window(s.journal, "no_cni_window")
    s.figure("no_cni_window_seconds", win.get("seconds"))
    return win


def nodes_ready_check(s: Session, *, wait: bool = True) -> pd.DataFrame:
    """Each node's Ready condition; with ``wait`` (execute) waits ``timeouts.node_ready``
    for every node to turn Ready first (a CNI is back: Cilium's conflist)."""
    from .reconfigure import node_readiness

    if wait and s.execute:
        def check() -> tuple[bool, list[str]]:
            bad = [n["metadata"]["name"] for n in s.cluster.list("nodes") if not node_ready(n)]
            return not bad, [f"node {b} not Ready" for b in bad]
        try:
            s.cluster.wait_for(check, timeout=s.params.limits.timeouts.node_ready,
                               what="every node Ready", interval=1.0, progress=s.progress,
                               watch=["nodes"])
        except WaitTimeout as e:  # the gate after this shows which nodes and why
            s.progress(f"not every node Ready yet: {e}")
    return node_readiness(s.cluster)
