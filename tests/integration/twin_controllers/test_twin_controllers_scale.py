"""A converged cluster built elsewhere (other hash functions) is not disturbed, and its
start and a later event cost work per workload or per event, never per pod of the cluster.

The wall-clock figures (start, one event at this size) are measured in
``benchmarks/twin_start.py``; here the work is counted (reconciles per controller)."""
from __future__ import annotations

import copy

import pytest

from twin.controllers import SANDBOX_CNI_ANNOTATION, PodFate, build_pod_status
from twin_controllers_helpers import run, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODES = [(f"node-{i}", f"10.1.0.{i + 1}", f"10.42.{i}.0/24", i == 0) for i in range(100)]
PER = 5


def _converged(store, n_deploy: int) -> None:
    """Deployments -> RS -> Running pods, plus a DaemonSet, as a fixture generator would
    write them, with hash labels that are NOT the controllers' own."""
    def rt(plural):
        return next(t for t in store.resource_types() if t.plural == plural)
    nodes = [store.peek(rt("nodes"), None, n[0]) for n in NODES]
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    pi = 0

    def pod(name, labels, owner, node, spec):
        nonlocal pi
        pi += 1
        p = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": labels,
                          "annotations": {SANDBOX_CNI_ANNOTATION: "flannel"},
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner["kind"],
                                               "name": owner["metadata"]["name"],
                                               "uid": owner["metadata"]["uid"], "controller": True}]},
             "spec": dict(spec, nodeName=node["metadata"]["name"])}
        p["status"] = build_pod_status(p, node, PodFate("Running", True, cni="flannel",
                                                        ip=f"10.99.{pi // 250}.{pi % 250}"), "2026-01-01T00:00:00Z")
        store.create(p)

    for d in range(n_deploy):
        name = f"app{d}"
        tpl = {"metadata": {"labels": {"app": name}},
               "spec": {"containers": [{"name": "c", "image": "img:1"}]}}
        dep = store.create({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": name, "namespace": "apps",
                                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
                            "spec": {"replicas": PER, "selector": {"matchLabels": {"app": name}},
                                     "template": tpl}})
        h = f"f{d:07d}x"     # a foreign hash
        rtpl = copy.deepcopy(tpl)
        rtpl["metadata"]["labels"]["pod-template-hash"] = h
        rs = store.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                           "metadata": {"name": f"{name}-{h}", "namespace": "apps",
                                        "labels": rtpl["metadata"]["labels"],
                                        "annotations": {"deployment.kubernetes.io/revision": "1"},
                                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                             "name": name, "uid": dep["metadata"]["uid"],
                                                             "controller": True}]},
                           "spec": {"replicas": PER, "template": rtpl,
                                    "selector": {"matchLabels": {"app": name, "pod-template-hash": h}}}})
        for k in range(PER):
            pod(f"{name}-{h}-{k:05d}", rtpl["metadata"]["labels"], rs, nodes[pi % len(nodes)], rtpl["spec"])
    ds_tpl = {"metadata": {"labels": {"app": "agent"}},
              "spec": {"containers": [{"name": "a", "image": "agent:1"}], "hostNetwork": True}}
    ds = store.create({"apiVersion": "apps/v1", "kind": "DaemonSet",
                       "metadata": {"name": "agent", "namespace": "apps"},
                       "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": ds_tpl},
                       "status": {"observedGeneration": 1}})
    for node in nodes:
        pod(f"agent-{node['metadata']['name']}", {"app": "agent", "controller-revision-hash": "7d9f"},
            ds, node, ds_tpl["spec"])


def test_converged_fixture_is_left_alone_and_events_cost_per_workload(tmp_path):
    n_deploy = 1000   # 5,000 deployment pods + 100 daemon pods on 100 nodes

    async def main():
        async with running(tmp_path, nodes=NODES, setup=lambda s: _converged(s, n_deploy)) as env:
            pods_rt = env.rtype("pods")
            before = {(p["metadata"]["name"], p["metadata"]["resourceVersion"])
                      for p in env.store.iter_objects(pods_rt)}
            assert await env.wc.wait_idle(60)
            done = {c.name: c.processed for c in env.wc.controllers}
            # the initial pass looked at workloads, not at their 5,100 pods: none needed
            # scheduling or a kubelet pass
            assert done["scheduler"] == 0 and done["kubelet"] == 0, done
            assert done["daemonset"] <= 5 and done["replicaset"] <= 3 * n_deploy, done
            after = {(p["metadata"]["name"], p["metadata"]["resourceVersion"])
                     for p in env.store.iter_objects(pods_rt)}
            assert after == before           # no pod recreated, none even rewritten
            assert env.store.count(env.rtype("replicasets", "apps")) == n_deploy
            st = env.get("deployments", "apps", "app7", "apps")["status"]
            assert st["availableReplicas"] == st["updatedReplicas"] == PER
            ds = env.get("daemonsets", "apps", "agent", "apps")["status"]
            assert ds["desiredNumberScheduled"] == ds["numberReady"] == ds["updatedNumberScheduled"] == 100

            # one event costs the same as on a small cluster: scaling one deployment
            # reconciles that deployment and its ReplicaSet a few times and schedules one
            # pod; the 999 other deployments and their pods are not looked at
            env.store.mutate(env.rtype("deployments", "apps"), "apps", "app3",
                             lambda o: o["spec"].__setitem__("replicas", PER + 1))
            await env.until(lambda: len(env.pods("apps", "app=app3")) == PER + 1)
            assert await env.wc.wait_idle(60)
            delta = {c.name: c.processed - done[c.name] for c in env.wc.controllers}
            assert delta["scheduler"] == 1 and delta["daemonset"] == 0, delta
            assert delta["deployment"] <= 10 and delta["replicaset"] <= 10, delta
            untouched = {(p["metadata"]["name"], p["metadata"]["resourceVersion"])
                         for p in env.store.iter_objects(pods_rt)
                         if not p["metadata"]["name"].startswith("app3-")}
            assert untouched == {(n, rv) for n, rv in before if not n.startswith("app3-")}
    run(main())
