"""MetalLB (``metallb.io/v1beta1``): LoadBalancer IPs from IPAddressPools.

* LoadBalancer Services (without another ``loadBalancerClass``) get
  ``status.loadBalancer.ingress[0].ip`` (ipMode VIP) and the annotation
  ``metallb.universe.tf/ip-allocated-from-pool`` from the IPAddressPools in
  ``metallb-system`` (``spec.addresses``: ``a-b`` ranges or CIDRs; ``autoAssign``;
  ``avoidBuggyIPs``), honouring ``metallb.universe.tf/loadBalancerIPs`` (or
  ``metallb.io/loadBalancerIPs``), ``spec.loadBalancerIP`` and
  ``metallb.universe.tf/address-pool``. IPs already in Service status at start are
  registered as allocated, so they stay stable; a service whose IP is cleared gets
  the same IP back when it is still free. Pool ``status`` counts are kept.
* Only while a metallb controller pod (``metallb-system``, labels
  ``app.kubernetes.io/name=metallb`` + ``app.kubernetes.io/component=controller``)
  is Ready and reachable; otherwise new LoadBalancer services stay ``<pending>``.
* Fault ``metallb_sticky`` models "the IP did not reattach after the CNI swap":
    1. a LoadBalancer Service whose IP is removed (status cleared) while the fault
       is on is not reassigned until the controller restarts (a controller pod with
       a new uid becomes Ready);
    2. the first controller restart after the fault is switched on (e.g. the
       "restart every pod" step after the swap) drops the IPs of all LoadBalancer
       Services it manages; they stay ``<pending>`` until ANOTHER restart.
  Remediation (the original step 4): ``kubectl -n metallb-system delete pod -l
  app.kubernetes.io/component=controller`` (or ``rollout restart``) once; the IPs
  come back (same addresses when free). Switching the fault off re-arms nothing
  and unsticks nothing: stuck services still wait for a restart.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from ..base import Controller
from .common import find_type, meta, now_rfc3339, pod_reachable

log = logging.getLogger("twin.controllers.addons")

METALLB = "metallb.io"
POOL_ANNOTATION = "metallb.universe.tf/ip-allocated-from-pool"
LB_IPS_ANNOTATIONS = ("metallb.universe.tf/loadBalancerIPs", "metallb.io/loadBalancerIPs")
POOL_REQUEST_ANNOTATIONS = ("metallb.universe.tf/address-pool", "metallb.io/address-pool")


class PoolError(ValueError):
    """An IPAddressPool address entry that cannot be parsed."""


def parse_pool_addresses(entries: Iterable[str], *, avoid_buggy: bool = False) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of an IPAddressPool's ``spec.addresses`` in order (CIDR or ``a-b``).

    Example:
        >>> [str(a) for a in parse_pool_addresses(["10.0.0.200-10.0.0.202", "10.0.1.0/31"])]
        ['10.0.0.200', '10.0.0.201', '10.0.0.202', '10.0.1.0', '10.0.1.1']
        >>> len(parse_pool_addresses(["10.0.2.0/24"], avoid_buggy=True))
        254
    """
    out: list = []
    seen = set()
    for raw in entries:
        text = str(raw).strip()
        try:
            if "-" in text:
                a, b = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
                if a.version != b.version or int(b) < int(a):
                    raise PoolError(f"invalid range {text!r}")
                if int(b) - int(a) > 1 << 20:
                    raise PoolError(f"range {text!r} is too large for the twin")
                addrs = [ipaddress.ip_address(i) for i in range(int(a), int(b) + 1)]
            else:
                net = ipaddress.ip_network(text, strict=False)
                if net.num_addresses > 1 << 20:
                    raise PoolError(f"CIDR {text!r} is too large for the twin")
                addrs = list(net)   # MetalLB hands out network and broadcast addresses too
        except ValueError as e:
            if isinstance(e, PoolError):
                raise
            raise PoolError(f"invalid address entry {text!r}: {e}") from None
        for ad in addrs:
            if avoid_buggy and ad.version == 4 and str(ad).split(".")[-1] in ("0", "255"):
                continue
            if ad not in seen:
                seen.add(ad)
                out.append(ad)
    return out


@dataclass
class Pool:
    name: str
    addresses: list
    auto_assign: bool = True


class IPAM:
    """MetalLB's allocator: pools, owner per IP, stable preference for a previous IP.

    Example:
        >>> ipam = IPAM([Pool("default", parse_pool_addresses(["10.0.0.200-10.0.0.202"]))])
        >>> ipam.reserve("10.0.0.200", ("ingress-nginx", "ingress-nginx-controller"))
        'default'
        >>> ipam.allocate(("demo", "web"))
        ('10.0.0.201', 'default')
        >>> ipam.allocate(("demo", "other"), requested=["10.0.0.201"])
        Traceback (most recent call last):
        ...
        twin.controllers.addons.metallb.PoolError: 10.0.0.201 is already allocated to demo/web
    """

    def __init__(self, pools: list[Pool]) -> None:
        self.pools = pools
        self.owner: dict[str, tuple[str, str]] = {}
        self.previous: dict[tuple[str, str], str] = {}

    def pool_of(self, ip: str) -> Pool | None:
        addr = ipaddress.ip_address(ip)
        return next((p for p in self.pools if addr in p.addresses), None)

    def reserve(self, ip: str, svc: tuple[str, str]) -> str | None:
        """Register an IP already in a Service's status; returns its pool name."""
        pool = self.pool_of(ip)
        if pool is None:
            return None
        self.owner[ip] = svc
        self.previous[svc] = ip
        return pool.name

    def held_by(self, svc: tuple[str, str]) -> str | None:
        return next((ip for ip, s in self.owner.items() if s == svc), None)

    def release(self, svc: tuple[str, str]) -> None:
        for ip in [ip for ip, s in self.owner.items() if s == svc]:
            del self.owner[ip]

    def allocate(self, svc: tuple[str, str], *, requested: list[str] | None = None,
                 pool_name: str | None = None) -> tuple[str, str]:
        """An IP for ``svc``: a requested one, else its previous one when free, else the
        first free address of an auto-assign pool. Raises PoolError."""
        held = self.held_by(svc)
        pools = [p for p in self.pools if pool_name in (None, p.name)]
        if pool_name and not pools:
            raise PoolError(f"unknown pool {pool_name!r}")
        if requested:
            for ip in requested:
                pool = self.pool_of(ip)
                if pool is None or pool not in pools:
                    raise PoolError(f"{ip} is not allowed in config")
                other = self.owner.get(ip)
                if other is not None and other != svc:
                    raise PoolError(f"{ip} is already allocated to {other[0]}/{other[1]}")
            self.release(svc)
            for ip in requested:
                self.owner[ip] = svc
            self.previous[svc] = requested[0]
            return requested[0], self.pool_of(requested[0]).name  # type: ignore[union-attr]
        if held is not None and any(self.pool_of(held) is p for p in pools):
            return held, self.pool_of(held).name  # type: ignore[union-attr]
        prev = self.previous.get(svc)
        if prev and prev not in self.owner:
            pool = self.pool_of(prev)
            if pool is not None and pool in pools:
                self.release(svc)
                self.owner[prev] = svc
                return prev, pool.name
        for pool in pools:
            if not pool.auto_assign and not pool_name:
                continue
            for addr in pool.addresses:
                ip = str(addr)
                if ip not in self.owner:
                    self.release(svc)
                    self.owner[ip] = svc
                    self.previous[svc] = ip
                    return ip, pool.name
        raise PoolError("no available IPs")

    def counts(self, pool: Pool) -> tuple[int, int]:
        used = sum(1 for a in pool.addresses if str(a) in self.owner and a.version == 4)
        total = sum(1 for a in pool.addresses if a.version == 4)
        return used, total - used


def requested_ips(svc: dict) -> list[str]:
    ann = meta(svc).get("annotations") or {}
    for k in LB_IPS_ANNOTATIONS:
        if ann.get(k):
            return [x.strip() for x in ann[k].split(",") if x.strip()]
    ip = (svc.get("spec") or {}).get("loadBalancerIP")
    return [ip] if ip else []


def lb_ips(svc: dict) -> list[str]:
    return [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
            if i.get("ip")]


def is_metallb_service(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") in (None, "", "metallb")


class MetalLBModel(Controller):
    """LoadBalancer IPs from IPAddressPools (see the module docstring)."""

    namespace = "metallb-system"

    def __init__(self, rt: Any) -> None:
        super().__init__("metallb", rt.clock)
        self.rt = rt
        self.store = rt.store
        self.ipam = IPAM([])
        self.ready_uids: set[str] = set()     # controller pods Ready+reachable now
        self.seen_uids: set[str] = set()      # every controller pod uid ever seen Ready
        self.restarts = 0
        self.stuck: dict[tuple[str, str], set[str]] = {}   # svc -> controller uids when stuck
        self._sticky_fired = False
        self._clearing: set[tuple[str, str]] = set()
        self._svc_type = find_type(self.store, "", "services")

    # -- pools ----------------------------------------------------------------------------
    def load_pools(self) -> None:
        t = find_type(self.store, METALLB, "ipaddresspools")
        pools = []
        if t is not None:
            for o in sorted(self.store.iter_objects(t, self.namespace), key=lambda o: meta(o).get("name")):
                spec = o.get("spec") or {}
                try:
                    addrs = parse_pool_addresses(spec.get("addresses") or (),
                                                 avoid_buggy=bool(spec.get("avoidBuggyIPs")))
                except PoolError as e:
                    log.warning("metallb: pool %s ignored: %s", meta(o).get("name"), e)
                    continue
                pools.append(Pool(meta(o).get("name"), addrs, spec.get("autoAssign", True) is not False))
        owner, previous = self.ipam.owner, self.ipam.previous
        self.ipam = IPAM(pools)
        self.ipam.previous = previous
        for ip, svc in owner.items():
            if self.ipam.pool_of(ip) is not None:
                self.ipam.owner[ip] = svc

    def load(self) -> None:
        self.load_pools()
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc):
                key = (meta(svc).get("namespace"), meta(svc).get("name"))
                for ip in lb_ips(svc):
                    self.ipam.reserve(ip, key)
        self.ready_uids = self._ready_controller_uids()
        self.seen_uids |= self.ready_uids
        self._write_pool_status()
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc) and not lb_ips(svc):
                self.enqueue((meta(svc).get("namespace"), meta(svc).get("name")))

    # -- controller pod -------------------------------------------------------------------
    def _ready_controller_uids(self) -> set[str]:
        pods = find_type(self.store, "", "pods")
        out = set()
        for p in self.store.iter_objects(pods, self.namespace):
            labels = meta(p).get("labels") or {}
            if labels.get("app.kubernetes.io/component") != "controller":
                continue
            if labels.get("app.kubernetes.io/name", "metallb") != "metallb":
                continue
            if pod_reachable(self.rt, p)[0]:
                out.add(meta(p).get("uid"))
        return out

    def controller_ready(self) -> bool:
        return bool(self.ready_uids)

    def check_controller(self) -> None:
        """Notice controller pods becoming Ready (a restart when the uid is new)."""
        if not self.rt.faults.metallb_sticky:
            self._sticky_fired = False
        now = self._ready_controller_uids()
        new = now - self.seen_uids
        was_ready = bool(self.ready_uids)
        self.ready_uids = now
        if new and self.seen_uids:
            self.restarts += 1
            log.info("metallb: controller restarted (%s)", ", ".join(sorted(new)))
            if self.stuck:
                for svc in list(self.stuck):
                    if not (now - self.stuck[svc]):
                        continue
                    del self.stuck[svc]
                    self.enqueue(svc)
            elif self.rt.faults.metallb_sticky and not self._sticky_fired:
                self._sticky_fired = True
                self._drop_all(now)
        self.seen_uids |= now
        if now and (new or not was_ready):
            for svc in self.store.iter_objects(self._svc_type):
                if is_metallb_service(svc) and not lb_ips(svc):
                    self.enqueue((meta(svc).get("namespace"), meta(svc).get("name")))

    def _drop_all(self, uids: set[str]) -> None:
        """The fault: a controller restart loses every IP it manages."""
        for svc in list(self.store.iter_objects(self._svc_type)):
            key = (meta(svc).get("namespace"), meta(svc).get("name"))
            if not is_metallb_service(svc) or not lb_ips(svc):
                continue
            self.stuck[key] = set(uids)
            self.ipam.release(key)
            self._clear_status(key)
        log.info("metallb: fault metallb_sticky: %d service IP(s) dropped until the next "
                 "controller restart", len(self.stuck))
        self._write_pool_status()

    def _clear_status(self, key: tuple[str, str]) -> None:
        def fn(o: dict) -> None:
            o.setdefault("status", {})["loadBalancer"] = {}
            (o.get("metadata") or {}).get("annotations", {}).pop(POOL_ANNOTATION, None)
        self._clearing.add(key)
        try:
            self.store.mutate(self._svc_type, key[0], key[1], fn)
        finally:
            self._clearing.discard(key)

    # -- events ---------------------------------------------------------------------------
    def on_event(self, etype: str, kind: Any, obj: dict, old: dict | None) -> None:  # type: ignore[override]
        md = meta(obj)
        if kind.key == (METALLB, "ipaddresspools"):
            self.load_pools()
            self._write_pool_status()
            for svc in self.store.iter_objects(self._svc_type):
                if is_metallb_service(svc) and not lb_ips(svc):
                    self.enqueue((meta(svc).get("namespace"), meta(svc).get("name")))
            return
        if kind.key == ("", "pods") and md.get("namespace") == self.namespace:
            self.enqueue("__controller__")
            return
        if kind.key != ("", "services"):
            return
        key = (md.get("namespace"), md.get("name"))
        if etype == "DELETED" or not is_metallb_service(obj):
            if self.ipam.held_by(key) is not None:
                self.ipam.release(key)
                self.ipam.previous.pop(key, None)
                self.stuck.pop(key, None)
                self._write_pool_status()
                self._enqueue_pending()     # a freed address may serve a waiting service
            if etype != "DELETED" and old is not None and is_metallb_service(old) and lb_ips(obj):
                self.enqueue(key)   # no longer a LoadBalancer: clear its status
            return
        if key in self._clearing:
            return
        if old is not None and lb_ips(old) and not lb_ips(obj):
            # Someone removed the IP (e.g. kubectl patch --subresource=status).
            self.ipam.release(key)
            if self.rt.faults.metallb_sticky:
                self.stuck[key] = set(self.ready_uids)
                log.info("metallb: %s/%s lost its IP; sticky until the controller restarts", *key)
                self._write_pool_status()
                return
        if not lb_ips(obj) or (requested_ips(obj) and set(requested_ips(obj)) != set(lb_ips(obj))):
            self.enqueue(key)

    # -- reconcile ------------------------------------------------------------------------
    def reconcile(self, key: Any) -> None:  # type: ignore[override]
        if key == "__controller__":
            self.check_controller()
            return
        svc = self.store.peek(self._svc_type, key[0], key[1])
        if svc is None:
            return
        if not is_metallb_service(svc):
            if lb_ips(svc) and (meta(svc).get("annotations") or {}).get(POOL_ANNOTATION):
                self._clear_status(key)
            return
        if key in self.stuck or not self.controller_ready():
            return   # <pending>; the controller's return (or restart) requeues it
        req = requested_ips(svc)
        if lb_ips(svc) and (not req or set(req) == set(lb_ips(svc))):
            return
        pool_name = next((( meta(svc).get("annotations") or {}).get(k) for k in POOL_REQUEST_ANNOTATIONS
                          if (meta(svc).get("annotations") or {}).get(k)), None)
        try:
            ip, pool = self.ipam.allocate(key, requested=req or None, pool_name=pool_name)
        except PoolError as e:
            self._event(svc, "Warning", "AllocationFailed", f"Failed to allocate IP for "
                        f"\"{key[0]}/{key[1]}\": {e}")
            return

        def fn(o: dict) -> None:
            o.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
            o.setdefault("metadata", {}).setdefault("annotations", {})[POOL_ANNOTATION] = pool
        self.store.mutate(self._svc_type, key[0], key[1], fn)
        self._event(svc, "Normal", "IPAllocated", f"Assigned IP [\"{ip}\"]")
        self._write_pool_status()

    def _enqueue_pending(self) -> None:
        for svc in self.store.iter_objects(self._svc_type):
            if is_metallb_service(svc) and not lb_ips(svc):
                self.enqueue((meta(svc).get("namespace"), meta(svc).get("name")))

    def _write_pool_status(self) -> None:
        t = find_type(self.store, METALLB, "ipaddresspools")
        if t is None:
            return
        for pool in self.ipam.pools:
            used, free = self.ipam.counts(pool)
            if self.store.peek(t, self.namespace, pool.name) is None:
                continue

            def fn(o: dict, used: int = used, free: int = free) -> None:
                o["status"] = {"assignedIPv4": used, "assignedIPv6": 0,
                               "availableIPv4": free, "availableIPv6": 0}
            self.store.mutate(t, self.namespace, pool.name, fn, subresource="status")

    def _event(self, svc: dict, etype: str, reason: str, message: str) -> None:
        md = meta(svc)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md.get('name')}.", "namespace": md.get("namespace")},
              "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": md.get("name"),
                                 "namespace": md.get("namespace"), "uid": md.get("uid")},
              "reason": reason, "message": message, "type": etype, "count": 1,
              "source": {"component": "metallb-controller"},
              "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
              "reportingComponent": "metallb-controller"}
        try:
            self.store.create(ev)
        except Exception:
            log.debug("metallb: event not recorded", exc_info=True)
