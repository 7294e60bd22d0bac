"""Cluster-level lifecycle with kubectl and helm: node leases and heartbeats, rollouts
that honour maxSurge/maxUnavailable, helm test and hooks, a failed upgrade rolled back
(issue 10, rows 6, 7, 8 and 9)."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from twin_lifecycle_helpers import CHART_DEMO, condition, start_twin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def kube(kubectl_bin, helm_bin, tmp_path_factory):
    k = start_twin(tmp_path_factory, kubectl_bin, helm_bin)
    yield k
    k.twin.stop()


def test_node_leases_are_renewed_and_heartbeats_move_without_transitions(kube):
    nodes = [n["metadata"]["name"] for n in kube.get("nodes")["items"]]
    leases = kube.until(lambda: (lambda ls: ls if len(ls) == len(nodes) else None)(
        kube.get("leases", "-n", "kube-node-lease")["items"]), what="a lease per node")
    first = {ls["metadata"]["name"]: ls["spec"]["renewTime"] for ls in leases}
    assert set(first) == set(nodes)
    for ls in leases:
        assert ls["spec"]["holderIdentity"] == ls["metadata"]["name"]
        assert ls["spec"]["leaseDurationSeconds"] == 40
        assert ls["metadata"]["ownerReferences"][0]["kind"] == "Node"
    # renewed every 10 cluster seconds (half a wall second at the default speed)
    kube.until(lambda: all(ls["spec"]["renewTime"] != first[ls["metadata"]["name"]]
                           for ls in kube.get("leases", "-n", "kube-node-lease")["items"]), what="renewals")

    def ready_times():
        return {n["metadata"]["name"]: (condition(n, "Ready")["lastHeartbeatTime"],
                                        condition(n, "Ready")["lastTransitionTime"])
                for n in kube.get("nodes")["items"]}
    before = ready_times()
    # an unchanged status is reported every 5 cluster minutes (15 wall seconds)
    after = kube.until(lambda: (lambda t: t if all(t[n][0] != before[n][0] for n in nodes) else None)(
        ready_times()), what="heartbeats of every node", timeout=60)
    assert all(after[n][1] == before[n][1] for n in nodes)      # no transition


def test_rollout_honours_max_surge_and_max_unavailable(kube):
    kube.kubectl("create", "namespace", "roll")
    kube.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: roll}
spec:
  replicas: 10
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: "25%", maxUnavailable: "25%"}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
""")
    kube.kubectl("rollout", "status", "deployment/web", "-n", "roll", "--timeout=60s")
    twin = kube.twin
    seen: list[tuple[int, int, int]] = []

    def watch(event_type, rtype, obj, old):
        if rtype.plural not in ("replicasets", "pods") or (obj["metadata"].get("namespace") != "roll"):
            return
        store = twin.rt.store
        rses = store.list(store.lookup("apps", "v1", "replicasets"), "roll", copy=False).items
        pods = [p for p in store.list(store.lookup("", "v1", "pods"), "roll", copy=False).items
                if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in p["status"].get("conditions") or ()))
        seen.append((sum(r["spec"]["replicas"] for r in rses), len(pods), ready))
    unsubscribe = twin.call(lambda: twin.rt.store.subscribe(watch))
    try:
        kube.kubectl("set", "image", "deployment/web", "-n", "roll", "web=nginx:1.27-alpine")
        status = subprocess.run([kube.kubectl_bin, "rollout", "status", "deployment/web", "-n", "roll",
                                 "--timeout=90s"], env=kube.env, capture_output=True, text=True, timeout=120)
    finally:
        twin.call(unsubscribe)
    assert status.returncode == 0, status.stderr
    assert 'successfully rolled out' in status.stdout
    # ceil(25% of 10) = 3 extra replicas at most; floor(25% of 10) = 2 unavailable at most.
    # (maxSurge bounds the replicas the Deployment controller asks of its ReplicaSets;
    # their pods follow as the ReplicaSet controller catches up, as on a cluster.)
    assert seen and max(total for total, _, _ in seen) <= 13, seen
    assert min(ready for _, _, ready in seen) >= 8
    assert max(total for total, _, _ in seen) == 13          # the surge was used
    rses = kube.get("rs", "-n", "roll")["items"]
    assert sorted(r["spec"]["replicas"] for r in rses) == [0, 10]
    new = next(r for r in rses if r["spec"]["replicas"] == 10)
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "13"


def test_rollout_status_reports_progress(kube):
    kube.kubectl("create", "namespace", "slow")
    kube.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: slow}
spec:
  replicas: 20
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: "nginx:1.27"}]}
""")
    kube.kubectl("rollout", "status", "deployment/api", "-n", "slow", "--timeout=60s")
    kube.kubectl("set", "image", "deployment/api", "-n", "slow", "api=nginx:1.27-alpine")
    out = kube.kubectl("rollout", "status", "deployment/api", "-n", "slow", "--timeout=90s").stdout
    progress = re.findall(r"(\d+) out of 20 new replicas have been updated", out)
    # one pod at a time (surge 1, unavailable 0, 2 cluster seconds each): the count climbs
    assert progress and progress == sorted(progress, key=int)
    assert "successfully rolled out" in out


def test_helm_test_runs_the_test_pod_to_completion_and_hooks_run_jobs(kube):
    kube.kubectl("create", "namespace", "demo")
    kube.helm("install", "demo", str(CHART_DEMO), "-n", "demo", "--set", "image=nginx:1.27",
              "--set", "hookJob.enabled=true", "--wait", "--timeout", "90s")
    # the post-install hook Job ran to completion before helm returned
    job = kube.get("job", "demo-post-install", "-n", "demo")
    assert condition(job, "Complete") and job["status"]["succeeded"] == 1
    assert kube.kubectl("logs", "job/demo-post-install", "-n", "demo").stdout == "migrating\ndone\n"
    out = kube.helm("test", "demo", "-n", "demo", "--logs").stdout
    assert re.search(r"TEST SUITE:\s+demo-test-connection", out)
    assert re.search(r"Phase:\s+Succeeded", out)
    pod = kube.get("pod", "demo-test-connection", "-n", "demo")
    assert pod["status"]["phase"] == "Succeeded"
    # no Service endpoint answers: the test pod fails, and so does helm test
    kube.kubectl("scale", "deployment/demo-web", "-n", "demo", "--replicas=0")
    kube.until(lambda: not kube.get("pods", "-n", "demo", "-l", "app=demo-web")["items"], what="web gone")
    failed = kube.helm("test", "demo", "-n", "demo", check=False)
    assert failed.returncode != 0
    pod = kube.get("pod", "demo-test-connection", "-n", "demo")
    assert pod["status"]["phase"] == "Failed"
    assert "Connection refused" in kube.kubectl("logs", "demo-test-connection", "-n", "demo").stdout


def test_upgrade_to_an_unknown_image_fails_and_rolls_back(kube):
    kube.kubectl("create", "namespace", "rb")
    kube.helm("install", "rb", str(CHART_DEMO), "-n", "rb", "--set", "image=nginx:1.27", "--wait",
              "--timeout", "90s")
    t0 = time.monotonic()
    up = kube.helm("upgrade", "rb", str(CHART_DEMO), "-n", "rb", "--set", "image=nginx:1.27-nosuchtag",
                   "--rollback-on-failure", "--timeout", "10s", check=False)
    assert up.returncode != 0 and "rolled back" in up.stderr
    assert time.monotonic() - t0 >= 10
    history = kube.helm("history", "rb", "-n", "rb").stdout
    assert "Rollback to 1" in history
    kube.kubectl("rollout", "status", "deployment/rb-web", "-n", "rb", "--timeout=60s")
    images = {c["image"] for p in kube.get("pods", "-n", "rb", "-l", "app=rb-web")["items"]
              for c in p["spec"]["containers"] if not p["metadata"].get("deletionTimestamp")}
    assert images == {"nginx:1.27"}
