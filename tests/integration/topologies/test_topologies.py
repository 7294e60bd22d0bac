"""Each topology of docs/topologies.md, rehearsed end to end or refused in preflight.

The archives are in ``tests/fixtures/topologies/`` (``build.py`` there regenerates them
from the shipped minicloud snapshot). Each rehearsal runs the CLI, as a person would:
``runbook rehearse --from-snapshot <archive> [--with-rollback]``. A handled topology
must pass the migration and the rollback, and its preflight must say how it is handled;
a refused one must stop at preflight's prerequisites gate with the reason, before any
step changes anything.
"""
from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUNBOOK = Path(sys.executable).parent / "runbook"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "topologies"

#: topology -> what its preflight, reconfigure or rollback report must say (the handling)
HANDLED = {
    "single-node": {"01-preflight": ["single node (set-hog): server only"]},
    "ha-servers": {"01-preflight": ["3 servers with embedded etcd (set-hog, sly-fox, sly-owl)",
                                    "2 of 3 members keep quorum (2 needed)"]},
    "host-gw": {"01-preflight": ["host-gw: no tunnel device"],
                "02-reconfigure": ["host-gw route(s)"]},
    "wireguard-native": {"01-preflight": ["wireguard-native: flannel-wg (WireGuard, UDP 51820)"],
                         "02-reconfigure": ["deleted flannel-wg"]},
    "other-cidr": {"01-preflight": ["cluster-cidr 10.52.0.0/16 (not k3s' default 10.42.0.0/16)"]},
    "no-addons": {"01-preflight": ["skipped: Velero is not installed",
                                   "add-on: Argo CD ok not installed: nothing to pause"]},
    "klipper-traefik": {"01-preflight": ["3 pod(s) with hostPort", "k3s servicelb (klipper-lb)",
                                         "maps hostPorts itself, nothing to set"],
                        "04-verify": ["kube-system traefik 10.0.0.2,10.0.0.4,10.0.0.7 10.0.0.2,10.0.0.4,10.0.0.7 unchanged"]},
    "network-policies": {"01-preflight": ["2 (whoami/allow-ingress-nginx, whoami/default-deny-ingress)",
                                          "enforced today by k3s' kube-router"],
                         "04-verify": ["NetworkPolicy flows behave as before the migration",
                                       "allowed allowed", "denied denied"]},
}
#: topology -> the reason preflight must give for refusing it
REFUSED = {
    "dual-stack": "dual-stack cluster (IPv6: 2001:db8:42::/56, 2001:db8:43::/112)",
}


def _rehearse(name: str, reports: Path, *, rollback: bool) -> subprocess.CompletedProcess:
    args = [str(RUNBOOK), "rehearse", "--from-snapshot", str(FIXTURES / f"{name}.snapshot.tar.gz"),
            "--reports-dir", str(reports), "--run-id", name] + (["--with-rollback"] if rollback else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def _html(run_dir: Path, phase: str) -> str:
    """The phase's HTML report as text: tags dropped, entities decoded, spaces collapsed."""
    text = re.sub(r"<[^>]+>", " ", (run_dir / "html" / f"{phase}.html").read_text())
    return " ".join(html.unescape(text).replace("/ ", "/").split())


@pytest.mark.timeout(660)
@pytest.mark.parametrize("name", sorted(HANDLED))
def test_topology_rehearses_with_rollback(name: str, tmp_path: Path) -> None:
    res = _rehearse(name, tmp_path, rollback=True)
    assert res.returncode == 0 and "REHEARSAL PASSED" in res.stdout, (res.stdout[-5000:], res.stderr[-3000:])
    run_dir = tmp_path / name
    assert all(c["ok"] for c in json.loads((run_dir / "rehearsal.json").read_text())["checks"].values())
    for phase, texts in HANDLED[name].items():
        page = _html(run_dir, phase)
        for text in texts:
            assert text in page, (phase, text)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_topology_is_refused_in_preflight_before_any_change(name: str, tmp_path: Path) -> None:
    res = _rehearse(name, tmp_path, rollback=False)
    assert res.returncode != 0 and "REHEARSAL FAILED" in res.stdout
    assert re.search(r"phase preflight: FAILED in [\d.]+s — GateFailed: GATE FAILED: every prerequisite holds",
                     res.stdout), res.stdout[-3000:]
    assert "nothing was changed" in res.stdout and "phase reconfigure" not in res.stdout
    run_dir = tmp_path / name
    page = _html(run_dir, "01-preflight")
    assert REFUSED[name] in page and "Refused before anything changes" in page
    entries = json.loads((run_dir / "journal.json").read_text())["entries"]
    assert entries == [], [e["step"] for e in entries]     # no step journaled: nothing changed
