"""Verify: prove the migration worked on the data path, then hand the cluster back to Argo CD.

Each check returns a :class:`Check` (name, ok, message, details, table). The notebook
shows every check and records it as a gate without stopping, so one failing check does
not hide the others; a single gate at the end (:func:`Verification.gate`) stops the
phase listing everything that failed. Argo CD is only re-enabled after that gate: a
failed verification leaves auto-sync paused for the rollback, which restores it.

What each check is for:

* pods: nothing that is not Running (or Succeeded). Necessary, not sufficient: a pod
  started under flannel keeps Running after the swap with a dead network (defect 6),
  hence the next two checks;
* kube-proxy replacement: ``cilium-config`` says ``kube-proxy-replacement: "true"`` AND
  no node has KUBE-SVC chains. The original text looked for a kube-proxy DaemonSet; on
  k3s kube-proxy runs inside the k3s process, so there never is one and that check
  always passed (defect 2);
* every non-hostNetwork pod has a CiliumEndpoint (managed == total, defect 6);
* the pre/post diff against preflight's snapshots: the same workloads with the same pod
  counts, the same LoadBalancer IPs; an IP that did not reattach is remediated by
  restarting the MetalLB controller once, as the original step 4 said;
* the data path: every ingress host over HTTPS with the CA (``cilium status`` probes
  no data path, defect 7) and the params' regression checks;
* Hubble relay and UI Ready.

After a rollback (journal fact ``rolled_back``) the same notebook verifies the flannel
side instead: kube-proxy's chains are back, no Cilium is expected.

Example:
    >>> v = verify.Verification(s)                 # doctest: +SKIP
    >>> v.add(verify.pods_running(s))              # doctest: +SKIP
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import argocd, checks, cilium, evidence, lock
from .cluster import pod_display_status, pod_ready
from .errors import ClusterError
from .presentation import frame_html
from .watches import Changes

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Check", "Verification", "mode", "pods_running", "kube_proxy_replacement",
           "managed_pods", "prepost", "lb_ips", "remediate_lb", "ingress", "regression",
           "hubble", "argocd_resume", "verdict", "finish", "METALLB_NAMESPACE", "METALLB_CONTROLLER_SELECTOR",
           "VERDICT_OK", "VERDICT_FLANNEL_OK"]

VERDICT_OK = "MIGRATION VERIFIED"
VERDICT_FLANNEL_OK = "ROLLBACK VERIFIED: flannel serves the cluster"
METALLB_NAMESPACE = "metallb-system"
METALLB_CONTROLLER_SELECTOR = "app.kubernetes.io/name=metallb,app.kubernetes.io/component=controller"


@dataclass
class Check:
    """One verification check.

    Attributes:
        name: short key (the gate name). ok: passed. message: the requirement in words.
        details: one line per offender. table: what a person checks (DataFrame or None).
        hint: what to do when it fails. skipped: not made (a dry run does not create
        what it needs): shown SKIPPED, never PASSED.
    """

    name: str
    ok: bool
    message: str
    details: list[str] = field(default_factory=list)
    table: Any = None
    hint: str | None = None
    skipped: bool = False

    @property
    def word(self) -> str:
        return "SKIPPED" if self.skipped else ("PASSED" if self.ok else "FAILED")

    def _repr_html_(self) -> str:
        color = {"PASSED": "#116611", "SKIPPED": "#8a6d00"}.get(self.word, "#b00020")
        word = self.word
        head = f"<p style='color:{color}'><b>{word}</b>: {html.escape(self.message)}</p>"
        items = "".join(f"<li>{html.escape(d)}</li>" for d in self.details[:50])
        more = f"<li>... {len(self.details) - 50} more</li>" if len(self.details) > 50 else ""
        body = f"<ul>{items}{more}</ul>" if items else ""
        if self.hint and not self.ok:
            body += f"<p><i>{html.escape(self.hint)}</i></p>"
        if isinstance(self.table, pd.DataFrame) and not self.table.empty:
            body += frame_html(self.table, max_rows=60)
        return head + body

    def __repr__(self) -> str:
        text = f"{self.word}: {self.message}"
        for d in self.details[:20]:
            text += f"\n  - {d}"
        if isinstance(self.table, pd.DataFrame) and not self.table.empty:
            text += "\n" + self.table.head(40).to_string(index=False)
        return text


@dataclass
class Verification:
    """The checks of one verify run; failures are collected, the gate is at the end.

    Args:
        session: the phase's session; each check is kept in its ``gates`` (the summary)
            and evidence that cannot be recorded in its ``evidence_lost``.
    """

    session: Session | None = None
    results: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        """Keep ``check`` and record it as a gate result (passed or not) without raising.

        A result that cannot be recorded as evidence is logged and shown as
        ``EVIDENCE LOST`` in the cell (:func:`runbook.evidence.record_or_warn`)."""
        self.results = [c for c in self.results if c.name != check.name] + [check]
        g = checks.GateResult(check.name, check.ok, check.message, list(check.details), check.hint,
                              skipped=check.skipped)
        s = self.session
        if s is not None:
            s.gates.append(g)
        evidence.record_gate_or_warn(g, lost=s.evidence_lost if s is not None else None)
        return check

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(c.ok for c in self.results)

    @property
    def failures(self) -> list[str]:
        out = []
        for c in self.results:
            if not c.ok:
                out.append(f"{c.message}: " + ("; ".join(c.details[:5]) or "failed")
                           + (f" (+{len(c.details) - 5} more)" if len(c.details) > 5 else ""))
        return out

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"check": c.name, "result": c.word,
                              "requirement": c.message, "offenders": len(c.details)}
                             for c in self.results], columns=["check", "result", "requirement", "offenders"])

    def gate(self, s: Session) -> Any:
        """The one gate that stops the phase, listing every failed check.

        When the run folder records no migration yet (no Cilium install, no rollback),
        as in a first "Run All" in ``make lab``, the hint says so: the checks describe
        the cluster as it is, and 01 to 03 come first."""
        migrated = s.journal.get("cilium_installed") or s.journal.get("rolled_back")
        hint = ("each failed check above says what to look at; Argo CD stays paused. "
                "Fix and re-run 04-verify, or run 05-rollback to return to flannel") if migrated else \
            ("this run folder records no migration yet, so the checks describe the cluster as it is: "
             "run 01-preflight, 02-reconfigure and 03-install (execute=True) first, then 04-verify")
        return s.gate(self.ok, "every verification check passed", name="verification",
                      details=self.failures, hint=hint)

    def __repr__(self) -> str:
        return self.table().to_string(index=False)

    def _repr_html_(self) -> str:
        return frame_html(self.table())


def mode(s: Session) -> str:
    """``cilium`` (verify the migration) or ``flannel`` (verify after a rollback)."""
    return "flannel" if s.journal.get("rolled_back") else "cilium"


# ------------------------------------------------------------------------------ checks
def _key(p: dict) -> str:
    return f"{p['metadata'].get('namespace')}/{p['metadata']['name']}"


def pods_running(s: Session, pods: list[dict] | None = None) -> Check:
    """No pod that is not Running (or Succeeded); a Running pod with unready containers
    counts too (CrashLoopBackOff keeps the phase Running)."""
    pods = s.cluster.list("pods") if pods is None else pods
    rows = []
    for p in pods:
        st = p.get("status") or {}
        phase = st.get("phase")
        if phase == "Succeeded":
            continue
        if phase == "Running" and pod_ready(p) and not p["metadata"].get("deletionTimestamp"):
            continue
        rows.append({"pod": _key(p), "node": (p.get("spec") or {}).get("nodeName") or "<none>",
                     "phase": phase, "status": pod_display_status(p)})
    table = pd.DataFrame(rows, columns=["pod", "node", "phase", "status"])
    return Check("pods-running", table.empty, f"every pod Running or Succeeded ({len(pods)} pods)",
                 [f"{r.pod} on {r.node}: {r.status}" for r in table.itertuples()], table,
                 hint="describe the pods listed: ContainerCreating with 'cni plugin not initialized' "
                      "means the node has no CNI")


def kube_proxy_replacement(s: Session) -> Check:
    """KPR really active: the config flag AND no KUBE-SVC chain on any node (SSH).

    After a rollback (:func:`mode` flannel) the opposite is required: no Cilium config
    flag, and k3s's kube-proxy chains back on every node.
    """
    table = cilium.kpr_evidence(s.cluster, s.nodes, s.params.cilium.namespace,
                                parallel=getattr(s.params.limits, "parallel_reads", 20))
    if mode(s) == "flannel":
        bad = [f"{r['node']}: no KUBE-SVC chains: k3s' kube-proxy is not serving Services"
               for r in table.to_dict("records") if not r["KUBE-SVC chains"]]
        bad += [f"{r['node']}: {r['CILIUM chains']} CILIUM chain(s) left"
                for r in table.to_dict("records") if r["CILIUM chains"]]
        return Check("kube-proxy-back", not bad, "k3s' kube-proxy serves Services again "
                     "(KUBE-SVC chains on every node, no CILIUM chains)", bad, table)
    flag = str(table["kube-proxy-replacement"].iloc[0]) if len(table) else "absent"
    bad = []
    if flag.lower() != "true":
        bad.append(f"cilium-config kube-proxy-replacement is {flag!r}, not \"true\"")
    bad += [f"{r['node']}: {r['KUBE-SVC chains']} KUBE-SVC chain(s): k3s' kube-proxy still programs Services"
            for r in table.to_dict("records") if r["KUBE-SVC chains"]]
    return Check("kube-proxy-replacement", not bad,
                 "kube-proxy replacement really active (config true, no KUBE-SVC chain on any node)",
                 bad, table,
                 hint="on k3s there is no kube-proxy DaemonSet to look for: kube-proxy runs inside "
                      "k3s. KUBE-SVC chains mean disable-kube-proxy is missing on the server or the "
                      "stale chains were not cleaned (02-reconfigure does both)")


def _skipped(name: str, message: str) -> Check:
    return Check(name, True, f"{message}: not applicable after a rollback (flannel serves the cluster)")


def managed_pods(s: Session) -> Check:
    """Every non-hostNetwork pod (Running or Pending) has a CiliumEndpoint (defect 6)."""
    if mode(s) == "flannel":
        return _skipped("cilium-managed", "every non-hostNetwork pod managed by Cilium")
    if not s.cluster.has_resource("ciliumendpoints"):
        return Check("cilium-managed", False, "every non-hostNetwork pod managed by Cilium",
                     ["no CiliumEndpoint resource: Cilium is not installed"])
    managed, total, unmanaged = cilium.unmanaged_pods(s.cluster)
    table = pd.DataFrame([{"pod": _key(p), "node": (p.get("spec") or {}).get("nodeName"),
                           "status": pod_display_status(p)} for p in unmanaged],
                         columns=["pod", "node", "status"])
    return Check("cilium-managed", total > 0 and managed == total,
                 f"every non-hostNetwork pod managed by Cilium ({managed}/{total})",
                 [f"{r.pod} on {r.node} ({r.status}): Running on its flannel sandbox, unreachable"
                  for r in table.itertuples()], table,
                 hint="restart the pods listed (03-install's restart step): their controllers "
                      "recreate them with a Cilium sandbox")


def _load(s: Session, name: str) -> Any:
    try:
        return evidence.load_snapshot(s.run_dir, "preflight", name)
    except FileNotFoundError:
        return None


def prepost(s: Session) -> Check:
    """The same workloads with the same pod counts as preflight's snapshot."""
    before = _load(s, "pods")
    if before is None:
        return Check("same-workloads", False, "same workloads and pod counts as before the migration",
                     ["no preflight snapshot of the pods in this run folder"],
                     hint="run 01-preflight with execute=True in this run first")
    after = s.cluster.snapshot("pods")
    s.save("pods", after)
    # finished pods (Jobs) come and go on their own: compare what runs
    # and a pod being replaced (Terminating) is not a workload with one pod more
    done = ("Succeeded", "Failed")
    b = before[~before["phase"].isin(done)] if "phase" in before.columns else before
    a = after[~after["phase"].isin(done) & (after["status"] != "Terminating")]
    diff = checks.compare_snapshots(b, a)
    changed = diff.by_workload[diff.by_workload["delta"] != 0].reset_index(drop=True)
    details = diff.problems() + [f"{r.namespace}/{r.workload}: {r.after} pod(s) after, {r.before} before"
                                 for r in diff.by_workload.itertuples() if r.after > r.before > 0]
    # workloads that are new (Cilium's own, after the migration) are shown, not failed
    return Check("same-workloads", not details,
                 f"same workloads and pod counts as before ({int((diff.by_workload['before'] > 0).sum())} "
                 f"workloads; {len(diff.new)} new)", details, changed)


def _lb_snapshot(s: Session) -> pd.DataFrame:
    return s.cluster.snapshot("services")


def lb_ips(s: Session, services: pd.DataFrame | None = None) -> Check:
    """The same LoadBalancer IPs as preflight's snapshot, and the params' expected ones."""
    before = _load(s, "services")
    after = _lb_snapshot(s) if services is None else services
    details: list[str] = []
    if before is None:
        details.append("no preflight snapshot of the services in this run folder")
        table = pd.DataFrame(columns=["namespace", "name", "ips_before", "ips_after", "status"])
    else:
        diff = checks.compare_lb_ips(before, after)
        table = diff.table
        details += diff.problems()
    now = {(r["namespace"], r["name"]): str(r.get("lb_ips") or "") for r in after.to_dict("records")}
    for want in s.params.checks.loadbalancer_ips:
        have = now.get((want.namespace, want.name))
        if have is None:
            details.append(f"{want.namespace}/{want.name}: service gone (params expect {want.ip})")
        elif want.ip not in have.split(","):
            details.append(f"{want.namespace}/{want.name}: has {have or '<pending>'}, params expect {want.ip}")
    return Check("loadbalancer-ips", not details, "every LoadBalancer IP as before the migration",
                 sorted(set(details)), table,
                 hint="MetalLB did not reattach the IP: restart its controller "
                      f"(kubectl -n {METALLB_NAMESPACE} delete pod -l app.kubernetes.io/component=controller)")


def remediate_lb(s: Session, check: Check, *, namespace: str = METALLB_NAMESPACE,
                 selector: str = METALLB_CONTROLLER_SELECTOR, timeout: float | None = None) -> Check:
    """If LoadBalancer IPs did not reattach: restart the MetalLB controller once
    (journaled ``metallb-restart``), wait for it and the IPs, and check again.

    Returns the re-check (or ``check`` unchanged when it passed or in a dry run).
    """
    if check.ok:
        return check
    if not s.require_execute("restarting the MetalLB controller"):
        return check
    timeout = timeout or s.params.limits.timeouts.pods_ready
    pods = s.cluster.list("pods", namespace, label_selector=selector)
    old = {p["metadata"]["uid"] for p in pods}
    entry = s.journal.record("metallb-restart", f"delete the MetalLB controller pod(s) in {namespace}",
                             data={"pods": [_key(p) for p in pods], "lost": check.details})
    try:
        for p in pods:
            s.cluster.delete("pods", p["metadata"]["name"], namespace)

        def controller_back() -> tuple[bool, list[str]]:
            now = [p for p in s.cluster.list("pods", namespace, label_selector=selector)
                   if p["metadata"]["uid"] not in old]
            ok = bool(now) and all(pod_ready(p) for p in now)
            return ok, [] if ok else ["a new MetalLB controller pod Ready"]

        s.cluster.wait_for(controller_back, timeout=timeout, what="the MetalLB controller",
                           interval=0.5, progress=s.progress, watch=[("pods", namespace)])
        t0 = time.monotonic()
        again = lb_ips(s)
        # the controller reassigns asynchronously: give it a little time (re-checked at
        # each Service change, every second at the latest)
        with Changes(s.cluster, ["services"]) as changes:
            while not again.ok and time.monotonic() - t0 < min(timeout, 60):
                changes.wait(min(1.0, max(0.0, min(timeout, 60) - (time.monotonic() - t0))))
                again = lb_ips(s)
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    s.journal.complete(entry, result={"still_lost": again.details})
    again.message += " (after restarting the MetalLB controller)"
    if not again.ok:
        again.hint = ("still not reattached after a controller restart: check the IPAddressPool "
                      "and the service's loadBalancerIPs annotation, and the speaker pods")
    return again


def ingress(s: Session) -> Check:
    """Every ingress check answers its expected status over HTTPS with the CA (defect 7)."""
    items = list(s.params.checks.ingress)
    table = checks.probe_all(items, kind=s.params.target.kind)   # each check names its ca_file
    bad = [f"{r.url} via {r.connected_to}: {r.reason}" for r in table.itertuples() if not r.ok]
    return Check("ingress", not bad, f"every ingress host answers over HTTPS ({len(items)} checks)",
                 bad, table, hint="a TLS error means the wrong CA; a timeout means the ingress "
                                  "controller's pods or their LoadBalancer IP are not reachable")


def regression(s: Session) -> Check:
    """The params' regression checks: HTTP (status) or a command on a node (output)."""
    rows = []
    for c in s.params.checks.regression:
        if c.kind == "http":
            r = checks.probe_ingress(c.url, expect_status=c.expect_status, ca_file=c.ca_file,
                                     resolve_to=c.resolve_to, kind=s.params.target.kind)
            ok, seen = r.ok, f"{r.status} ({r.reason})"
        else:
            node = s.node(c.node)
            # each argv element is quoted by the choke point: never a shell string
            res = node.run(" ".join(["%s"] * len(c.command)), *c.command)
            out = res.stdout
            ok = res.ok and (c.expect_output is None or c.expect_output in out)
            seen = f"rc={res.rc}: {out.strip()[:200]}"
        rows.append({"check": c.name, "kind": c.kind, "ok": bool(ok), "seen": seen,
                     "expected": c.expect_output or (c.expect_status if c.kind == "http" else "rc=0")})
    table = pd.DataFrame(rows, columns=["check", "kind", "ok", "seen", "expected"])
    if not rows:
        checks.flag(s, "no-regression-checks", "the params list no regression checks "
                    "(checks.regression is empty): only the ingress probes tested the data path; add "
                    "the checks your services need (an HTTP status, or a command on a node)")
    bad = [f"{r.check}: {r.seen} (expected {r.expected})" for r in table.itertuples() if not r.ok]
    return Check("regression", not bad, f"every regression check passes ({len(rows)} checks)", bad, table)


def hubble(s: Session) -> Check:
    """Hubble relay and UI Ready (the values enable them; no blocking CLI, defect 8)."""
    if mode(s) == "flannel":
        return _skipped("hubble", "Hubble relay and UI Ready")
    st = cilium.status(s.cluster, s.params.cilium.namespace)
    comps = [c for c in st.components if c.name in ("hubble-relay", "hubble-ui")]
    table = pd.DataFrame([{"component": f"{c.kind}/{c.name}", "desired": c.desired, "ready": c.ready,
                           "ok": c.ok} for c in comps])
    bad = [f"{c.kind}/{c.name}: " + (f"{c.ready}/{c.desired} ready" if c.present else "absent")
           for c in comps if not c.ok]
    return Check("hubble", not bad, "Hubble relay and UI Ready", bad, table,
                 hint="check hubble.relay.enabled / hubble.ui.enabled in the values and the pods' events")


argocd_resume = argocd.resume_for_session  # Re-enable Argo CD exactly as recorded


def verdict(s: Session) -> str:
    """The verdict once every gate passed (a dry run says what it did not do)."""
    text = VERDICT_OK if mode(s) == "cilium" else VERDICT_FLANNEL_OK
    return text if s.execute else text + " (dry run: Argo CD not re-enabled, lock kept)"


def finish(s: Session) -> bool:
    """Release the migration lock at the end of a verified, executed run."""
    if not s.execute:
        return False
    try:
        return lock.release(s.cluster, s.run_id)
    except ClusterError:
        return False
