"""No credential ever reaches the evidence: a complete rehearsal with rollback, then a search.

Every file under the run folder (executed notebooks, HTML pages, index, journal,
snapshots, command log, timeline) is searched for each secret the twin holds: the API
bearer token, the SSH client private key, the k3s join token of the agents, the admin
token, and the payloads of helm's release Secrets and Cilium's generated TLS keys.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from runbook import runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _key_fragments(pem: str) -> list[str]:
    """Distinctive pieces of a private key: every base64 body line of 40+ characters."""
    return [ln.strip() for ln in pem.splitlines() if len(ln.strip()) >= 40 and "-----" not in ln]


def _twin_secrets(twin) -> dict[str, list[str]]:
    sd = twin.state_dir
    kube = yaml.safe_load((sd / "kubeconfig").read_text())
    token = kube["users"][0]["user"]["token"]
    join = None
    for cfg in sd.glob("nodes/*/etc/rancher/k3s/config.yaml"):
        doc = yaml.safe_load(cfg.read_text()) or {}
        if doc.get("token"):
            join = doc["token"]
    assert join, "the fixture's agents carry a join token"
    out = {"api token": [token], "k3s join token": [join],
           "ssh private key": _key_fragments((sd / "ssh" / "id_ed25519").read_text())}
    admin = sd / "admin-token"
    if admin.exists():
        out["admin token"] = [admin.read_text().strip()]
    return out


def _cluster_secret_payloads(twin) -> dict[str, list[str]]:
    """helm release payloads and the private keys in Secrets (read from the twin's store)."""

    def collect():
        store = twin.rt.store
        st = store.lookup("", "v1", "secrets")
        found: dict[str, list[str]] = {"helm release payload": [], "tls private key": []}
        for s in store.iter_objects(st):
            data = s.get("data") or {}
            labels = (s.get("metadata") or {}).get("labels") or {}
            if labels.get("owner") == "helm" and data.get("release"):
                blob = data["release"]
                found["helm release payload"] += [blob[i:i + 64] for i in range(0, min(len(blob), 640), 64)]
            for k in ("ca.key", "tls.key"):
                if data.get(k):
                    pem = base64.b64decode(data[k]).decode("utf-8", "replace")
                    found["tls private key"] += _key_fragments(pem) + [data[k][:64]]
        return found

    return twin.call(collect)


def test_full_rehearsal_leaves_no_secret_in_the_run_folder(tmp_path):
    from twin.api import Twin

    reports = tmp_path / "reports"
    with Twin(tmp_path / "twin") as twin:
        secrets = _twin_secrets(twin)
        mig = runner.run(twin.params_path, phases=runner.MIGRATION, execute=True, run_id="secrets",
                         reports_dir=reports, extra={"proceed_despite_deferral": True},
                         progress=lambda m: None)
        assert mig.ok, f"migration failed: {mig.failed}"
        secrets.update(_cluster_secret_payloads(twin))
        assert secrets["helm release payload"], "cilium was installed by helm: its release secret exists"
        rb = runner.run(twin.params_path, phases=["rollback"], execute=True, run_id="secrets",
                        reports_dir=reports, progress=lambda m: None)
        assert rb.ok, f"rollback failed: {rb.failed}"
    run_dir = reports / "secrets"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files) and (run_dir / "index.html").exists()
    assert any(p.suffix == ".html" and p.parent.name == "html" for p in files)
    leaks = []
    for p in files:
        text = p.read_bytes().decode("utf-8", "replace")
        for what, values in secrets.items():
            for v in values:
                if v and v in text:
                    leaks.append(f"{what} in {p.relative_to(run_dir)}")
    assert not leaks, "secrets found in the evidence:\n" + "\n".join(sorted(set(leaks)))
    # the run folder holds cluster state: owner-only
    assert (run_dir.stat().st_mode & 0o077) == 0
    for p in files:
        assert (p.stat().st_mode & 0o077) == 0, f"{p} is readable by others"
    # config diffs in the evidence show the join token masked
    diffs = (run_dir / "02-reconfigure.ipynb").read_text()
    assert re.search(r"token: \*+", diffs) or "token" not in diffs
