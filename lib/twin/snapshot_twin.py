"""A twin built from a snapshot archive: loading it, its assumptions, and its params.

``Twin(state_dir, snapshot=ARCHIVE)`` (``runbook twin up --from-snapshot ARCHIVE``)
serves the cluster the archive describes with the twin's usual physics
(:mod:`twin.fixtures.snapshot_fixture` makes the fixture). Once it serves, the state
folder holds ``assumptions.json`` (what the archive could not tell and the rule that
filled it in) and ``params.yaml`` targeting the twin and carrying the archive's names:

* the params the snapshot was taken with (``params.json``: k3s options, Velero and
  Argo CD namespaces, checks, limits, decision criteria) and its Cilium values, when
  the archive has them; otherwise ``params/minicloud.yaml``'s settings, with checks
  derived from the archive: one HTTPS probe per ingress host that ingress-nginx serves
  and every LoadBalancer IP;
* the cluster name, the node names and roles, each node's InternalIP;
* ``twin.snapshot`` (the archive) and ``twin.assumptions`` (one line per rule).

Example:
    >>> with Twin(tmp / "twin", snapshot="minicloud.tar.gz") as t:          # doctest: +SKIP
    ...     print(yaml.safe_load(t.params_path.read_text())["twin"]["assumptions"][0])
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

import snapshot_format

from .errors import TwinInputError
from .fixtures import FixtureError
from .fixtures.snapshot_fixture import build_fixture
from .rehearsal_params import REPO_PARAMS, build_params

ASSUMPTIONS_FILE = "assumptions.json"
INGRESS_CLASSES = (None, "nginx")   # what the twin's ingress endpoint answers for


def load_for_twin(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(fixture, runtime options) of a snapshot, or TwinInputError naming the archive."""
    try:
        snap = snapshot_format.read(path)
        params_doc = snap.params
        fx, assumed = build_fixture(snap)
    except snapshot_format.SnapshotFormatError as e:
        raise TwinInputError(f"{e.path}: {e.problem}", hint=e.hint) from e
    except FixtureError as e:
        raise TwinInputError(f"{path}: this snapshot cannot make a twin: {e}",
                             hint="see docs/snapshot-format.md for what each document needs") from e
    return fx, {"snapshot": str(Path(path).resolve()), "snapshot_params": params_doc,
                "assumptions": assumed.to_json(), "assumption_lines": assumed.lines()}


def write_assumptions(rt: Any) -> Path:
    """``<state_dir>/assumptions.json`` (0600): the rules applied, with counts and examples."""
    path = Path(rt.state_dir) / ASSUMPTIONS_FILE
    path.write_text(json.dumps({"snapshot": rt.options.get("snapshot"),
                                "assumptions": rt.options.get("assumptions") or []}, indent=1) + "\n")
    os.chmod(path, 0o600)
    return path


def _source_params(rt: Any) -> None:
    """Write the archive's params and values into the state folder as the params source."""
    doc = rt.options.get("snapshot_params") or {}
    sd = Path(rt.state_dir)
    values = sd / "cilium-values.yaml"
    values.write_text(doc.get("values") or (REPO_PARAMS / "cilium-values.yaml").read_text())
    os.chmod(values, 0o600)
    data = dict(doc.get("params") or yaml.safe_load((REPO_PARAMS / "minicloud.yaml").read_text()))
    data["cilium"] = dict(data.get("cilium") or {}, values_file=values.name)
    if not doc.get("params"):
        data["checks"] = dict(data.get("checks") or {}, **derived_checks(rt.fixture.objects))
    src = sd / "snapshot-params.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(src, 0o600)
    rt.options["params_source"] = str(src)


def derived_checks(objects: list[dict]) -> dict[str, list[dict]]:
    """Checks for a cluster whose archive has no params: every ingress host ingress-nginx
    serves (HTTPS, 200) and every LoadBalancer IP (must not change)."""
    hosts: list[str] = []
    for o in objects:
        if o.get("kind") != "Ingress":
            continue
        spec = o.get("spec") or {}
        cls = spec.get("ingressClassName") or ((o["metadata"].get("annotations") or {})
                                               .get("kubernetes.io/ingress.class"))
        if cls not in INGRESS_CLASSES:
            continue
        hosts += [r["host"] for r in spec.get("rules") or [] if r.get("host") and "*" not in r["host"]]
    lbs = []
    for o in objects:
        if o.get("kind") == "Service" and (o.get("spec") or {}).get("type") == "LoadBalancer":
            for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if i.get("ip"):
                    lbs.append({"namespace": o["metadata"].get("namespace", "default"),
                                "name": o["metadata"]["name"], "ip": i["ip"]})
    return {"ingress": [{"url": f"https://{h}/", "expect_status": 200} for h in dict.fromkeys(hosts)],
            "loadbalancer_ips": lbs}


def snapshot_params(rt: Any) -> dict:
    """The params of a snapshot twin (see the module docstring)."""
    _source_params(rt)
    data = build_params(rt)
    data["twin"] = dict(data.get("twin") or {}, snapshot=rt.options.get("snapshot"),
                        assumptions=list(rt.options.get("assumption_lines") or []))
    return data
