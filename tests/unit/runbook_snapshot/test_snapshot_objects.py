"""Cleaning what the snapshot reads through the API: nothing secret is kept."""
from __future__ import annotations

import json

import pytest

from runbook.redact import MASK
from runbook.snapshot_objects import (ADDON_GROUPS, BUILTIN, LAST_APPLIED, addon_types, clean,
                                      crd_resource, missing_owner_types, secret_entry)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

JOIN = "K10" + "ab" * 32 + "::server:" + "cd" * 16
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"


def _pod(env: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a", "managedFields": [{"manager": "kubectl"}],
                         "annotations": {LAST_APPLIED: json.dumps({"env": "DB_PASSWORD=hunter22"}),
                                         "keep": "me"}},
            "spec": {"containers": [{"name": "c", "image": "app:1", "env": env}],
                     "initContainers": [{"name": "i", "image": "init:1",
                                         "env": [{"name": "API_TOKEN", "value": "tok-123456"}]}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5"}}


def test_pod_env_secrets_masked_the_rest_kept_and_noise_dropped() -> None:
    src = _pod([{"name": "DB_PASSWORD", "value": "hunter22"}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}])
    before = json.dumps(src)
    out = clean(src)
    assert json.dumps(src) == before, "the caller's object is not changed"
    env = {e["name"]: e.get("value") for e in out["spec"]["containers"][0]["env"]}
    assert env == {"DB_PASSWORD": MASK, "LOG_LEVEL": "debug", "DB_USER": None}
    assert out["spec"]["initContainers"][0]["env"][0]["value"] == MASK
    assert "managedFields" not in out["metadata"]
    assert out["metadata"]["annotations"] == {"keep": "me"}
    assert out["status"] == src["status"] and out["spec"]["containers"][0]["image"] == "app:1"
    assert "hunter22" not in json.dumps(out) and "tok-123456" not in json.dumps(out)


def test_workload_templates_are_masked_too() -> None:
    tmpl = {"spec": {"containers": [{"name": "c", "env": [{"name": "SECRET_KEY", "value": "s3cr3t!!"}]}]}}
    for kind, spec in (("Deployment", {"template": tmpl}), ("CronJob", {"jobTemplate": {"spec": {"template": tmpl}}})):
        out = clean({"kind": kind, "metadata": {"name": "d"}, "spec": json.loads(json.dumps(spec))})
        assert "s3cr3t!!" not in json.dumps(out), kind


def test_configmap_values_redacted_binary_values_dropped() -> None:
    out = clean({"kind": "ConfigMap", "metadata": {"name": "c"},
                 "data": {"app.yaml": "user: admin\npassword: hunter22\n", "join": f"token: {JOIN}",
                          "plain": "replicas: 3"},
                 "binaryData": {"blob.bin": "aGVsbG8="}})
    assert out["data"]["app.yaml"] == f"user: admin\npassword: {MASK}\n"
    assert JOIN not in json.dumps(out)
    assert out["data"]["plain"] == "replicas: 3"
    assert out["binaryData"] == {"blob.bin": ""}


def test_any_object_with_a_secret_shaped_value_is_masked_leaf_by_leaf() -> None:
    app = {"kind": "Application", "metadata": {"name": "x"},
           "spec": {"source": {"helm": {"values": f"adminPassword: abc\nkey: |\n  {PEM}\n"},
                               "repoURL": "https://git.example/x.git"},
                    "auth": {"password": "p4ssw0rd", "username": "u"}}}
    out = clean(app)
    text = json.dumps(out)
    assert "adminPassword: abc" not in text and f"adminPassword: {MASK}" in text
    assert "p4ssw0rd" not in text and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" not in text
    assert out["spec"]["source"]["repoURL"] == "https://git.example/x.git"
    assert out["spec"]["auth"]["username"] == "u" and out["spec"]["auth"]["password"] == MASK
    json.loads(text)   # still JSON: masking works on values, never on the serialised text


def test_secret_entry_keeps_no_value_and_no_annotation() -> None:
    s = {"metadata": {"name": "tls", "namespace": "web", "labels": {"app": "web"},
                      "annotations": {LAST_APPLIED: '{"data": {"tls.key": "LS0t"}}'}},
         "type": "kubernetes.io/tls", "data": {"tls.crt": "LS0tQ1JU", "tls.key": "LS0tS0VZ"}}
    assert secret_entry(s) == {"namespace": "web", "name": "tls", "type": "kubernetes.io/tls",
                               "labels": {"app": "web"}, "keys": 2}


def _crd(group: str, kind: str, plural: str, versions: list[tuple[str, bool]], scope: str = "Namespaced") -> dict:
    return {"spec": {"group": group, "scope": scope, "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": v, "served": True, "storage": st} for v, st in versions]}}


def test_custom_resources_read_at_their_storage_version() -> None:
    crds = [_crd("longhorn.io", "Volume", "volumes", [("v1beta1", False), ("v1beta2", True)]),
            _crd("monitoring.coreos.com", "Prometheus", "prometheuses", [("v1", True)]),
            _crd("metallb.io", "IPAddressPool", "ipaddresspools", [("v1beta1", True)])]
    assert crd_resource(crds[0]) == ("longhorn.io/v1beta2", "Volume", "volumes", True)
    assert addon_types(crds) == [("longhorn.io/v1beta2", "Volume", "volumes", True),
                                 ("metallb.io/v1beta1", "IPAddressPool", "ipaddresspools", True)]
    assert "monitoring.coreos.com" not in ADDON_GROUPS


def test_owners_of_what_was_read_are_read_too() -> None:
    crds = [_crd("monitoring.coreos.com", "Prometheus", "prometheuses", [("v1", True)]),
            _crd("example.io", "Unrelated", "unrelateds", [("v1", True)])]
    sts = {"metadata": {"name": "prometheus-k8s", "ownerReferences": [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "name": "k8s"}]}}
    pod = {"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                          "name": "prometheus-k8s"}]}}
    read = {("apps/v1", "StatefulSet"): [sts], ("v1", "Pod"): [pod]}
    assert missing_owner_types(read, crds) == [("monitoring.coreos.com/v1", "Prometheus", "prometheuses", True)]
    read[("monitoring.coreos.com/v1", "Prometheus")] = []
    assert missing_owner_types(read, crds) == []


def test_the_issue_s_list_is_read() -> None:
    kinds = {k for _, k, _, _ in BUILTIN}
    assert {"Node", "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
            "Service", "Endpoints", "EndpointSlice", "Ingress", "NetworkPolicy",
            "PersistentVolumeClaim", "PersistentVolume", "StorageClass",
            "CustomResourceDefinition"} <= kinds
    assert {"argoproj.io", "velero.io", "metallb.io", "longhorn.io"} <= set(ADDON_GROUPS)
    assert "Secret" not in kinds, "Secrets are read apart, by name and type only"


def test_the_cluster_cidr_is_what_the_nodes_prove() -> None:
    import ipaddress

    from runbook.snapshot import _cluster_cidr

    nets = [ipaddress.ip_network(c) for c in ("10.64.0.0/24", "10.65.243.0/24")]
    derived: dict[str, str] = {"cluster-cidr": "k3s default (the server's config was not read)"}
    assert _cluster_cidr("10.42.0.0/16", nets, derived) == "10.64.0.0/15"
    assert "smallest network" in derived["cluster-cidr"]
    inside = [ipaddress.ip_network("10.42.3.0/24")]
    assert _cluster_cidr("10.42.0.0/16", inside, {}) == "10.42.0.0/16"
    assert _cluster_cidr("10.42.0.0/16", [], {}) == "10.42.0.0/16"


def test_the_service_cidr_holds_every_cluster_ip() -> None:
    from runbook.snapshot import _service_cidr

    svcs = [{"spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"]}},
            {"spec": {"clusterIP": "10.96.12.7"}}, {"spec": {"clusterIP": "None"}}]
    derived: dict[str, str] = {}
    assert _service_cidr("10.43.0.0/16", svcs, derived) == "10.96.0.0/16"
    assert "every Service's cluster IP" in derived["service-cidr"]
    assert _service_cidr("10.96.0.0/12", svcs, {}) == "10.96.0.0/12"
