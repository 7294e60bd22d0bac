"""NetworkPolicies across the migration: one allowed and one denied flow, before and after.

k3s enforces NetworkPolicies with kube-router today; Cilium enforces them after the
migration, with its own semantics (docs/topologies.md). Preflight picks, for the first
policy with an ingress rule, a pod it protects, a pod one of its rules lets in (the
*allowed* flow) and a pod no rule lets in (the *denied* flow), and probes both from the
source pod (``wget`` over ``kubectl exec``); the outcome is a journal fact. Verify probes
the same flows again (the pods found again by their labels: they restarted under Cilium
meanwhile) and passes when each behaves as before.

:func:`plan_flows` is pure (pods, policies and namespaces in, flows out).

Example:
    >>> flows = policy_flows.record(s)        # doctest: +SKIP   (preflight)
    >>> v.add(policy_flows.check(s))          # doctest: +SKIP   (verify)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Flow", "plan_flows", "probe", "record", "check", "FACT"]

FACT = "policy_flows"
#: labels a controller adds per pod generation (not part of what the pod is)
_VOLATILE = ("pod-template-hash", "controller-revision-hash", "pod-template-generation")


@dataclass
class Flow:
    """One probe: from a pod (by namespace and labels) to a pod's port.

    Attributes:
        kind: ``allowed`` or ``denied`` (what the policy says).
        policy: ``namespace/name`` of the policy.
        src_ns, src_labels, dst_ns, dst_labels: the pods, found again by these.
        port: the destination port (TCP).
        before: what preflight saw (``allowed``, ``denied``, or ``error: ...``).
    """

    kind: str
    policy: str
    src_ns: str
    src_labels: dict[str, str]
    dst_ns: str
    dst_labels: dict[str, str]
    port: int
    before: str = ""


def _md(o: dict | None) -> dict:
    return (o or {}).get("metadata") or {}


def _labels(p: dict) -> dict[str, str]:
    return {k: v for k, v in (_md(p).get("labels") or {}).items() if k not in _VOLATILE}


def _match(sel: dict | None, labels: dict) -> bool:
    """matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist); ``{}`` is all."""
    sel = sel or {}
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or ():
        key, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        ok = {"In": labels.get(key) in vals, "NotIn": labels.get(key) not in vals,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def _running(p: dict) -> bool:
    return ((p.get("status") or {}).get("phase") == "Running" and not (p.get("spec") or {}).get("hostNetwork")
            and bool((p.get("status") or {}).get("podIP")) and not _md(p).get("deletionTimestamp"))


def _peer_lets_in(peer: dict, pol_ns: str, src: dict, ns_labels: dict[str, dict]) -> bool:
    if "ipBlock" in peer:
        return False              # address rules: their meaning differs between the two enforcers
    ns = _md(src).get("namespace")
    if "namespaceSelector" in peer:
        if not _match(peer["namespaceSelector"], ns_labels.get(ns) or {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != pol_ns:
        return False
    return "podSelector" not in peer or _match(peer["podSelector"], _md(src).get("labels") or {})


def plan_flows(pods: list[dict], policies: list[dict], namespaces: list[dict],
               usable: Callable[[dict], bool] = lambda pod: True) -> list[Flow]:
    """An allowed and a denied flow for the first policy that has both (pure but for
    ``usable``, which says whether a pod can be a source: :func:`has_wget` in a run).

    >>> plan_flows([], [], [])
    []
    """
    ns_labels = {_md(n).get("name"): _md(n).get("labels") or {} for n in namespaces}
    live = [p for p in pods if _running(p)]
    for pol in sorted(policies, key=lambda p: (_md(p).get("namespace"), _md(p).get("name"))):
        spec, ns = pol.get("spec") or {}, _md(pol).get("namespace")
        if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
            continue
        dsts = [p for p in live if _md(p).get("namespace") == ns and _match(spec.get("podSelector"), _md(p).get("labels") or {})]
        mine = [q for q in policies if _md(q).get("namespace") == ns and dsts
                and _match((q.get("spec") or {}).get("podSelector"), _md(dsts[0]).get("labels") or {})]
        rules = [(q, r) for q in mine for r in (q.get("spec") or {}).get("ingress") or ()]
        for dst in dsts:
            port = _port(rules, dst)
            if port is None:
                continue
            others = [p for p in live if p is not dst and _md(p).get("name") != _md(dst).get("name")]
            lets_in = lambda src: any(  # noqa: E731
                not r.get("from") or any(_peer_lets_in(peer, _md(q).get("namespace"), src, ns_labels)
                                         for peer in r.get("from") or ()) for q, r in rules)
            allowed = next((p for p in others if lets_in(p) and usable(p)), None)
            denied = next((p for p in others if not lets_in(p) and usable(p)), None)
            if allowed is None or denied is None:
                continue
            name = f"{ns}/{_md(pol).get('name')}"
            return [Flow(kind, name, _md(src).get("namespace"), _labels(src), ns, _labels(dst), port)
                    for kind, src in (("allowed", allowed), ("denied", denied))]
    return []


def _port(rules: list[tuple[dict, dict]], dst: dict) -> int | None:
    for _, r in rules:
        for p in r.get("ports") or ():
            if str(p.get("protocol", "TCP")).upper() == "TCP" and str(p.get("port", "")).isdigit():
                return int(p["port"])
    declared = [cp.get("containerPort") for c in (dst.get("spec") or {}).get("containers") or ()
                for cp in c.get("ports") or () if str(cp.get("protocol", "TCP")).upper() == "TCP"]
    return int(declared[0]) if declared else None


def _find(pods: list[dict], ns: str, labels: dict[str, str]) -> dict | None:
    return next((p for p in pods if _running(p) and _md(p).get("namespace") == ns
                 and all((_md(p).get("labels") or {}).get(k) == v for k, v in labels.items())), None)


def probe(c: Any, flow: Flow, pods: list[dict], *, timeout_s: int = 3) -> str:
    """``allowed`` (an answer), ``denied`` (timed out: dropped) or ``error: ...``."""
    src, dst = _find(pods, flow.src_ns, flow.src_labels), _find(pods, flow.dst_ns, flow.dst_labels)
    if src is None or dst is None:
        return "error: " + ("no Running source pod" if src is None else "no Running destination pod")
    url = f"http://{dst['status']['podIP']}:{flow.port}/"
    r = c.exec(flow.src_ns, _md(src)["name"], ["wget", "-q", "-O-", "-T", str(timeout_s), url],
               timeout=timeout_s + 20)
    text = f"{r.stdout}\n{r.stderr}"
    if r.ok:
        return "allowed"
    if "timed out" in text:
        return "denied"
    if any(w in text for w in ("refused", "404", "Not Found", "400")):
        return "allowed"         # something answered: the policy let the packet through
    return "error: " + (" ".join(text.split())[:160] or f"rc={getattr(r, 'rc', '?')}")


def _frame(flows: list[Flow], after: list[str] | None = None) -> pd.DataFrame:
    rows = []
    for i, f in enumerate(flows):
        row = {"flow": f.kind, "policy": f.policy, "from": f"{f.src_ns} {_sel_text(f.src_labels)}",
               "to": f"{f.dst_ns} {_sel_text(f.dst_labels)}:{f.port}", "before": f.before}
        if after is not None:
            row["after"] = after[i]
        rows.append(row)
    return pd.DataFrame(rows)


def _sel_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())[:3])


def has_wget(c: Any, namespace: str, pod: str) -> bool:
    """Whether ``wget`` runs in the pod's first container (many images ship none: distroless,
    scratch): one exec of it against a closed local port, read-only."""
    r = c.exec(namespace, pod, ["wget", "-q", "-O-", "-T", "1", "http://127.0.0.1:9/"], timeout=15)
    text = f"{r.stdout}\n{r.stderr}"
    return not any(w in text for w in ("executable file not found", "not found in $PATH", "exec failed"))


def _usable(c: Any) -> Callable[[dict], bool]:
    seen: dict[tuple[str, str], bool] = {}

    def usable(pod: dict) -> bool:
        key = (_md(pod).get("namespace") or "", _md(pod).get("name") or "")
        if key not in seen:
            seen[key] = has_wget(c, *key)
        return seen[key]
    return usable


def record(s: Session) -> pd.DataFrame:
    """Preflight: pick and probe the two flows; keep them as the journal fact ``policy_flows``
    (read-only: ``wget`` in a pod). No policy with such flows: an empty table, nothing kept."""
    c = s.cluster
    policies = c.list("networkpolicies")
    if not policies:
        print("no NetworkPolicy: no flow to compare")
        return _frame([])
    pods = c.list("pods")
    flows = plan_flows(pods, policies, c.list("namespaces"), usable=_usable(c))
    if not flows:
        print(f"{len(policies)} NetworkPolicies, but none protects a Running pod that one Running pod "
              "may reach and another may not: no flow to compare")
        return _frame([])
    for f in flows:
        f.before = probe(c, f, pods)
    s.journal.set(FACT, [asdict(f) for f in flows])
    return _frame(flows)


def check(s: Session) -> Any:
    """Verify: the flows preflight recorded behave as before (a verify ``Check``)."""
    from .verify import Check

    saved = s.journal.get(FACT) or []
    if not saved:
        return Check("policy-flows", True, "no NetworkPolicy flow was recorded in preflight: nothing to compare")
    flows = [Flow(**f) for f in saved]
    pods = s.cluster.list("pods")
    after = [probe(s.cluster, f, pods) for f in flows]
    bad = [f"{f.kind} flow {f.src_ns} -> {f.dst_ns}:{f.port} ({f.policy}): before {f.before}, now {a}"
           for f, a in zip(flows, after) if a != f.before and not f.before.startswith("error")]
    blind = [f"{f.kind} flow {f.src_ns} -> {f.dst_ns}:{f.port}: not compared, preflight could not probe it "
             f"({f.before})" for f in flows if f.before.startswith("error")]
    if blind and hasattr(s, "attention"):
        s.attention("policy-flows-not-compared", "; ".join(blind))
    what = ("NetworkPolicy flows behave as before the migration (one allowed, one denied)" if not blind else
            f"NetworkPolicy flows: {len(flows) - len(blind)} of {len(flows)} compared (see Needs attention)")
    return Check("policy-flows", not bad, what, details=bad + blind, table=_frame(flows, after),
                 hint="Cilium enforces the policies now: compare its verdicts with `hubble observe "
                      "--verdict DROPPED` and read docs/topologies.md on the semantic differences")
