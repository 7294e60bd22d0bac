"""Deployments, ReplicaSets, DaemonSets and StatefulSets on a real Store (no HTTP)."""
from __future__ import annotations

import pytest

from twin_controllers_helpers import deployment, run, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _status(env, plural, name, ns="default"):
    return (env.get(plural, ns, name, "apps") or {}).get("status") or {}


def _ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def test_deployment_scale_up_and_down(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            env.store.create(deployment("web", 3))
            await env.until(lambda: _status(env, "deployments", "web").get("availableReplicas") == 3,
                            what="3 available")
            d = env.get("deployments", "default", "web", "apps")
            rses = env.store.list(env.rtype("replicasets", "apps"), "default").items
            assert len(rses) == 1
            rs = rses[0]
            h = rs["metadata"]["labels"]["pod-template-hash"]
            assert rs["metadata"]["name"] == f"web-{h}"
            assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
            assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
            pods = env.pods()
            assert len(pods) == 3
            for p in pods:
                assert p["metadata"]["name"].startswith(f"web-{h}-")
                assert len(p["metadata"]["name"]) == len(f"web-{h}-") + 5
                ref = p["metadata"]["ownerReferences"][0]
                assert (ref["kind"], ref["uid"], ref["controller"]) == ("ReplicaSet", rs["metadata"]["uid"], True)
                assert p["status"]["phase"] == "Running" and _ready(p)
            # fewest-pods spreading: one per node
            assert sorted(p["spec"]["nodeName"] for p in pods) == ["fast-heron", "fast-skunk", "set-hog"]
            st = d["status"]
            assert st["observedGeneration"] == d["metadata"]["generation"]
            assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"]) == (3, 3, 3)
            conds = {c["type"]: c for c in st["conditions"]}
            assert conds["Available"]["status"] == "True"
            assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
            rs_st = env.get("replicasets", "default", rs["metadata"]["name"], "apps")["status"]
            assert rs_st["replicas"] == rs_st["readyReplicas"] == rs_st["availableReplicas"] == 3
            assert rs_st["fullyLabeledReplicas"] == 3
            assert rs_st["observedGeneration"] == env.get("replicasets", "default", rs["metadata"]["name"],
                                                          "apps")["metadata"]["generation"]

            def scale(n):
                env.store.mutate(env.rtype("deployments", "apps"), "default", "web",
                                 lambda o: o["spec"].__setitem__("replicas", n))
            scale(5)
            await env.until(lambda: _status(env, "deployments", "web").get("availableReplicas") == 5
                            and len(env.pods()) == 5, what="5 available")
            scale(2)
            await env.until(lambda: len(env.pods()) == 2
                            and _status(env, "deployments", "web").get("replicas") == 2, what="2 pods")
            d = env.get("deployments", "default", "web", "apps")
            st = d["status"]
            assert st["observedGeneration"] == d["metadata"]["generation"] and st["availableReplicas"] == 2
            # still one ReplicaSet: scaling is not a rollout
            assert len(env.store.list(env.rtype("replicasets", "apps"), "default").items) == 1
    run(main())


def test_deployment_rollout_on_template_change(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            env.store.create(deployment("api", 3, image="api:1"))
            await env.until(lambda: _status(env, "deployments", "api").get("availableReplicas") == 3)
            old_rs = env.store.list(env.rtype("replicasets", "apps"), "default").items[0]["metadata"]["name"]
            min_ready = []

            def watch_ready(etype, rtype, obj, old):
                if rtype.plural == "pods":
                    min_ready.append(sum(1 for p in env.wc.cache.all(("", "pods")) if _ready(p)))
            unsub = env.store.subscribe(watch_ready)

            def new_image(o):
                o["spec"]["template"]["spec"]["containers"][0]["image"] = "api:2"
            env.store.mutate(env.rtype("deployments", "apps"), "default", "api", new_image)

            def done():
                st = _status(env, "deployments", "api")
                d = env.get("deployments", "default", "api", "apps")
                return (st.get("observedGeneration") == d["metadata"]["generation"]
                        and st.get("updatedReplicas") == 3 and st.get("replicas") == 3
                        and st.get("availableReplicas") == 3)
            await env.until(done, what="rollout complete")
            unsub()
            rses = {r["metadata"]["name"]: r for r in env.store.list(env.rtype("replicasets", "apps"), "default").items}
            assert len(rses) == 2
            new_rs = next(n for n in rses if n != old_rs)
            assert rses[old_rs]["spec"]["replicas"] == 0
            assert rses[new_rs]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            d = env.get("deployments", "default", "api", "apps")
            assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            # the old pods terminate gracefully (a second or so), then they are gone
            pods = await env.until(lambda: (lambda ps: ps if len(ps) == 3 else None)(env.pods()),
                                   what="old pods gone")
            assert all(p["spec"]["containers"][0]["image"] == "api:2" for p in pods)
            assert all(p["metadata"]["name"].startswith(new_rs + "-") for p in pods)
            # the rolling update never dropped below the wanted number of Ready pods
            assert min(min_ready) >= 3
            conds = {c["type"]: c for c in d["status"]["conditions"]}
            assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
            assert new_rs in conds["Progressing"]["message"]
    run(main())


def test_pod_gc_when_replicaset_or_deployment_deleted(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            env.store.create(deployment("gc", 2))
            await env.until(lambda: _status(env, "deployments", "gc").get("availableReplicas") == 2)
            rs = env.store.list(env.rtype("replicasets", "apps"), "default").items[0]
            env.store.delete(env.rtype("replicasets", "apps"), "default", rs["metadata"]["name"])
            # the store collects the pods (they terminate gracefully); the Deployment then
            # makes a fresh RS and pods
            assert all(p["metadata"].get("deletionTimestamp") for p in env.pods()
                       if p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"])
            await env.until(lambda: _status(env, "deployments", "gc").get("availableReplicas") == 2
                            and len(env.pods()) == 2, what="recreated")
            env.store.delete(env.rtype("deployments", "apps"), "default", "gc")
            assert all(p["metadata"].get("deletionTimestamp") for p in env.pods())
            await env.until(lambda: env.pods() == [], what="pods gone")
            assert env.store.list(env.rtype("replicasets", "apps"), "default").items == []
            # and nothing comes back
            assert await env.wc.wait_idle(5)
            assert env.pods() == []
    run(main())


def _ds(name, **tspec):
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "agent", "image": f"{name}:1"}],
                                           **tspec}}}}


def test_daemonset_node_selector_tolerations_and_update(tmp_path):
    def setup(store):
        rt = next(t for t in store.resource_types() if t.plural == "nodes")
        store.mutate(rt, None, "set-hog", lambda n: n["spec"].__setitem__("taints", [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]))

    async def main():
        async with running(tmp_path, setup=setup) as env:
            env.store.create(_ds("plain"))
            env.store.create(_ds("everywhere", tolerations=[{"operator": "Exists"}], hostNetwork=True))
            env.store.create(_ds("picky", nodeSelector={"kubernetes.io/hostname": "fast-heron"}))
            env.store.create(_ds("affine", affinity={"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane",
                                           "operator": "DoesNotExist"}]}]}}}))

            def nodes_of(name):
                return sorted(p["spec"]["nodeName"] for p in env.pods("kube-system", f"app={name}"))
            want = {"plain": ["fast-heron", "fast-skunk"],
                    "everywhere": ["fast-heron", "fast-skunk", "set-hog"],
                    "picky": ["fast-heron"], "affine": ["fast-heron", "fast-skunk"]}

            def converged():
                for name, nodes in want.items():
                    st = _status(env, "daemonsets", name, "kube-system")
                    if st.get("numberReady") != len(nodes) or nodes_of(name) != nodes:
                        return False
                return True
            await env.until(converged, what="daemonsets converged")
            st = _status(env, "daemonsets", "everywhere", "kube-system")
            assert st["desiredNumberScheduled"] == st["currentNumberScheduled"] == 3
            assert st["numberAvailable"] == st["updatedNumberScheduled"] == 3
            gen = env.get("daemonsets", "kube-system", "everywhere", "apps")["metadata"]["generation"]
            assert st["numberMisscheduled"] == 0 and st["observedGeneration"] == gen
            for p in env.pods("kube-system", "app=everywhere"):
                assert p["metadata"]["name"].startswith("everywhere-")
                assert p["metadata"]["annotations"]["twin.phase22.io/sandbox-cni"] == "host"
                assert p["status"]["podIP"] == p["status"]["hostIP"]
                tol_keys = {t.get("key") for t in p["spec"]["tolerations"]}
                assert "node.kubernetes.io/not-ready" in tol_keys

            # template change: every pod is replaced, at most maxUnavailable (1) at a time
            before = {p["metadata"]["name"] for p in env.pods("kube-system", "app=everywhere")}
            ready_counts = []

            def watch(etype, rtype, obj, old):
                if rtype.plural == "pods":
                    ready_counts.append(sum(1 for p in env.wc.cache.all(("", "pods"))
                                            if p["metadata"]["labels"].get("app") == "everywhere" and _ready(p)))
            unsub = env.store.subscribe(watch)
            env.store.mutate(env.rtype("daemonsets", "apps"), "kube-system", "everywhere",
                             lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "e:2"))

            def updated():
                st = _status(env, "daemonsets", "everywhere", "kube-system")
                pods = env.pods("kube-system", "app=everywhere")
                return (st.get("observedGeneration") == gen + 1 and st.get("updatedNumberScheduled") == 3
                        and st.get("numberReady") == 3 and len(pods) == 3
                        and all(p["spec"]["containers"][0]["image"] == "e:2" for p in pods))
            await env.until(updated, what="ds rolled")
            unsub()
            after = {p["metadata"]["name"] for p in env.pods("kube-system", "app=everywhere")}
            assert not before & after
            assert min(ready_counts) >= 2

            # a node label change moves the picky DaemonSet
            env.store.mutate(env.rtype("nodes"), None, "fast-skunk",
                             lambda n: n["metadata"]["labels"].__setitem__("extra", "1"))
            env.store.mutate(env.rtype("daemonsets", "apps"), "kube-system", "picky",
                             lambda o: o["spec"]["template"]["spec"].__setitem__("nodeSelector", {"extra": "1"}))
            await env.until(lambda: nodes_of("picky") == ["fast-skunk"], what="picky moved")
    run(main())


def test_statefulset_ordered_pods_and_claims(tmp_path):
    async def main():
        async with running(tmp_path) as env:
            order = []

            def watch(etype, rtype, obj, old):
                if rtype.plural == "pods" and etype == "ADDED" and obj["metadata"]["name"].startswith("db-"):
                    i = int(obj["metadata"]["name"].rsplit("-", 1)[1])
                    prev_ready = i == 0 or _ready(env.store.peek(rtype, "default", f"db-{i - 1}"))
                    order.append((i, prev_ready))
            env.store.subscribe(watch)
            env.store.create({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"replicas": 3, "serviceName": "db",
                         "selector": {"matchLabels": {"app": "db"}},
                         "template": {"metadata": {"labels": {"app": "db"}},
                                      "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}},
                         "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                                   "spec": {"accessModes": ["ReadWriteOnce"],
                                                            "resources": {"requests": {"storage": "8Gi"}}}}]}})
            await env.until(lambda: _status(env, "statefulsets", "db").get("readyReplicas") == 3, what="sts")
            assert order == [(0, True), (1, True), (2, True)]
            st = _status(env, "statefulsets", "db")
            assert st["replicas"] == st["currentReplicas"] == st["updatedReplicas"] == st["availableReplicas"] == 3
            assert st["currentRevision"] == st["updateRevision"] and st["updateRevision"].startswith("db-")
            gen = env.get("statefulsets", "default", "db", "apps")["metadata"]["generation"]
            assert st["observedGeneration"] == gen
            for i in range(3):
                pvc = env.get("persistentvolumeclaims", "default", f"data-db-{i}")
                assert pvc["status"]["phase"] == "Bound"
                assert pvc["status"]["capacity"]["storage"] == "8Gi"
                pod = env.get("pods", "default", f"db-{i}")
                claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]]
                assert claims == [f"data-db-{i}"]
                assert pod["spec"]["hostname"] == f"db-{i}" and pod["spec"]["subdomain"] == "db"
            # rolling update from the highest ordinal down
            env.store.mutate(env.rtype("statefulsets", "apps"), "default", "db",
                             lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "postgres:17"))

            def rolled():
                s = _status(env, "statefulsets", "db")
                return (s.get("updatedReplicas") == 3 and s.get("readyReplicas") == 3
                        and s.get("currentRevision") == s.get("updateRevision")
                        and s.get("observedGeneration") == gen + 1)
            await env.until(rolled, what="sts rolled")
            assert all(env.get("pods", "default", f"db-{i}")["spec"]["containers"][0]["image"] == "postgres:17"
                       for i in range(3))
            # scale down removes the highest ordinals; the claims stay (as on a cluster)
            env.store.mutate(env.rtype("statefulsets", "apps"), "default", "db",
                             lambda o: o["spec"].__setitem__("replicas", 1))
            await env.until(lambda: [p["metadata"]["name"] for p in env.pods()] == ["db-0"], what="scaled")
            assert env.get("persistentvolumeclaims", "default", "data-db-2") is not None
    run(main())


def test_orphans_are_adopted_not_duplicated(tmp_path):
    def bare(name, labels, node):
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": labels,
                             "annotations": {"twin.phase22.io/sandbox-cni": "flannel"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x:1"}]},
                "status": {"phase": "Running", "podIP": f"10.42.0.{len(name)}",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    def setup(store):
        # pods of a ReplicaSet that lost its ownerReferences (e.g. a restore)
        for i in range(2):
            store.create(bare(f"rs-orphan-{i}", {"app": "orph"}, "fast-skunk"))
        # a bare pod that merely shares a StatefulSet's labels
        store.create(bare("intruder", {"app": "db"}, "fast-heron"))

    async def main():
        async with running(tmp_path, setup=setup) as env:
            env.store.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                              "metadata": {"name": "orph", "namespace": "default"},
                              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "orph"}},
                                       "template": {"metadata": {"labels": {"app": "orph"}},
                                                    "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
            env.store.create({"apiVersion": "apps/v1", "kind": "StatefulSet",
                              "metadata": {"name": "db", "namespace": "default"},
                              "spec": {"replicas": 1, "serviceName": "db",
                                       "selector": {"matchLabels": {"app": "db"}},
                                       "template": {"metadata": {"labels": {"app": "db"}},
                                                    "spec": {"containers": [{"name": "c", "image": "pg"}]}}}})
            await env.until(lambda: _status(env, "replicasets", "orph").get("readyReplicas") == 2
                            and _status(env, "statefulsets", "db").get("readyReplicas") == 1)
            assert await env.wc.wait_idle(5)
            orph = sorted(p["metadata"]["name"] for p in env.pods(selector="app=orph"))
            assert orph == ["rs-orphan-0", "rs-orphan-1"]
            rs_uid = env.get("replicasets", "default", "orph", "apps")["metadata"]["uid"]
            for n in orph:
                refs = env.get("pods", "default", n)["metadata"]["ownerReferences"]
                assert [(r["kind"], r["uid"]) for r in refs] == [("ReplicaSet", rs_uid)]
            intruder = env.get("pods", "default", "intruder")
            assert intruder is not None and not intruder["metadata"].get("ownerReferences")
    run(main())
