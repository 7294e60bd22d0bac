"""What a real API server checks and fills in on every write, before storing.

Names per resource (RFC 1123 subdomain or label, DNS-1035 for Services, path segments
for RBAC), label keys and values, string-valued annotations, and the few defaults that
clients read back (a Namespace's finalizer and phase, a Pod's ``Pending`` phase, a
Service's empty ``status.loadBalancer``).
"""
from __future__ import annotations

import re

from twin.selectors import SelectorError
from twin.selectors import _check_key as _check_label_key
from twin.selectors import _check_value as _check_label_value

from .errors import Invalid
from .resource_types import NAMESPACE_KEY, POD_KEY, ResourceType

_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PATH_SEGMENT_KINDS = {("rbac.authorization.k8s.io", p)
                       for p in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")}


def validate_name(key: tuple[str, str], name: str) -> str | None:
    """The reason ``name`` is not valid for the resource, or None."""
    if key in _PATH_SEGMENT_KINDS:
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not be '.' or '..' and may not contain '/' or '%'"
        return None
    if key == NAMESPACE_KEY:
        if len(name) > 63 or not _LABEL_RE.match(name):
            return ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character")
        return None
    if key == ("", "services"):
        if len(name) > 63 or not _DNS1035_RE.match(name):
            return ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                    "'-', start with an alphabetic character, and end with an alphanumeric "
                    "character")
        return None
    if len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


# Label pairs already found valid (a pure check): a bulk load of 50,000 pods repeats a
# few thousand pairs. Bounded: emptied when full.
_VALID_LABELS: set[tuple[str, str]] = set()
_VALID_LABELS_MAX = 200_000


def validate_meta(rtype: ResourceType, name: str, meta: dict) -> None:
    """Labels must be valid (a real server answers 422 otherwise); annotations and
    labels must map strings to strings."""
    problems = []
    for field_name in ("labels", "annotations"):
        values = meta.get(field_name)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"metadata.{field_name}: must be a map of strings")
            continue
        for k, v in values.items():
            if not isinstance(k, str) or not isinstance(v, str):
                problems.append(f"metadata.{field_name}[{k!r}]: must be a string")
                continue
            if field_name == "labels" and (k, v) not in _VALID_LABELS:
                try:
                    _check_label_key(k)
                    _check_label_value(v)
                except SelectorError as e:
                    problems.append(f"metadata.labels: Invalid value: {e}")
                    continue
                if len(_VALID_LABELS) >= _VALID_LABELS_MAX:
                    _VALID_LABELS.clear()
                _VALID_LABELS.add((k, v))
    if problems:
        raise Invalid(f'{rtype.kind} "{name}" is invalid: ' + "; ".join(problems),
                      details={"name": name, "kind": rtype.kind})


def apply_defaults(key: tuple[str, str], obj: dict) -> None:
    """The few defaults a real API server adds that clients look at."""
    if key == NAMESPACE_KEY:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        status = obj.get("status") or {}
        status.setdefault("phase", "Active")
        obj["status"] = status
    elif key == POD_KEY:
        status = obj.get("status") or {}
        status.setdefault("phase", "Pending")
        obj["status"] = status
    elif key == ("", "services"):
        # A new Service's status is empty but present: {"loadBalancer": {}}.
        status = obj.get("status") or {}
        status.setdefault("loadBalancer", {})
        obj["status"] = status
    elif key == ("batch", "jobs"):
        job_defaults(obj)
    elif key == ("batch", "cronjobs"):
        spec = obj.setdefault("spec", {})
        for k, v in (("concurrencyPolicy", "Allow"), ("suspend", False),
                     ("successfulJobsHistoryLimit", 3), ("failedJobsHistoryLimit", 1)):
            spec.setdefault(k, v)


def job_defaults(job: dict) -> None:
    """What the API server fills on a Job at create (needs ``metadata.uid``): the
    generated selector and pod labels, parallelism, completions, backoffLimit."""
    md = job.get("metadata") or {}
    spec = job.setdefault("spec", {})
    uid, name = md.get("uid", ""), md.get("name", "")
    if not spec.get("manualSelector") and uid:
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
