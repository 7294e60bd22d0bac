"""The CronJob controller (``batch/v1``, basic): Jobs on schedule, in cluster time.

A CronJob's schedule (five cron fields, or ``@hourly`` ... ``@yearly``) runs on the
twin's clock: the first schedule time is counted from when the controller first sees
the CronJob, so ``*/5 * * * *`` creates a Job every five cluster minutes (15 wall
seconds at the default speed). Each Job is ``<cronjob>-<scheduled minute>`` from
``jobTemplate``, owned by the CronJob, with the annotation
``batch.kubernetes.io/cronjob-scheduled-timestamp``. Honoured: ``suspend``,
``concurrencyPolicy`` (Allow, Forbid: skip while one runs, Replace: delete the running
one), ``startingDeadlineSeconds``, ``successfulJobsHistoryLimit`` (3) and
``failedJobsHistoryLimit`` (1); ``status.active``, ``lastScheduleTime`` and
``lastSuccessfulTime`` (wall-clock timestamps of when it happened). Time zones are not
modelled (schedules are read as UTC).
"""
from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from typing import Any

from ...store import AlreadyExists, NotFound
from ..base import Cache, ObjKey, controller_ref
from ..scheduler import now_rfc3339
from .jobs import JOB, job_finished
from .templates import owner_ref_for
from .workload_base import WorkloadBase

CRONJOB = ("batch", "cronjobs")
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
SEARCH_MINUTES = 8 * 24 * 60      # look this far ahead for the next time


class ScheduleError(ValueError):
    pass


def parse_schedule(text: str) -> list[set[int]]:
    """The allowed values of each of the five fields.

    Example:
        >>> parse_schedule("*/15 2-3 * * 1,5")[0]
        {0, 45, 30, 15}
    """
    text = _MACROS.get(text.strip(), text.strip())
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: {text}")
    out = []
    for field, (lo, hi) in zip(fields, _RANGES):
        values: set[int] = set()
        for part in field.split(","):
            base, _, step_s = part.partition("/")
            step = int(step_s) if step_s else 1
            if base in ("*", "?"):
                a, b = lo, hi
            elif "-" in base:
                a, b = (int(x) for x in base.split("-", 1))
            else:
                a = int(base)
                b = hi if step_s else a
            if not (lo <= a <= hi and lo <= b <= hi) or step < 1:
                raise ScheduleError(f"value out of range in {field!r}")
            values.update(range(a, b + 1, step))
        out.append(values)
    return out


def next_minute(fields: list[set[int]], after_minute: int) -> int | None:
    """The first minute (since the epoch) after ``after_minute`` the schedule fires."""
    minute, hour, dom, month, dow = fields
    for m in range(after_minute + 1, after_minute + 1 + SEARCH_MINUTES):
        t = datetime.fromtimestamp(m * 60, timezone.utc)
        if t.minute in minute and t.hour in hour and t.month in month and \
                t.day in dom and (t.weekday() + 1) % 7 in dow:
            return m
    return None


class CronJobController(WorkloadBase):
    kind_key = CRONJOB

    def __init__(self, store: Any, cache: Cache, clock: Any, types: dict) -> None:
        super().__init__("cronjob", store, cache, clock, types)
        self.events: Any = None
        self._epoch = time.time()                     # cluster time 0 as a wall time
        self._last: dict[str, int] = {}               # cronjob uid -> last scheduled minute

    def _minute_now(self) -> int:
        return int((self._epoch + self.clock.cluster_now()) // 60)

    def reconcile(self, key: ObjKey) -> None:
        cj = self._live(key)
        if cj is None:
            return
        md, spec = cj["metadata"], cj.get("spec") or {}
        uid = md["uid"]
        try:
            fields = parse_schedule(str(spec.get("schedule", "")))
        except (ScheduleError, ValueError) as e:
            if self.events is not None:
                self.events.record(cj, "Warning", "UnparseableSchedule",
                                   f"unparseable schedule: {spec.get('schedule')!r} : {e}",
                                   component="cronjob-controller")
            return
        jobs = [j for j in self.cache.owned(JOB, uid) if not j["metadata"].get("deletionTimestamp")]
        running = [j for j in jobs if not job_finished(j)]
        status = dict(cj.get("status") or {})
        now_m = self._minute_now()
        last = self._last.setdefault(uid, now_m)
        due = next_minute(fields, last)
        if due is not None and due <= now_m and not spec.get("suspend"):
            self._last[uid] = due
            deadline = spec.get("startingDeadlineSeconds")
            late = (now_m - due) * 60
            policy = spec.get("concurrencyPolicy") or "Allow"
            if deadline is not None and late > int(deadline):
                pass            # missed its start window
            elif policy == "Forbid" and running:
                pass
            else:
                if policy == "Replace":
                    for j in running:
                        self._delete(JOB, j)
                    running = []
                job = self._create_job(cj, due)
                if job is not None:
                    running.append(job)
                    status["lastScheduleTime"] = now_rfc3339()
            due = next_minute(fields, due)
        succeeded = [j for j in jobs if job_finished(j) == "Complete"]
        if succeeded:
            latest = max(((j.get("status") or {}).get("completionTime") or "") for j in succeeded)
            if latest:
                status["lastSuccessfulTime"] = latest
        active = [{"kind": "Job", "namespace": key[0], "name": j["metadata"]["name"],
                   "uid": j["metadata"]["uid"], "apiVersion": "batch/v1",
                   "resourceVersion": j["metadata"].get("resourceVersion", "")} for j in running]
        if active:
            status["active"] = active
        else:
            status.pop("active", None)
        self._trim(spec, jobs)
        self._write_status(CRONJOB, cj, status)
        if due is not None:
            wall_left = due * 60 - (self._epoch + self.clock.cluster_now())
            self.requeue_after(key, max(1.0, wall_left))

    def _create_job(self, cj: dict, minute: int) -> dict | None:
        md = cj["metadata"]
        tpl = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
        tmd = tpl.get("metadata") or {}
        ann = dict(tmd.get("annotations") or {})
        ann["batch.kubernetes.io/cronjob-scheduled-timestamp"] = \
            datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{md['name']}-{minute}", "namespace": md.get("namespace"),
                            "labels": dict(tmd.get("labels") or {}), "annotations": ann,
                            "ownerReferences": [owner_ref_for(cj, "CronJob", "batch/v1")]},
               "spec": tpl.get("spec") or {}}
        try:
            created = self.store.create(job, rtype=self._rt(JOB))
        except AlreadyExists:
            return None
        if self.events is not None:
            self.events.record(cj, "Normal", "SuccessfulCreate", f"Created job {job['metadata']['name']}",
                               component="cronjob-controller")
        return created

    def _trim(self, spec: dict, jobs: list[dict]) -> None:
        for outcome, field, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                        ("Failed", "failedJobsHistoryLimit", 1)):
            done = sorted((j for j in jobs if job_finished(j) == outcome),
                          key=lambda j: j["metadata"].get("creationTimestamp") or "")
            limit = int(spec.get(field, default))
            for j in done[: max(0, len(done) - limit)]:
                try:
                    self.store.delete(self._rt(JOB), j["metadata"].get("namespace"), j["metadata"]["name"],
                                      propagation="Background")
                except NotFound:
                    pass


def owned_by_cronjob(job: dict) -> str | None:
    """The name of the CronJob controlling ``job``, if any."""
    ref = controller_ref(job)
    return ref.get("name") if ref and ref.get("kind") == "CronJob" else None
