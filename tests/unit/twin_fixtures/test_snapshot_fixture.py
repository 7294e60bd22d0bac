"""A twin's fixture from a snapshot: the shipped minicloud archive, and the rules for gaps."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import snapshot_format as sf
from twin.fixtures import load, node_objects
from twin.fixtures.snapshot_fixture import (JOIN_TOKEN_MARK, MINICLOUD_SNAPSHOT, SnapshotNodeSpec,
                                            build_fixture, load_snapshot)
from twin.fixtures.shapes import SANDBOX_ANNOTATION

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

REGENERATE = ("runbook snapshot --of-twin minicloud --out lib/twin/fixtures/minicloud.snapshot.tar.gz "
              "--overwrite")


def _keys(objects: list[dict]) -> Counter:
    return Counter((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects)


def test_the_shipped_minicloud_snapshot_is_the_builtin_fixture(invariants) -> None:
    builtin = load("minicloud")
    fx, assumed = load_snapshot(MINICLOUD_SNAPSHOT)
    assert fx.cluster["name"] == "minicloud"
    assert [(n.name, n.role, n.ip, n.pod_cidr, n.kernel, n.os_image, n.labels["topology.kubernetes.io/zone"])
            for n in sorted(fx.nodes, key=lambda n: n.name)] == [
        (n.name, n.role, n.ip, n.pod_cidr, n.kernel, n.os_image, n.labels["topology.kubernetes.io/zone"])
        for n in sorted(builtin.nodes, key=lambda n: n.name)]
    for key in ("k3s_version", "cluster_cidr", "service_cidr", "cluster_dns", "server_url",
                "flannel_backend", "disable", "lb_pool", "ingress_ip", "ingress_domain"):
        assert fx.cluster[key] == builtin.cluster[key], key
    assert _keys(fx.objects) == _keys(builtin.objects), f"the shipped snapshot is stale: {REGENERATE}"
    counts = invariants(fx)
    assert counts == invariants(builtin)
    # only the rules no archive can tell: minicloud's archive lacks nothing else
    assert [a.rule for a in assumed] == ["images", "ports", "volumes", "ingress"]
    server = next(n for n in fx.nodes if n.role == "server")
    agent = next(n for n in fx.nodes if n.role == "agent")
    assert isinstance(agent, SnapshotNodeSpec)
    assert f"token: {JOIN_TOKEN_MARK}" in agent.k3s_files["/etc/rancher/k3s/config.yaml"]
    assert "token: K10join" in agent.k3s_files_for("K10join")["/etc/rancher/k3s/config.yaml"]
    assert "disable:" in server.k3s_files["/etc/rancher/k3s/config.yaml"]


# ------------------------------------------------------------------- rules, on a small archive
def _pod(name: str, node: str | None, *, phase: str = "Running", ready: bool = True, ip: str | None = None,
         owner: tuple[str, str] | None = None, host: bool = False) -> dict:
    md: dict = {"name": name, "namespace": "shop", "uid": "u-" + name, "resourceVersion": "7"}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1" if owner[0] != "Job" else "batch/v1",
                                  "kind": owner[0], "name": owner[1], "uid": "old", "controller": True}]
    spec: dict = {"containers": [{"name": "c", "image": "unknown/image:1"}], "hostNetwork": host}
    if node:
        spec["nodeName"] = node
    st: dict = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        st["podIP"] = ip
    return {"metadata": md, "spec": spec, "status": st}


def _archive(tmp: Path) -> Path:
    s = sf.Snapshot(
        cluster={"name": "shopcloud", "k3s_version": "v1.30.6+k3s1", "cluster_cidr": "10.42.0.0/16",
                 "service_cidr": "10.43.0.0/16", "cluster_dns": "10.43.0.10",
                 "server_url": "https://192.168.1.10:6443", "flannel_backend": "host-gw", "disable": ["traefik"]},
        nodes=[
            {"name": "cp-1", "role": "server", "internal_ip": "192.168.1.10", "pod_cidr": "10.42.0.0/24",
             "kernel": "6.1.0-28-amd64", "os_image": "Debian GNU/Linux 12 (bookworm)",
             "capacity": {"cpu": "4", "memory": "8010244Ki"},
             "labels": {"node-role.kubernetes.io/control-plane": "true"},
             "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
             "host": {"reachable": True, "k3s_config_files": {
                 "/etc/rancher/k3s/config.yaml": "flannel-backend: host-gw\ntoken: ********\n",
                 "/etc/rancher/k3s/config.yaml.d/50-san.yaml": "tls-san+: [k3s.shop.example]\n"}}},
            {"name": "w-1", "role": "agent", "internal_ip": "192.168.1.11", "pod_cidr": "10.42.1.0/24",
             "host": {"reachable": False, "reason": "not in the params file's nodes"}},
        ],
        secrets=[{"namespace": "shop", "name": "db", "type": "Opaque", "labels": {"app": "db"}, "keys": 2},
                 {"namespace": "shop", "name": "sh.helm.release.v1.shop.v3", "type": "helm.sh/release.v1",
                  "labels": {"owner": "helm"}, "keys": 1}])
    s.add_objects("v1", "Namespace", "namespaces", False, [{"metadata": {"name": "default"}}])
    s.add_objects("apps/v1", "ReplicaSet", "replicasets", True, [
        {"metadata": {"name": "web-abc", "namespace": "shop", "generation": 4,
                      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "x"}]},
         "spec": {"replicas": 1}, "status": {"observedGeneration": 4}}])
    s.add_objects("batch/v1", "Job", "jobs", True, [{"metadata": {"name": "migrate", "namespace": "shop"}}])
    s.add_objects("v1", "Pod", "pods", True, [
        _pod("web-abc-1", "w-1", ip="10.42.1.5", owner=("ReplicaSet", "web-abc")),
        _pod("web-abc-2", "w-1", ready=False, ip="10.42.1.6", owner=("ReplicaSet", "web-abc")),
        _pod("migrate-x", "w-1", phase="Succeeded", ip="10.42.1.7", owner=("Job", "migrate")),
        _pod("queued", None, phase="Pending"),
        _pod("creating", "cp-1", phase="Pending"),
        _pod("gone", "w-9", ip="10.42.9.2"),
        _pod("exporter", "w-1", host=True, ip="192.168.1.11"),
    ])
    s.add_objects("v1", "Service", "services", True, [
        {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"selector": {"app": "web"}, "clusterIP": "10.43.0.50",
                                                                     "ports": [{"port": 80}]}},
        {"metadata": {"name": "legacy", "namespace": "shop"}, "spec": {"clusterIP": "10.43.0.51", "ports": [{"port": 5432}]}}])
    s.add_objects("v1", "Endpoints", "endpoints", True, [
        {"metadata": {"name": "web", "namespace": "shop"}}, {"metadata": {"name": "legacy", "namespace": "shop"}}])
    s.add_objects("v1", "ConfigMap", "configmaps", True, [
        {"metadata": {"name": "old", "namespace": "shop", "deletionTimestamp": "2026-01-01T00:00:00Z"}}])
    path = tmp / "shopcloud.tar.gz"
    sf.write(path, s)
    return path


def _served(av: str, kind: str) -> bool:
    return kind != "Job"      # as a twin that does not serve batch/v1


def test_every_gap_is_filled_by_a_rule_and_recorded(tmp_path: Path) -> None:
    fx, assumed = build_fixture(sf.read(_archive(tmp_path)), served=_served)
    rules = {a.rule: a for a in assumed}
    objs = {(o["kind"], o["metadata"]["name"]): o for o in fx.objects}

    pods = {n: o for (k, n), o in objs.items() if k == "Pod"}
    assert set(pods) == {"web-abc-1", "web-abc-2", "migrate-x", "queued", "creating", "exporter"}
    assert rules["pods-off-node"].examples == ["shop/gone on w-9"]
    # started pods keep their sandbox (from the cluster's CNI); the others start in the twin
    assert {n for n, p in pods.items() if SANDBOX_ANNOTATION in (p["metadata"].get("annotations") or {})} == {
        "web-abc-1", "web-abc-2", "migrate-x"}
    assert pods["web-abc-1"]["metadata"]["annotations"][SANDBOX_ANNOTATION] == "flannel"
    assert rules["pods-ready"].examples == ["shop/web-abc-2"]
    assert rules["pods-start"].examples == ["shop/creating"]
    assert rules["pods-pending"].examples == ["shop/queued"]
    # the store assigns uids and versions; owners are found again by name, or dropped
    assert all("uid" not in o["metadata"] and "resourceVersion" not in o["metadata"] for o in fx.objects)
    assert pods["web-abc-1"]["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "controller": True}]
    assert "ownerReferences" not in pods["migrate-x"]["metadata"]
    assert "ownerReferences" not in objs[("ReplicaSet", "web-abc")]["metadata"]
    assert rules["owners-dropped"].count == 2
    assert objs[("ReplicaSet", "web-abc")]["metadata"]["generation"] == 1
    assert objs[("ReplicaSet", "web-abc")]["status"]["observedGeneration"] == 1
    assert rules["kind-not-served"].examples == ["1 Job (batch/v1)"]
    # Endpoints of a Service with a selector are the twin's to derive; a manual one stays
    assert ("Endpoints", "legacy") in objs and ("Endpoints", "web") not in objs
    assert ("ConfigMap", "old") not in objs and rules["deleting"].count == 1
    assert ("Namespace", "shop") in objs and rules["namespaces"].examples == ["shop"]
    # Secrets by name and type, never data; helm's release records are not rebuilt
    assert objs[("Secret", "db")] == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {},
                                      "metadata": {"name": "db", "namespace": "shop", "labels": {"app": "db"}}}
    assert ("Secret", "sh.helm.release.v1.shop.v3") not in objs and rules["secrets-skipped"].count == 1

    # nodes: facts, taints, own config files with the twin's token, defaults where missing
    cp, w = fx.node("cp-1"), fx.node("w-1")
    assert (cp.role, cp.ip, cp.cpu, cp.memory, cp.os_image) == (
        "server", "192.168.1.10", "4", "8010244Ki", "Debian GNU/Linux 12 (bookworm)")
    assert cp.k3s_files_for("K10abc::server:def") == {
        "/etc/rancher/k3s/config.yaml": "flannel-backend: host-gw\ntoken: K10abc::server:def\n",
        "/etc/rancher/k3s/config.yaml.d/50-san.yaml": "tls-san+: [k3s.shop.example]\n"}
    assert w.k3s_files == {} and rules["node-config"].examples == ["w-1 (not in the params file's nodes)"]
    assert rules["node-facts"].count == 2          # w-1's kernel and OS image
    node = {n["metadata"]["name"]: n for n in node_objects(fx)}
    assert node["cp-1"]["spec"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert "taints" not in node["w-1"]["spec"]
    assert fx.cluster["flannel_backend"] == "host-gw" and fx.cluster["name"] == "shopcloud"
    assert len(json.dumps([a.line() for a in assumed])) < 5000


def test_a_topology_is_data_two_servers_and_no_add_ons(tmp_path: Path) -> None:
    d = tmp_path / "ha"
    (d / "objects").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"format": sf.FORMAT, "version": "1.0"}))
    (d / "cluster.json").write_text(json.dumps({"name": "ha", "cluster_cidr": "10.52.0.0/16",
                                                "service_cidr": "10.53.0.0/16", "cluster_dns": "10.53.0.10"}))
    (d / "nodes.json").write_text(json.dumps([
        {"name": f"s{i}", "role": "server", "internal_ip": f"10.1.0.{i}", "pod_cidr": f"10.52.{i}.0/24"}
        for i in (1, 2)] + [{"name": "a1", "role": "agent", "internal_ip": "10.1.0.9"}]))
    fx, assumed = load_snapshot(d)
    assert [n.role for n in fx.nodes] == ["server", "server", "agent"]
    assert fx.node("a1").pod_cidr == "10.52.0.0/24", "the first free /24 of the cluster CIDR"
    assert fx.cluster["server_url"] == "https://10.1.0.1:6443"
    assert {a.rule for a in assumed} >= {"cluster-defaults", "node-pod-cidr", "node-config"}
    assert not fx.objects_of("Application")


def test_an_archive_that_cannot_make_a_cluster_says_why(tmp_path: Path) -> None:
    from twin.fixtures import FixtureError

    d = tmp_path / "bad"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": sf.FORMAT, "version": "1.0"}))
    (d / "cluster.json").write_text('{"name": "bad"}')
    (d / "nodes.json").write_text('[{"name": "n1", "role": "agent", "internal_ip": "10.0.0.1"}]')
    with pytest.raises(FixtureError, match="no server node"):
        load_snapshot(d)
