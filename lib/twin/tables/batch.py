"""Printers of ``batch/v1`` objects: Jobs and CronJobs, with kubectl's columns."""
from __future__ import annotations

from .cells import Column, _get, _int, _name, _selector_str, age, human_duration, parse_time


def _job_template_spec(obj: dict) -> dict:
    return _get(obj, "spec", "jobTemplate", "spec", "template", "spec", default={}) or {}


def job_status(obj: dict, _now: float = 0) -> str:
    """Complete, Failed, Suspended or Running (kubectl's STATUS of a Job)."""
    conds = {c.get("type"): c.get("status") for c in _get(obj, "status", "conditions", default=[]) or []}
    for ctype, word in (("Complete", "Complete"), ("Failed", "Failed"), ("FailureTarget", "FailureTarget"),
                        ("Suspended", "Suspended"), ("SuccessCriteriaMet", "SuccessCriteriaMet")):
        if conds.get(ctype) == "True":
            return word
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    return "Running"


def job_completions(obj: dict, _now: float = 0) -> str:
    succeeded = _int(_get(obj, "status", "succeeded"))
    completions = _get(obj, "spec", "completions")
    if completions is not None:
        return f"{succeeded}/{completions}"
    parallelism = _int(_get(obj, "spec", "parallelism", default=0))
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def job_duration(obj: dict, now: float) -> str:
    start = parse_time(_get(obj, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_get(obj, "status", "completionTime")) or now
    return human_duration(end - start)


def _containers_of(spec: dict) -> str:
    return ",".join(c.get("name", "") for c in spec.get("containers") or ())


def _images_of(spec: dict) -> str:
    return ",".join(c.get("image", "") for c in spec.get("containers") or ())


JOB_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Status", "string", job_status),
    Column("Completions", "string", job_completions),
    Column("Duration", "string", job_duration),
    Column("Age", "string", age),
    Column("Containers", "string",
           lambda o, n: _containers_of(_get(o, "spec", "template", "spec", default={}) or {}), priority=1),
    Column("Images", "string",
           lambda o, n: _images_of(_get(o, "spec", "template", "spec", default={}) or {}), priority=1),
    Column("Selector", "string", lambda o, n: _selector_str(_get(o, "spec", "selector")), priority=1),
)


def _last_schedule(obj: dict, now: float) -> str:
    t = parse_time(_get(obj, "status", "lastScheduleTime"))
    return "<none>" if t is None else human_duration(now - t)


CRONJOB_COLUMNS = (
    Column("Name", "string", _name, format="name"),
    Column("Schedule", "string", lambda o, n: str(_get(o, "spec", "schedule", default=""))),
    Column("Timezone", "string", lambda o, n: _get(o, "spec", "timeZone") or "<none>"),
    Column("Suspend", "boolean", lambda o, n: bool(_get(o, "spec", "suspend", default=False))),
    Column("Active", "integer", lambda o, n: len(_get(o, "status", "active", default=[]) or [])),
    Column("Last Schedule", "string", _last_schedule),
    Column("Age", "string", age),
    Column("Containers", "string", lambda o, n: _containers_of(_job_template_spec(o)), priority=1),
    Column("Images", "string", lambda o, n: _images_of(_job_template_spec(o)), priority=1),
    Column("Selector", "string",
           lambda o, n: _selector_str(_get(o, "spec", "jobTemplate", "spec", "selector")), priority=1),
)
