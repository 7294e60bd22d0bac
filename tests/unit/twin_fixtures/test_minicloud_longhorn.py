"""minicloud's Longhorn: volumes, engines and replicas spread over the nodes, consistent with
the claims, the pods that mount them and the instance managers that run them."""
from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from twin.controllers.addons.longhorn_rules import SETTINGS
from twin.fixtures import load
from twin.fixtures.minicloud.longhorn_volumes import RWX_CLAIMS

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
LH = "longhorn-system"


@pytest.fixture(scope="module")
def fx():
    return load("minicloud")


def by_name(fx, kind, ns=None):
    return {o["metadata"]["name"]: o for o in fx.objects_of(kind, ns)}


def consumers(fx) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for p in fx.objects_of("Pod"):
        for v in p["spec"].get("volumes") or ():
            if "persistentVolumeClaim" in v:
                out.setdefault((p["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"]), []).append(p)
    return out


def test_every_longhorn_pv_has_a_volume_engine_and_replicas(fx):
    pvs = {n: pv for n, pv in by_name(fx, "PersistentVolume").items()
           if (pv["spec"].get("csi") or {}).get("driver") == "driver.longhorn.io"}
    vols, engines, reps = by_name(fx, "Volume", LH), by_name(fx, "Engine", LH), by_name(fx, "Replica", LH)
    assert set(vols) == set(pvs) and len(vols) >= 25
    pods = consumers(fx)
    ims = {im["spec"]["nodeID"]: im for im in fx.objects_of("InstanceManager", LH)}
    im_pods = {p["metadata"]["name"]: p for p in fx.objects_of("Pod", LH)}
    for name, v in vols.items():
        pv = pvs[name]
        assert pv["spec"]["csi"]["volumeHandle"] == name
        ks = v["status"]["kubernetesStatus"]
        claim = (ks["namespace"], ks["pvcName"])
        assert pv["spec"]["claimRef"]["name"] == ks["pvcName"]
        node = v["status"]["currentNodeID"]
        assert v["status"]["state"] == "attached" and v["status"]["robustness"] == "healthy"
        assert v["spec"]["nodeID"] == node and v["status"]["ownerID"] == node
        assert int(v["spec"]["size"]) > 0 and 0 < v["status"]["actualSize"] <= int(v["spec"]["size"])
        users = pods.get(claim, [])
        assert [w["podName"] for w in ks["workloadsStatus"]] == [p["metadata"]["name"] for p in users]
        if claim in RWX_CLAIMS:
            assert v["spec"]["accessMode"] == "rwx"
            sm_pod = im_pods[f"share-manager-{name}"]
            assert sm_pod["spec"]["nodeName"] == node          # attached where the NFS server runs
            assert v["status"]["shareEndpoint"].startswith("nfs://")
        else:
            assert v["spec"]["accessMode"] == "rwo"
            assert {p["spec"]["nodeName"] for p in users} == {node}
        e = engines[f"{name}-e-0"]
        assert e["spec"]["nodeID"] == node and e["status"]["currentState"] == "running"
        assert e["metadata"]["ownerReferences"][0]["kind"] == "Volume"
        assert e["status"]["instanceManagerName"] == ims[node]["metadata"]["name"]
        mine = {n: r for n, r in reps.items() if r["spec"]["volumeName"] == name}
        nodes = [r["spec"]["nodeID"] for r in mine.values()]
        assert len(mine) == v["spec"]["numberOfReplicas"] in (2, 3)
        assert len(set(nodes)) == len(nodes), f"{name}: two replicas on one node"
        assert set(e["status"]["replicaModeMap"]) == set(mine)
        assert set(e["status"]["replicaModeMap"].values()) == {"RW"}
        for rn, r in mine.items():
            im = ims[r["spec"]["nodeID"]]
            assert r["status"]["instanceManagerName"] == im["metadata"]["name"]
            assert e["spec"]["replicaAddressMap"][rn] == f"{im['status']['ip']}:{r['status']['port']}"
            assert rn in im["status"]["instanceReplicas"]
            assert r["metadata"]["labels"]["longhornvolume"] == name
            assert r["spec"]["healthyAt"] and not r["spec"]["failedAt"]


def test_replicas_are_spread_and_some_volumes_have_none_beside_their_engine(fx):
    vols = by_name(fx, "Volume", LH)
    reps = list(fx.objects_of("Replica", LH))
    per_node = Counter(r["spec"]["nodeID"] for r in reps)
    assert set(per_node) == {"set-hog", "fast-skunk", "fast-heron"}
    assert min(per_node.values()) >= 15
    counts = Counter(v["spec"]["numberOfReplicas"] for v in vols.values())
    assert counts[2] >= 5 and counts[3] >= 5
    remote_only = [n for n, v in vols.items()
                   if v["status"]["currentNodeID"] not in {r["spec"]["nodeID"] for r in reps
                                                          if r["spec"]["volumeName"] == n}]
    assert remote_only, "some volume must depend on other nodes only (it faults without the network)"


def test_instance_managers_are_owned_and_named_as_longhorn_does(fx):
    pods = by_name(fx, "Pod", LH)
    image = "longhornio/longhorn-instance-manager:v1.7.2"
    ims = list(fx.objects_of("InstanceManager", LH))
    assert sorted(im["spec"]["nodeID"] for im in ims) == sorted(n.name for n in fx.nodes)
    for im in ims:
        node = im["spec"]["nodeID"]
        name = im["metadata"]["name"]
        assert name == "instance-manager-" + hashlib.sha512((node + image + "v1").encode()).hexdigest()[:32]
        assert im["metadata"]["labels"]["longhorn.io/component"] == "instance-manager"
        assert im["metadata"]["labels"]["longhorn.io/data-engine"] == "v1"
        pod = pods[name]
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["apiVersion"], ref["kind"], ref["name"], ref["controller"]) == \
            ("longhorn.io/v1beta2", "InstanceManager", name, True)
        assert pod["spec"]["nodeName"] == node
        assert pod["metadata"]["labels"]["longhorn.io/component"] == "instance-manager"
        assert im["status"]["ip"] == pod["status"]["podIP"]
        assert im["status"]["currentState"] == "running"


def test_rwx_claims_are_served_by_share_managers(fx):
    pvcs = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in fx.objects_of("PersistentVolumeClaim")}
    sms = by_name(fx, "ShareManager", LH)
    services = by_name(fx, "Service", LH)
    pods = by_name(fx, "Pod", LH)
    users = consumers(fx)
    assert len(RWX_CLAIMS) == len(sms) == 3
    for key in RWX_CLAIMS:
        pvc = pvcs[key]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert len({p["spec"]["nodeName"] for p in users[key]}) > 1    # why it must be RWX
        vol = pvc["spec"]["volumeName"]
        assert sms[vol]["status"]["state"] == "running"
        (ref,) = pods[f"share-manager-{vol}"]["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"]) == ("ShareManager", vol)
        assert services[vol]["spec"]["ports"][0]["port"] == 2049
    # every other Longhorn claim mounted on several nodes would be a Multi-Attach error
    for key, ps in users.items():
        if pvcs[key]["spec"]["storageClassName"] == "longhorn" and key not in RWX_CLAIMS:
            assert len({p["spec"]["nodeName"] for p in ps}) == 1, key


def test_settings_and_engine_image_refcount(fx):
    settings = by_name(fx, "Setting", LH)
    for name, value in SETTINGS.items():
        assert settings[name]["value"] == value
    (ei,) = fx.objects_of("EngineImage", LH)
    n = sum(len(list(fx.objects_of(k, LH))) for k in ("Volume", "Engine", "Replica"))
    assert ei["status"]["refCount"] == n


def test_longhorn_crds_are_the_v1_7_2_ones(fx):
    crds = by_name(fx, "CustomResourceDefinition")
    vol = crds["volumes.longhorn.io"]
    assert vol["spec"]["names"]["shortNames"] == ["lhv"]
    assert "categories" not in vol["spec"]["names"]
    assert vol["metadata"]["labels"] == {"longhorn-manager": ""}
    versions = {v["name"]: v for v in vol["spec"]["versions"]}
    assert set(versions) == {"v1beta1", "v1beta2"} and versions["v1beta2"]["storage"]
    assert [c["name"] for c in versions["v1beta2"]["additionalPrinterColumns"]] == \
        ["Data Engine", "State", "Robustness", "Scheduled", "Size", "Node", "Age"]
    assert [c["name"] for c in versions["v1beta1"]["additionalPrinterColumns"]] == \
        ["State", "Robustness", "Scheduled", "Size", "Node", "Age"]
    cols = {c["name"]: c["jsonPath"] for c in versions["v1beta2"]["additionalPrinterColumns"]}
    assert cols["State"] == ".status.state" and cols["Robustness"] == ".status.robustness"
    for plural, short in (("engines", "lhe"), ("replicas", "lhr"), ("instancemanagers", "lhim"),
                          ("engineimages", "lhei"), ("sharemanagers", "lhsm"), ("settings", "lhs")):
        crd = crds[f"{plural}.longhorn.io"]
        assert crd["spec"]["names"]["shortNames"] == [short]
        assert {v["name"] for v in crd["spec"]["versions"]} == {"v1beta1", "v1beta2"}
    rep = {v["name"]: v for v in crds["replicas.longhorn.io"]["spec"]["versions"]}
    assert [c["name"] for c in rep["v1beta2"]["additionalPrinterColumns"]] == \
        ["Data Engine", "State", "Node", "Disk", "InstanceManager", "Image", "Age"]
