"""Unit tests of runbook.redact with realistic samples of what the runbook handles."""
from __future__ import annotations

import base64
import gzip
import json
import secrets as pysecrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from runbook import redact as R
from runbook.redact import MASK, redact

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
def _clean_registry():
    R.clear_registered()
    yield
    R.clear_registered()


def _ssh_private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def _ec_private_key_pkcs8() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _ec_private_key_traditional() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


JOIN = "K10c8f5a0b6e3d2a1f4b7c9e8d6a5f3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4::server:9f1c2e7a4b3d5c6e8f0a1b2c3d4e5f60"
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6InR3aW4ifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1z"
       "eXN0ZW06cnVuYm9vayJ9.c2lnbmF0dXJlLW5vdC1yZWFs")


def test_bearer_headers() -> None:
    out = redact(f"> GET /api/v1/pods HTTP/1.1\n> Authorization: Bearer {JWT}\n> Accept: */*\n")
    assert JWT not in out and f"Authorization: Bearer {MASK}" in out and "Accept: */*" in out
    out = redact(json.dumps({"headers": {"authorization": f"bearer {JWT}"}}))
    assert JWT not in out and json.loads(out)
    assert redact("Authorization: Basic dXNlcjpwYXNzd29yZA==") == f"Authorization: Basic {MASK}"


def test_kubeconfig() -> None:
    client_key = _b64(_ec_private_key_traditional())
    cert = _b64("-----BEGIN CERTIFICATE-----\nMIIBdummycertificatebody0123456789\n-----END CERTIFICATE-----\n")
    kubeconfig = f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {cert}
    server: https://127.0.0.1:6443
  name: twin
users:
- name: runbook
  user:
    client-certificate-data: {cert}
    client-key-data: {client_key}
    token: {JWT}
"""
    out = redact(kubeconfig)
    assert client_key not in out and JWT not in out
    assert f"client-key-data: {MASK}" in out and f"token: {MASK}" in out
    assert out.count(cert) == 2                     # certificates are public: kept
    assert "server: https://127.0.0.1:6443" in out


def test_pem_private_keys() -> None:
    for pem in (_ssh_private_key(), _ec_private_key_pkcs8(), _ec_private_key_traditional()):
        body = pem.splitlines()[1]
        text = f"loaded key:\n{pem}done\n"
        out = redact(text)
        assert body not in out and "PRIVATE KEY-----" in out and out.endswith("done\n")
    truncated = _ssh_private_key()[:200]                 # an output cut in the middle
    assert truncated.splitlines()[1] not in redact(truncated)


def test_kubernetes_secret_with_tls_keys() -> None:
    key = _ec_private_key_pkcs8()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hubble-server-certs"},
              "type": "kubernetes.io/tls",
              "data": {"ca.crt": _b64("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"),
                       "tls.crt": _b64("-----BEGIN CERTIFICATE-----\ndef\n-----END CERTIFICATE-----\n"),
                       "tls.key": _b64(key)}}
    for text in (json.dumps(secret), json.dumps(secret, indent=2)):
        out = redact(text)
        assert _b64(key) not in out and json.loads(out)["data"]["tls.key"] == MASK
        assert json.loads(out)["data"]["tls.crt"] == secret["data"]["tls.crt"]
    # a private key hidden in base64 under an innocent key name is found by its shape
    out = redact(f"blob: {_b64(key)}\n")
    assert _b64(key) not in out


def test_helm_release_payloads() -> None:
    manifest = json.dumps({"name": "cilium", "manifest": "kind: Secret\n" * 50}).encode()
    once = _b64(gzip.compress(manifest))              # what helm stores (H4sI...)
    twice = _b64(once)                                # what `kubectl get secret -o yaml` shows
    for text in (f"data:\n  release: {twice}\n", f'{{"data": {{"release": "{twice}"}}}}',
                 f"release={once}", f"  release: {_b64(pysecrets.token_bytes(60))}\n"):
        out = redact(text)
        assert twice not in out and once not in out and MASK in out
    assert redact("release: cilium\nchart: cilium-1.19.3\n") == "release: cilium\nchart: cilium-1.19.3\n"


def test_k3s_join_tokens() -> None:
    out = redact(f"token: {JOIN}\n")
    assert JOIN not in out and "9f1c2e7a4b3d" not in out
    out = redact(f"k3s agent --token {JOIN} --server https://10.0.0.2:6443")
    assert "9f1c2e7a4b3d5c6e8f0a1b2c3d4e5f60" not in out and "--server https://10.0.0.2:6443" in out
    out = redact("cat /var/lib/rancher/k3s/server/node-token -> node:0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    assert "0a1b2c3d4e5f60718293" not in out


def test_command_line_flags() -> None:
    out = redact("k3s agent --server https://10.0.0.2:6443 --token plainpass1234 --node-ip 10.0.0.4")
    assert "plainpass1234" not in out and "--node-ip 10.0.0.4" in out
    assert redact("kubectl --token=abcdef123 get pods") == f"kubectl --token={MASK} get pods"
    assert redact("k3s server --agent-token s3cr3tagent") == f"k3s server --agent-token {MASK}"
    assert redact("--token-file /etc/k3s/token") == "--token-file /etc/k3s/token"


def test_key_value_forms() -> None:
    samples = {
        '{"token": "abcdef123456"}': '{"token": "********"}',
        "token: 'abcdef123456'": "token: '********'",
        "agent-token: plainagenttoken0123456789": "agent-token: ********",
        "password=hunter2hunter2 user=admin": "password=******** user=admin",
        '"password":"p@ss w0rd!"': '"password":"********"',
    }
    for text, want in samples.items():
        assert redact(text) == want


@pytest.mark.parametrize("text", [
    "token: null", "token: ''", 'token: ""', "token_file: /etc/k3s/token",
    "automountServiceAccountToken: false", "serviceAccountToken: true",
    "sha256: " + "ab" * 32, "release: cilium", "kind: Secret",
    "tokenPort: 8473", "Cluster Pods: 42/42 managed by Cilium",
    "certificate-authority-data: " + _b64("-----BEGIN CERTIFICATE-----\nxyz\n-----END CERTIFICATE-----\n"),
])
def test_harmless_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_no_registered_secret_survives() -> None:
    secrets = [pysecrets.token_urlsafe(24), pysecrets.token_hex(16), "k3s-join-passphrase!",
               JWT, "short1"]
    for s in secrets:
        R.register_secret(s)
    R.register_secret("abc")                      # too short to mask: ignored
    assert "abc" not in R.registered_secrets()
    contexts = []
    for s in secrets:
        contexts += [s, f"x{s}x", f"prefix {s} suffix", json.dumps({"anything": s}),
                     f"url: https://user:{s}@host/", f"data: {_b64(s)}", f"env FOO={s}\n",
                     f"```\n{s}\n```", repr(s)]
    text = "\n".join(contexts)
    out = redact(text)
    for s in secrets:
        assert s not in out
        assert _b64(s).rstrip("=") not in out
    assert redact(out) == out                     # idempotent


def test_extra_secrets_are_per_call() -> None:
    s = "only-this-call-secret"
    assert s not in redact(f"a {s} b", extra_secrets=[s])
    assert s in redact(f"a {s} b")
    R.register_secret(b"bytes-secret-value")
    assert "bytes-secret-value" not in redact("bytes-secret-value")


def test_empty_and_none_inputs() -> None:
    assert redact("") == ""
    R.register_secret(None)
    R.register_secret("   ")
    assert R.registered_secrets() == frozenset()


def test_bare_service_account_tokens() -> None:
    # `kubectl create token` prints the token alone on a line; a notebook may show it.
    out = redact(f"$ kubectl create token runbook -n kube-system\n{JWT}\n")
    assert JWT not in out and out.endswith(f"{MASK}\n")
    assert redact("image: quay.io/cilium/cilium:v1.19.3") == "image: quay.io/cilium/cilium:v1.19.3"
