"""Helpers shared by the twin chart tests: render with the real helm, index the objects,
and reduce a workload to what the twin's models and the runbook depend on."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "lib" / "twin" / "charts" / "cilium"
PHASE22_VALUES = REPO / "tests" / "fixtures" / "cilium-values-phase22.yaml"

#: --set variants on top of the Phase 22 values, named for the test ids.
VARIANTS: dict[str, list[str]] = {
    "phase22": [],
    "tunnel-port-8473": ["tunnelPort=8473"],
    "cluster-pool": ["ipam.mode=cluster-pool",
                     "ipam.operator.clusterPoolIPv4PodCIDRList={10.245.0.0/16}"],
    # Cilium's migration guide install values
    "migration": ["operator.unmanagedPodWatcher.restart=false", "tunnelPort=8473",
                  "cni.customConf=true", "cni.uninstall=false", "ipam.mode=cluster-pool",
                  "ipam.operator.clusterPoolIPv4PodCIDRList={10.245.0.0/16}",
                  "policyEnforcementMode=never", "bpf.hostLegacyRouting=true"],
    "no-hubble-no-kpr": ["hubble.enabled=false", "hubble.relay.enabled=false",
                         "hubble.ui.enabled=false", "kubeProxyReplacement=false",
                         "cni.exclusive=false"],
    "k3s-local-apiserver": ["k8sServiceHost=127.0.0.1", "k8sServicePort=6444",
                            "cni.uninstall=true", "bpf.hostLegacyRouting=false"],
}

#: --set values each chart must refuse, with the message fragment of its template fail.
FAILS: dict[str, tuple[list[str], str]] = {
    "kpr-strict": (["kubeProxyReplacement=strict"],
                   "kubeProxyReplacement must be explicitly set to a valid value (true or false)"),
    "old-tunnel-key": (["tunnel=vxlan"], "tunnel was deprecated in v1.14 and has been removed"),
    "host-and-hostref": (["k8sServiceHostRef.name=kubeapi", "k8sServiceHostRef.key=host"],
                         "Both k8sServiceHostRef and k8sServiceHost are set"),
    "empty-cluster-name": (["cluster.name="], "The cluster name is invalid: cannot be empty"),
    "long-cluster-name": (["cluster.name=" + "a" * 33],
                          "The cluster name is invalid: must not be more than 32 characters"),
    "bad-cluster-name": (["cluster.name=Bad_Name"],
                         "The cluster name is invalid: must consist of lower case alphanumeric"),
    "default-with-id": (["cluster.id=5"],
                        "The cluster name is invalid: cannot use default value with cluster.id != 0"),
    "ui-without-relay": (["hubble.relay.enabled=false"],
                         "Hubble UI requires .Values.hubble.relay.enabled=true"),
    "relay-without-hubble": (["hubble.enabled=false"],
                             "Hubble Relay requires .Values.hubble.enabled=true"),
}

Key = tuple[str, str | None, str]


def helm_template(helm: str, env: dict[str, str], chart: str | Path, sets: list[str] = (),
                  values: Path | None = PHASE22_VALUES, *, check: bool = True,
                  extra: list[str] = ()) -> subprocess.CompletedProcess:
    """``helm template cilium CHART -n kube-system -f VALUES --set ...``."""
    args = [helm, "template", "cilium", str(chart), "-n", "kube-system", *extra]
    if values is not None:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        # stderr of a render never holds key material; stdout might, so it is not shown
        raise AssertionError(f"helm template failed ({p.returncode}): {p.stderr}")
    return p


def fail_message(stderr: str) -> str:
    """The text of a template ``fail`` from helm's stderr (without the file position)."""
    m = re.search(r"execution error at \([^)]*\): (.*)", stderr)
    return m.group(1).strip() if m else stderr.strip()


def objects(text: str) -> dict[Key, dict[str, Any]]:
    """Rendered objects by (kind, namespace, name); fails on a duplicate."""
    out: dict[Key, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        md = doc["metadata"]
        key = (doc["kind"], md.get("namespace"), md["name"])
        assert key not in out, f"duplicate object {key}"
        out[key] = doc
    return out


def _env(c: dict[str, Any]) -> list[tuple[str, Any]]:
    # plain values compared as strings; valueFrom compared as its source
    return [(e["name"], str(e["value"]) if "value" in e else e.get("valueFrom"))
            for e in c.get("env") or []]


def workload_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What the twin's controllers and the runbook read from a DaemonSet/Deployment."""
    spec = obj["spec"]
    pod = spec["template"]["spec"]
    return {
        "labels": obj["metadata"].get("labels"),
        "selector": spec["selector"],
        "replicas": spec.get("replicas"),
        "strategy": spec.get("updateStrategy") or spec.get("strategy"),
        "template_labels": spec["template"]["metadata"].get("labels"),
        "hostNetwork": bool(pod.get("hostNetwork")),
        "serviceAccountName": pod.get("serviceAccountName"),
        "priorityClassName": pod.get("priorityClassName") or None,
        "tolerations": pod.get("tolerations"),
        "nodeSelector": pod.get("nodeSelector"),
        "init": [c["name"] for c in pod.get("initContainers") or []],
        "containers": [c["name"] for c in pod["containers"]],
        "env": {c["name"]: _env(c) for c in (pod.get("initContainers") or []) + pod["containers"]},
        "images": {c["name"]: c["image"] for c in (pod.get("initContainers") or []) + pod["containers"]},
        "ports": {c["name"]: c.get("ports") for c in pod["containers"]},
        "readiness": {c["name"]: c.get("readinessProbe") for c in pod["containers"]},
        "mounts": {c["name"]: sorted(m["name"] for m in c.get("volumeMounts") or [])
                   for c in (pod.get("initContainers") or []) + pod["containers"]},
        "volumes": sorted(v["name"] for v in pod.get("volumes") or []),
    }


def env_of(obj: dict[str, Any], container: str) -> dict[str, Any]:
    pod = obj["spec"]["template"]["spec"]
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        if c["name"] == container:
            return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}
    raise KeyError(container)
