"""Write ``<state_dir>/params.yaml``: the runbook's params for this twin.

It is ``params/minicloud.yaml`` with every endpoint pointed at the twin: the kubeconfig,
the SSH ports on 127.0.0.1 with the twin's known_hosts and client key, the chart
repository URL, and the ingress checks resolved to the twin's HTTPS endpoint with its
CA. Each node also carries its InternalIP (``node_ip``, the fixture's address), as a
real cluster's params do. The target is marked ``kind: twin`` so that the library
refuses to connect anywhere that is not loopback.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params"


def source_params(rt: Any) -> Path:
    return Path(rt.options.get("params_source") or REPO_PARAMS / "minicloud.yaml")


def build_params(rt: Any) -> dict:
    src = source_params(rt)
    data = yaml.safe_load(src.read_text()) if src.exists() else {}
    sd = Path(rt.state_dir)
    ep = rt.endpoints
    cluster = getattr(rt.fixture, "cluster", {}) or {}
    data["target"] = {
        "name": cluster.get("name", data.get("target", {}).get("name", "minicloud")),
        "kind": "twin",
        "kubeconfig": str(sd / "kubeconfig"),
        "context": None,
    }
    ssh = dict(data.get("ssh") or {})
    ssh.update({"user": "ubuntu", "key_path": str(sd / "ssh" / "id_ed25519"),
                "known_hosts": str(sd / "ssh" / "known_hosts"), "trust_on_first_use": False})
    data["ssh"] = ssh
    ports = ep.get("ssh", {})
    specs = {n.name: n for n in getattr(rt.fixture, "nodes", [])}
    data["nodes"] = []
    for name, port in ports.items():
        node = {"name": name, "role": getattr(specs.get(name), "role", "agent"),
                "address": "127.0.0.1", "port": int(port)}
        if name in specs:
            # The SSH address is loopback; the node's InternalIP (its Node object's
            # status.addresses) is the fixture's, as on the real cluster. The runbook
            # compares k8sServiceHost with it and never connects to it.
            node["node_ip"] = specs[name].ip
        data["nodes"].append(node)
    cil = dict(data.get("cilium") or {})
    if "charts" in ep:
        cil["chart_repo_url"] = ep["charts"]
        cil["chart_repo_name"] = "twin"
    values = cil.get("values_file", "cilium-values.yaml")
    if not os.path.isabs(values):
        cil["values_file"] = str((src.parent / values).resolve())
    data["cilium"] = cil
    checks = dict(data.get("checks") or {})
    if "ingress" in ep and checks.get("ingress"):
        ca = str(sd / "pki" / "ca.crt")
        checks["ingress"] = [dict(c, ca_file=ca, resolve_to=f"127.0.0.1:{ep['ingress_port']}")
                             for c in checks["ingress"]]
    elif checks.get("ingress"):
        # a twin without its ingress endpoint cannot answer these hosts on loopback
        checks["ingress"] = []
    data["checks"] = checks
    twin = {"state_dir": str(sd)}
    if "admin" in ep:
        twin["admin_url"] = ep["admin"]
    data["twin"] = twin
    return data


def dump_params(data: dict) -> str:
    """``yaml.safe_dump(data, sort_keys=False)``, with libyaml's emitter when PyYAML has
    it (the same text; a second of pure-Python emitting at 500 nodes)."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def write_params(rt: Any) -> Path:
    path = Path(rt.state_dir) / "params.yaml"
    header = ("# Written by `runbook twin up`: params/minicloud.yaml pointed at this twin.\n"
              "# kind: twin makes the runbook refuse every non-loopback address.\n")
    data = None
    if rt.options.get("snapshot"):   # a twin of a snapshot: the archive's params and names
        from .snapshot_twin import snapshot_params  # noqa: PLC0415

        data = snapshot_params(rt)
        header = header.replace("params/minicloud.yaml", f"the params of snapshot {rt.options['snapshot']}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + dump_params(data or build_params(rt)))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
