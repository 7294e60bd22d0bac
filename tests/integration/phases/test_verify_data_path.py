"""04-verify on a twin whose nodes' firewalls drop Cilium's VXLAN port (issue #11).

Every agent is Ready and every node Ready: only traffic across nodes can tell that pods
on one node do not reach pods on another. The full migration runs with papermill against
a fresh twin started with the fault ``firewall`` (fast-heron drops UDP 8473). Readiness
sees nothing; 04-verify fails: `cilium-health status` in the agents names each node pair
that cannot reach the other's pod network (issue #12), so does the probe DaemonSet's
pod-to-pod check (created, journaled and removed all the same), and the ingress probe
gets no answer from a backend on fast-heron (502).
"""
from __future__ import annotations

import json

import pytest

from test_verify_rollback import run, statuses

pytestmark = [pytest.mark.integration]

BLOCKED = [{"node": "fast-heron", "from": "*", "ports": ["udp/8473"]}]
# verify's scale-up and its storage check share this budget for volumes that cannot heal
# (storage_ops.StorageBudget). Its scale-up wait must still see the volume users' pods Ready for the ingress to answer
# 502 (no data path): with 15 s a clean-clone run on a machine running two suites at once
# did not find "status 502" (most likely the backends were not Ready yet), so 30 s
SHORT_STORAGE_WAIT = {"storage_healthy": 30}


@pytest.fixture
def blocked_twin(tmp_path_factory):
    from twin.api import Twin
    t = Twin(tmp_path_factory.mktemp("twin"), faults={"firewall": BLOCKED}).start()
    yield t
    t.stop()


def notebook_text(path) -> str:
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs") or ():
            out.append(o.get("text") or "".join((o.get("data") or {}).get("text/plain", "")))
    return "\n".join(str(t) for t in out)


@pytest.mark.timeout(420)
def test_verify_fails_when_vxlan_is_blocked_between_nodes(blocked_twin, tmp_path):
    twin = blocked_twin
    # the volumes behind the dropped tunnel never heal: verify's storage wait is kept short
    res = run(twin, "preflight,reconfigure,install", tmp_path, execute=True, run_id="vx",
              timeouts=SHORT_STORAGE_WAIT, proceed_despite_deferral=True)
    assert statuses(res) == dict.fromkeys(["preflight", "reconfigure", "install"], "passed"), \
        res.failed and res.failed.error
    cil = twin.rt.component("cilium")
    assert all(twin.call(cil.agent_ready, n) for n in twin.rt.nodes)          # readiness sees nothing
    res = run(twin, "verify", tmp_path, execute=True, run_id="vx", timeouts=SHORT_STORAGE_WAIT)
    assert statuses(res) == {"verify": "failed"}, "verify passed with VXLAN dropped by fast-heron"
    text = notebook_text(res.run_dir / "04-verify.ipynb")
    assert "FAILED: every ingress host answers over HTTPS" in text and "status 502" in text
    # the node pairs, from cilium-health in the agents
    assert "FAILED: every node and every node's pod network reachable from every node" in text
    assert "set-hog -> fast-heron: endpoint" in text and "fast-skunk -> fast-heron: endpoint" in text
    # the same pairs from the probe DaemonSet's pods: HTTP to the probe pod on the other node
    # times out through fast-heron's firewall, both ways; set-hog <-> fast-skunk still answers
    from runbook import evidence
    rec = evidence.read_records(res.run_dir / "04-verify.ipynb")
    cross = rec["gate/pod-to-pod"]
    assert cross["passed"] is False
    for pair in ("fast-heron -> set-hog", "fast-heron -> fast-skunk", "set-hog -> fast-heron",
                 "fast-skunk -> fast-heron"):
        assert pair in cross["message"], cross["message"]
    assert "set-hog -> fast-skunk" not in cross["message"]
    assert rec["gate/probe-ready"]["passed"] is True and rec["gate/probe-removed"]["passed"] is True
    doc = json.loads((res.run_dir / "journal.json").read_text())
    assert [(e["step"], e["status"]) for e in doc["entries"] if e["step"].startswith("probe-")] == \
        [("probe-create", "done"), ("probe-delete", "done")]
    # Longhorn's engines reach their replicas on fast-heron over the same tunnel: the volumes
    # with a replica there stay degraded, and the storage check names them
    assert "FAILED: every Longhorn volume healthy within limits.timeouts.storage_healthy" in text
    assert "robustness degraded" in text
