"""The params a twin writes for the runbook: loopback endpoints, the nodes' real InternalIPs."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from runbook import params as P
from twin import fixtures
from twin.rehearsal_params import build_params, dump_params, write_params

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def _runtime(state_dir: Path) -> SimpleNamespace:
    fx = fixtures.load("minicloud")
    ports = {n.name: 2201 + i for i, n in enumerate(fx.nodes)}
    return SimpleNamespace(
        options={}, state_dir=str(state_dir), fixture=fx,
        endpoints={"ssh": ports, "charts": "http://127.0.0.1:18879/",
                   "admin": "http://127.0.0.1:18880/",
                   "ingress": "https://127.0.0.1:18443", "ingress_port": 18443})


def test_each_node_carries_the_internal_ip_its_node_object_reports(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    internal = {o["metadata"]["name"]: next(a["address"] for a in o["status"]["addresses"]
                                            if a["type"] == "InternalIP")
                for o in fixtures.node_objects(rt.fixture)}
    nodes = build_params(rt)["nodes"]
    assert [(n["name"], n["address"], n["node_ip"]) for n in nodes] == [
        (name, "127.0.0.1", ip) for name, ip in internal.items()]
    assert internal == {"set-hog": "10.0.0.2", "fast-skunk": "10.0.0.4", "fast-heron": "10.0.0.7"}


def test_written_params_load_validate_and_draw_no_service_host_finding(tmp_path: Path) -> None:
    path = write_params(_runtime(tmp_path))
    assert path.stat().st_mode & 0o777 == 0o600
    p = P.validate(P.load(path))                 # the loopback guard ran: every endpoint local
    assert p.target.kind == "twin"
    assert {n.node_ip for n in p.servers} == {"10.0.0.2"}
    assert [f for f in P.check_values(p, p.values()) if f.field.startswith("k8sService")] == []
    # nothing the runbook no longer reads is written
    doc = yaml.safe_load(path.read_text())
    assert "proceed_despite_deferral" not in doc.get("decision", {})
    assert set(doc["twin"]) <= {"state_dir", "admin_url", "chart_repo_url"}


def test_params_are_written_as_the_python_emitter_writes_them(tmp_path: Path) -> None:
    data = build_params(_runtime(tmp_path))
    # a twin at scale: hundreds of nodes, and a few strings that need quoting or folding
    data["nodes"] = [copy.deepcopy(n) for _ in range(200) for n in data["nodes"]] + [
        {"name": "long " * 40, "x": "a: b", "y": "1e3", "z": None, "t": "yes", "u": "été"}]
    assert dump_params(data) == yaml.safe_dump(data, sort_keys=False)
