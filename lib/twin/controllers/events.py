"""Events, recorded as the cluster's components record them, and kept bounded.

:class:`EventRecorder` writes ``core/v1`` Events the way client-go's recorder does:

- the name is ``<involved object name>.<hex nanoseconds>``, in the object's namespace
  (``default`` for cluster-scoped objects such as Nodes);
- ``involvedObject`` (kind, namespace, name, uid, apiVersion, resourceVersion,
  fieldPath such as ``spec.containers{cilium-agent}``), ``source`` (component, host),
  ``reportingComponent``/``reportingInstance``, ``type`` Normal/Warning;
- an event equal to one recorded less than 10 cluster minutes ago (same object,
  reason, message, source: the EventCorrelator's key) is not written again: the existing
  Event gets ``count + 1``, a new ``lastTimestamp`` and ``series`` (``count``,
  ``lastObservedTime``), which ``events.k8s.io/v1`` serves as its series and
  ``deprecatedCount``.

The store keeps events for ``--event-ttl`` (1 cluster hour, :mod:`.stages`): a sweep
every minute deletes older ones, whoever wrote them, and at most ``max_events`` are
kept (the oldest recorded go first), so a large twin never piles them up.

Example (on the twin's loop)::

    events = rt.component("workloads").events
    events.record(pod, "Warning", "BackOff", "Back-off restarting failed container ...",
                  component="kubelet", host="fast-skunk",
                  field_path="spec.containers{cilium-agent}")
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from ..store import NotFound
from ..tables.cells import parse_time
from .stages import seconds

log = logging.getLogger("twin.controllers.events")

MAX_EVENTS = 4096
SWEEP_SECONDS = 60.0


def rfc3339(t: float | None = None) -> str:
    """``time.time()`` (or ``t``) as an RFC 3339 timestamp with seconds."""
    return datetime.fromtimestamp(t if t is not None else time.time(), timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: float | None = None) -> str:
    """A ``MicroTime``: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(t if t is not None else time.time(), timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def container_path(pod: dict, container: str) -> str:
    """The ``fieldPath`` of a container in events: ``spec.containers{name}`` (or
    ``spec.initContainers{name}``)."""
    inits = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or ()}
    return f"spec.initContainers{{{container}}}" if container in inits \
        else f"spec.containers{{{container}}}"


def involved(obj: dict, field_path: str | None = None) -> dict:
    """The ``involvedObject`` reference of ``obj``."""
    md = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind", ""), "name": md.get("name", ""),
           "uid": md.get("uid", ""), "apiVersion": obj.get("apiVersion", "v1"),
           "resourceVersion": md.get("resourceVersion", "")}
    if md.get("namespace"):
        ref["namespace"] = md["namespace"]
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class EventRecorder:
    """Records Events through the store, aggregating repeats (see module doc).

    Args:
        store: the twin's store.
        clock: the twin's clock (aggregation window and TTL are cluster seconds).
        max_events: at most this many Events are kept.
    """

    def __init__(self, store: Any, clock: Any, *, max_events: int = MAX_EVENTS) -> None:
        self.store = store
        self.clock = clock
        self.max_events = max_events
        self.rtype = store.lookup("", "v1", "events")
        # correlator key -> (namespace, event name, count, cluster time last seen)
        self._recent: OrderedDict[tuple, list] = OrderedDict()
        # (namespace, name) of events this recorder wrote, oldest first
        self._written: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.recorded = 0
        self.aggregated = 0
        self.expired = 0

    def record(self, obj: dict, etype: str, reason: str, message: str, *, component: str,
               host: str | None = None, field_path: str | None = None) -> None:
        """Record one event about ``obj`` (a pod, node, job ... as stored)."""
        if self.rtype is None:
            return
        ref = involved(obj, field_path)
        ns = ref.get("namespace") or "default"
        key = (ns, ref["kind"], ref["name"], ref["uid"], field_path, etype, reason, message,
               component, host)
        now = self.clock.cluster_now()
        wall = time.time()
        seen = self._recent.get(key)
        if seen is not None and now - seen[3] < seconds("event.aggregate"):
            seen[2] += 1
            seen[3] = now
            self._recent.move_to_end(key)
            count = seen[2]

            def bump(e: dict) -> None:
                e["count"] = count
                e["lastTimestamp"] = rfc3339(wall)
                e["series"] = {"count": count, "lastObservedTime": micro_time(wall)}
            try:
                self.store.mutate(self.rtype, seen[0], seen[1], bump)
                self.aggregated += 1
                return
            except NotFound:
                self._written.pop((seen[0], seen[1]), None)   # expired meanwhile: record anew
        name = f"{ref['name']}.{int(wall * 1e9):x}"
        source = {"component": component}
        if host:
            source["host"] = host
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": name, "namespace": ns},
                 "involvedObject": ref, "reason": reason, "message": message, "type": etype,
                 "source": source, "count": 1, "firstTimestamp": rfc3339(wall),
                 "lastTimestamp": rfc3339(wall), "eventTime": None,
                 "reportingComponent": component, "reportingInstance": host or ""}
        try:
            self.store.create(event, rtype=self.rtype)
        except Exception:   # a namespace being deleted refuses new content, as on a cluster
            log.debug("event %s/%s not recorded", ns, name, exc_info=True)
            return
        self.recorded += 1
        self._recent[key] = [ns, name, 1, now]
        self._written[(ns, name)] = None
        while len(self._recent) > self.max_events:
            self._recent.popitem(last=False)
        while len(self._written) > self.max_events:
            (old_ns, old_name), _ = self._written.popitem(last=False)
            self._delete(old_ns, old_name)

    def _delete(self, ns: str, name: str) -> None:
        try:
            self.store.delete(self.rtype, ns, name)
            self.expired += 1
        except NotFound:
            pass

    def sweep(self) -> int:
        """Delete every Event older than the TTL (by ``lastTimestamp``, ``eventTime`` or
        creation, whoever wrote it). Returns how many went."""
        if self.rtype is None:
            return 0
        limit = time.time() - self.clock.real(seconds("event.ttl"))
        old = []
        for e in self.store.iter_objects(self.rtype):
            series = e.get("series") or {}
            ts = parse_time(series.get("lastObservedTime") or e.get("lastTimestamp")
                            or e.get("eventTime")
                            or (e.get("metadata") or {}).get("creationTimestamp"))
            if ts is not None and ts < limit:
                md = e["metadata"]
                old.append((md.get("namespace") or "", md["name"]))
        for ns, name in old:
            self._written.pop((ns, name), None)
            self._delete(ns, name)
        if old:
            gone = set(old)
            for k in [k for k, v in self._recent.items() if (v[0], v[1]) in gone]:
                del self._recent[k]
        return len(old)
