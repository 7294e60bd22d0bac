"""What a snapshot reads through the Kubernetes API, and how each object is cleaned.

Every read goes through :meth:`runbook.cluster.Cluster.iter_collection` (the API choke
point: paged raw JSON, retries, the loopback guard of a twin target). What is read:

* the built-in types of :data:`BUILTIN` (nodes, workloads and their pods, Services,
  Endpoints, EndpointSlices, Ingresses, NetworkPolicies, PVCs, PVs, storage and ingress
  classes, PDBs, ConfigMaps, ServiceAccounts, CRDs);
* every custom resource of the add-on groups the runbook deals with
  (:data:`ADDON_GROUPS`: Argo CD, Velero, MetalLB, Longhorn, Cilium, k3s' HelmCharts);
* the owners of anything read (``ownerReferences``) whose kind is a custom resource,
  e.g. a Prometheus object owning a StatefulSet, so that no object is orphaned;
* Secrets, kept as namespace, name, type and labels only (:func:`secret_entry`).

Cleaning (:func:`clean`) never keeps a credential: ``managedFields`` and the
``last-applied-configuration`` annotation are dropped, container environment values
whose name looks secret are masked, ConfigMap values pass through
:func:`runbook.redact.redact` (``binaryData`` keeps only its keys), and any object whose
JSON still shows a secret-shaped value has every string masked where it matches.

Example:
    >>> clean({"kind": "ConfigMap", "metadata": {"name": "c", "managedFields": [{}]},
    ...        "data": {"app.yaml": "password: hunter22"}})["data"]
    {'app.yaml': 'password: ********'}
    >>> secret_entry({"metadata": {"name": "s", "namespace": "a"}, "type": "Opaque",
    ...               "data": {"k": "dmFsdWU="}})
    {'namespace': 'a', 'name': 's', 'type': 'Opaque', 'labels': {}, 'keys': 1}
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable

from .redact import MASK, SECRET_KEYS, redact

#: (apiVersion, kind, plural, namespaced) of the built-in types a snapshot reads.
BUILTIN: tuple[tuple[str, str, str, bool], ...] = (
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ("v1", "Namespace", "namespaces", False),
    ("v1", "Node", "nodes", False),
    ("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    ("networking.k8s.io/v1", "IngressClass", "ingressclasses", False),
    ("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", False),
    ("v1", "PersistentVolume", "persistentvolumes", False),
    ("v1", "ServiceAccount", "serviceaccounts", True),
    ("v1", "ConfigMap", "configmaps", True),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    ("v1", "Service", "services", True),
    ("v1", "Endpoints", "endpoints", True),
    ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
    ("apps/v1", "Deployment", "deployments", True),
    ("apps/v1", "StatefulSet", "statefulsets", True),
    ("apps/v1", "DaemonSet", "daemonsets", True),
    ("apps/v1", "ReplicaSet", "replicasets", True),
    ("batch/v1", "CronJob", "cronjobs", True),
    ("batch/v1", "Job", "jobs", True),
    ("v1", "Pod", "pods", True),
    ("networking.k8s.io/v1", "Ingress", "ingresses", True),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
)

#: API groups whose every custom resource is read: the add-ons the runbook acts on or
#: checks (Argo CD, Velero, MetalLB, Longhorn), Cilium itself, and k3s' packaged
#: components (HelmCharts for Traefik, Addons for the manifests k3s applies).
ADDON_GROUPS = ("argoproj.io", "velero.io", "metallb.io", "longhorn.io", "cilium.io",
                "helm.cattle.io", "k3s.cattle.io")

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Environment variable names whose value is a credential (DB_PASSWORD, API_TOKEN ...).
_SECRET_ENV = re.compile(r"(PASS|TOKEN|SECRET|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|AUTH)",
                         re.IGNORECASE)
_SECRET_KEY_SET = {k.lower() for k in SECRET_KEYS}
# ``adminPassword: x``, ``db.password=x``, ``apiToken: x`` inside a text (Helm values,
# config files): a key *ending* in a credential word, which redact()'s exact keys miss.
_SECRET_WORD = r"(?:password|passwd|token|secret|apikey|api_key|accesskey|access_key|secretkey|secret_key)"
# A value starting with ``{`` or ``[`` is a structure (``serviceAccountToken: {...}``), not a credential.
# (The key's start is left out of the match: a leading ``[\w.-]*`` would make the scan quadratic.)
_SUFFIX_KEY = re.compile(r"(?P<pre>" + _SECRET_WORD + r"['\"]?[ \t]*[:=][ \t]*)"
                         r"(?P<val>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;{}\[\]]+)", re.IGNORECASE)
#: a mapping key naming a credential (``clientSecret``, ``adminPassword``, ``apiToken``)
_SECRET_NAME = re.compile(_SECRET_WORD + "$", re.IGNORECASE)
_NOT_A_VALUE = ("", "null", "~", "true", "false", "|", ">", "|-", ">-")


def _is_value(m: re.Match[str]) -> bool:
    bare = m.group("val").strip("\"'")
    return bare not in _NOT_A_VALUE and not set(bare) <= {"*"}


def _mask_text(text: str) -> str:
    return _SUFFIX_KEY.sub(lambda m: m.group("pre") + MASK if _is_value(m) else m.group(0), redact(text))


def _suspicious(text: str) -> bool:
    """Anything in ``text`` (an object's JSON) that cleaning would mask."""
    return redact(text) != text or any(_is_value(m) for m in _SUFFIX_KEY.finditer(text))


# --------------------------------------------------------------------------- cleaning
def _mask_env(containers: Iterable[dict]) -> None:
    for c in containers or ():
        for env in c.get("env") or ():
            if "value" in env and env.get("value") and _SECRET_ENV.search(str(env.get("name", ""))):
                env["value"] = MASK


def _mask_tree(node: Any, key: str | None = None) -> Any:
    """Every string leaf through :func:`redact`; a value under a secret key masked whole."""
    if isinstance(node, dict):
        return {k: _mask_tree(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_tree(v, key) for v in node]
    if isinstance(node, str):
        if key is not None and node and set(node) != {"*"} and (
                key.lower() in _SECRET_KEY_SET or _SECRET_NAME.search(key)):
            return MASK
        return _mask_text(node)
    return node


def clean(obj: dict) -> dict:
    """A copy of ``obj`` fit for the archive (see the module docstring).

    The copy keeps everything the twin and a reader need: metadata (names, labels,
    annotations, owners, uids), spec and status.
    """
    text = json.dumps(obj, separators=(",", ":"))
    # What follows only removes or masks: an object whose JSON shows nothing secret-shaped
    # now needs no leaf-by-leaf pass (most objects: a pod costs one scan, not thousands).
    suspicious = _suspicious(text)
    obj = json.loads(text)
    md = obj.setdefault("metadata", {})
    md.pop("managedFields", None)
    anns = md.get("annotations")
    if anns and LAST_APPLIED in anns:
        anns.pop(LAST_APPLIED)
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        _mask_env(spec.get("containers"))
        _mask_env(spec.get("initContainers"))
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        pspec = ((spec.get("template") or {}).get("spec") or {})
        _mask_env(pspec.get("containers"))
        _mask_env(pspec.get("initContainers"))
    elif kind == "CronJob":
        pspec = (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        _mask_env(pspec.get("containers"))
        _mask_env(pspec.get("initContainers"))
    elif kind == "ConfigMap":
        obj["data"] = {k: _mask_text(str(v)) for k, v in (obj.get("data") or {}).items()}
        if obj.get("binaryData"):
            obj["binaryData"] = {k: "" for k in obj["binaryData"]}
    if suspicious:
        obj = _mask_tree(obj)
    return obj


def secret_entry(secret: dict) -> dict:
    """A Secret as the archive keeps it: namespace, name, type, labels and how many keys.

    The values (``data``, ``stringData``) and the annotations (which may hold a copy of
    them) are never kept.
    """
    md = secret.get("metadata") or {}
    labels = {str(k): redact(str(v)) for k, v in (md.get("labels") or {}).items()}
    return {"namespace": md.get("namespace", ""), "name": md.get("name", ""),
            "type": secret.get("type") or "Opaque", "labels": labels,
            "keys": len(secret.get("data") or {}) + len(secret.get("stringData") or {})}


# --------------------------------------------------------------------------- reading
def crd_resource(crd: dict) -> tuple[str, str, str, bool] | None:
    """(apiVersion, kind, plural, namespaced) a CRD serves, at its storage version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not versions or not names.get("plural") or not names.get("kind"):
        return None
    version = next((v for v in versions if v.get("storage")), versions[0])["name"]
    return (f"{spec.get('group')}/{version}", names["kind"], names["plural"],
            spec.get("scope", "Namespaced") == "Namespaced")


def addon_types(crds: Iterable[dict]) -> list[tuple[str, str, str, bool]]:
    """The custom resource types of :data:`ADDON_GROUPS` the cluster serves."""
    out = []
    for crd in crds:
        if (crd.get("spec") or {}).get("group") in ADDON_GROUPS:
            rt = crd_resource(crd)
            if rt:
                out.append(rt)
    return sorted(out)


def missing_owner_types(read: dict[tuple[str, str], list[dict]], crds: Iterable[dict]
                        ) -> list[tuple[str, str, str, bool]]:
    """Custom resource types that own something read but were not read themselves.

    Args:
        read: (apiVersion, kind) -> objects read so far.
        crds: the cluster's CRDs.
    """
    have = {(av.rpartition("/")[0], kind) for av, kind in read}
    wanted: set[tuple[str, str]] = set()
    for objs in read.values():
        for o in objs:
            for ref in (o.get("metadata") or {}).get("ownerReferences") or ():
                key = (str(ref.get("apiVersion", "")).rpartition("/")[0], str(ref.get("kind", "")))
                if key not in have:
                    wanted.add(key)
    out = []
    for crd in crds:
        rt = crd_resource(crd)
        if rt and (rt[0].rpartition("/")[0], rt[1]) in wanted:
            out.append(rt)
    return sorted(out)


def read_type(cluster: Any, rtype: tuple[str, str, str, bool],
              progress: Callable[[str], None]) -> list[dict]:
    """Every object of one type, each with ``apiVersion`` and ``kind`` set (a list's items
    carry neither) and cleaned; progress every 5000 objects."""
    api_version, kind, plural, _ = rtype
    out = []
    for o in cluster.iter_collection(api_version, plural):
        o["apiVersion"], o["kind"] = api_version, kind
        out.append(clean(o))
        if len(out) % 5000 == 0:
            progress(f"  {plural}: {len(out)} read so far")
    return out


def read_secrets(cluster: Any) -> list[dict]:
    """Every Secret as :func:`secret_entry` (the values are dropped as each page arrives)."""
    return [secret_entry(s) for s in cluster.iter_collection("v1", "secrets")]
