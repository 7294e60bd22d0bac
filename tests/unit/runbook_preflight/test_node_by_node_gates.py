"""runbook.node_by_node_gates: the node-by-node strategy's preflight gates (pure).

Golden cases under ``tests/fixtures/node_by_node/``: ``<case>.input.json`` names the gate
and its arguments (cluster objects as the API returns them), ``<case>.expected.json`` is
the verdict. A new case is a new pair of files. The assertions after the golden
comparison spell out the rules the expected files encode, so a reviewer can check that
they are right rather than merely stable.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import node_by_node_gates as g

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "node_by_node"
CASES = sorted(p.name.removesuffix(".input.json") for p in FIXTURES.glob("*.input.json"))


def _run(case: str) -> g.Verdict:
    doc = json.loads((FIXTURES / f"{case}.input.json").read_text())
    return getattr(g, doc["gate"])(**doc["args"])


def test_cases_present() -> None:
    assert {"capacity-room-enough", "capacity-too-tight", "capacity-selectors-and-taints", "pdb-blockers",
            "cidr-clear", "cidr-overlaps-and-too-small", "cidr-inside-cluster-cidr", "cidr-host-bits"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden_verdict(case: str) -> None:
    want = json.loads((FIXTURES / f"{case}.expected.json").read_text())
    assert _run(case).to_dict() == want


# ------------------------------------------------------------------ the rules, spelled out
def test_capacity_moves_what_a_drain_moves_and_places_it_within_what_is_left() -> None:
    ok = _run("capacity-room-enough")
    # DaemonSet pods stay and finished pods need no room: node a moves pg-0 and w-1 only
    assert ok.ok and ok.facts["per_node"]["a"] == {"pods_to_move": 2, "cpu_m": 1500,
                                                   "memory_bytes": 3 * 2**29, "pods_that_fit_nowhere": 0}
    tight = _run("capacity-too-tight")
    assert not tight.ok and tight.facts["largest"] == "a"
    # b and c each have 2000m - 1500m = 500m left: neither a 1200m nor a 600m pod fits
    assert any("app/big requests 1200m CPU" in d and "behind a PDB" in d and "b: 500m CPU free" in d
               for d in tight.details)
    assert any("app/mid" in d and "stay Pending" in d for d in tight.details)


def test_capacity_honours_node_selectors_cordons_and_taints() -> None:
    v = _run("capacity-selectors-and-taints")
    assert not v.ok
    # the GPU pod may go to no other node: gpu-2 is cordoned, infra and plain lack the label
    assert v.details == ["draining gpu-1: ml/train requests 2000m CPU, 4.0 GiB (it would stay Pending: an outage): "
                         "infra: nodeSelector gpu=true; plain: nodeSelector gpu=true"]
    # the pod that tolerates infra's taint moves elsewhere; the plain pod may not go to infra
    assert v.facts["per_node"]["infra"]["pods_that_fit_nowhere"] == 0


def test_pod_requests_follow_the_scheduler() -> None:
    pod = {"spec": {"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                                   {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
                    "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}}],
                    "overhead": {"cpu": "10m"}}}
    # containers: 250m + 1000m (limits stand in for missing requests); init 2000m wins; + overhead
    assert g.pod_requests(pod) == (2010, 64 * 2**20 + 2**30)
    assert (g.cpu_millis("1.5"), g.cpu_millis("100m"), g.memory_bytes("1G"), g.memory_bytes("1e3")) == \
        (1500, 100, 10**9, 1000)
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        g.memory_bytes("12 bananas")


def test_pdbs_that_allow_no_disruption_are_listed_with_what_to_do() -> None:
    v = _run("pdb-blockers")
    blocked = {b["pdb"] for b in v.facts["blocked"]}
    # minAvailable 1 of 1, 100% of 3, maxUnavailable 0, and 2 of 2 with one pod unready block;
    # maxUnavailable 1 of 3 does not; minAvailable 0 never blocks but two PDBs on one pod do
    assert blocked == {"a/single", "a/ss-all", "a/zero", "a/degraded"}
    assert "a/three-ok" not in " ".join(v.details)
    assert any("a/dup-0 is selected by 2 PDBs" in d for d in v.details)
    single = next(a for a in v.actions if a.startswith("a/single:"))
    assert "kubectl -n a scale deployment/single --replicas=2" in single and "patch pdb single" in single
    assert "deletes the pod instead of evicting it" in single
    assert next(a for a in v.actions if a.startswith("a/degraded:")).startswith(
        "a/degraded: 1 of its pods are not Ready: make them Ready first")


def test_selectors_match_as_the_api_does() -> None:
    labels = {"app": "web", "tier": "front"}
    assert g.selector_matches({}, labels) and not g.selector_matches(None, labels)
    assert g.selector_matches({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]},
                                                    {"key": "gone", "operator": "DoesNotExist"}]}, labels)
    assert not g.selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                         "values": ["front"]}]}, labels)


def test_cidr_rules() -> None:
    assert _run("cidr-clear").ok
    bad = _run("cidr-overlaps-and-too-small")
    assert bad.details[-1] == "holds 2 per-node /24 blocks for 3 nodes"
    assert "overlaps the LoadBalancer pool 10.0.0.200-10.0.0.220" in bad.details
    assert _run("cidr-inside-cluster-cidr").details == ["overlaps the cluster CIDR 10.42.0.0/16"]
    assert not _run("cidr-host-bits").ok
    # another address family never overlaps
    assert g.cidr("fd00:44::/56", cluster_cidrs=["10.42.0.0/16"], service_cidrs=[], nodes=3).ok


def test_a_verdict_becomes_a_gate() -> None:
    from runbook.checks import gate

    v = _run("pdb-blockers")
    r = gate(True, v.message, details=v.details, hint=v.hint, name=v.name, record=False)
    assert r.name == "nbn-pdb" and r.details == v.details and "kubectl -n a scale" in (r.hint or "")
