"""04-verify's probe DaemonSet: one small pod on every node, created, waited for, removed.

Cilium's "Validate the Setup" sends traffic from pods; pods that already run cannot be
relied on for it (a distroless image has no tool, and not every node runs a pod with
``wget``). So verify runs one DaemonSet of its own, of an image the params name
(``verify.probe_image``, by default one the cluster already runs), for the few minutes
of the checks (:mod:`runbook.verify_probe`):

* **where**: every node, servers included: every taint tolerated, cordoned nodes too
  (the DaemonSet controller adds that toleration itself); in ``verify.probe_namespace``
  (kube-system by default);
* **what**: the pod network (``hostNetwork: false``, ``dnsPolicy: ClusterFirst``): the
  point is to test it. The container serves HTTP on ``verify.probe_port`` (the image's
  own server, or ``verify.probe_command``), so every probe pod is also a target of the
  others; a TCP readiness probe on that port makes Ready mean "listening";
* **how little**: no service account token, no privilege (non-root, no capability,
  ``RuntimeDefault`` seccomp: the restricted Pod Security profile), 5m CPU and 16Mi
  requested, ``imagePullPolicy: IfNotPresent``;
* **whose**: labels name the runbook and the run (``phase22.io/run-id``).

Its life is journaled: step ``probe-create`` before it is created, ``probe-delete``
before it is deleted. The removal runs whatever the checks did (``try/finally`` in
:func:`probe_pods`), and the rollback removes a probe a crashed verify left
(:func:`remove_leftovers`, read from the journal; a re-run of verify does the same).

Example:
    >>> body = manifest(image="docker.io/nginxinc/nginx-unprivileged:1.27-alpine",
    ...                 namespace="kube-system", run_id="r1")
    >>> body["kind"], body["spec"]["template"]["spec"]["hostNetwork"]
    ('DaemonSet', False)
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pandas as pd

from .cluster import pod_ready
from .errors import ClusterError, WaitTimeout
from .pods import pod_problem

if TYPE_CHECKING:
    from .session import Session

__all__ = ["NAME", "APP_LABEL", "CONTAINER", "STEP_CREATE", "STEP_DELETE", "manifest", "Probe",
           "ready_pods", "missing_nodes", "create", "wait_ready", "delete", "leftovers",
           "remove_leftovers", "probe_pods", "plan_frame"]

NAME = "phase22-verify-probe"
APP_LABEL = NAME
CONTAINER = "probe"
STEP_CREATE = "probe-create"
STEP_DELETE = "probe-delete"
_FATAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
                  "CreateContainerConfigError", "RunContainerError", "CrashLoopBackOff")


def _label_value(text: str) -> str:
    v = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-._")
    return v or "run"


def labels(run_id: str) -> dict[str, str]:
    """The probe's labels (pure).

    >>> labels("2026-12-04 r1")["phase22.io/run-id"]
    '2026-12-04-r1'
    """
    return {"app.kubernetes.io/name": APP_LABEL, "app.kubernetes.io/managed-by": "phase22-runbook",
            "phase22.io/run-id": _label_value(run_id)}


def manifest(*, image: str, namespace: str, run_id: str, port: int = 8080,
             command: Sequence[str] = ()) -> dict[str, Any]:
    """The probe DaemonSet (pure). See the module doc for each choice.

    Args:
        image: the probe image (``verify.probe_image``).
        namespace: where it runs (``verify.probe_namespace``).
        run_id: the run, in the labels.
        port: the TCP port the container serves HTTP on.
        command: the container's command; empty = the image's own entrypoint.
    """
    lab = labels(run_id)
    container: dict[str, Any] = {
        "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": int(port), "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": int(port)}, "periodSeconds": 2,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if command:
        container["command"] = [str(c) for c in command]
        # busybox runs as root by default: give it a user (httpd needs none above 1024)
        container["securityContext"]["runAsUser"] = 65534
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(lab),
                     "annotations": {"phase22.io/purpose": "04-verify's data-path probe: DNS, a Service "
                                                           "ClusterIP and the pod on every other node, "
                                                           "from a pod on every node; removed after the "
                                                           "checks"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP_LABEL}},
            "updateStrategy": {"type": "OnDelete"},
            "template": {
                "metadata": {"labels": dict(lab)},
                "spec": {"hostNetwork": False, "dnsPolicy": "ClusterFirst",
                         "automountServiceAccountToken": False, "enableServiceLinks": False,
                         "terminationGracePeriodSeconds": 2,
                         "tolerations": [{"operator": "Exists"}],
                         "containers": [container]}}}}


@dataclass
class Probe:
    """The probe DaemonSet of one verify run.

    Attributes:
        namespace; name; image; port; pods: its Ready pods by node (filled by
        :func:`wait_ready`); missing: nodes without a Ready pod, each with why;
        created: this run created it (so it must be removed); seconds: to Ready;
        removal_error: why it could not be removed ("" when it was).
    """

    namespace: str
    name: str
    image: str
    port: int
    pods: dict[str, dict] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    created: bool = False
    seconds: float = 0.0
    removal_error: str = ""

    @property
    def ref(self) -> str:
        return f"daemonset {self.namespace}/{self.name}"

    def frame(self) -> pd.DataFrame:
        rows = [{"node": n, "pod": p["metadata"]["name"], "ip": (p.get("status") or {}).get("podIP", ""),
                 "ready": True, "why": ""} for n, p in sorted(self.pods.items())]
        rows += [{"node": n, "pod": "-", "ip": "", "ready": False, "why": why}
                 for n, why in sorted(self.missing.items())]
        return pd.DataFrame(rows, columns=["node", "pod", "ip", "ready", "why"])


def _mine(pods: list[dict], namespace: str) -> list[dict]:
    return [p for p in pods if p["metadata"].get("namespace") == namespace
            and (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == APP_LABEL]


def ready_pods(pods: list[dict]) -> dict[str, dict]:
    """The Ready, non-terminating probe pods by node (pure).

    >>> ready_pods([{"metadata": {"name": "p"}, "spec": {"nodeName": "a"},
    ...              "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}])
    {'a': {'metadata': {'name': 'p'}, 'spec': {'nodeName': 'a'}, 'status': {'phase': 'Running', 'conditions': [{'type': 'Ready', 'status': 'True'}]}}}
    """
    out: dict[str, dict] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node and pod_ready(p) and not p["metadata"].get("deletionTimestamp"):
            out.setdefault(node, p)
    return out


def missing_nodes(nodes: Sequence[str], pods: list[dict]) -> dict[str, str]:
    """The nodes without a Ready probe pod, each with what its pod shows (pure).

    >>> missing_nodes(["a", "b"], [{"metadata": {"name": "p", "namespace": "k"}, "spec": {"nodeName": "a"},
    ...                             "status": {"phase": "Pending"}}])
    {'a': 'k/p on a: Pending', 'b': 'no probe pod scheduled'}
    """
    ready = ready_pods(pods)
    out = {}
    for n in nodes:
        if n in ready:
            continue
        mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == n]
        out[n] = "; ".join(pod_problem(p) for p in mine) or "no probe pod scheduled"
    return out


def _ds_path(namespace: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/daemonsets" + (f"/{name}" if name else "")


def create(s: Session, body: dict[str, Any]) -> Probe:
    """Create the probe DaemonSet, journaled first (step ``probe-create``); a probe a
    crashed attempt left under the same name is deleted first (journaled too)."""
    md = body["metadata"]
    ns, name = md["namespace"], md["name"]
    container = body["spec"]["template"]["spec"]["containers"][0]
    probe = Probe(ns, name, container["image"], int(container["ports"][0]["containerPort"]))
    if s.cluster.get("daemonsets", name, ns) is not None:
        delete(s, probe, why="left by an earlier attempt")

    def do() -> dict[str, Any]:
        made = s.cluster.create("daemonsets", body, ns)
        return {"uid": made["metadata"].get("uid"), "created": True}
    s.journal.perform(STEP_CREATE, f"create the probe DaemonSet {ns}/{name} ({probe.image})", do,
                      data={"namespace": ns, "name": name, "image": probe.image, "labels": md["labels"]})
    probe.created = True
    return probe


def wait_ready(s: Session, probe: Probe, nodes: Sequence[str], timeout: float) -> Probe:
    """Wait (on the API's watch events) until a probe pod is Ready on each of ``nodes``,
    or a pod cannot start (image pull, crash), or ``timeout``; fills ``probe.pods`` and
    ``probe.missing`` and never raises for a node: a node without a probe is a failure
    the checks name."""
    sel = f"app.kubernetes.io/name={APP_LABEL}"
    fatal: dict[str, str] = {}

    def check() -> tuple[bool, list[str]]:
        pods = s.cluster.list("pods", probe.namespace, label_selector=sel)
        for p in pods:
            for cs in (p.get("status") or {}).get("containerStatuses") or ():
                reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
                if reason in _FATAL_WAITING:
                    fatal[(p.get("spec") or {}).get("nodeName") or "?"] = pod_problem(p)
        probe.pods = {n: p for n, p in ready_pods(pods).items() if n in nodes}
        probe.missing = missing_nodes(nodes, pods)
        probe.missing.update({n: why for n, why in fatal.items() if n in probe.missing})
        done = not probe.missing or set(probe.missing) <= set(fatal)
        return done, [f"{n}: {why}" for n, why in sorted(probe.missing.items())]

    t0 = time.monotonic()
    with contextlib.suppress(WaitTimeout):
        s.cluster.wait_for(check, timeout=timeout, what=f"a Ready probe pod on each of {len(nodes)} nodes",
                           interval=2.0, watch=[("pods", probe.namespace)],
                           progress=lambda m: print(m, flush=True))
    probe.seconds = time.monotonic() - t0
    return probe


def delete(s: Session, probe: Probe, *, why: str = "the checks are done",
           timeout: float = 120) -> dict[str, Any]:
    """Delete the probe DaemonSet and wait until it and its pods are gone, journaled first
    (step ``probe-delete``). A DaemonSet already gone is a success."""
    ns, name = probe.namespace, probe.name
    sel = f"app.kubernetes.io/name={APP_LABEL}"

    def gone() -> tuple[bool, list[str]]:
        left = [f"pod {ns}/{p['metadata']['name']} still exists"
                for p in s.cluster.list("pods", ns, label_selector=sel)]
        if s.cluster.get("daemonsets", name, ns) is not None:
            left.insert(0, f"daemonset {ns}/{name} still exists")
        return not left, left

    def do() -> dict[str, Any]:
        found = s.cluster.request("DELETE", _ds_path(ns, name), ok_missing=True,
                                  body={"kind": "DeleteOptions", "apiVersion": "v1",
                                        "propagationPolicy": "Foreground"})
        waited = s.cluster.wait_for(gone, timeout=timeout, what=f"probe DaemonSet {ns}/{name} and its pods gone",
                                    interval=1.0, watch=[("daemonsets", ns), ("pods", ns)])
        return {"deleted": found is not None, "seconds": round(waited, 1)}
    return s.journal.perform(STEP_DELETE, f"delete the probe DaemonSet {ns}/{name} ({why})", do,
                             data={"namespace": ns, "name": name})


def leftovers(doc_entries: Sequence[Any]) -> list[tuple[str, str]]:
    """``(namespace, name)`` of every probe DaemonSet the journal says was (maybe) created
    and not deleted since (pure; entries as :class:`~runbook.journal.JournalEntry` or dicts).

    >>> leftovers([{"step": "probe-create", "status": "intent", "data": {"namespace": "k", "name": "p"}}])
    [('k', 'p')]
    >>> leftovers([{"step": "probe-create", "status": "done", "data": {"namespace": "k", "name": "p"}},
    ...            {"step": "probe-delete", "status": "done", "data": {"namespace": "k", "name": "p"}}])
    []
    """
    live: dict[tuple[str, str], bool] = {}
    for e in doc_entries:
        d = e if isinstance(e, dict) else e.__dict__
        if d.get("step") not in (STEP_CREATE, STEP_DELETE) or not isinstance(d.get("data"), dict):
            continue
        data = d["data"]
        key = (str(data.get("namespace") or ""), str(data.get("name") or ""))
        if d.get("step") == STEP_CREATE and d.get("status") in ("intent", "done"):
            live[key] = True
        elif d.get("step") == STEP_DELETE and d.get("status") == "done":
            live[key] = False
    return [k for k, v in live.items() if v and all(k)]


def remove_leftovers(s: Session, *, timeout: float | None = None) -> pd.DataFrame:
    """Delete every probe DaemonSet this run's journal shows created and not removed (a
    verify that died between the two), each journaled; in a dry run, only list them.

    Example:
        >>> probe_daemonset.remove_leftovers(s)     # doctest: +SKIP
    """
    rows = []
    wait = timeout if timeout is not None else s.params.limits.timeouts.probe_ready
    for ns, name in leftovers(s.journal.entries()):
        present = s.cluster.get("daemonsets", name, ns) is not None
        action = "delete" if present and s.execute else ("would delete" if present else "already gone")
        if present and s.execute:
            delete(s, Probe(ns, name, "", 0), why="a verify that stopped before removing it", timeout=wait)
        rows.append({"daemonset": f"{ns}/{name}", "present": present, "action": action})
    return pd.DataFrame(rows, columns=["daemonset", "present", "action"])


@contextlib.contextmanager
def probe_pods(s: Session, nodes: Sequence[str]) -> Iterator[Probe]:
    """Create the probe DaemonSet, wait for its pods, yield the :class:`Probe`, and delete
    it whatever happens in the block (journaled both ways). A removal that fails is kept
    in ``probe.removal_error`` (and the journal) rather than raised, so the checks made are
    not lost: the caller reports it.

    Example:
        >>> with probe_daemonset.probe_pods(s, [n.name for n in s.nodes]) as probe:  # doctest: +SKIP
        ...     probe.pods["set-hog"]["status"]["podIP"]
    """
    v = s.params.verify
    body = manifest(image=v.probe_image, namespace=v.probe_namespace, run_id=s.run_id,
                    port=v.probe_port, command=v.probe_command)
    timeout = s.params.limits.timeouts.probe_ready
    probe = create(s, body)
    try:
        wait_ready(s, probe, nodes, timeout)
        yield probe
    finally:
        try:
            delete(s, probe, timeout=timeout)
        except (ClusterError, WaitTimeout) as e:
            # journaled as failed: a re-run of 04-verify or 05-rollback removes it
            probe.removal_error = str(e)
            print(f"WARNING: the probe DaemonSet {probe.namespace}/{probe.name} could not be removed: {e}",
                  flush=True)


def plan_frame(s: Session) -> pd.DataFrame:
    """What the probe would be (for a dry run): image, where, and whether the cluster
    already runs the image (else every node pulls it)."""
    v = s.params.verify
    running = sum(1 for p in s.cluster.list("pods")
                  for c in (p.get("spec") or {}).get("containers") or () if c.get("image") == v.probe_image)
    return pd.DataFrame([{"daemonset": f"{v.probe_namespace}/{NAME}", "image": v.probe_image,
                          "port": v.probe_port, "pods running this image now": running,
                          "nodes": len(s.nodes)}])
