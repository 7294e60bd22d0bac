"""The Job controller (``batch/v1``): pods until enough succeed, or too many fail.

As kube-controller-manager's job controller, for ``completionMode: NonIndexed``:

- pods ``<job>-<5 chars>`` from the template (the API server put the job's
  ``controller-uid``/``job-name`` labels and selector on it at create), at most
  ``parallelism`` active and never more than the completions still missing (without
  ``completions``: until one pod succeeds);
- the pods' containers exit as their programs say (:mod:`..programs`); with
  ``restartPolicy: Never`` a failed pod stays Failed and a new one is created after the
  pod-failure back-off (10 s doubling); with ``OnFailure`` the kubelet restarts the
  container in place and every restart counts as a failure;
- Complete (``CompletionsReached``) once ``succeeded >= completions``; Failed with
  ``BackoffLimitExceeded`` once failures exceed ``backoffLimit`` (6), or
  ``DeadlineExceeded`` after ``activeDeadlineSeconds``; the active pods of a failed Job
  are deleted; ``suspend`` deletes active pods and creates none;
- ``status``: ``startTime``, ``active``, ``ready``, ``succeeded``, ``failed``,
  ``terminating``, ``completionTime``, the conditions; events ``SuccessfulCreate``,
  ``Completed``, ``BackoffLimitExceeded``;
- ``ttlSecondsAfterFinished``: the finished Job is deleted after that many cluster
  seconds (the TTL-after-finished controller).

Succeeded and failed counts never go down when finished pods are deleted (the real
controller keeps them with its tracking finalizer).
"""
from __future__ import annotations

from typing import Any

from ...store import NotFound
from ..base import Cache, ObjKey
from ..scheduler import now_rfc3339
from ..stages import backoff
from .templates import new_pod, pod_ready, random_suffix
from .workload_base import POD, WorkloadBase

JOB = ("batch", "jobs")


def _cond(job: dict, ctype: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def job_finished(job: dict) -> str | None:
    """"Complete", "Failed" or None."""
    for ctype in ("Complete", "Failed"):
        if _cond(job, ctype):
            return ctype
    return None


def _restarts(pod: dict) -> int:
    return sum(int(cs.get("restartCount") or 0)
               for cs in (pod.get("status") or {}).get("containerStatuses") or ())


class JobController(WorkloadBase):
    kind_key = JOB

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("job", store, cache, clock, types)
        self.events: Any = None
        self._started: dict[str, float] = {}        # job uid -> cluster time it started
        self._last_failure: dict[str, tuple[int, float]] = {}   # uid -> (failures, when)

    def _event(self, job: dict, etype: str, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.record(job, etype, reason, message, component="job-controller")

    def reconcile(self, key: ObjKey) -> None:
        job = self._live(key)
        if job is None:
            return
        md, spec = job["metadata"], job.get("spec") or {}
        uid = md["uid"]
        prev = job.get("status") or {}
        now = self.clock.cluster_now()
        pods = self.cache.owned(POD, uid)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        active = [p for p in live if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        terminating = len(pods) - len(live)
        succeeded = max(int(prev.get("succeeded") or 0),
                        sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"))
        failed_pods = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        failed = max(int(prev.get("failed") or 0), failed_pods)
        failures = failed + sum(_restarts(p) for p in active)
        status = dict(prev)
        conds = [dict(c) for c in prev.get("conditions") or ()]
        finished = job_finished(job)
        if finished:
            self._ttl(key, job)
            return
        if spec.get("suspend"):
            for p in active:
                self._delete(POD, p)
            self._put(status, conds, active=0, ready=0, terminating=terminating)
            self._write(job, status, conds)
            return
        if not status.get("startTime"):
            status["startTime"] = now_rfc3339()
        self._started.setdefault(uid, now)
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        fail_reason = None
        if failures > limit:
            fail_reason = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and now - self._started[uid] >= float(deadline):
            fail_reason = ("DeadlineExceeded", "Job was active longer than specified deadline")
        done = (succeeded >= int(completions)) if completions is not None else \
            (succeeded >= 1 and not active)
        if fail_reason or done:
            for p in active:
                self._delete(POD, p)
            t = now_rfc3339()
            if fail_reason:
                conds.append({"type": "Failed", "status": "True", "reason": fail_reason[0],
                              "message": fail_reason[1], "lastProbeTime": t, "lastTransitionTime": t})
                self._event(job, "Warning", fail_reason[0], fail_reason[1])
            else:
                conds.append({"type": "Complete", "status": "True", "reason": "CompletionsReached",
                              "message": "Reached expected number of succeeded pods",
                              "lastProbeTime": t, "lastTransitionTime": t})
                status["completionTime"] = t
                self._event(job, "Normal", "Completed", "Job completed")
            self._put(status, conds, active=0, ready=0, succeeded=succeeded, failed=failed,
                      terminating=terminating + len(active))
            self._write(job, status, conds)
            self._started.pop(uid, None)
            self._last_failure.pop(uid, None)
            return
        want = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
        missing = max(0, want - len(active))
        if missing and failed:
            # The pod-failure back-off: after the n-th failure wait 10 s * 2^(n-1).
            seen = self._last_failure.get(uid)
            if seen is None or seen[0] != failed:
                seen = self._last_failure[uid] = (failed, now)
            wait = backoff("job.pod-failure-backoff", failed) - (now - seen[1])
            if wait > 0:
                self.requeue_after(key, wait)
                missing = 0
        template = spec.get("template") or {}
        for _ in range(missing):
            pod = new_pod(template, name=f"{md['name']}-{random_suffix()}", namespace=key[0], owner=job)
            created = self._create_pod(pod)
            if created is not None:
                self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        if deadline is not None:
            self.requeue_after(key, max(0.0, float(deadline) - (now - self._started[uid])))
        self._put(status, conds, active=len(active) + missing,
                  ready=sum(1 for p in active if pod_ready(p)), succeeded=succeeded, failed=failed,
                  terminating=terminating)
        self._write(job, status, conds)

    @staticmethod
    def _put(status: dict, conds: list[dict], **counts: int) -> None:
        for k, v in counts.items():
            if v or k in ("ready",):
                status[k] = v
            else:
                status.pop(k, None)
        status.setdefault("uncountedTerminatedPods", {})
        if conds:
            status["conditions"] = conds

    def _write(self, job: dict, status: dict, conds: list[dict]) -> None:
        self._write_status(JOB, job, status)

    def _ttl(self, key: ObjKey, job: dict) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        uid = job["metadata"]["uid"]
        now = self.clock.cluster_now()
        done_at = self._started.setdefault("ttl/" + uid, now)
        if now - done_at >= float(ttl):
            self._started.pop("ttl/" + uid, None)
            try:
                self.store.delete(self._rt(JOB), key[0], key[1], propagation="Background")
            except NotFound:
                pass
        else:
            self.requeue_after(key, float(ttl) - (now - done_at))
