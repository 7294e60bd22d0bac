"""Cilium's own cleanup on one node, in a short-lived pod: ``cilium-dbg post-uninstall-cleanup``.

Why a pod of its own, and why after ``helm uninstall`` (Cilium's source,
``cilium-dbg/cmd/post_uninstall_cleanup.go``): the command refuses to run while the
agent's pid file ``/var/run/cilium/cilium.pid`` exists ("Agent should not be running
when cleaning up"), and the running agent keeps that file. A ``kubectl exec`` into a
live agent therefore always refuses. Once the agents are gone, the cleanup runs in a
pod that reaches what the agent reached:

* the Cilium image the release ran (already on every node where an agent ran: no pull;
  ``imagePullPolicy: IfNotPresent``), with the command ``sleep`` so that the cleanup
  itself runs through ``kubectl exec`` (its output and exit status come back on the
  stream) and the pod ends by itself even if the runbook is interrupted;
* ``nodeName`` pinned, every taint tolerated (the node is NotReady without a CNI),
  ``hostNetwork`` (the host's devices and tc programs), ``privileged`` (netlink and the
  bpf() syscall), ``restartPolicy: Never``, no service account token;
* the host's ``/sys/fs/bpf`` (pinned maps and links), ``/run/cilium`` mounted at
  ``/var/run/cilium`` (endpoint state, the cgroup2 root of the socket load balancer, and
  the pid file: mounted so that the command's own guard against a running agent works),
  ``cni.confPath`` at ``/etc/cni/net.d`` and ``/var/lib/cilium``.

The cleanup removes the tc programs, the socket load balancer, the ``cilium_*`` devices
and routes, the state folders, Cilium's CNI configs and the ``cilium_*`` maps. It leaves
the CNI binary, the sysctl override and the CILIUM iptables chains: the rollback removes
those itself. It prints ``Error: ...`` for what it cannot do and still exits 0, so the
rollback reads the node again afterwards (:mod:`runbook.datapath`).

Each pod is journaled before it is created (step ``cilium-cleanup``, with its name), and
deleted (and waited for) whatever happens; a rerun first deletes any cleanup pod a crashed
attempt left (:func:`sweep`).

Example:
    >>> manifest("fast-skunk", image="quay.io/cilium/cilium:v1.19.3", namespace="kube-system",
    ...          run_id="r1")["spec"]["nodeName"]
    'fast-skunk'
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NodeError, WaitTimeout
from .pods import pod_problem

if TYPE_CHECKING:
    from .session import Session

__all__ = ["STEP", "APP_LABEL", "COMMAND", "CONTAINER", "LIFETIME", "pod_name", "manifest",
           "image_from_values", "CleanupOutcome", "parse_output", "run_on_node", "sweep"]

STEP = "cilium-cleanup"
APP_LABEL = "phase22-cilium-cleanup"
CONTAINER = "cleanup"
COMMAND = ["cilium-dbg", "post-uninstall-cleanup", "--all-state", "-f"]
#: seconds the pod lives by itself (its ``sleep``), also its activeDeadlineSeconds
LIFETIME = 3600
#: the cleanup pod's waits wake on a pods watch; they poll every POLL seconds only while
#: no watch is open (the API away), and re-check every RECHECK seconds while one is
POLL = 0.5
RECHECK = 15.0
_FATAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
                  "CreateContainerConfigError", "RunContainerError")


def pod_name(node: str) -> str:
    """The cleanup pod's name on ``node`` (a valid pod name for any node name).

    >>> pod_name("fast-skunk")
    'phase22-cilium-cleanup-fast-skunk'
    """
    name = f"{APP_LABEL}-{node}"
    if len(name) > 63:
        name = name[:50].rstrip("-.") + "-" + hashlib.sha256(node.encode()).hexdigest()[:10]
    return name


def _label_value(text: str) -> str:
    v = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-._")
    return v or "run"


def manifest(node: str, *, image: str, namespace: str, run_id: str,
             cni_conf_dir: str = "/etc/cni/net.d", lifetime: int = LIFETIME) -> dict[str, Any]:
    """The cleanup pod for ``node`` (pure). See the module doc for each choice."""
    mounts = [("bpf-maps", "/sys/fs/bpf", "/sys/fs/bpf", True),
              ("cilium-run", "/run/cilium", "/var/run/cilium", True),
              ("cni-conf", cni_conf_dir, "/etc/cni/net.d", False),
              ("cilium-lib", "/var/lib/cilium", "/var/lib/cilium", False)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(node), "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": APP_LABEL,
                                "app.kubernetes.io/managed-by": "phase22-runbook",
                                "phase22.io/run-id": _label_value(run_id)},
                     "annotations": {"phase22.io/purpose": "cilium-dbg post-uninstall-cleanup on "
                                                           f"{node} (05-rollback)"}},
        "spec": {
            "nodeName": node, "hostNetwork": True, "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1, "activeDeadlineSeconds": int(lifetime),
            "automountServiceAccountToken": False, "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(int(lifetime))],
                "securityContext": {"privileged": True},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                "volumeMounts": [{"name": n, "mountPath": c, **({"mountPropagation": "HostToContainer"}
                                                                if prop else {})}
                                 for n, _h, c, prop in mounts]}],
            "volumes": [{"name": n, "hostPath": {"path": h, "type": "DirectoryOrCreate"}}
                        for n, h, _c, _p in mounts]}}


def image_from_values(values: dict[str, Any], version: str) -> str:
    """The agent image the values select (``image.override``, else repository:tag[@digest]),
    for when the release's DaemonSet can no longer be read.

    >>> image_from_values({}, "1.19.3")
    'quay.io/cilium/cilium:v1.19.3'
    >>> image_from_values({"image": {"digest": "sha256:ab", "useDigest": True}}, "1.19.3")
    'quay.io/cilium/cilium:v1.19.3@sha256:ab'
    """
    img = values.get("image") if isinstance(values.get("image"), dict) else {}
    if img.get("override"):
        return str(img["override"])
    out = f"{img.get('repository') or 'quay.io/cilium/cilium'}:{img.get('tag') or 'v' + version.lstrip('v')}"
    if img.get("digest") and img.get("useDigest", True):
        out += f"@{img['digest']}"
    return out


@dataclass
class CleanupOutcome:
    """What the cleanup did on one node.

    Attributes:
        node; pod: ``namespace/name``; rc: the command's exit status; removed: its
        ``removed ...`` lines; errors: its ``Error: ...`` lines; seconds.
    """

    node: str
    pod: str
    rc: int
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "pod": self.pod, "rc": self.rc, "removed": self.removed,
                "errors": self.errors, "seconds": round(self.seconds, 1)}

    def __str__(self) -> str:
        text = f"cleanup in {self.pod}: removed {len(self.removed)} item(s)"
        return text + (f"; {len(self.errors)} error(s): " + "; ".join(self.errors[:3]) if self.errors else "")


def parse_output(stdout: str, stderr: str) -> tuple[list[str], list[str]]:
    """The ``removed ...`` lines and the ``Error: ...`` lines of the cleanup (pure).

    >>> parse_output("Warning: ...\\nremoved map cilium_lxc\\nremoved link cilium_host\\n",
    ...              "Error: Failed to unmount /run/cilium/cgroupv2: busy\\n")
    (['removed map cilium_lxc', 'removed link cilium_host'], ['Error: Failed to unmount /run/cilium/cgroupv2: busy'])
    """
    removed = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("removed ")]
    errors = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("Error")]
    return removed, errors


def _delete_and_wait(s: Session, name: str, namespace: str, timeout: float) -> None:
    s.cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                      query={"gracePeriodSeconds": 0}, ok_missing=True)

    def gone() -> tuple[bool, list[str]]:
        return (s.cluster.get("pods", name, namespace) is None, [f"{namespace}/{name} still exists"])

    s.cluster.wait_for(gone, timeout=timeout, what=f"cleanup pod {namespace}/{name} gone", interval=POLL,
                       watch=[("pods", namespace)], watched_interval=RECHECK)


def _wait_running(s: Session, name: str, namespace: str, node: str, image: str, timeout: float) -> None:
    def running() -> tuple[bool, list[str]]:
        pod = s.cluster.get("pods", name, namespace)
        if pod is None:
            raise NodeError(f"the cleanup pod {namespace}/{name} vanished before it ran", node=node,
                            hint="look for an admission webhook or a policy deleting privileged pods")
        st = pod.get("status") or {}
        for cs in st.get("containerStatuses") or ():
            if (cs.get("state") or {}).get("running"):
                return True, []
            reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            if reason in _FATAL_WAITING:
                raise NodeError(f"the cleanup pod on {node} cannot start: {pod_problem(pod)}", node=node,
                                hint=f"the image {image} must be on the node (an agent ran it there); "
                                     "pull it, or set rollback.reboot_nodes: true (a reboot clears the "
                                     "kernel state without a pod) and run the rollback again")
        if st.get("phase") in ("Failed", "Succeeded"):
            raise NodeError(f"the cleanup pod on {node} ended before the cleanup ran: {pod_problem(pod)}",
                            node=node, hint="describe the pod and its events")
        return False, [pod_problem(pod)]

    try:
        s.cluster.wait_for(running, timeout=timeout, what=f"cleanup pod {namespace}/{name} running",
                           interval=POLL, watch=[("pods", namespace)], watched_interval=RECHECK)
    except WaitTimeout as e:
        raise NodeError(f"the cleanup pod on {node} did not start within {timeout:.0f}s: "
                        + "; ".join(e.pending), node=node,
                        hint="is the node's kubelet up (k3s running)? Without it, reboot the node "
                             "(rollback.reboot_nodes: true) instead") from e


def sweep(s: Session, namespace: str, *, timeout: float = 60) -> list[str]:
    """Delete every cleanup pod still present in ``namespace`` (a crashed attempt's), each
    journaled first; returns their names."""
    pods = s.cluster.list("pods", namespace, label_selector=f"app.kubernetes.io/name={APP_LABEL}")
    names = [p["metadata"]["name"] for p in pods]
    for name in names:
        entry = s.journal.record(STEP, f"delete the leftover cleanup pod {namespace}/{name}",
                                 node=(pods[names.index(name)].get("spec") or {}).get("nodeName"),
                                 data={"pod": name, "namespace": namespace, "leftover": True})
        try:
            _delete_and_wait(s, name, namespace, timeout)
        except Exception as e:
            s.journal.fail(entry, e)
            raise
        s.journal.complete(entry, result={"deleted": True})
    return names


def run_on_node(s: Session, node: str, *, image: str, namespace: str, cni_conf_dir: str,
                timeout: float) -> CleanupOutcome:
    """Create the cleanup pod on ``node``, run the cleanup in it, delete it (journaled).

    Raises:
        NodeError: the pod does not start (image, kubelet), the agent still runs on the node
            (its pid file), or the command fails; the pod is deleted in every case.
    """
    body = manifest(node, image=image, namespace=namespace, run_id=s.run_id, cni_conf_dir=cni_conf_dir)
    name = body["metadata"]["name"]
    t0 = time.monotonic()
    entry = s.journal.record(STEP, f"cilium-dbg post-uninstall-cleanup in pod {namespace}/{name}",
                             node=node, data={"pod": name, "namespace": namespace, "image": image,
                                              "command": COMMAND})
    try:
        if s.cluster.get("pods", name, namespace) is not None:   # a crashed attempt's pod
            _delete_and_wait(s, name, namespace, timeout)
        s.cluster.create("pods", body, namespace)
        try:
            _wait_running(s, name, namespace, node, image, timeout)
            r = s.cluster.exec(namespace, name, COMMAND, container=CONTAINER, timeout=timeout)
        finally:
            _delete_and_wait(s, name, namespace, timeout)
        if "Agent should not be running" in r.stderr:
            raise NodeError(f"Cilium's cleanup on {node} refused: an agent's pid file is there "
                            f"({r.stderr.strip().splitlines()[-1]})", node=node,
                            hint="an agent still runs on the node (helm uninstall not finished?), or "
                                 "one was killed and left its pid file: check `sudo ss -ltnp` for "
                                 "port 4240 on the node; with no agent, remove /run/cilium/cilium.pid "
                                 "and run the rollback again")
        if r.rc != 0:
            raise NodeError(f"Cilium's cleanup on {node} failed (rc={r.rc}): "
                            f"{(r.stderr or r.stdout).strip()[:300]}", node=node,
                            hint="read the command's output above; a reboot of the node "
                                 "(rollback.reboot_nodes: true) clears the same kernel state")
    except Exception as e:
        s.journal.fail(entry, e)
        raise
    removed, errors = parse_output(r.stdout, r.stderr)
    out = CleanupOutcome(node, f"{namespace}/{name}", r.rc, removed, errors, time.monotonic() - t0)
    s.journal.complete(entry, result={**out.to_dict(), "deleted": True})
    return out
