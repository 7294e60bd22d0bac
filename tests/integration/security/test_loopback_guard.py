"""Loopback guard: a twin-kind params file that points off loopback is refused by the library.

Every entry point is tried: ``runbook.params.load``, ``session.start``, and the
transports used without params (``Node``, ``Cluster``, ``checks.probe_ingress``,
``Helm.repo_add``), plus the CLI (exit code 6). Each must raise
:class:`~runbook.errors.LoopbackViolation` naming the file and field where there is
one, and none may open a connection: ``net_tripwire`` (autouse, see conftest) fails
the test on any non-loopback connect in this process, and the CLI runs under the
child-process tripwire that refuses every connection.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from runbook import params as P
from runbook import session
from runbook.errors import LoopbackViolation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]
VALUES = REPO / "params" / "cilium-values.yaml"
REMOTE = "10.0.0.4"   # minicloud's fast-skunk: DATA only, never contacted


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "twin",
        "clusters": [{"name": "twin", "cluster": {"server": server,
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "twin", "context": {"cluster": "twin", "user": "u"}}]}))
    return path


def _twin_params(tmp: Path) -> dict[str, Any]:
    """A valid twin-kind params mapping, every endpoint on loopback (nothing listens)."""
    kube = _kubeconfig(tmp / "kubeconfig", "https://127.0.0.1:6443")
    return {
        "target": {"name": "minicloud", "kind": "twin", "kubeconfig": str(kube)},
        "ssh": {"user": "ubuntu", "key_path": str(tmp / "id_ed25519"),
                "known_hosts": str(tmp / "known_hosts")},
        "nodes": [{"name": "set-hog", "role": "server", "address": "127.0.0.1", "port": 2201},
                  {"name": "fast-skunk", "role": "agent", "address": "127.0.0.1", "port": 2202}],
        "cilium": {"chart_repo_url": "http://127.0.0.1:8879/", "values_file": str(VALUES)},
        "checks": {"ingress": [{"url": "https://homer.10.0.0.200.nip.io/",
                                "resolve_to": "127.0.0.1:8443"}],
                   "regression": []},
        "twin": {"admin_url": "http://127.0.0.1:8880/"},
    }


def _set_node(address: str) -> Callable[[dict, Path], None]:
    def mutate(d: dict, tmp: Path) -> None:
        d["nodes"][1]["address"] = address
    return mutate


def _kube_remote(d: dict, tmp: Path) -> None:
    _kubeconfig(tmp / "kubeconfig", "https://10.0.0.2:6443")


def _ingress_without_resolve_to(d: dict, tmp: Path) -> None:
    del d["checks"]["ingress"][0]["resolve_to"]        # *.10.0.0.200.nip.io -> 10.0.0.200


def _ingress_remote_resolve_to(d: dict, tmp: Path) -> None:
    d["checks"]["ingress"][0]["resolve_to"] = "10.0.0.200:443"


def _regression_http(d: dict, tmp: Path) -> None:
    d["checks"]["regression"] = [{"name": "grafana", "kind": "http",
                                  "url": "https://grafana.10.0.0.200.nip.io/"}]


def _chart_repo(d: dict, tmp: Path) -> None:
    d["cilium"]["chart_repo_url"] = "https://helm.cilium.io/"


def _twin_chart_repo(d: dict, tmp: Path) -> None:
    d["twin"]["chart_repo_url"] = f"http://{REMOTE}:8879/"


def _admin(d: dict, tmp: Path) -> None:
    d["twin"]["admin_url"] = f"http://{REMOTE}:8880/"


CASES = [
    ("node-address", _set_node(REMOTE), "nodes.1.address"),
    ("node-any-address", _set_node("0.0.0.0"), "nodes.1.address"),
    ("node-name-that-looks-local", _set_node("127.0.0.1.nip.io"), "nodes.1.address"),
    ("node-v4-mapped-v6", _set_node("::ffff:10.0.0.4"), "nodes.1.address"),
    ("kubeconfig-server", _kube_remote, "target.kubeconfig"),
    ("ingress-check-without-resolve_to", _ingress_without_resolve_to, "checks.ingress.0.url"),
    ("ingress-check-remote-resolve_to", _ingress_remote_resolve_to, "checks.ingress.0.resolve_to"),
    ("regression-http-check", _regression_http, "checks.regression.0.url"),
    ("chart-repo-url", _chart_repo, "cilium.chart_repo_url"),
    ("twin-chart-repo-url", _twin_chart_repo, "twin.chart_repo_url"),
    ("twin-admin-url", _admin, "twin.admin_url"),
]


def _write(tmp: Path, mutate: Callable[[dict, Path], None] | None) -> Path:
    d = _twin_params(tmp)
    if mutate is not None:
        mutate(d, tmp)
    path = tmp / "twin-params.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_the_base_twin_params_are_accepted(tmp_path: Path) -> None:
    """The cases below differ from an accepted file by exactly one endpoint."""
    p = P.validate(P.load(_write(tmp_path, None)))
    assert p.target.kind == "twin"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_params_load_refuses_a_non_loopback_endpoint(case: tuple, tmp_path: Path) -> None:
    _, mutate, field = case
    path = _write(tmp_path, mutate)
    with pytest.raises(LoopbackViolation) as ei:
        P.load(path)
    text = str(ei.value)
    assert ei.value.exit_code == 6
    assert str(path) in text and f"field {field}" in text, text
    assert "refusing to connect" in text and "loopback" in text


@pytest.mark.parametrize("case", CASES[:1] + CASES[4:6] + CASES[8:9],
                         ids=[c[0] for c in CASES[:1] + CASES[4:6] + CASES[8:9]])
def test_session_start_refuses_before_creating_anything(case: tuple, tmp_path: Path) -> None:
    _, mutate, field = case
    path = _write(tmp_path, mutate)
    run_dir = tmp_path / "reports" / "loopback"
    for execute in (False, True):
        with pytest.raises(LoopbackViolation, match=f"field {field}"):
            session.start("preflight", str(path), str(run_dir), execute=execute)
    assert not run_dir.exists()


def test_node_refuses_a_remote_address_before_connecting(tmp_path: Path) -> None:
    from runbook.nodes import Node

    n = Node("fast-skunk", "agent", REMOTE, 22, "ubuntu", None, str(tmp_path / "known_hosts"),
             kind="twin", command_log=tmp_path / "commands.jsonl")
    with pytest.raises(LoopbackViolation, match=f"refusing to connect to {REMOTE} \\(SSH fast-skunk\\)"):
        n.run("true")
    assert not (tmp_path / "commands.jsonl").exists()
    # the same guard for nodes built from params that were never loaded from a file
    d = _twin_params(tmp_path)
    d["nodes"][1]["address"] = REMOTE
    nodes = Node.from_params(P.from_dict(d))
    with pytest.raises(LoopbackViolation):
        next(x for x in nodes if x.name == "fast-skunk").run("true")


def test_cluster_refuses_a_remote_api_server_before_connecting(tmp_path: Path) -> None:
    from runbook.cluster import Cluster

    kube = _kubeconfig(tmp_path / "remote-kubeconfig", "https://10.0.0.2:6443")
    c = Cluster(str(kube), kind="twin", retry_for=0.1)
    with pytest.raises(LoopbackViolation, match="10.0.0.2 \\(Kubernetes API server\\)"):
        c.request("GET", "/version")
    # built from params that bypassed params.load (from_dict does not check endpoints)
    d = _twin_params(tmp_path)
    d["target"]["kubeconfig"] = str(kube)
    with pytest.raises(LoopbackViolation):
        Cluster.from_params(P.from_dict(d)).request("GET", "/version")


def test_ingress_probe_refuses_a_remote_address() -> None:
    from runbook import checks

    with pytest.raises(LoopbackViolation):
        checks.probe_ingress("https://homer.10.0.0.200.nip.io/", kind="twin")
    with pytest.raises(LoopbackViolation):
        checks.probe_ingress("https://homer.10.0.0.200.nip.io/", resolve_to="10.0.0.200:443",
                             kind="twin")


def test_helm_refuses_a_remote_repository_before_running_helm(tmp_path: Path, helm_bin: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook import helm as helm_mod

    spawned: list[Any] = []
    monkeypatch.setattr(helm_mod.subprocess, "run", lambda *a, **kw: spawned.append(a) or None)
    h = helm_mod.Helm(binary=helm_bin, env_home=tmp_path / "helm", kind="twin")
    with pytest.raises(LoopbackViolation, match="helm repository cilium"):
        h.repo_add("cilium", "https://helm.cilium.io/")
    assert spawned == [], "helm was started for a refused repository"


def test_cli_exits_6_before_any_connection(tmp_path: Path, tripwire) -> None:
    path = _write(tmp_path, _set_node(REMOTE))
    p = subprocess.run([sys.executable, "-m", "runbook.cli", "run", "--params", str(path),
                        "--reports-dir", str(tmp_path / "reports")], env=tripwire.env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert p.returncode == 6, (p.stdout, p.stderr)
    first = p.stderr.splitlines()[0]
    assert first.startswith("error: refusing to connect to 10.0.0.4")
    assert str(path) in first and "field nodes.1.address" in first
    assert "Traceback" not in p.stderr and not (tmp_path / "reports").exists()
    assert tripwire.attempts() == []


@pytest.mark.parametrize("mutate", [_set_node(REMOTE), _kube_remote], ids=["ssh-node", "kubeconfig"])
def test_snapshot_cli_exits_6_before_any_connection(mutate, tmp_path: Path, tripwire) -> None:
    """``runbook snapshot`` of a twin-kind target off loopback: refused, nothing written."""
    path = _write(tmp_path, mutate)
    out = tmp_path / "snap.tar.gz"
    p = subprocess.run([sys.executable, "-m", "runbook.cli", "snapshot", "--params", str(path),
                        "--out", str(out)], env=tripwire.env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=90)
    assert p.returncode == 6, (p.stdout, p.stderr)
    assert p.stderr.splitlines()[0].startswith("error: refusing to connect to 10.0.0.")
    assert "Traceback" not in p.stderr and not out.exists()
    assert tripwire.attempts() == []
