"""The lifecycle of pods, nodes, jobs and events as data: one table of stages.

Like kwok's ``Stage`` objects, each row says which object a transition applies to, when
it starts, how long it takes (cluster seconds, see :mod:`twin.clock`) and what comes
next, with the real component and setting it models so a reader can check the number
against that component's documentation. The controllers read their delays from here
(:func:`seconds`) instead of keeping their own constants.

Example:
    >>> seconds("pod.sigterm-exit")
    1.0
    >>> STAGES["node.lease-renew"].source
    'kubelet: nodeLeaseDurationSeconds 40 s, renewed every 25 % of it (10 s)'
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One transition.

    Attributes:
        name: ``<object>.<stage>``.
        applies_to: which objects, in which state.
        delay: cluster seconds from the trigger to the transition (for back-offs: the
            first delay; ``cap`` is the largest).
        then: what happens: the status written, the event recorded, the deletion.
        source: the real component and setting this models.
        cap: the largest delay of a doubling back-off (None: no back-off).
    """

    name: str
    applies_to: str
    delay: float
    then: str
    source: str
    cap: float | None = None


_ROWS = (
    # -- pods: start ------------------------------------------------------------------------
    Stage("pod.schedule", "a pod without spec.nodeName", 0.0,
          "bound to the fitting node with the fewest pods; event Scheduled",
          "kube-scheduler"),
    Stage("pod.start", "a bound pod whose node has a working CNI", 2.0,
          "sandbox + IP; images present or pulled (events Pulling/Pulled), containers "
          "created and started (events Created, Started); Running and Ready",
          "kubelet SyncPod: sandbox, pulls, container starts"),
    Stage("pod.image-pull-fail", "a container whose image the registry does not know", 1.0,
          "waiting ErrImagePull; event Failed 'Failed to pull image ...: not found'",
          "kubelet image manager: a failed pull"),
    Stage("pod.image-pull-backoff", "a container after ErrImagePull", 10.0,
          "waiting ImagePullBackOff; event BackOff 'Back-off pulling image'; pulled again "
          "after the back-off (doubling, 300 s at most)",
          "kubelet image back-off: 10 s doubling to 300 s", cap=300.0),
    Stage("pod.crash-loop", "a container that exited under restartPolicy Always/OnFailure", 10.0,
          "waiting CrashLoopBackOff with lastState.terminated; event BackOff; restarted "
          "after the back-off (doubling, 300 s at most)",
          "kubelet container restart back-off: 10 s doubling to 300 s", cap=300.0),
    Stage("pod.container-exit", "a Running container whose program exits", 0.0,
          "terminated (Completed / Error, exitCode); the pod Succeeded / Failed under "
          "restartPolicy Never (OnFailure: Succeeded once all exit 0)",
          "the program's own run time (twin.controllers.programs)"),
    # -- pods: deletion ---------------------------------------------------------------------
    Stage("pod.delete", "DELETE of a bound, non-terminal pod", 0.0,
          "deletionTimestamp = now + grace, deletionGracePeriodSeconds = grace "
          "(?gracePeriodSeconds, else spec.terminationGracePeriodSeconds, 30); an unbound "
          "or finished pod goes at once", "kube-apiserver pod strategy CheckGracefulDelete"),
    Stage("pod.sigterm-exit", "a container told to stop (SIGTERM)", 1.0,
          "the container exits (most programs stop well within a second); event Killing "
          "'Stopping container X'", "kubelet killContainer: SIGTERM, then SIGKILL at the grace"),
    Stage("pod.sigkill", "a container that ignores SIGTERM (e.g. sleep as PID 1)", 30.0,
          "killed at the end of the grace period (exitCode 137)",
          "kubelet killContainer: SIGKILL when the grace period ends"),
    Stage("pod.remove", "a pod whose containers all stopped", 0.0,
          "status written (terminated containers), then DELETE with grace 0: gone unless "
          "finalizers remain", "kubelet status manager: the final delete"),
    # -- nodes ------------------------------------------------------------------------------
    Stage("node.lease-renew", "every node whose kubelet runs", 10.0,
          "kube-node-lease/<node> spec.renewTime = now",
          "kubelet: nodeLeaseDurationSeconds 40 s, renewed every 25 % of it (10 s)"),
    Stage("node.status-report", "every node whose kubelet runs, without a status change", 300.0,
          "conditions' lastHeartbeatTime = now (lastTransitionTime only on a change)",
          "kubelet nodeStatusReportFrequency (5 min once leases carry the heartbeat)"),
    Stage("node.monitor-grace", "a node whose kubelet stopped posting", 40.0,
          "Ready Unknown 'Kubelet stopped posting node status.'; event NodeNotReady",
          "kube-controller-manager --node-monitor-grace-period"),
    Stage("node.noexecute-evict", "a pod on a not-ready/unreachable node", 300.0,
          "deleted (event TaintManagerEviction 'Marking for deletion Pod ns/name')",
          "DefaultTolerationSeconds admission: tolerationSeconds 300"),
    # -- jobs -------------------------------------------------------------------------------
    Stage("job.pod-failure-backoff", "a Job whose pod failed", 10.0,
          "a new pod after the back-off (doubling, 6 min at most); Failed with "
          "BackoffLimitExceeded after backoffLimit (6) failures",
          "job controller: DefaultJobPodFailureBackOff 10 s, MaxJobPodFailureBackOff",
          cap=360.0),
    Stage("cronjob.schedule", "a CronJob whose next schedule time has come", 0.0,
          "a Job <cronjob>-<minutes since epoch>; histories trimmed to "
          "successfulJobsHistoryLimit (3) / failedJobsHistoryLimit (1)",
          "cronjob controller v2"),
    # -- events -----------------------------------------------------------------------------
    Stage("event.aggregate", "an event equal to one recorded within 10 min", 600.0,
          "count + 1, lastTimestamp (and series) updated instead of a new Event",
          "client-go EventCorrelator (maxIntervalInSeconds 600)"),
    Stage("event.ttl", "every Event", 3600.0, "deleted",
          "kube-apiserver --event-ttl (1 h)"),
)

#: Every stage by name.
STAGES: dict[str, Stage] = {s.name: s for s in _ROWS}


def seconds(name: str) -> float:
    """The delay of stage ``name`` in cluster seconds (KeyError for an unknown stage)."""
    return STAGES[name].delay


def backoff(name: str, attempt: int) -> float:
    """The delay before retry ``attempt`` (1-based) of a doubling back-off stage.

    Example:
        >>> [backoff("pod.crash-loop", n) for n in (1, 2, 3, 10)]
        [10.0, 20.0, 40.0, 300.0]
    """
    stage = STAGES[name]
    delay = stage.delay * (2 ** max(0, attempt - 1))
    return min(delay, stage.cap) if stage.cap is not None else delay
