"""runbook.checks: gates, the ingress probe against a local HTTPS server, diffs."""
from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbook import checks
from runbook.errors import GateFailed, LoopbackViolation

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

HOST = "homer.10.0.0.200.nip.io"


def _ca(tmp: Path, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _leaf(tmp: Path, ca_key, ca_cert, host: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cp, kp = tmp / "leaf.pem", tmp / "leaf.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert, ca_path = _ca(tmp, "twin-ca")
    _, _, other_ca = _ca(tmp, "other-ca")
    cert, key = _leaf(tmp, ca_key, ca_cert, HOST)
    seen: list[dict] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append({"host": self.headers.get("Host"), "path": self.path,
                         "sni": getattr(self.connection, "sni", None)})
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    snis: list[str] = []
    ctx.sni_callback = lambda sock, name, c: snis.append(name)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield {"port": srv.server_address[1], "ca": str(ca_path), "other_ca": str(other_ca),
           "seen": seen, "snis": snis}
    srv.shutdown()
    srv.server_close()


def test_probe_ok_with_resolve_to_sni_and_host(https_server):
    port = https_server["port"]
    r = checks.probe_ingress(f"https://{HOST}/", ca_file=https_server["ca"],
                             resolve_to=f"127.0.0.1:{port}", kind="twin")
    assert r.ok and r.status == 200 and r.reason == "ok"
    assert r.connected_to == f"127.0.0.1:{port}" and r.host == HOST
    assert https_server["seen"][-1]["host"] == HOST
    assert https_server["snis"][-1] == HOST


def test_probe_wrong_ca_is_failure_result(https_server):
    r = checks.probe_ingress(f"https://{HOST}/", ca_file=https_server["other_ca"],
                             resolve_to=f"127.0.0.1:{https_server['port']}", kind="twin")
    assert not r.ok and r.status is None and "TLS verification failed" in r.reason


def test_probe_wrong_status_and_refused(https_server):
    port = https_server["port"]
    r = checks.probe_ingress(f"https://{HOST}/missing", ca_file=https_server["ca"],
                             resolve_to=f"127.0.0.1:{port}", kind="twin")
    assert not r.ok and r.status == 404 and "expected 200" in r.reason
    assert checks.probe_ingress(f"https://{HOST}/missing", expect_status=404, ca_file=https_server["ca"],
                                resolve_to=f"127.0.0.1:{port}").ok
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); free = s.getsockname()[1]; s.close()
    r = checks.probe_ingress(f"https://{HOST}/", ca_file=https_server["ca"],
                             resolve_to=f"127.0.0.1:{free}", kind="twin", timeout=2)
    assert not r.ok and "ConnectionRefused" in r.reason


def test_probe_loopback_guard_for_twin():
    with pytest.raises(LoopbackViolation):
        checks.probe_ingress(f"https://{HOST}/", kind="twin")            # would resolve to 10.0.0.200
    with pytest.raises(LoopbackViolation):
        checks.probe_ingress("https://127.0.0.1/", resolve_to="10.0.0.200:443", kind="twin")


def test_probe_all_frame(https_server):
    port = https_server["port"]
    df = checks.probe_all([
        {"url": f"https://{HOST}/", "expect_status": 200, "ca_file": https_server["ca"],
         "resolve_to": f"127.0.0.1:{port}"},
        {"url": f"https://{HOST}/x", "expect_status": 200, "ca_file": https_server["ca"],
         "resolve_to": f"127.0.0.1:{port}"},
    ], kind="twin")
    assert list(df.columns) == ["url", "host", "connected_to", "expect_status", "status", "ok",
                                "reason", "elapsed_s"]
    assert list(df["ok"]) == [True, False] and list(df["status"]) == [200, 404]


def test_gate_pass_and_fail_recorded():
    gates: list = []
    r = checks.gate(True, "every agent Ready", name="agents", gates=gates)
    assert r.passed and r.name == "agents"
    with pytest.raises(GateFailed) as ei:
        checks.gate(False, "no KUBE-SVC chains", details=["set-hog: 3 chains"], hint="run cleanup",
                    gates=gates)
    e = ei.value
    assert "set-hog: 3 chains" in str(e) and e.hint == "run cleanup"
    assert e.data.name == "no-kube-svc-chains" and not e.data.passed
    df = checks.gate_summary(gates)
    assert list(df["passed"]) == [True, False] and list(df["name"]) == ["agents", "no-kube-svc-chains"]


def pods(rows):
    return pd.DataFrame(rows, columns=["namespace", "name", "ip", "owner_kind", "owner_name", "restarts"])


def test_compare_snapshots():
    before = pods([
        ("apps", "web-7d9f8c6b5-abcde", "10.42.1.5", "ReplicaSet", "web-7d9f8c6b5", 0),
        ("apps", "web-7d9f8c6b5-fghij", "10.42.2.5", "ReplicaSet", "web-7d9f8c6b5", 0),
        ("apps", "db-0", "10.42.1.9", "StatefulSet", "db", 1),
        ("apps", "cron-x", "10.42.1.10", "Job", "cron", 0),
        ("kube-system", "svclb-1", "10.0.0.3", "DaemonSet", "svclb", 0),
    ])
    after = pods([
        # a rollout restart gives a new ReplicaSet hash: still the same Deployment
        ("apps", "web-5c6b7d8e9f-klmno", "10.42.1.20", "ReplicaSet", "web-5c6b7d8e9f", 0),
        ("apps", "db-0", "10.42.1.30", "StatefulSet", "db", 3),
        ("kube-system", "svclb-1", "10.0.0.3", "DaemonSet", "svclb", 0),
        ("apps", "debug", "10.42.1.31", "", "", 0),
    ])
    d = checks.compare_snapshots(before, after)
    w = {(r.namespace, r.workload): (r.before, r.after) for r in d.by_workload.itertuples()}
    assert w[("apps", "Deployment/web")] == (2, 1)
    assert w[("apps", "Job/cron")] == (1, 0) and w[("apps", "Pod/debug")] == (0, 1)
    assert list(d.missing["workload"]) == ["Job/cron"]
    assert list(d.fewer["workload"]) == ["Deployment/web"]
    assert list(d.new["workload"]) == ["Pod/debug"]
    assert d.ip_changes.to_dict("records") == [
        {"namespace": "apps", "name": "db-0", "ip_before": "10.42.1.9", "ip_after": "10.42.1.30"}]
    assert d.restarts.to_dict("records") == [
        {"namespace": "apps", "name": "db-0", "restarts_before": 1, "restarts_after": 3, "delta": 2}]
    assert not d.ok and len(d.problems()) == 2
    same = checks.compare_snapshots(before, before)
    assert same.ok and same.ip_changes.empty and same.restarts.empty and "workloads: 4" in same._repr_html_()


def test_compare_snapshots_uses_workload_column():
    b = pd.DataFrame([{"namespace": "a", "name": "p1", "workload": "Deployment/x", "ip": "1"}])
    a = pd.DataFrame([{"namespace": "a", "name": "p2", "workload": "Deployment/x", "ip": "2"}])
    d = checks.compare_snapshots(b, a)
    assert d.ok and d.ip_changes.empty


def test_compare_lb_ips():
    cols = ["namespace", "name", "type", "lb_ips"]
    before = pd.DataFrame([("a", "web", "LoadBalancer", "10.0.0.200"),
                           ("a", "dns", "LoadBalancer", "10.0.0.201"),
                           ("a", "mq", "LoadBalancer", "10.0.0.202"),
                           ("a", "gone", "LoadBalancer", "10.0.0.203"),
                           ("a", "cip", "ClusterIP", "")], columns=cols)
    after = pd.DataFrame([("a", "web", "LoadBalancer", "10.0.0.200"),
                          ("a", "dns", "LoadBalancer", ""),
                          ("a", "mq", "LoadBalancer", "10.0.0.210"),
                          ("a", "cip", "ClusterIP", "")], columns=cols)
    d = checks.compare_lb_ips(before, after)
    st = dict(zip(d.table["name"], d.table["status"]))
    assert st == {"web": "unchanged", "dns": "lost", "mq": "changed", "gone": "service-gone"}
    assert not d.ok
    assert d.lost == ["a/dns: 10.0.0.201 -> - (lost)", "a/gone: 10.0.0.203 -> - (service-gone)"]
    assert d.changed == ["a/mq: 10.0.0.202 -> 10.0.0.210 (changed)"]
    assert checks.compare_lb_ips(before, before).ok
    # records with lists work too
    assert checks.compare_lb_ips([{"namespace": "a", "name": "w", "type": "LoadBalancer", "lb_ips": ["1.2.3.4"]}],
                                 [{"namespace": "a", "name": "w", "type": "LoadBalancer", "lb_ips": "1.2.3.4"}]).ok
