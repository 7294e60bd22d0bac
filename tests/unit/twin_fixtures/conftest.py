"""Shared checks for the twin's cluster fixtures: what "a converged cluster" means.

``check_invariants`` is applied to the packaged minicloud and to generated clusters, so
both are held to the same rules (ownership, IPs, workload status, storage, services).
"""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict

import pytest

from twin.fixtures import Fixture, node_objects


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def _selector_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_invariants(fx: Fixture) -> dict[str, int]:
    """Assert the structural invariants of a converged cluster; returns counts by kind."""
    objs = fx.objects + node_objects(fx)
    index: dict[tuple, dict] = {}
    for o in objs:
        md = o["metadata"]
        key = (md.get("namespace"), o["kind"], md["name"])
        assert key not in index, f"duplicate object {key}"
        index[key] = o
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for o in objs:
        by_kind[o["kind"]].append(o)
    nodes = {n.name: n for n in fx.nodes}
    namespaces = {o["metadata"]["name"] for o in by_kind["Namespace"]}

    # Every namespaced object lives in an existing namespace; every owner exists.
    for o in objs:
        md = o["metadata"]
        ns = md.get("namespace")
        if ns is not None:
            assert ns in namespaces, f"{o['kind']} {ns}/{md['name']}: namespace missing"
        for ref in md.get("ownerReferences") or ():
            owner = index.get((ns, ref["kind"], ref["name"]))
            assert owner is not None, f"{o['kind']} {ns}/{md['name']}: owner {ref} missing"
            assert _group(owner["apiVersion"]) == _group(ref["apiVersion"]), ref
            assert "uid" not in ref, "fixtures leave owner uids to the store"

    # Pods: scheduled, Running, Ready, IPs unique and from their node's podCIDR.
    seen_ips: dict[str, str] = {}
    for p in by_kind["Pod"]:
        md, spec, st = p["metadata"], p["spec"], p["status"]
        name = f"{md['namespace']}/{md['name']}"
        node = nodes[spec["nodeName"]]
        assert st["phase"] == "Running", name
        assert all(c["status"] == "True" for c in st["conditions"]), name
        assert {c["type"] for c in st["conditions"]} >= {"Ready", "ContainersReady",
                                                         "Initialized", "PodScheduled"}
        assert [c["name"] for c in st["containerStatuses"]] == [c["name"] for c in spec["containers"]]
        assert all(c["ready"] and "running" in c["state"] for c in st["containerStatuses"]), name
        assert st["hostIP"] == node.ip and st["startTime"], name
        assert st["podIPs"] == [{"ip": st["podIP"]}], name
        assert spec["serviceAccountName"], name
        for c in spec["containers"]:
            assert c["image"] and "resources" in c, name
        if spec.get("hostNetwork"):
            assert st["podIP"] == node.ip, name
            assert md["annotations"]["twin.phase22.io/sandbox-cni"] == "host", name
        else:
            assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network(node.pod_cidr), name
            assert st["podIP"] not in seen_ips, f"{name} reuses {st['podIP']} of {seen_ips.get(st['podIP'])}"
            seen_ips[st["podIP"]] = name
            assert md["annotations"]["twin.phase22.io/sandbox-cni"] == "flannel", name
        owner_kinds = {r["kind"] for r in md.get("ownerReferences") or ()}
        tols = {(t.get("key"), t.get("effect")): t for t in spec.get("tolerations") or ()}
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            tol = tols[(key, "NoExecute")]
            if "DaemonSet" in owner_kinds:
                assert "tolerationSeconds" not in tol, name     # DS pods are never evicted
            else:
                assert tol["tolerationSeconds"] == 300, name
        for vol in spec.get("volumes") or ():
            if "persistentVolumeClaim" in vol:
                claim = index.get((md["namespace"], "PersistentVolumeClaim",
                                   vol["persistentVolumeClaim"]["claimName"]))
                assert claim is not None, f"{name}: claim {vol} missing"

    # Workload status consistent with the pods that exist.
    pods_by_owner: dict[tuple, list[dict]] = defaultdict(list)
    for p in by_kind["Pod"]:
        for ref in p["metadata"].get("ownerReferences") or ():
            pods_by_owner[(p["metadata"]["namespace"], ref["kind"], ref["name"])].append(p)
    rs_by_dep: dict[tuple, list[dict]] = defaultdict(list)
    for rs in by_kind["ReplicaSet"]:
        md = rs["metadata"]
        (ref,) = md["ownerReferences"]
        rs_by_dep[(md["namespace"], ref["name"])].append(rs)
        pods = pods_by_owner[(md["namespace"], "ReplicaSet", md["name"])]
        assert len(pods) == rs["spec"]["replicas"] == rs["status"]["readyReplicas"], md["name"]
        h = md["labels"]["pod-template-hash"]
        assert md["name"].endswith(f"-{h}")
        assert all(p["metadata"]["labels"]["pod-template-hash"] == h for p in pods)
        assert all(p["metadata"]["name"].startswith(md["name"] + "-") for p in pods)
    for d in by_kind["Deployment"]:
        md, spec, st = d["metadata"], d["spec"], d["status"]
        (rs,) = rs_by_dep[(md["namespace"], md["name"])]
        n = len(pods_by_owner[(md["namespace"], "ReplicaSet", rs["metadata"]["name"])])
        assert spec["replicas"] == n == st["replicas"] == st["readyReplicas"] \
            == st["availableReplicas"] == st["updatedReplicas"], md["name"]
        assert md["generation"] == st["observedGeneration"] == 1
        for p in pods_by_owner[(md["namespace"], "ReplicaSet", rs["metadata"]["name"])]:
            assert _selector_matches(spec["selector"]["matchLabels"], p["metadata"]["labels"])
    for s in by_kind["StatefulSet"]:
        md, spec, st = s["metadata"], s["spec"], s["status"]
        pods = pods_by_owner[(md["namespace"], "StatefulSet", md["name"])]
        assert sorted(p["metadata"]["name"] for p in pods) == sorted(
            f"{md['name']}-{i}" for i in range(spec["replicas"])), md["name"]
        assert spec["replicas"] == st["replicas"] == st["readyReplicas"] == st["currentReplicas"]
        assert md["generation"] == st["observedGeneration"] == 1
        for p in pods:
            assert p["spec"]["hostname"] == p["metadata"]["name"]
            for vct in spec.get("volumeClaimTemplates") or ():
                claim = f"{vct['metadata']['name']}-{p['metadata']['name']}"
                assert (md["namespace"], "PersistentVolumeClaim", claim) in index, claim
    for ds in by_kind["DaemonSet"]:
        md, st = ds["metadata"], ds["status"]
        pods = pods_by_owner[(md["namespace"], "DaemonSet", md["name"])]
        on = Counter(p["spec"]["nodeName"] for p in pods)
        assert set(on) == set(nodes) and set(on.values()) == {1}, f"{md['name']}: {on}"
        assert st["desiredNumberScheduled"] == st["numberReady"] == len(pods) == len(nodes)
        assert md["generation"] == st["observedGeneration"] == 1

    # Storage: every claim Bound to an existing PV that points back at it.
    classes = {o["metadata"]["name"] for o in by_kind["StorageClass"]}
    pvs = {o["metadata"]["name"]: o for o in by_kind["PersistentVolume"]}
    for c in by_kind["PersistentVolumeClaim"]:
        md = c["metadata"]
        pv = pvs[c["spec"]["volumeName"]]
        assert c["status"]["phase"] == "Bound" and pv["status"]["phase"] == "Bound", md["name"]
        ref = pv["spec"]["claimRef"]
        assert (ref["namespace"], ref["name"]) == (md["namespace"], md["name"])
        assert c["spec"]["storageClassName"] == pv["spec"]["storageClassName"] in classes
        assert pv["spec"]["capacity"]["storage"] == c["spec"]["resources"]["requests"]["storage"]
    assert len(pvs) == len(by_kind["PersistentVolumeClaim"]), "orphan PVs"
    # local-path volumes live on one node: the pods using them run there.
    for p in by_kind["Pod"]:
        for vol in p["spec"].get("volumes") or ():
            if "persistentVolumeClaim" not in vol:
                continue
            claim = index[(p["metadata"]["namespace"], "PersistentVolumeClaim",
                           vol["persistentVolumeClaim"]["claimName"])]
            pv = pvs[claim["spec"]["volumeName"]]
            if "nodeAffinity" in pv["spec"]:
                (term,) = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
                assert term["matchExpressions"][0]["values"] == [p["spec"]["nodeName"]]

    # Services: unique ClusterIPs in the service CIDR; selectors select pods.
    svc_net = ipaddress.ip_network(fx.cluster["service_cidr"])
    cips: set[str] = set()
    pods_by_ns: dict[str, list[dict]] = defaultdict(list)
    for p in by_kind["Pod"]:
        pods_by_ns[p["metadata"]["namespace"]].append(p)
    for s in by_kind["Service"]:
        md, spec = s["metadata"], s["spec"]
        if spec["clusterIP"] != "None":
            assert ipaddress.ip_address(spec["clusterIP"]) in svc_net
            assert spec["clusterIP"] not in cips, f"{md['name']}: duplicate ClusterIP"
            cips.add(spec["clusterIP"])
        if spec.get("selector"):
            assert any(_selector_matches(spec["selector"], p["metadata"]["labels"])
                       for p in pods_by_ns[md["namespace"]]), f"service {md['namespace']}/{md['name']} selects no pod"
        if spec["type"] == "LoadBalancer":
            assert all("nodePort" in port for port in spec["ports"])
            assert s["status"]["loadBalancer"]["ingress"][0]["ip"]
    for ing in by_kind["Ingress"]:
        md = ing["metadata"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = index.get((md["namespace"], "Service", path["backend"]["service"]["name"]))
                assert svc is not None, f"ingress {md['name']}: backend missing"
                assert path["backend"]["service"]["port"]["number"] in {
                    p["port"] for p in svc["spec"]["ports"]}

    # Argo CD: every resource an Application claims exists.
    for app in by_kind["Application"]:
        assert app["status"]["sync"]["status"] == "Synced"
        assert app["status"]["health"]["status"] == "Healthy"
        for r in app["status"]["resources"]:
            assert (r.get("namespace"), r["kind"], r["name"]) in index, (app["metadata"]["name"], r)
    return {k: len(v) for k, v in by_kind.items()}


@pytest.fixture
def invariants():
    return check_invariants
