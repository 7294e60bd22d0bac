"""The official ``kubernetes`` Python client against the twin's API server."""
from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from twin_api_helpers import APPLICATION_CRD, application

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def k8s(api):
    return config.new_client_from_config(config_file=str(api.kubeconfig))


def test_list_and_page_through_pods(api, k8s):
    v1 = client.CoreV1Api(k8s)
    full = v1.list_pod_for_all_namespaces()
    names = [(p.metadata.namespace, p.metadata.name) for p in full.items]
    assert len(names) == 16 and names == sorted(names)
    assert int(full.metadata.resource_version) > 0
    seen, token, pages = [], None, 0
    while True:
        page = v1.list_pod_for_all_namespaces(limit=5, _continue=token)
        pages += 1
        seen += [(p.metadata.namespace, p.metadata.name) for p in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == len(names) - len(seen)
    assert pages == 4 and seen == names
    labelled = v1.list_namespaced_pod("demo", label_selector="tier=front", limit=2)
    assert len(labelled.items) == 2 and labelled.metadata._continue
    assert all(p.metadata.uid and p.metadata.creation_timestamp for p in full.items)


def test_create_answers_201_and_conflicts_409(api, k8s):
    v1 = client.CoreV1Api(k8s)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="pc-1"), data={"a": "1"})
    _, status, _ = v1.create_namespaced_config_map_with_http_info("default", body)
    assert status == 201
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("default", body)
    assert e.value.status == 409 and "AlreadyExists" in e.value.body
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("no-such-ns", body)
    assert e.value.status == 404
    cm = v1.read_namespaced_config_map("pc-1", "default")
    cm.data = {"a": "2"}
    updated = v1.replace_namespaced_config_map("pc-1", "default", cm)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"a": "stale"}   # still the old resourceVersion
    with pytest.raises(ApiException) as e:
        v1.replace_namespaced_config_map("pc-1", "default", cm)
    assert e.value.status == 409 and "Conflict" in e.value.body


def test_custom_object_create_and_patch(api, k8s):
    ext = client.ApiextensionsV1Api(k8s)
    co = client.CustomObjectsApi(k8s)
    try:
        ext.create_custom_resource_definition(APPLICATION_CRD)
    except ApiException as e:   # another module's test may have created it
        assert e.status == 409
    created = co.create_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications",
                                                 application("pc-app", automated={"selfHeal": True}))
    assert created is not None and created["metadata"]["uid"]
    patched = co.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", "pc-app",
        {"spec": {"syncPolicy": {"automated": None}}})
    assert "automated" not in patched["spec"]["syncPolicy"]
    apps = co.list_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications")
    assert apps["kind"] == "ApplicationList"
    assert "pc-app" in [a["metadata"]["name"] for a in apps["items"]]


def test_strategic_merge_patch_merges_containers_by_name(api, k8s):
    apps = client.AppsV1Api(k8s)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "smp", "namespace": "default"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "smp"}},
                    "template": {"metadata": {"labels": {"app": "smp"}}, "spec": {"containers": [
                        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                        {"name": "b", "image": "b:1"}]}}}}
    apps.create_namespaced_deployment("default", dep)
    out = apps.patch_namespaced_deployment("smp", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}}})
    cs = {c.name: c for c in out.spec.template.spec.containers}
    assert set(cs) == {"a", "b"} and cs["a"].image == "a:1"
    assert {e.name for e in cs["a"].env} == {"X", "Y"}
    assert out.metadata.generation == 2
    scale = apps.patch_namespaced_deployment_scale("smp", "default", {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment("smp", "default").spec.replicas == 3
    # status is a subresource: a main-resource patch does not change it
    apps.patch_namespaced_deployment_status("smp", "default", {"status": {"readyReplicas": 1}})
    apps.patch_namespaced_deployment("smp", "default", {"status": {"readyReplicas": 7}})
    assert apps.read_namespaced_deployment("smp", "default").status.ready_replicas == 1


def test_dry_run_does_not_persist(api, k8s):
    v1 = client.CoreV1Api(k8s)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry"), data={"a": "1"})
    out = v1.create_namespaced_config_map("default", body, dry_run="All")
    assert out.metadata.name == "dry"
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_config_map("dry", "default")
    assert e.value.status == 404


def test_watch_with_resource_version_and_timeout(api, k8s):
    v1 = client.CoreV1Api(k8s)
    rv = v1.list_namespaced_config_map("default").metadata.resource_version

    def writer() -> None:
        time.sleep(0.3)
        v1.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="watched"), data={"a": "1"}))
        v1.patch_namespaced_config_map("watched", "default", {"data": {"a": "2"}})
        v1.delete_namespaced_config_map("watched", "default")

    t = threading.Thread(target=writer)
    t.start()
    events = []
    t0 = time.monotonic()
    for ev in watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                                   timeout_seconds=2):
        if ev["object"].metadata.name == "watched":
            events.append((ev["type"], (ev["object"].data or {}).get("a")))
    t.join()
    assert events == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
    # the stream ended because the server closed it at timeoutSeconds, not before
    assert time.monotonic() - t0 >= 1.5


def test_watch_from_an_expired_version_gives_410(api, k8s):
    v1 = client.CoreV1Api(k8s)
    store = api.rt.store
    cm_type = store.lookup("", "v1", "configmaps")
    # Push the history ring of configmaps past its size, so version 1 is gone.
    size = api.call(lambda: store._bucket(cm_type).history.maxlen)

    def churn() -> None:
        store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "churn", "namespace": "default"}, "data": {"i": "0"}})
        for i in range(size + 1):
            store.mutate(cm_type, "default", "churn", lambda o, i=i: o.__setitem__("data", {"i": str(i + 1)}))
    api.call(churn)
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version="1",
                                      timeout_seconds=2):
            pass
    assert e.value.status == 410


def test_watch_bookmarks_reach_the_python_client(api, k8s):
    v1 = client.CoreV1Api(k8s)
    rv = v1.list_namespaced_secret("default").metadata.resource_version
    types = [ev["type"] for ev in watch.Watch().stream(
        v1.list_namespaced_secret, "default", resource_version=rv, allow_watch_bookmarks=True,
        timeout_seconds=3)]
    assert types and set(types) == {"BOOKMARK"}


def test_pods_get_the_default_toleration_seconds(api, k8s):
    """DefaultTolerationSeconds: 300 s for not-ready and unreachable unless the pod has its own."""
    v1 = client.CoreV1Api(k8s)
    ready, unreach = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"

    def pod(name: str, tolerations: list | None) -> client.V1Pod:
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox:1.36")], tolerations=tolerations))

    def tols(p: client.V1Pod) -> list[tuple]:
        return [(t.key, t.operator, t.effect, t.toleration_seconds) for t in p.spec.tolerations or []]

    plain = v1.create_namespaced_pod("default", pod("tol-plain", None))
    assert tols(plain) == [(ready, "Exists", "NoExecute", 300), (unreach, "Exists", "NoExecute", 300)]
    assert tols(v1.read_namespaced_pod("tol-plain", "default")) == tols(plain)   # stored, not just echoed
    own = v1.create_namespaced_pod("default", pod("tol-own", [
        client.V1Toleration(key=ready, operator="Exists", effect="NoExecute", toleration_seconds=60),
        client.V1Toleration(key="dedicated", operator="Equal", value="gpu", effect="NoSchedule")]))
    assert tols(own) == [(ready, "Exists", "NoExecute", 60), ("dedicated", "Equal", "NoSchedule", None),
                         (unreach, "Exists", "NoExecute", 300)]
    everything = v1.create_namespaced_pod("default", pod("tol-all", [client.V1Toleration(operator="Exists")]))
    assert tols(everything) == [(None, "Exists", None, None)]      # tolerates every taint already
    dry = v1.create_namespaced_pod("default", pod("tol-dry", []), dry_run="All")
    assert [t[0] for t in tols(dry)] == [ready, unreach]
    # a status write (a subresource) is not admitted as a pod: tolerations untouched
    plain.status = client.V1PodStatus(phase="Pending")
    st = v1.replace_namespaced_pod_status("tol-plain", "default", plain)
    assert tols(st) == tols(plain)
    for name in ("tol-plain", "tol-own", "tol-all"):
        v1.delete_namespaced_pod(name, "default", grace_period_seconds=0)
