"""PKI (CA and serving certificates) and the API server's pure routing helpers."""
from __future__ import annotations

import ipaddress
import ssl
import stat

import pytest
from cryptography import x509

from twin.apiserver import Route, accept_table, parse_resource_path, status_body, version_key
from twin.pki import PKI

pytestmark = pytest.mark.unit


def test_pki_issues_loopback_and_extra_names(tmp_path):
    pki = PKI(tmp_path / "pki")
    pair = pki.issue("ingress", dns_names=["*.10.0.0.200.nip.io"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "*.10.0.0.200.nip.io"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}
    assert cert.issuer == x509.load_pem_x509_certificate(pki.ca_pem).subject
    for key in (tmp_path / "pki" / "ca.key", pair.key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "pki" / "ca.crt").read_bytes() == pki.ca_pem
    ctx = pair.ssl_context()   # key and certificate match
    assert isinstance(ctx, ssl.SSLContext)


@pytest.mark.parametrize("path,route", [
    ("/api/v1/pods", Route("", "v1", "pods")),
    ("/api/v1/namespaces", Route("", "v1", "namespaces")),
    ("/api/v1/namespaces/demo", Route("", "v1", "namespaces", None, "demo")),
    ("/api/v1/namespaces/demo/status", Route("", "v1", "namespaces", None, "demo", "status")),
    ("/api/v1/namespaces/demo/pods", Route("", "v1", "pods", "demo")),
    ("/api/v1/namespaces/demo/pods/p/status", Route("", "v1", "pods", "demo", "p", "status")),
    ("/apis/apps/v1/namespaces/x/deployments/d/scale", Route("apps", "v1", "deployments", "x", "d", "scale")),
    ("/api/v1/watch/namespaces/demo/pods", Route("", "v1", "pods", "demo", None, None, True)),
    ("/apis/argoproj.io/v1alpha1/applications", Route("argoproj.io", "v1alpha1", "applications")),
    ("/apis/apps/v1", "discovery"),
    ("/api/v1/namespaces/a/pods/b/c/d", None),
    ("/metrics", None),
])
def test_parse_resource_path(path, route):
    assert parse_resource_path(path) == route


def test_accept_table_and_versions():
    assert accept_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json") == "v1"
    assert accept_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert accept_table("application/json") is None
    vs = sorted(["v1alpha1", "v1", "v2beta1", "v1beta1"], key=version_key, reverse=True)
    assert vs == ["v1", "v2beta1", "v1beta1", "v1alpha1"]
    s = status_body(404, "NotFound", "x")
    assert (s["kind"], s["status"], s["code"]) == ("Status", "Failure", 404)
