"""What happens between a pod's sandbox and its containers' exits: image pulls and
container runs (part of the kubelet).

:class:`PodRuns` adjusts the fate a sandbox policy decided (:class:`~.pod_status.PodFate`)
by what the node does next, with the delays of :mod:`.stages`:

- **Image pulls**: before its containers first start, a pod whose image the fixture's
  registry does not know (:class:`~twin.fixtures.images.ImageCatalog`) stays Pending:
  ``ErrImagePull`` with the registry's "not found", then ``ImagePullBackOff`` for the
  pull back-off (10 s doubling to 300 s), then a new pull, and so on. Every container
  of such a pod shows the failure of the first unknown image.
- **Container runs**: once Running, each container's program
  (:func:`~.programs.program_for`) may exit by itself. ``restartPolicy`` decides what
  follows: ``Always`` restarts it after the crash-loop back-off (CrashLoopBackOff with
  the exit in ``lastState``, also after exit 0), ``OnFailure`` only after a non-zero
  exit, ``Never`` leaves it terminated. When every container has terminated for good
  the pod is Succeeded (all exit 0) or Failed. Pods whose programs never exit (every
  fixture server) cost nothing here.

The state is computed from the time each run started, so a reconcile at any moment
gives the same answer; :meth:`PodRuns.adjust` returns the fate and the cluster time of
the next change.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..fixtures.images import ImageCatalog, canonical_ref
from .pod_status import PodFate, _digest, image_ref
from .programs import Program, Reach, program_for
from .scheduler import now_rfc3339
from .stages import backoff, seconds


def pull_error(image: str) -> str:
    """The waiting message of ErrImagePull for an image the registry does not have."""
    ref = canonical_ref(image)
    return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
            f'failed to resolve reference "{ref}": {ref}: not found')


def pull_backoff_message(image: str) -> str:
    return f'Back-off pulling image "{image}"'


@dataclass
class _Run:
    """One pod's containers since they first started (cluster times); ``written``: lines
    of each (container, run) already logged."""

    started: float
    programs: dict[str, Program]
    policy: str
    written: dict[tuple[str, int], int] = field(default_factory=dict)


def _started_containers(pod: dict) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("containerID") or cs.get("imageID"):
            return True
    return False


class PodRuns:
    """Image pulls and container runs of every pod on the twin's nodes (see module doc).

    Args:
        catalog: the images that exist.
        reach: how an HTTP client in a pod fares (for ``wget``/``curl`` programs).
    """

    def __init__(self, catalog: ImageCatalog | None = None, reach: Reach | None = None) -> None:
        self.catalog = catalog or ImageCatalog(None)
        self.reach = reach
        self._pulls: dict[Any, float] = {}      # key -> cluster time the first pull began
        self._runs: dict[Any, _Run] = {}

    def forget(self, key: Any) -> None:
        self._pulls.pop(key, None)
        self._runs.pop(key, None)

    # ------------------------------------------------------------------ pulls
    def unknown_image(self, pod: dict) -> str | None:
        """The first image of ``pod`` the registry does not have, or None."""
        if self.catalog.open:
            return None
        spec = pod.get("spec") or {}
        for c in list(spec.get("initContainers") or ()) + list(spec.get("containers") or ()):
            image = c.get("image") or ""
            if not self.catalog.knows(image):
                return image
        return None

    def _pull_fate(self, key: Any, image: str, fate: PodFate, now: float) -> tuple[PodFate, float]:
        """ErrImagePull / ImagePullBackOff for ``image`` at ``now``, and the next change."""
        t0 = self._pulls.setdefault(key, now)
        fail = seconds("pod.image-pull-fail")
        start, attempt = t0, 1
        while True:
            failed_at = start + fail
            backoff_at = failed_at + fail          # ErrImagePull shows until the next sync
            next_pull = backoff_at + backoff("pod.image-pull-backoff", attempt)
            if now < failed_at:
                reason, msg, due = ("ContainerCreating", None, failed_at) if attempt == 1 else \
                    ("ImagePullBackOff", pull_backoff_message(image), failed_at)
                break
            if now < backoff_at:
                reason, msg, due = "ErrImagePull", pull_error(image), backoff_at
                break
            if now < next_pull:
                reason, msg, due = "ImagePullBackOff", pull_backoff_message(image), next_pull
                break
            start, attempt = next_pull, attempt + 1
        return PodFate("Pending", False, reason, msg, cni=fate.cni, ip=fate.ip), due

    # ------------------------------------------------------------------ runs
    def started(self, key: Any, pod: dict, now: float) -> bool:
        """The pod's containers started now (the kubelet applied Running); True when a
        program will exit by itself (the kubelet then follows the pod)."""
        if key in self._runs:
            return False
        spec = pod.get("spec") or {}
        programs = {c.get("name", ""): program_for(pod, c, self.reach)
                    for c in spec.get("containers") or ()}
        if not any(p.timed for p in programs.values()):
            return False     # servers that log only when they start: nothing to follow
        self._runs[key] = _Run(now, programs, spec.get("restartPolicy") or "Always")
        return True

    def follows(self, key: Any) -> bool:
        return key in self._runs

    def lines_due(self, key: Any, now: float, log_run: dict[str, int]) -> tuple[list[tuple[str, list[str]]], float | None]:
        """Lines the programs have written by ``now`` and not yet logged, for the run each
        container's log holds now (``log_run``: container -> run number); and the cluster
        time of the next line."""
        run = self._runs.get(key)
        if run is None:
            return [], None
        out: list[tuple[str, list[str]]] = []
        nxt: float | None = None
        for name, prog in run.programs.items():
            st, _ = container_state(prog, run.policy, now - run.started)
            last = st.restarts if st.kind != "waiting" else st.restarts - 1
            n = log_run.get(name, 0)
            if n > last or n < last - 1:
                continue           # that run has not started, or is long gone
            if n < last or st.kind != "running":
                elapsed = float("inf")      # that run has ended: everything it wrote
            else:
                elapsed = now - (run.started + st.run_started)
            done = run.written.get((name, n), 0)
            due = [ln for t, ln in prog.output[done:] if t <= elapsed + 1e-9]
            if due:
                run.written[(name, n)] = done + len(due)
                out.append((name, due))
            rest = prog.output[done + len(due):]
            if rest and elapsed != float("inf"):
                t = run.started + st.run_started + rest[0][0]
                nxt = t if nxt is None else min(nxt, t)
        return out, nxt

    def program(self, key: Any, pod: dict, container: str) -> Program:
        run = self._runs.get(key)
        if run is not None and container in run.programs:
            return run.programs[container]
        c = next((c for c in (pod.get("spec") or {}).get("containers") or ()
                  if c.get("name") == container), {"name": container})
        return program_for(pod, c, self.reach)

    def adjust(self, key: Any, pod: dict, fate: PodFate, now: float) -> tuple[PodFate, float | None]:
        """The fate after pulls and runs, and the cluster time of the next change."""
        if fate.phase == "Running" or fate.waiting_reason == "CrashLoopBackOff":
            if not _started_containers(pod):
                image = self.unknown_image(pod)
                if image is not None:
                    return self._pull_fate(key, image, fate, now)
            self._pulls.pop(key, None)
        run = self._runs.get(key)
        if run is None or fate.phase != "Running" or fate.waiting_reason:
            return fate, None
        return self._run_fate(pod, run, fate, now)

    def _run_fate(self, pod: dict, run: _Run, fate: PodFate, now: float) -> tuple[PodFate, float | None]:
        overlay: dict[str, dict] = {}
        due: float | None = None
        finished = 0
        failed = False
        waiting: tuple[str, str] | None = None
        uid = (pod.get("metadata") or {}).get("uid", "")
        for name, prog in run.programs.items():
            st, nxt = container_state(prog, run.policy, now - run.started)
            if nxt is not None:
                nxt += run.started
                due = nxt if due is None else min(due, nxt)
            image = next((c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or ()
                          if c.get("name") == name), "")
            overlay[name] = _container_fields(st, uid, name, image, fate.ready)
            if st.final:
                finished += 1
                failed = failed or st.exit_code != 0
            if st.kind == "waiting" and waiting is None:
                waiting = ("CrashLoopBackOff", "")
        if finished == len(run.programs):
            phase = "Failed" if failed else "Succeeded"
            return replace(fate, phase=phase, ready=False, overlay=overlay), None
        ready = all(o.get("ready") for o in overlay.values())
        return replace(fate, ready=ready, waiting_reason=waiting[0] if waiting else None,
                       message=None, overlay=overlay), due


@dataclass(frozen=True)
class ContainerState:
    """Where a container stands: ``kind`` running | waiting (back-off) | terminated."""

    kind: str
    restarts: int
    run_started: float          # seconds since the pod's start, of the current/last run
    exit_code: int = 0          # of the last run that ended
    exited_at: float = 0.0      # of the last run that ended
    final: bool = False


def container_state(prog: Program, policy: str, t: float) -> tuple[ContainerState, float | None]:
    """The state ``t`` cluster seconds after the first start, and when it next changes
    (relative to the first start; None: never).

    Example:
        >>> p = Program(runs_for=5.0, exit_code=1)
        >>> container_state(p, "Always", 7.0)[0].kind, container_state(p, "Always", 7.0)[1]
        ('waiting', 15.0)
        >>> container_state(p, "Never", 7.0)[0].final
        True
    """
    if prog.runs_for is None:
        return ContainerState("running", 0, 0.0), None
    start, restarts, last_end = 0.0, 0, 0.0
    while True:
        end = start + prog.runs_for
        if t < end:
            return ContainerState("running", restarts, start, prog.exit_code if restarts else 0,
                                  last_end), end
        restart = policy == "Always" or (policy == "OnFailure" and prog.exit_code != 0)
        if not restart:
            return ContainerState("terminated", restarts, start, prog.exit_code, end, True), None
        restarts += 1
        nxt = end + backoff("pod.crash-loop", restarts)
        if t < nxt:
            return ContainerState("waiting", restarts, start, prog.exit_code, end), nxt
        start, last_end = nxt, end
        if restarts > 10_000:      # a guard for zero-length runs far in the future
            return ContainerState("waiting", restarts, start, prog.exit_code, end), nxt


def _terminated(code: int, started: str, finished: str, cid: str) -> dict:
    return {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": started, "finishedAt": finished, "containerID": cid}


def _container_fields(st: ContainerState, uid: str, name: str, image: str, ready: bool) -> dict:
    """The containerStatus fields of a container in state ``st`` (timestamps are those
    of this write; :func:`~.pod_status.build_pod_status` keeps the ones already shown)."""
    ts = now_rfc3339()
    cid = f"containerd://{_digest(uid, name, str(st.restarts))}"
    fields: dict = {"restartCount": st.restarts, "imageID": f"{image_ref(image)}@sha256:{_digest(image)}",
                    "containerID": cid, "started": st.kind == "running",
                    "ready": st.kind == "running" and ready}
    last_cid = f"containerd://{_digest(uid, name, str(max(0, st.restarts - 1)))}"
    if st.kind == "running":
        fields["state"] = {"running": {"startedAt": ts}}
    elif st.kind == "waiting":
        fields["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        fields.pop("containerID")
    else:
        fields["state"] = {"terminated": _terminated(st.exit_code, ts, ts, cid)}
    if st.restarts:
        fields["lastState"] = {"terminated": _terminated(st.exit_code, ts, ts, last_cid)}
    else:
        fields["lastState"] = {}
    return fields
