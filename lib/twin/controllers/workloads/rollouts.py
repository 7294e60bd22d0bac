"""The Deployment controller's rollout arithmetic (pure): how far each ReplicaSet may
be scaled this pass.

As kube-controller-manager's ``rolling.go``/``recreate.go`` (replica counts are the
ReplicaSets' ``spec.replicas``; available ones their ``status.availableReplicas``):

- fenceposts: ``maxSurge`` resolved against the desired replicas rounding **up**,
  ``maxUnavailable`` rounding **down**; both 0 means ``maxUnavailable`` 1;
- the new ReplicaSet grows up to ``replicas + maxSurge`` pods in all ReplicaSets, and
  never beyond ``replicas`` itself;
- old ReplicaSets shrink so that at least ``replicas - maxUnavailable`` pods stay
  available: first their unavailable pods (oldest ReplicaSet first), then available
  ones; the new ReplicaSet's own unavailable pods count against the budget;
- ``Recreate``: old ReplicaSets go to 0 first; the new one is scaled up once no old pod
  runs any more.

Example:
    >>> fenceposts("25%", "25%", 10)
    (3, 2)
    >>> fenceposts(0, 0, 3)
    (0, 1)
"""
from __future__ import annotations

from typing import Any

from .templates import resolve_int_or_percent


def fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """``(surge, unavailable)`` for ``desired`` replicas."""
    surge = resolve_int_or_percent(max_surge, desired, round_up=True, default=0)
    unavailable = resolve_int_or_percent(max_unavailable, desired, round_up=False, default=0)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _spec(rs: dict) -> int:
    return int((rs.get("spec") or {}).get("replicas") or 0)


def _available(rs: dict) -> int:
    return int((rs.get("status") or {}).get("availableReplicas") or 0)


def _created(rs: dict) -> str:
    return (rs.get("metadata") or {}).get("creationTimestamp") or ""


def new_rs_replicas(desired: int, surge: int, new_rs: dict | None, all_rses: list[dict]) -> int:
    """How big the new ReplicaSet may be now (``NewRSNewReplicas``)."""
    cur_new = _spec(new_rs) if new_rs is not None else 0
    if cur_new >= desired:
        return desired
    current = sum(_spec(r) for r in all_rses)
    max_total = desired + surge
    if current >= max_total:
        return cur_new
    return cur_new + min(max_total - current, desired - cur_new)


def old_rs_targets(desired: int, unavailable: int, new_rs: dict | None,
                   olds: list[dict]) -> dict[str, int]:
    """The new ``spec.replicas`` of the old ReplicaSets that shrink this pass
    (``reconcileOldReplicaSets``), by name."""
    old_count = sum(_spec(r) for r in olds)
    if old_count == 0:
        return {}
    all_count = old_count + (_spec(new_rs) if new_rs is not None else 0)
    min_available = desired - unavailable
    new_unavailable = (_spec(new_rs) - _available(new_rs)) if new_rs is not None else 0
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    targets: dict[str, int] = {}
    ordered = sorted(olds, key=_created)
    # 1. the old ReplicaSets' unhealthy pods go first
    cleaned = 0
    for rs in ordered:
        if cleaned >= max_scaled_down:
            break
        spec, avail = _spec(rs), _available(rs)
        if spec == 0 or spec <= avail:
            continue
        n = min(max_scaled_down - cleaned, spec - avail)
        targets[rs["metadata"]["name"]] = spec - n
        cleaned += n
    # 2. then available ones, keeping min_available available overall
    available = sum(_available(r) for r in olds) + (_available(new_rs) if new_rs is not None else 0)
    if available <= min_available:
        return targets
    budget = available - min_available
    done = 0
    for rs in ordered:
        if done >= budget:
            break
        spec = targets.get(rs["metadata"]["name"], _spec(rs))
        if spec == 0:
            continue
        n = min(spec, budget - done)
        targets[rs["metadata"]["name"]] = spec - n
        done += n
    return targets


def old_pods_running(olds: list[dict]) -> bool:
    """Whether an old ReplicaSet still has pods (``Recreate`` waits for none)."""
    return any(int((r.get("status") or {}).get("replicas") or 0) for r in olds)
