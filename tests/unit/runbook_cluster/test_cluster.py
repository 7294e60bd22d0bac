"""runbook.cluster: the choke point against a scripted loopback server, and row builders."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from runbook import cluster as cl
from runbook import cluster_tables as tables
from runbook.cluster import Cluster
from runbook.errors import ClusterError, LoopbackViolation

from cluster_fakeapi import FakeAPI, free_port, start_server, write_kubeconfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cluster"


def make(tmp_path: Path, server: str, **kw) -> Cluster:
    kw.setdefault("retry_for", 2.0)
    kw.setdefault("request_timeout", 2.0)
    return Cluster(str(write_kubeconfig(tmp_path / "kubeconfig", server)), **kw)


def test_get_returns_json_and_sends_token(tmp_path, fake_api: FakeAPI):
    fake_api.on("GET", "/api/v1/namespaces/kube-system", (200, {"metadata": {"uid": "u-1"}}))
    c = make(tmp_path, fake_api.url)
    assert c.identity() == "u-1"
    assert fake_api.requests[0].headers["authorization"] == "Bearer unit-test-token"
    assert c.outages == []


def test_retries_503_with_backoff_and_records_outage(tmp_path, fake_api: FakeAPI):
    fake_api.on("GET", "/version", (503, {"message": "restarting"}), (503, {"message": "restarting"}),
                (200, {"gitVersion": "v1.32.0+k3s1"}))
    c = make(tmp_path, fake_api.url)
    t0 = time.monotonic()
    assert c.version() == {"gitVersion": "v1.32.0+k3s1"}
    # two sleeps of the backoff: 0.2 s then 0.32 s
    assert time.monotonic() - t0 >= 0.5
    assert len(c.outages) == 1
    o = c.outages[0]
    assert o.attempts == 2 and o.ended is not None and "503" in o.last_error


def test_retries_connection_refused_until_server_comes_back(tmp_path):
    port = free_port()
    api = FakeAPI()
    api.on("GET", "/version", (200, {"gitVersion": "v1"}))
    servers = []
    # the "control plane" comes back 0.5 s later on the same port
    timer = threading.Timer(0.5, lambda: servers.append(start_server(api, port)))
    timer.start()
    try:
        c = make(tmp_path, f"http://127.0.0.1:{port}", retry_for=5.0)
        assert c.version() == {"gitVersion": "v1"}
        assert len(c.outages) == 1 and c.outages[0].attempts >= 1
        assert c.outages[0].ended is not None
    finally:
        timer.cancel()
        for s in servers:
            s.shutdown()
            s.server_close()


def test_gives_up_after_retry_for_naming_attempts_and_cause(tmp_path):
    import urllib3

    c = make(tmp_path, f"http://127.0.0.1:{free_port()}", retry_for=0.3)
    with pytest.raises(ClusterError) as ei:
        c.version()
    msg = str(ei.value)
    assert "unreachable" in msg and "attempts" in msg
    attempts = c.outages[0].attempts
    assert attempts >= 2 and f"({attempts} attempts)" in msg
    assert "systemctl status k3s" in msg
    # translated at the boundary: the urllib3 error is the cause, not lost
    assert isinstance(ei.value.__cause__, urllib3.exceptions.HTTPError)


def test_gives_up_on_persistent_503(tmp_path, fake_api: FakeAPI):
    fake_api.on("GET", "/version", (503, {"message": "etcd not ready"}))
    c = make(tmp_path, fake_api.url, retry_for=0.3)
    with pytest.raises(ClusterError, match=r"attempts\): HTTP 503 etcd not ready"):
        c.version()


def test_404_ok_missing_is_none_else_error(tmp_path, fake_api: FakeAPI):
    c = make(tmp_path, fake_api.url)
    assert c.get("pods", "gone", "default") is None
    with pytest.raises(ClusterError) as ei:
        c.request("GET", "/api/v1/namespaces/default/pods/gone")
    assert ei.value.status == 404 and ei.value.reason == "NotFound"
    assert c.outages == []  # a 404 is an answer, not an outage


@pytest.mark.parametrize("status,hint_part", [
    (401, "credentials were refused"),
    (403, "lacks RBAC permission"),
    (409, "re-run the step"),
])
def test_client_errors_raise_with_hint_and_no_retry(tmp_path, fake_api: FakeAPI, status, hint_part):
    fake_api.on("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x",
                (status, {"kind": "Status", "reason": "Nope", "message": "denied here"}))
    c = make(tmp_path, fake_api.url)
    with pytest.raises(ClusterError) as ei:
        c.replace("leases", {"metadata": {"name": "x", "namespace": "kube-system"}})
    assert ei.value.status == status and ei.value.reason == "Nope"
    assert hint_part in str(ei.value) and "denied here" in str(ei.value)
    assert len(fake_api.requests) == 1


def test_paging_follows_continue_tokens(tmp_path, fake_api: FakeAPI):
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], "")}

    def pods(rec):
        token = rec.query.get("continue", [None])[0]
        names, nxt = pages[token]
        return 200, {"items": [{"metadata": {"name": n}} for n in names], "metadata": {"continue": nxt}}

    fake_api.routes[("GET", "/api/v1/pods")] = pods
    c = make(tmp_path, fake_api.url)
    assert [p["metadata"]["name"] for p in c.list("pods")] == ["a", "b", "c", "d"]
    assert [r.query.get("continue", [None])[0] for r in fake_api.requests] == [None, "t1", "t2"]
    assert all(r.query["limit"] == ["500"] for r in fake_api.requests)


def test_list_of_unserved_resource_is_empty(tmp_path, fake_api: FakeAPI):
    c = make(tmp_path, fake_api.url)
    assert c.list("ciliumendpoints") == []


def test_has_resource(tmp_path, fake_api: FakeAPI):
    fake_api.on("GET", "/apis/cilium.io/v2", (200, {"resources": [{"name": "ciliumnodes"},
                                                                   {"name": "ciliumendpoints"}]}))
    c = make(tmp_path, fake_api.url)
    assert c.has_resource("ciliumendpoints") is True
    assert c.has_resource("applications") is False   # group not served: 404
    fake_api.on("GET", "/apis/cilium.io/v2", (200, {"resources": [{"name": "ciliumnodes"}]}))
    assert c.has_resource("ciliumendpoints") is False


def test_patch_sends_content_type_and_field_manager(tmp_path, fake_api: FakeAPI):
    path = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web"
    fake_api.on("PATCH", path, (200, {"ok": True}))
    c = make(tmp_path, fake_api.url)
    c.patch("applications", "web", [{"op": "remove", "path": "/spec/x"}], "argocd", patch_type="json")
    rec = fake_api.requests[0]
    assert rec.headers["content-type"] == "application/json-patch+json"
    assert rec.query["fieldManager"] == ["phase22-runbook"]
    assert json.loads(rec.body) == [{"op": "remove", "path": "/spec/x"}]


def test_twin_refuses_non_loopback_server_without_connecting(tmp_path, monkeypatch):
    import socket

    import urllib3.util.connection as uconn

    attempts = []
    monkeypatch.setattr(uconn, "create_connection", lambda *a, **k: attempts.append(a))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a))
    c = make(tmp_path, "https://10.0.0.1:6443", kind="twin")
    with pytest.raises(LoopbackViolation, match="10.0.0.1"):
        c.version()
    assert attempts == [] and c.outages == []


def test_missing_kubeconfig(tmp_path):
    c = Cluster(str(tmp_path / "nope"))
    with pytest.raises(ClusterError, match="kubeconfig not found"):
        c.version()


# -- the transport's own exceptions, injected at the client (the only mocks here) ---------

@pytest.mark.parametrize("exc_factory", [
    lambda: __import__("urllib3").exceptions.SSLError("bad cert"),
    lambda: __import__("urllib3").exceptions.ReadTimeoutError(None, "/version", "read timed out"),
    lambda: __import__("urllib3").exceptions.ProtocolError("connection aborted"),
    lambda: ConnectionResetError("reset by peer"),
])
def test_third_party_exceptions_come_out_as_cluster_error(tmp_path, fake_api: FakeAPI, exc_factory):
    c = make(tmp_path, fake_api.url, retry_for=0.0)
    exc = exc_factory()

    def boom(*a, **k):
        raise exc

    c.api.rest_client.pool_manager.request = boom   # the client's own urllib3 pool: our transport
    with pytest.raises(ClusterError) as ei:
        c.version()
    assert type(exc).__name__ in str(ei.value)
    assert ei.value.__cause__ is exc
    assert c.outages[0].attempts == 1


def test_ping_does_not_retry(tmp_path, fake_api: FakeAPI):
    # a server that would answer on the third try: ping asks once and says no
    fake_api.on("GET", "/version", (503, {"message": "restarting"}), (503, {"message": "restarting"}),
                (200, {"gitVersion": "v1.32.0+k3s1"}))
    c = make(tmp_path, fake_api.url, retry_for=30.0)
    assert c.ping() is False
    assert [r.path for r in fake_api.requests] == ["/version"] and c.retry_for == 30.0
    assert c.ping() is False and len(fake_api.requests) == 2
    assert c.ping() is True
    # nothing listening: one refused connection, no retry either
    closed = make(tmp_path, f"http://127.0.0.1:{free_port()}", retry_for=30.0)
    assert closed.ping() is False
    assert [o.attempts for o in closed.outages] == [1] and "refused" in closed.outages[0].last_error


# -- pure helpers ------------------------------------------------------------------------

@pytest.mark.parametrize("pod,want", [
    ({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}}, "Terminating"),
    ({"metadata": {}, "status": {"phase": "Pending", "containerStatuses": [
        {"state": {"running": {}}}, {"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}},
     "ImagePullBackOff"),
    ({"metadata": {}, "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}},
     "Running"),
    ({"metadata": {}, "status": {"containerStatuses": [{"state": {"waiting": {}}}]}}, "Unknown"),
    ({"metadata": {}}, "Unknown"),
])
def test_pod_display_status(pod, want):
    assert cl.pod_display_status(pod) == want


def _row_cases():
    return sorted(p.name for p in (FIXTURES / "rows").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", _row_cases())
def test_row_builders_golden(case):
    """tests/fixtures/cluster/rows/<case>/: kind.txt, input.json (items), expected.json (rows)."""
    d = FIXTURES / "rows" / case
    kind = (d / "kind.txt").read_text().strip()
    items = json.loads((d / "input.json").read_text())
    want = json.loads((d / "expected.json").read_text())
    if kind == "pods":
        rs = json.loads((d / "replicasets.json").read_text()) if (d / "replicasets.json").exists() else []
        owners = {(r["metadata"]["namespace"], r["metadata"]["name"]): cl._controller(r) for r in rs}
        rows = [tables.row_pod(p, owners) for p in items]
    elif kind == "pvcs":
        rows = [tables.row_pvc(p) for p in items]
    else:
        rows = [tables.ROWS[kind](o) for o in items]
    assert rows == want
    for r in rows:
        assert list(r) == tables.COLUMNS[kind]


def test_snapshot_pods_resolves_deployment_through_replicaset(tmp_path, fake_api: FakeAPI):
    d = FIXTURES / "rows" / "pods-deployment-daemonset-bare"
    fake_api.on("GET", "/apis/apps/v1/replicasets",
                (200, {"items": json.loads((d / "replicasets.json").read_text()), "metadata": {}}))
    fake_api.on("GET", "/api/v1/pods", (200, {"items": json.loads((d / "input.json").read_text()),
                                              "metadata": {}}))
    c = make(tmp_path, fake_api.url)
    df = c.snapshot("pods")
    assert list(df.columns) == tables.COLUMNS["pods"]
    assert list(df["name"]) == sorted(df["name"]) or list(df["namespace"]) == sorted(df["namespace"])
    want = {r["name"]: r["workload"] for r in json.loads((d / "expected.json").read_text())}
    assert dict(zip(df["name"], df["workload"])) == want
    with pytest.raises(ValueError, match="unknown snapshot kind"):
        c.snapshot("widgets")


def test_wait_for_reports_what_is_pending(tmp_path):
    from runbook.errors import WaitTimeout

    c = Cluster(str(tmp_path / "unused"))   # wait_for makes no API call itself
    polls = iter([(False, ["a", "b"]), (True, [])])
    assert c.wait_for(lambda: next(polls), timeout=5, what="pods", interval=0.01) >= 0
    with pytest.raises(WaitTimeout) as ei:
        c.wait_for(lambda: (False, ["kube-system/coredns: no pod yet"]), timeout=0.05, what="restarted pods",
                   interval=0.01)
    assert ei.value.pending == ["kube-system/coredns: no pod yet"]
    assert "waiting for restarted pods" in str(ei.value) and "coredns: no pod yet" in str(ei.value)


def test_server_host_reads_kubeconfig_without_connecting(tmp_path):
    assert cl.server_host(str(write_kubeconfig(tmp_path / "k", "https://10.0.0.2:6443"))) == "10.0.0.2"


def test_resource_path():
    assert cl.resource_path("v1", "pods", "a b", "x/y", "log") == "/api/v1/namespaces/a%20b/pods/x%2Fy/log"
    assert cl.resource_path("velero.io/v1", "backups") == "/apis/velero.io/v1/backups"
