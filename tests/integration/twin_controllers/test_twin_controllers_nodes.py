"""Scheduler, kubelet sandbox policy, node lifecycle taints and evictions on a real Store."""
from __future__ import annotations

import asyncio

import pytest

from twin.controllers import NETWORK_NOT_READY_MESSAGE, SANDBOX_CNI_ANNOTATION, PodFate
from twin.controllers.base import Controller
from twin.clock import Clock
from twin_controllers_helpers import NODES, deployment, run, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def _bare(name, node=None, host=False, ns="default", tolerations=None):
    # pause runs until stopped (busybox without a command would exit at once, as on a node)
    spec = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    if node:
        spec["nodeName"] = node
    if host:
        spec["hostNetwork"] = True
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _taints(env, node):
    return {(t["key"], t["effect"]) for t in env.get("nodes", None, node)["spec"].get("taints", [])}


NR = {("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")}


def test_not_ready_node_blocks_sandboxes_but_runs_host_network_pods(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            env.set_node_ready("fast-heron", "False")
            await env.until(lambda: _taints(env, "fast-heron") == NR, what="not-ready taints")
            env.store.create(_bare("plain", node="fast-heron"))
            env.store.create(_bare("agent", node="fast-heron", host=True,
                                   tolerations=[{"operator": "Exists"}]))
            await env.until(lambda: env.get("pods", "default", "agent")["status"].get("phase") == "Running"
                            and _ready(env.get("pods", "default", "agent")), what="host pod running")
            await env.until(lambda: (env.get("pods", "default", "plain")["status"].get("containerStatuses")
                                     or [{}])[0].get("state", {}).get("waiting"), what="plain waiting")
            await asyncio.sleep(0.1)      # 10 cluster seconds: still stuck
            plain = env.get("pods", "default", "plain")
            assert plain["status"]["phase"] == "Pending"
            w = plain["status"]["containerStatuses"][0]["state"]["waiting"]
            assert w == {"reason": "ContainerCreating", "message": NETWORK_NOT_READY_MESSAGE}
            assert "podIP" not in plain["status"]
            assert SANDBOX_CNI_ANNOTATION not in (plain["metadata"].get("annotations") or {})
            agent = env.get("pods", "default", "agent")
            assert agent["status"]["podIP"] == "10.0.0.7"
            assert agent["metadata"]["annotations"][SANDBOX_CNI_ANNOTATION] == "host"

            # the scheduler keeps new pods off the tainted node
            env.store.create(deployment("spread", 4))
            await env.until(lambda: len([p for p in env.pods(selector="app=spread") if _ready(p)]) == 4)
            assert all(p["spec"]["nodeName"] != "fast-heron" for p in env.pods(selector="app=spread"))

            # the CNI comes back: taints go, the stuck pod gets its sandbox
            env.set_node_ready("fast-heron", "True")
            await env.until(lambda: _ready(env.get("pods", "default", "plain")), what="plain ready")
            assert _taints(env, "fast-heron") == set()
            plain = env.get("pods", "default", "plain")
            assert plain["status"]["podIP"].startswith("10.42.2.")
            assert plain["metadata"]["annotations"][SANDBOX_CNI_ANNOTATION] == "flannel"
    run(main())


def test_unschedulable_pods_stay_pending_with_the_scheduler_message(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            for n in NODES:
                env.set_node_ready(n[0], "False")
            await env.until(lambda: all(_taints(env, n[0]) == NR for n in NODES))
            env.store.create(deployment("stuck", 1))
            msg = ("0/3 nodes are available: 3 node(s) had untolerated taint "
                   "{node.kubernetes.io/not-ready: }.")

            def cond():
                pods = env.pods(selector="app=stuck")
                if not pods:
                    return None
                return next((c for c in pods[0]["status"].get("conditions", [])
                             if c["type"] == "PodScheduled"), None)
            c = await env.until(cond, what="PodScheduled condition")
            assert (c["status"], c["reason"]) == ("False", "Unschedulable")
            assert c["message"].startswith(msg)
            pod = env.pods(selector="app=stuck")[0]
            assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
            # a node becoming Ready lets it schedule
            env.set_node_ready("fast-skunk", "True")
            await env.until(lambda: [p for p in env.pods(selector="app=stuck") if _ready(p)], what="scheduled")
            assert env.pods(selector="app=stuck")[0]["spec"]["nodeName"] == "fast-skunk"
    run(main())


def test_eviction_after_toleration_seconds(tmp_path):
    async def main():
        # speed 0.002: the default 300 s toleration is 0.6 wall seconds
        async with running(tmp_path, speed=0.002) as env:
            env.store.create(deployment("app", 3))
            env.store.create({"apiVersion": "apps/v1", "kind": "DaemonSet",
                              "metadata": {"name": "agent", "namespace": "kube-system"},
                              "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                       "template": {"metadata": {"labels": {"app": "agent"}},
                                                    "spec": {"containers": [{"name": "a", "image": "a:1"}]}}}})
            await env.until(lambda: len([p for p in env.pods(selector="app=app") if _ready(p)]) == 3
                            and len([p for p in env.pods("kube-system") if _ready(p)]) == 3)
            victim = next(p for p in env.pods(selector="app=app") if p["spec"]["nodeName"] == "fast-skunk")
            env.set_node_ready("fast-skunk", "False")
            lc = env.wc.node_lifecycle
            t0 = env.rt.clock.cluster_now()
            await env.until(lambda: env.get("pods", "default", victim["metadata"]["name"]) is None,
                            timeout=10, what="eviction")
            waited = env.rt.clock.cluster_now() - t0
            assert waited >= 290, f"evicted after {waited:.0f} cluster seconds"
            assert ("default", victim["metadata"]["name"], "fast-skunk") in lc.evicted
            events = [e for e in env.store.list(env.rtype("events"), "default").items
                      if e["involvedObject"]["name"] == victim["metadata"]["name"]]
            marked = [e for e in events if e["reason"] == "TaintManagerEviction"]
            assert marked and marked[0]["message"] == f"Marking for deletion Pod default/{victim['metadata']['name']}"
            assert marked[0]["source"]["component"] == "taint-eviction-controller"
            # the DaemonSet pod tolerates not-ready forever and stays
            assert [p["spec"]["nodeName"] for p in env.pods("kube-system")].count("fast-skunk") == 1
            # the ReplicaSet replaced the evicted pod on a Ready node
            await env.until(lambda: len([p for p in env.pods(selector="app=app") if _ready(p)]) == 3)
            assert all(p["spec"]["nodeName"] != "fast-skunk" for p in env.pods(selector="app=app"))
    run(main())


def test_short_toleration_and_recovery_before_deadline(tmp_path):
    async def main():
        async with running(tmp_path, speed=0.002) as env:
            tol = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 20}]
            env.store.create(_bare("quick", node="set-hog", tolerations=tol))
            env.store.create(_bare("patient", node="set-hog"))
            await env.until(lambda: _ready(env.get("pods", "default", "patient")))
            env.set_node_ready("set-hog", "False")
            await env.until(lambda: env.get("pods", "default", "quick") is None, what="quick evicted")
            env.set_node_ready("set-hog", "True")
            await asyncio.sleep(0.8)    # 400 cluster seconds: past the default toleration
            assert env.get("pods", "default", "patient") is not None
    run(main())


def test_fixture_pods_are_left_alone_and_policy_swap(tmp_path):
    running_pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "legacy", "namespace": "default",
                     "annotations": {SANDBOX_CNI_ANNOTATION: "flannel"}},
        "spec": {"nodeName": "fast-skunk", "containers": [{"name": "c", "image": "x:1"}]},
        "status": {"phase": "Running", "podIP": "10.42.1.2", "podIPs": [{"ip": "10.42.1.2"}],
                   "hostIP": "10.0.0.4",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0,
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}

    def setup(store):
        store.create(running_pod)

    async def main():
        async with running(tmp_path, setup=setup) as env:
            before = env.get("pods", "default", "legacy")
            assert await env.wc.wait_idle(5)
            # a node event re-evaluates it: the default policy keeps it as it is
            env.wc.kubelet.reevaluate("fast-skunk")
            assert await env.wc.wait_idle(5)
            after = env.get("pods", "default", "legacy")
            assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
            # a new pod on that node never gets the IP in use
            env.store.create(_bare("fresh", node="fast-skunk"))
            await env.until(lambda: _ready(env.get("pods", "default", "fresh")))
            assert env.get("pods", "default", "fresh")["status"]["podIP"] not in ("10.42.1.2", None)

            class CiliumPolicy:
                def decide(self, pod, node):
                    ann = pod["metadata"].get("annotations") or {}
                    if SANDBOX_CNI_ANNOTATION in ann and pod["status"].get("podIP"):
                        return PodFate("Running", True, cni=ann[SANDBOX_CNI_ANNOTATION],
                                       ip=pod["status"]["podIP"])
                    return PodFate("Running", True, cni="cilium", ip="10.0.9.9", delay=1)
            env.wc.kubelet.set_policy(CiliumPolicy())
            env.store.create(_bare("new", node="fast-heron"))
            await env.until(lambda: _ready(env.get("pods", "default", "new")))
            new = env.get("pods", "default", "new")
            assert new["metadata"]["annotations"][SANDBOX_CNI_ANNOTATION] == "cilium"
            assert new["status"]["podIP"] == "10.0.9.9"
            # running pods keep the CNI that created their sandbox ("unmanaged")
            assert env.get("pods", "default", "legacy")["metadata"]["annotations"][SANDBOX_CNI_ANNOTATION] == "flannel"
            assert env.rt.options["kubelet"] is env.wc.kubelet
            assert env.rt.component("workloads") is env.wc
            assert "workload controllers" in env.wc.describe()
    run(main())


def test_controller_survives_failing_reconcile():
    async def main():
        class Flaky(Controller):
            def __init__(self):
                super().__init__("flaky", Clock(speed=0.001))
                self.calls = []

            def reconcile(self, key):
                self.calls.append(key)
                if len(self.calls) < 3:
                    raise RuntimeError("boom")
        c = Flaky()
        c.start()
        c.enqueue("a")
        c.enqueue("a")        # de-duplicated while queued
        c.enqueue("b")
        for _ in range(300):
            if c.calls.count("a") == 2 and "b" in c.calls and c.idle():
                break
            await asyncio.sleep(0.01)
        assert c.errors == 2
        assert c.calls.count("a") >= 2 and c.calls.count("b") >= 1
        c.requeue_after("z", 10_000)
        await c.stop()
        assert c._task is None and not c._delayed
    run(main())


def test_progress_deadline_exceeded_when_pods_cannot_start(tmp_path):
    async def main():
        async with running(tmp_path, speed=0.002) as env:
            for n in NODES:
                env.set_node_ready(n[0], "False")
            env.store.create(deployment("late", 2, progressDeadlineSeconds=60))

            def progressing():
                d = env.get("deployments", "default", "late", "apps")
                return next((c for c in (d.get("status") or {}).get("conditions", [])
                             if c["type"] == "Progressing"), None)
            c = await env.until(lambda: (progressing() or {}).get("reason") == "ProgressDeadlineExceeded"
                                and progressing(), what="deadline exceeded")
            assert c["status"] == "False" and "has timed out progressing" in c["message"]
            rv = env.get("deployments", "default", "late", "apps")["metadata"]["resourceVersion"]
            await asyncio.sleep(0.2)      # 100 cluster seconds: no write loop on the condition
            assert env.get("deployments", "default", "late", "apps")["metadata"]["resourceVersion"] == rv
            for n in NODES:
                env.set_node_ready(n[0], "True")
            await env.until(lambda: (progressing() or {}).get("reason") == "NewReplicaSetAvailable",
                            what="recovered")
    run(main())


def test_pods_of_a_deleted_node_are_collected(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            env.store.create(_bare("orphaned", node="fast-heron"))
            await env.until(lambda: _ready(env.get("pods", "default", "orphaned")))
            env.store.delete(env.rtype("nodes"), None, "fast-heron")
            await env.until(lambda: env.get("pods", "default", "orphaned") is None, what="pod gc")
    run(main())


def test_cordon_taints_node_and_keeps_new_pods_off(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            def cordon(flag):
                env.store.mutate(env.rtype("nodes"), None, "set-hog",
                                 lambda n: n["spec"].__setitem__("unschedulable", flag))
            cordon(True)
            await env.until(lambda: _taints(env, "set-hog") == {("node.kubernetes.io/unschedulable", "NoSchedule")})
            env.store.create(deployment("c", 4))
            await env.until(lambda: len([p for p in env.pods(selector="app=c") if _ready(p)]) == 4)
            assert all(p["spec"]["nodeName"] != "set-hog" for p in env.pods(selector="app=c"))
            cordon(False)
            await env.until(lambda: _taints(env, "set-hog") == set(), what="uncordoned")
    run(main())


def test_crash_loop_restarts_climb_until_the_policy_says_ready(tmp_path):
    async def main():
        async with running(tmp_path, speed=0.002) as env:
            kubelet = env.wc.kubelet
            default = kubelet.policy

            class Crashing:
                def decide(self, pod, node):
                    fate = default.decide(pod, node)
                    if pod["metadata"]["name"] == "agent" and fate is not None:
                        fate.ready = False
                        fate.waiting_reason = "CrashLoopBackOff"
                        fate.message = "back-off 10s restarting failed container=agent"
                    return fate
            kubelet.set_policy(Crashing())
            env.store.create(_bare("agent", node="set-hog", host=True))

            def restarts():
                p = env.get("pods", "default", "agent")
                return (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0)
            await env.until(lambda: restarts() >= 3, what="restarts climbing")
            p = env.get("pods", "default", "agent")
            cs = p["status"]["containerStatuses"][0]
            assert p["status"]["phase"] == "Running" and not _ready(p)
            assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            assert cs["lastState"]["terminated"]["exitCode"] == 1
            kubelet.set_policy(default)
            await env.until(lambda: _ready(env.get("pods", "default", "agent")), what="recovered")
            assert restarts() >= 3          # restarts are history, they stay
    run(main())


def test_node_lost_while_container_creating_shows_the_cni_message(tmp_path):
    from twin.controllers import DefaultSandboxPolicy

    async def main():
        async with running(tmp_path) as env:
            kubelet = env.wc.kubelet
            kubelet.set_policy(DefaultSandboxPolicy(kubelet.ipam, start_seconds=10_000))
            env.store.create(_bare("slow", node="fast-skunk"))

            def waiting():
                p = env.get("pods", "default", "slow")
                return ((p["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting")
            w = await env.until(waiting, what="ContainerCreating")
            assert w == {"reason": "ContainerCreating"}
            env.set_node_ready("fast-skunk", "False")
            await env.until(lambda: (waiting() or {}).get("message") == NETWORK_NOT_READY_MESSAGE,
                            what="cni message")
            assert "podIP" not in env.get("pods", "default", "slow")["status"]
    run(main())
