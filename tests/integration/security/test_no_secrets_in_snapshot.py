"""A cluster snapshot holds no credential: a full minicloud twin, secrets added, then a search.

The twin holds its own credentials (API token, SSH key, the agents' join token, the admin
token); the test adds what real clusters hold besides: a TLS Secret with a private key,
an Opaque Secret with a password (also in a ``last-applied-configuration`` annotation, as
``kubectl apply`` leaves it), a ConfigMap with a password, a token and a client secret,
and a Deployment whose container has a password in its environment and a token on its
command line. ``runbook snapshot`` (the real CLI) then writes the archive, and every
member of it is searched for every one of them, as the run folder of a rehearsal is
(``test_no_secrets_in_evidence.py``; the search is ``helpers.secret_search``).
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers.secret_search import key_fragments, search, secret_config_values, texts, twin_secrets, with_base64

import snapshot_format
from runbook import params
from runbook.cluster import Cluster, resource_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _add_secrets(c: Cluster) -> dict[str, list[str]]:
    """Create objects holding credentials; returns what must never be in the archive."""
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    password, token, client_secret = "Tr0ub4dor&3-horse-battery", "tok_7Hq2LmX9pV4sZ8rW", "cs-51f0e2a9c8b7d6"
    env_password, cli_token = "env-P4ssw0rd-3f9a1c", "cli-tok-9d8c7b6a5f4e"
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "db-credentials", "namespace": "podinfo"},
              "data": {"username": _b64("podinfo"), "password": _b64(password)}}
    secret["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(secret)}
    tls = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": "podinfo-tls", "namespace": "podinfo"},
           "data": {"tls.crt": _b64("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
                    "tls.key": _b64(pem)}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "podinfo"},
          "data": {"app.yaml": f"database:\n  user: podinfo\n  password: {password}\napiToken: {token}\n",
                   "oidc.json": json.dumps({"clientId": "podinfo", "clientSecret": client_secret})}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "vault-demo", "namespace": "podinfo"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "vault-demo"}},
                       "template": {"metadata": {"labels": {"app": "vault-demo"}},
                                    "spec": {"containers": [{
                                        "name": "app", "image": "ghcr.io/example/vault-demo:1.0",
                                        "args": ["serve", f"--token={cli_token}"],
                                        "env": [{"name": "DB_PASSWORD", "value": env_password},
                                                {"name": "LOG_LEVEL", "value": "info"}]}]}}}}
    for plural, obj in (("secrets", secret), ("secrets", tls), ("configmaps", cm)):
        c.request("POST", resource_path("v1", plural, "podinfo"), body=obj)
    c.request("POST", resource_path("apps/v1", "deployments", "podinfo"), body=deploy)
    values = [password, token, client_secret, env_password, cli_token]
    return {"added credentials": values + [_b64(v) for v in values],
            "tls private key": key_fragments(pem) + [_b64(pem)[:64]]}


def test_a_snapshot_of_a_full_minicloud_twin_holds_no_credential(fresh_twin, tmp_path: Path) -> None:
    p = params.load(fresh_twin.params_path)
    added = _add_secrets(Cluster.from_params(p))
    out = tmp_path / "minicloud.tar.gz"
    run = subprocess.run([sys.executable, "-m", "runbook.cli", "snapshot", "--params",
                          str(fresh_twin.params_path), "--out", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.stat().st_mode & 0o777 == 0o600

    secrets = with_base64(twin_secrets(fresh_twin.state_dir))
    secrets.update(added)
    leaks, searched = search([out], secrets, tmp_path)
    members = texts(out)
    assert searched == len(members) > 10, "the archive and each of its members were searched"
    assert not leaks, "secrets found in the snapshot:\n" + "\n".join(leaks)

    # what is kept: Secrets by name and type, the objects, config lines with the token masked
    snap = snapshot_format.read(out)
    kept = {(s["namespace"], s["name"]): s for s in snap.secrets}
    assert kept[("podinfo", "db-credentials")] == {"namespace": "podinfo", "name": "db-credentials",
                                                    "type": "Opaque", "labels": {}, "keys": 2}
    assert kept[("podinfo", "podinfo-tls")]["type"] == "kubernetes.io/tls"
    cm = next(o for o in snap.items("ConfigMap") if o["metadata"]["name"] == "app-config")
    assert "user: podinfo" in cm["data"]["app.yaml"] and "password: ********" in cm["data"]["app.yaml"]
    dep = next(o for o in snap.items("Deployment") if o["metadata"]["name"] == "vault-demo")
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"DB_PASSWORD": "********", "LOG_LEVEL": "info"}
    configs = [t for n in snap.nodes for t in n["host"]["k3s_config_files"].values()]
    assert any("token:" in t for t in configs), "the agents' configs are kept, with their token line"
    for label, text in members:
        assert all(set(v) <= {"*"} for v in secret_config_values(text)), label
    assert f"snapshot: {out}" in run.stdout


def test_the_search_would_have_found_a_leak(tmp_path: Path) -> None:
    """The guard itself: a credential inside a member of a .tar.gz is found."""
    import io
    import tarfile

    arch = tmp_path / "leaky.tar.gz"
    with tarfile.open(arch, "w:gz") as tar:
        data = b'{"password": "Tr0ub4dor&3-horse-battery"}'
        info = tarfile.TarInfo("objects/core_v1_configmaps.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    leaks, _ = search([arch], {"added credentials": ["Tr0ub4dor&3-horse-battery"]}, tmp_path)
    assert leaks == ["added credentials in leaky.tar.gz!objects/core_v1_configmaps.json"]
