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
from typing import Any, Iterable

import pytest
from helpers.secret_search import key_fragments, secret_config_values, texts, twin_secrets, with_base64

from runbook import runner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


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
                found["tls private key"] += key_fragments(pem) + [data[k][:64]]
    return found


def test_full_rehearsal_leaves_no_secret_in_the_run_folder(migrated_run):
    assert migrated_run.ok, migrated_run.log_tail        # the migration and the rollback passed
    secrets = twin_secrets(migrated_run.state_dir)
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
    secrets = with_base64(secrets)
    leaks = []
    searched = 0
    for p in files:
        for label, text in texts(p):
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
            for value in secret_config_values(p.read_text(errors="replace")):
                assert set(value) <= {"*"}, f"unmasked secret config value in {p.name}"


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
        join = twin_secrets(twin.state_dir)["k3s join token"][0]
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
        assert all(set(v) <= {"*"} for v in secret_config_values(page)), name
