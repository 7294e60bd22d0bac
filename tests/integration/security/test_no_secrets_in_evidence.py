"""No credential ever reaches the evidence: a complete rehearsal with rollback, then a search.

The rehearsal is the session's shared ``runbook rehearse --with-rollback``
(``helpers.migrated_run``): its twin's state folder holds the API token, the SSH key, the
join token and the admin token; the helm release payloads and the generated TLS keys
were read through the API while the release existed (between install and rollback).
Every file under the run folder (executed notebooks, HTML pages, index, journal,
snapshots, command log, timeline) is searched for each secret the twin holds: the API
bearer token, the SSH client private key, the k3s join token of the agents, the admin
token, and the payloads of helm's release Secrets and Cilium's generated TLS keys.
"""
from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from runbook import runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _key_fragments(pem: str) -> list[str]:
    """Distinctive pieces of a private key: every base64 body line of 40+ characters."""
    return [ln.strip() for ln in pem.splitlines() if len(ln.strip()) >= 40 and "-----" not in ln]


def _texts(path: Path) -> list[tuple[str, str]]:
    """(label, text) of a file, and of every member when it is a (gzipped) archive.

    helm's cache under the run folder keeps chart archives (``*.chart``, ``*.tgz``): a
    secret rendered into one would be invisible to a plain byte search.
    """
    raw = path.read_bytes()
    out = [(path.name, raw.decode("utf-8", "replace"))]
    if raw[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(raw)
        except (OSError, EOFError):
            return out
        try:
            with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
                for m in tar.getmembers():
                    f = tar.extractfile(m) if m.isfile() else None
                    if f is not None:
                        out.append((f"{path.name}!{m.name}", f.read().decode("utf-8", "replace")))
        except tarfile.TarError:
            out.append((f"{path.name}!gunzip", inner.decode("utf-8", "replace")))
    return out


def _with_base64(secrets: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each token also as base64: the form it would take in a dumped Secret's data."""
    out = dict(secrets)
    for what in ("api token", "k3s join token", "admin token"):
        for v in secrets.get(what, []):
            out.setdefault(f"{what} (base64)", []).append(base64.b64encode(v.encode()).decode())
    return out


def _twin_secrets(sd: Path) -> dict[str, list[str]]:
    """The credentials a twin's state folder holds (on disk; the twin may be stopped)."""
    kube = yaml.safe_load((sd / "kubeconfig").read_text())
    token = kube["users"][0]["user"]["token"]
    join = None
    for cfg in sd.glob("nodes/*/etc/rancher/k3s/config.yaml"):
        doc = yaml.safe_load(cfg.read_text()) or {}
        if doc.get("token"):
            join = doc["token"]
    assert join, "the fixture's agents carry a join token"
    user = kube["users"][0]["user"]
    client_key = user.get("client-key-data")   # a certificate login instead of / beside a token
    out = {"api token": [token], "k3s join token": [join],
           "ssh private key": _key_fragments((sd / "ssh" / "id_ed25519").read_text())}
    if client_key:
        out["kubeconfig client key"] = [client_key[:64]] + _key_fragments(
            base64.b64decode(client_key).decode("utf-8", "replace"))
    admin = sd / "admin-token"
    if admin.exists():
        out["admin token"] = [admin.read_text().strip()]
    return out


def _cluster_secret_payloads(secret_objects: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """helm release payloads and the private keys in Secrets (as the API served them)."""
    found: dict[str, list[str]] = {"helm release payload": [], "tls private key": []}
    for s in secret_objects:
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


def test_full_rehearsal_leaves_no_secret_in_the_run_folder(migrated_run):
    assert migrated_run.ok, migrated_run.log_tail        # the migration and the rollback passed
    secrets = _twin_secrets(migrated_run.state_dir)
    secrets.update(_cluster_secret_payloads(migrated_run.live_secrets.values()))
    assert secrets["helm release payload"], ("cilium was installed by helm: its release secret exists "
                                             f"(API read errors: {migrated_run.watch_errors[-3:]})")
    assert secrets["tls private key"], ("the chart generated its CA: a private key was in a Secret "
                                        f"(API read errors: {migrated_run.watch_errors[-3:]})")
    run_dir = migrated_run.run_dir
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files) and (run_dir / "index.html").exists()
    assert any(p.suffix == ".html" and p.parent.name == "html" for p in files)
    # every kind of evidence is there to be searched, helm's home included
    assert (run_dir / "journal.json").exists() and (run_dir / "commands.jsonl").exists()
    assert any(p.parent.parent.name == "snapshots" for p in files)
    assert any("helm" in p.relative_to(run_dir).parts for p in files), "helm home under the run"
    secrets = _with_base64(secrets)
    leaks = []
    searched = 0
    for p in files:
        for label, text in _texts(p):
            searched += 1
            for what, values in secrets.items():
                for v in values:
                    if v and v in text:
                        leaks.append(f"{what} in {p.parent.relative_to(run_dir) / label}")
    assert searched >= len(files)
    assert not leaks, "secrets found in the evidence:\n" + "\n".join(sorted(set(leaks)))
    # the run folder holds cluster state: owner-only, every folder and file in it
    assert (run_dir.stat().st_mode & 0o077) == 0
    for p in [run_dir, *run_dir.rglob("*")]:
        assert (p.stat().st_mode & 0o077) == 0, f"{p} is accessible by others ({p.stat().st_mode:o})"
    # any config line with a secret key that reached the evidence shows it masked
    for p in files:
        if p.suffix in (".ipynb", ".html", ".json", ".jsonl"):
            for value in _secret_config_values(p.read_text(errors="replace")):
                assert set(value) <= {"*"}, f"unmasked secret config value in {p.name}"


#: config lines of k3s secret keys, as a diff or a file shows them (``+token: ...``)
_SECRET_LINE = re.compile(r"(?:^|\\n|\n|>|\")[-+ ]?\s*(?:token|agent-token|etcd-s3-secret-key)"
                          r":[ \t]*([^\s\\<\"]+)")


def _secret_config_values(text: str) -> list[str]:
    return _SECRET_LINE.findall(text)


def test_config_diff_shows_the_join_token_masked(tmp_path):
    """An agent whose config.yaml needs a change: its diff shows ``token: ********``.

    In the fixture the agents' configs need no change (server-only keys stay on the
    server), so the full rehearsal shows no agent diff. Here one agent carries
    ``flannel-backend`` next to its join token, as the naive procedure wrote it; the
    dry-run plan removes that key and the diff's context shows the token line.
    """
    from runbook.k3sconfig import MASK
    from twin.api import Twin

    reports = tmp_path / "reports"
    with Twin(tmp_path / "twin") as twin:
        join = _twin_secrets(twin.state_dir)["k3s join token"][0]
        cfg = twin.state_dir / "nodes" / "fast-skunk" / "etc" / "rancher" / "k3s" / "config.yaml"
        text = cfg.read_text()
        assert f"token: {join}\n" in text
        cfg.write_text(text.replace(f"token: {join}\n", f"token: {join}\nflannel-backend: vxlan\n"))
        res = runner.run(twin.params_path, phases=["preflight", "reconfigure"], execute=False,
                         run_id="masked", reports_dir=reports,
                         extra={"proceed_despite_deferral": True}, progress=lambda m: None)
        assert res.ok, f"dry run failed: {res.failed}"
    run_dir = reports / "masked"
    for name in ("02-reconfigure.ipynb", "html/02-reconfigure.html"):
        page = (run_dir / name).read_text()
        assert "flannel-backend: vxlan" in page, f"{name}: the agent's diff is shown"
        assert f"token: {MASK}" in page, f"{name}: the token line is shown masked"
        assert join not in page, f"{name}: the join token leaked"
        assert all(set(v) <= {"*"} for v in _secret_config_values(page)), name
