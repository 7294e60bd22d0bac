"""The rehearsal's availability prober: outside the runbook, on the twin's side.

``runbook rehearse`` starts an :class:`AvailabilityProber` before the migration and
stops it after the last phase (the rollback, with ``--with-rollback``). It runs on the
twin's event loop (the twin's store is not thread-safe) and, every ``interval``
cluster seconds of the twin's clock, asks the twin's own models what a client would get:

* **every ingress host** (the Ingress hosts the twin's ingress endpoint serves): the
  request succeeds when the ingress IP is announced (a Service holds it and a MetalLB
  speaker is Ready) and the endpoint answers 200 for ``https://<host>/``, exactly what
  :meth:`twin.ingress.IngressEndpoint.route` decides for a real HTTPS request (the
  controller pod and a backend pod Ready and reachable over the network model);
* **one ClusterIP Service** (kube-dns by default, which every pod depends on), from
  every node's host network: the twin's network model (``NetworkModel.reach``)
  translates the ClusterIP as that node would (kube-proxy, Cilium's socket LB or
  kube-proxy replacement, rules left behind) and delivers to a backend over the
  overlay the two nodes share. Each node is its own target.

The runbook never sees the prober: it changes nothing and only reads the twin's
models. The figures are made from its samples by :mod:`runbook.availability`. This
module does not import ``twin``: it is handed a started :class:`twin.api.Twin`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from . import availability

log = logging.getLogger("runbook.rehearse_probe")

#: cluster seconds between two rounds of requests
DEFAULT_INTERVAL = 2.0
#: the ClusterIP Service probed from every node: namespace, name
DEFAULT_SERVICE = ("kube-system", "kube-dns")
WHY_MAX = 240


def _load() -> float | None:
    """The machine's 1-minute load average (None where the OS does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _service(rt: Any, namespace: str, name: str) -> dict | None:
    t = rt.store.lookup("", "v1", "services")
    return rt.store.peek(t, namespace, name)


class AvailabilityProber:
    """Probes every ingress host and one ClusterIP Service on a running twin.

    Args:
        twin: a started :class:`twin.api.Twin`.
        interval: cluster seconds between rounds (the outages' resolution).
        service: ``(namespace, name)`` of the ClusterIP Service to probe from every node.

    Example (in ``runbook rehearse``)::

        prober = AvailabilityProber(twin).start("migration")
        ...                                   # the phases run
        prober.mark("rollback")
        section = prober.stop()               # rehearsal.json's "availability"
    """

    def __init__(self, twin: Any, *, interval: float = DEFAULT_INTERVAL,
                 service: tuple[str, str] = DEFAULT_SERVICE) -> None:
        self.twin = twin
        self.interval = float(interval)
        self.service = service
        self.targets: list[dict[str, Any]] = []
        self.stages: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.origin_ct: float | None = None
        self._load_start: float | None = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None

    # -- control (from the caller's thread) ---------------------------------------------
    def start(self, stage: str = "migration") -> "AvailabilityProber":
        self._load_start = _load()
        self.twin.call(self._start, stage)
        return self

    def mark(self, stage: str) -> None:
        """A new stage (e.g. ``rollback``) starts now: the figures are also given per stage."""
        self.twin.call(self._mark, stage)

    def add_stage(self, stage: str, wall: float) -> bool:
        """A stage that started at wall time ``wall`` (read afterwards, e.g. from the run's
        journal), placed at the cluster time of the first request made after it; False
        when no request was made after it."""
        ct = availability.ct_at(self.targets, wall)
        if ct is None:
            return False
        self.stages.append({"name": stage, "from_ct": round(ct, 3), "from_t": wall})
        self.stages.sort(key=lambda st: st["from_ct"])
        return True

    def stop(self, *, strategy: str = "big-bang") -> dict[str, Any]:
        """Stop probing; the ``availability`` section (see :func:`runbook.availability.summarize`)."""
        try:
            self.twin.call(self._halt, timeout=60)
        except Exception as e:  # noqa: BLE001 - the samples taken so far are still worth keeping
            self.notes.append(f"the prober did not stop cleanly ({type(e).__name__}: {e}); "
                              "the figures cover the samples taken until then")
        out = availability.summarize(self.section(), stages=self.stages, interval_s=self.interval,
                                     strategy=strategy)
        out["origin_ct"] = self.origin_ct   # round k is made at origin_ct + k * interval, or later
        # the twin's cluster seconds stretch with the machine's load: say how busy it was
        out["load_average"] = {"start": self._load_start, "end": _load()}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    # -- on the twin's loop ---------------------------------------------------------------
    def _plan(self, rt: Any) -> list[tuple[dict[str, Any], Any]]:
        """The targets and, for each, a function answering ``(ok, why)`` now."""
        plan: list[tuple[dict[str, Any], Any]] = []
        try:
            ingress = rt.component("ingress")
        except KeyError:
            ingress = None
            self.notes.append("the twin runs no ingress endpoint: no ingress host was probed")
        for host in (rt.endpoints.get("ingress_hosts") or []) if ingress is not None else []:
            plan.append(({"name": f"https://{host}/", "kind": "ingress", "samples": []},
                         lambda h=host: self._ingress(ingress, h)))
        try:
            net = rt.component("network")
        except KeyError:
            net = None
        ns, name = self.service
        svc = _service(rt, ns, name)
        spec = (svc or {}).get("spec") or {}
        ports = spec.get("ports") or []
        if net is None or not spec.get("clusterIP") or spec.get("clusterIP") == "None" or not ports:
            self.notes.append(f"no ClusterIP Service {ns}/{name} (or no network model): no Service was probed")
            return plan
        ip, port = spec["clusterIP"], ports[0]
        number, proto = int(port.get("port", 0)), str(port.get("protocol", "TCP")).lower()
        for node in sorted(rt.nodes):
            plan.append(({"name": f"service {ns}/{name} {ip}:{number}/{proto} from {node}",
                          "kind": "service", "samples": []},
                         lambda n=node: net.reach(n, ip, number, proto)))
        return plan

    @staticmethod
    def _ingress(ingress: Any, host: str) -> tuple[bool, str]:
        if not ingress.announced():
            return False, "dropped: the ingress IP is not announced (no Service holds it or no MetalLB speaker is Ready)"
        ans = ingress.route(host, "/")
        return ans.status == 200, f"{ans.status} {ans.reason}"

    async def _start(self, stage: str) -> None:
        rt = self.twin.rt
        plan = self._plan(rt)
        self.targets = [t for t, _ in plan]
        self._stop = asyncio.Event()
        self._mark(stage)
        self._task = asyncio.get_running_loop().create_task(self._loop(rt, plan))

    def _mark(self, stage: str) -> None:
        self.stages.append({"name": stage, "from_ct": round(self.twin.rt.clock.cluster_now(), 3),
                            "from_t": time.time()})

    async def _halt(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await self._task

    async def _loop(self, rt: Any, plan: list[tuple[dict[str, Any], Any]]) -> None:
        # Rounds are due on a fixed grid of the twin's clock (origin + k * interval); a round
        # the busy loop made late is followed by the next one due, and missed ones are skipped.
        clock = rt.clock
        t0 = clock.cluster_now()
        k = 0
        assert self._stop is not None
        self.origin_ct = round(t0, 3)
        while not self._stop.is_set():
            self._round(clock, plan)
            k += 1
            now = clock.cluster_now()
            if t0 + k * self.interval <= now:          # the loop was busy: skip missed rounds
                k = int((now - t0) // self.interval) + 1
            try:
                await asyncio.wait_for(self._stop.wait(), clock.real(t0 + k * self.interval - now))
            except asyncio.TimeoutError:
                pass

    def _round(self, clock: Any, plan: list[tuple[dict[str, Any], Any]]) -> None:
        with self._instant():
            self._ask_all(clock, plan)

    def _instant(self) -> Any:
        """The network model's one-instant view (each node's facts read once per round),
        when the twin has one: a round never yields to the loop, so nothing changes in it."""
        try:
            return self.twin.rt.component("network").one_instant()
        except (KeyError, AttributeError):
            return contextlib.nullcontext()

    def _ask_all(self, clock: Any, plan: list[tuple[dict[str, Any], Any]]) -> None:
        ct, t = round(clock.cluster_now(), 3), time.time()
        for target, ask in plan:
            try:
                ok, why = ask()
            except Exception as e:  # noqa: BLE001 - a model error is recorded, never hidden
                log.exception("availability probe of %s failed", target["name"])
                ok, why = False, f"prober error: {type(e).__name__}: {e}"
            sample: dict[str, Any] = {"t": round(t, 3), "ct": ct, "ok": bool(ok)}
            samples = target["samples"]
            if not ok:
                why = " ".join(str(why).split())[:WHY_MAX]
                prev = samples[-1] if samples else None
                if prev is None or prev["ok"] or target.get("_why") != why:
                    sample["why"] = why
                target["_why"] = why
            samples.append(sample)

    def section(self) -> list[dict[str, Any]]:
        """The targets without the prober's bookkeeping."""
        return [{k: v for k, v in t.items() if not k.startswith("_")} for t in self.targets]
