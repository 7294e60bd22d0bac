"""HTTP-level semantics of the twin's API server, checked with ``requests``."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

import pytest
import requests

from twin_api_helpers import APPLICATION_CRD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"


@pytest.fixture(scope="module")
def http(api):
    s = requests.Session()
    s.trust_env = False   # REQUESTS_CA_BUNDLE would otherwise override our CA
    s.headers["Authorization"] = f"Bearer {api.token}"
    base, ca = api.url, str(api.ca_path)

    class H:
        def __getattr__(self, method):
            return lambda path, **kw: s.request(method.upper(), base + path, timeout=30, verify=ca, **kw)
    return H()


def assert_status(r: requests.Response, code: int, reason: str) -> dict:
    assert r.status_code == code, r.text
    body = r.json()
    assert (body["kind"], body["apiVersion"], body["status"], body["code"], body["reason"]) == \
        ("Status", "v1", "Failure", code, reason)
    assert body["message"]
    return body


def test_version_and_health_need_the_token_as_on_k3s(api, http):
    v = http.get("/version").json()
    assert v["gitVersion"].endswith("+k3s1") and v["major"] == "1"
    for p in ("/healthz", "/readyz", "/livez"):
        assert http.get(p).text == "ok"
        anon = requests.get(api.url + p, verify=str(api.ca_path), timeout=10)
        assert_status(anon, 401, "Unauthorized")


def test_discovery_documents(api, http):
    assert http.get("/api").json()["versions"] == ["v1"]
    core = http.get("/api/v1").json()
    assert core["groupVersion"] == "v1"
    res = {r["name"]: r for r in core["resources"]}
    assert res["pods"]["shortNames"] == ["po"] and res["pods"]["namespaced"] is True
    assert res["nodes"]["namespaced"] is False and res["pods"]["singularName"] == "pod"
    assert res["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert res["pods/eviction"]["group"] == "policy"
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    for g in ("apps", "networking.k8s.io", "rbac.authorization.k8s.io", "policy", "apiextensions.k8s.io"):
        assert g in groups
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert apps["deployments/scale"]["kind"] == "Scale" and apps["deployments/scale"]["group"] == "autoscaling"
    assert apps["daemonsets"]["categories"] == ["all"]
    agg = http.get("/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"})
    assert "as=APIGroupDiscoveryList" in agg.headers["Content-Type"]
    items = {i["metadata"]["name"]: i for i in agg.json()["items"]}
    dep = next(r for r in items["apps"]["versions"][0]["resources"] if r["resource"] == "deployments")
    assert dep["scope"] == "Namespaced" and dep["responseKind"]["kind"] == "Deployment"
    assert_status(http.get("/apis/nope.example.com/v1"), 404, "NotFound")


def test_crds_appear_in_discovery_when_created(api, http):
    r = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=APPLICATION_CRD)
    assert r.status_code in (201, 409), r.text
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["argoproj.io"]["preferredVersion"]["groupVersion"] == "argoproj.io/v1alpha1"
    res = {x["name"]: x for x in http.get("/apis/argoproj.io/v1alpha1").json()["resources"]}
    assert res["applications"]["kind"] == "Application" and "app" in res["applications"]["shortNames"]


def test_openapi(api, http):
    r = http.get("/openapi/v2")
    assert r.status_code == 200 and r.json()["swagger"] == "2.0"
    pod = r.json()["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    r = http.get("/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert r.status_code == 200
    root = http.get("/openapi/v3").json()["paths"]
    assert root["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    doc = http.get(root["apis/apps/v1"]["serverRelativeURL"]).json()
    schemas = doc["components"]["schemas"]
    assert schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]["$ref"] == \
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas   # references resolved
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert http.get("/openapi/v3/apis/no.such/v1").status_code == 404


def test_errors_are_status_objects(api, http):
    assert_status(http.get("/no/such/path"), 404, "NotFound")
    assert_status(http.get("/api/v1/widgets"), 404, "NotFound")
    body = assert_status(http.get("/api/v1/namespaces/default/configmaps/absent"), 404, "NotFound")
    assert body["details"]["name"] == "absent"
    assert_status(http.post("/api/v1/namespaces/default/configmaps", data=b"{not json",
                            headers={"Content-Type": "application/json"}), 400, "BadRequest")
    assert_status(http.post("/api/v1/namespaces/default/configmaps",
                            json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
                  400, "BadRequest")
    assert_status(http.patch("/api/v1/namespaces/default/configmaps/absent", json={"data": {}},
                             headers={"Content-Type": "application/merge-patch+json"}), 404, "NotFound")
    assert_status(http.patch("/api/v1/namespaces/default/configmaps/absent", data=b"{}",
                             headers={"Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
    assert_status(http.get("/api/v1/pods?labelSelector=a%20in%20(("), 400, "BadRequest")


def test_crud_cluster_scoped_and_deletecollection(api, http):
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "crud"}})
    assert r.status_code == 201 and r.json()["metadata"]["uid"]
    for i in range(3):
        r = http.post("/api/v1/namespaces/crud/configmaps",
                      json={"metadata": {"name": f"c{i}", "labels": {"grp": "x" if i < 2 else "y"}}})
        assert r.status_code == 201
        assert r.json()["kind"] == "ConfigMap" and r.json()["apiVersion"] == "v1"
    r = http.delete("/api/v1/namespaces/crud/configmaps?labelSelector=grp%3Dx")
    assert r.status_code == 200 and sorted(i["metadata"]["name"] for i in r.json()["items"]) == ["c0", "c1"]
    left = http.get("/api/v1/namespaces/crud/configmaps").json()
    assert [i["metadata"]["name"] for i in left["items"]] == ["c2"]
    r = http.delete("/api/v1/namespaces/crud/configmaps/c2")
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "c2"
    # PUT of a cluster-scoped object, status preserved on the main resource
    ns = http.get("/api/v1/namespaces/crud").json()
    ns["metadata"]["labels"] = {"team": "a"}
    ns["status"] = {"phase": "Bogus"}
    out = http.put("/api/v1/namespaces/crud", json=ns).json()
    assert out["metadata"]["labels"] == {"team": "a"} and out["status"]["phase"] == "Active"


def test_apply_patch_creates_then_updates(api, http):
    path = "/api/v1/namespaces/default/configmaps/applied?fieldManager=helm&fieldValidation=Strict&force=false"
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n  b: '2'\n"
    r = http.patch(path, data=doc, headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 201, r.text
    rv1 = int(r.json()["metadata"]["resourceVersion"])
    r = http.patch(path, data=doc.replace("  b: '2'\n", ""), headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 200 and r.json()["data"] == {"a": "1"}
    assert int(r.json()["metadata"]["resourceVersion"]) > rv1
    r = http.patch("/api/v1/namespaces/default/configmaps/applied",
                   json=[{"op": "add", "path": "/data/c", "value": "3"}],
                   headers={"Content-Type": "application/json-patch+json"})
    assert r.json()["data"] == {"a": "1", "c": "3"}
    r = http.patch("/api/v1/namespaces/default/configmaps/applied?dryRun=All", json={"data": {"a": "9"}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.json()["data"]["a"] == "9"
    assert http.get("/api/v1/namespaces/default/configmaps/applied").json()["data"]["a"] == "1"
    r = http.patch("/api/v1/namespaces/default/configmaps/dry-applied?dryRun=All&fieldManager=x", data=doc.replace("name: applied", "name: dry-applied"),
                   headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 201
    assert http.get("/api/v1/namespaces/default/configmaps/dry-applied").status_code == 404


def test_table_output_and_include_object(api, http):
    t = http.get("/api/v1/namespaces/demo/pods?limit=3", headers={"Accept": TABLE}).json()
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"]["continue"] and len(t["rows"]) == 3
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    t = http.get("/api/v1/namespaces/demo/pods/web-00?includeObject=Object",
                 headers={"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"}).json()
    assert t["apiVersion"] == "meta.k8s.io/v1beta1"
    assert t["rows"][0]["object"]["spec"]["nodeName"] == "set-hog"
    pom = http.get("/api/v1/namespaces/demo/pods", headers={
        "Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"}).json()
    assert pom["kind"] == "PartialObjectMetadataList" and "spec" not in pom["items"][0]


def read_events(resp: requests.Response, until, limit_s: float = 10) -> list[dict]:
    out, t0 = [], time.monotonic()
    for line in resp.iter_lines():
        if line:
            out.append(json.loads(line))
            if until(out):
                break
        if time.monotonic() - t0 > limit_s:
            break
    resp.close()
    return out


def test_send_initial_events_ends_with_the_bookmark(api, http):
    r = http.get("/apis/apps/v1/namespaces/kube-system/daemonsets?watch=true&sendInitialEvents=true"
                 "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5", stream=True)
    assert r.status_code == 200
    evs = read_events(r, lambda e: e[-1]["type"] == "BOOKMARK")
    assert [e["type"] for e in evs] == ["ADDED", "BOOKMARK"]
    assert evs[0]["object"]["metadata"]["name"] == "svclb-ingress-nginx"
    bm = evs[-1]["object"]
    assert bm["kind"] == "DaemonSet" and bm["apiVersion"] == "apps/v1"
    assert bm["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    r = http.get("/api/v1/pods?watch=true&sendInitialEvents=true", stream=True)
    assert_status(r, 422, "Invalid")


def test_periodic_bookmarks_and_legacy_watch_paths(api, http):
    rv = http.get("/api/v1/namespaces/default/secrets").json()["metadata"]["resourceVersion"]
    r = http.get(f"/api/v1/watch/namespaces/default/secrets?resourceVersion={rv}&allowWatchBookmarks=true"
                 "&timeoutSeconds=4", stream=True)
    # Nothing changes: the whole stream, until the server ends it at timeoutSeconds, is
    # periodic bookmarks (the harness sends one a second), none at once and no flood.
    evs = [json.loads(x) for x in r.iter_lines() if x]
    assert evs and {e["type"] for e in evs} == {"BOOKMARK"}
    assert len(evs) <= 4, [e["object"]["metadata"]["resourceVersion"] for e in evs]
    assert all(int(e["object"]["metadata"]["resourceVersion"]) >= int(rv) for e in evs)
    # Watch on one object through the legacy /watch/ path, as Table rows (kubectl get -w).
    r = http.get("/api/v1/watch/namespaces/demo/pods/web-03?timeoutSeconds=2", stream=True,
                 headers={"Accept": TABLE})
    evs = read_events(r, lambda e: True)
    assert evs[0]["type"] == "ADDED"
    assert evs[0]["object"]["kind"] == "Table" and evs[0]["object"]["rows"][0]["cells"][0] == "web-03"


def test_watch_resumes_and_ends_at_timeout(api, http):
    rv = http.get("/api/v1/namespaces/default/configmaps").json()["metadata"]["resourceVersion"]
    http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "w1"}})
    t0 = time.monotonic()
    r = http.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1",
                 stream=True)
    evs = [json.loads(x) for x in r.iter_lines() if x]    # returns once the server ends the watch
    assert time.monotonic() - t0 >= 0.9                    # ... at timeoutSeconds, not before
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "w1")]


def _connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:  # pragma: no cover - unexpected
        return repr(e)


def test_outage_refuses_connections_then_listens_again(api, http):
    port = api.server.port
    r = http.get("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30", stream=True)
    lines = r.iter_lines()
    assert json.loads(next(lines))["type"] == "ADDED"
    fut = api.run_async(api.server.outage(40))   # 40 cluster seconds = 2 s at the default speed
    time.sleep(0.3)
    assert _connect(port) == "refused"
    # An open watch is cut, as when k3s restarts.
    with pytest.raises(Exception):
        for _ in lines:
            pass
    fut.result(10)
    assert _connect(port) == "open"
    assert api.server.port == port
    assert http.get("/api/v1/namespaces").status_code == 200
    api.rt.faults.api_down_seconds = 20
    api.call(api.server.trigger_fault_outage)
    time.sleep(0.2)
    assert _connect(port) == "refused"
    time.sleep(1.5)
    assert _connect(port) == "open"
    api.rt.faults.api_down_seconds = 0


def test_an_outage_cancelled_while_the_socket_closes_still_listens_again(api, http):
    """A server back (or quorum regained) cancels the outage at once, possibly while the
    socket is still closing: the API must listen again, not refuse for good."""
    port = api.server.port
    r = http.get("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30", stream=True)
    assert json.loads(next(r.iter_lines()))["type"] == "ADDED"   # an open connection to close

    async def cancel_mid_close() -> None:
        task = asyncio.ensure_future(api.server.outage(400))
        await asyncio.sleep(0)           # the outage has started closing the socket
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    api.run_async(cancel_mid_close()).result(10)
    assert _connect(port) == "open" and api.server.listening
    assert http.get("/api/v1/namespaces").status_code == 200


def test_an_outage_cancelled_again_while_the_socket_reopens_still_listens_again(api, http):
    """Several servers coming up end a quorum outage one after the other: the second
    cancel can arrive a few loop ticks after the first, while the socket is being opened
    again. Whatever the gap, the API listens again (it once refused for good)."""
    port = api.server.port
    srv = api.server

    async def cancel_twice(gap: int) -> bool:
        task = asyncio.ensure_future(srv.outage(400))
        while srv.listening:
            await asyncio.sleep(0.01)
        task.cancel()
        for _ in range(gap):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await srv.settled()
        return srv.listening

    for gap in range(8):
        assert api.run_async(cancel_twice(gap)).result(10), f"not listening after cancels {gap} tick(s) apart"
        assert _connect(port) == "open", gap
    assert http.get("/api/v1/namespaces").status_code == 200


def test_overlapping_outages_listen_again_when_the_last_one_ends(api, http):
    """A timed outage that ends while another hold (the servers' datastore without quorum)
    still holds the API down leaves it refusing; the release of the last hold reopens it."""
    port, srv = api.server.port, api.server
    api.call(lambda: srv.hold_down("quorum lost (test)"))
    api.run_async(srv.outage(2)).result(10)      # 2 cluster seconds: over at once
    assert _connect(port) == "refused" and api.call(srv.held_down)
    api.call(lambda: srv.release("quorum lost (test)"))
    api.run_async(srv.settled()).result(10)
    assert _connect(port) == "open" and not api.call(srv.held_down)
    assert http.get("/api/v1/namespaces").status_code == 200


def test_namespace_finalize_and_eviction(api, http):
    http.post("/api/v1/namespaces", json={"metadata": {"name": "fin"}})
    ns = http.get("/api/v1/namespaces/fin").json()
    ns["spec"]["finalizers"] = []
    out = http.put("/api/v1/namespaces/fin/finalize", json=ns)
    assert out.status_code == 200 and out.json()["spec"]["finalizers"] == []
    http.post("/api/v1/namespaces/fin/pods", json={"metadata": {"name": "evictme"},
                                                   "spec": {"containers": [{"name": "c", "image": "i"}]}})
    r = http.post("/api/v1/namespaces/fin/pods/evictme/eviction",
                  json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "evictme"}})
    assert r.status_code == 201
    assert http.get("/api/v1/namespaces/fin/pods/evictme").status_code == 404


def test_requests_are_logged_without_credentials(api, http, caplog):
    import logging
    with caplog.at_level(logging.DEBUG, logger="twin.apiserver"):
        http.get("/api/v1/namespaces/default/configmaps?limit=1")
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "twin.apiserver"]
    assert any(m.startswith("GET /api/v1/namespaces/default/configmaps?limit=1 200 ") for m in lines)
    assert not any(api.token in m for m in lines)


def test_many_initial_events_arrive_in_order_before_the_bookmark(api, http):
    def bulk() -> None:
        store = api.rt.store
        store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}})
        for i in range(1203):
            store.create({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": f"cm-{i:05d}", "namespace": "bulk"}})
    api.call(bulk)
    r = http.get("/api/v1/namespaces/bulk/configmaps?watch=true&sendInitialEvents=true"
                 "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10", stream=True)
    evs = read_events(r, lambda e: e[-1]["type"] == "BOOKMARK")
    names = [e["object"]["metadata"]["name"] for e in evs if e["type"] == "ADDED"]
    assert names == [f"cm-{i:05d}" for i in range(1203)]
    assert evs[-1]["type"] == "BOOKMARK" and len(evs) == 1204
