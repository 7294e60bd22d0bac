"""Resource types: what the store serves (group, version, plural) and the built-ins.

``ResourceType`` describes one served (group, version, plural) as discovery reports it.
Storage is keyed by ``(group, plural)``, so a CRD served at several versions shares one
set of objects. ``builtin_types()`` lists every built-in resource the twin serves; CRDs
add theirs at run time (:mod:`twin.store.crds`).
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource, as discovery reports it."""

    group: str            # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = DEFAULT_VERBS
    categories: tuple[str, ...] = ()
    list_kind: str = ""   # defaults to kind + "List"
    status_subresource: bool = True
    scale_subresource: bool = False
    table_columns: tuple[dict, ...] = ()   # additionalPrinterColumns for CRDs (Table output)
    storage: tuple[str, str] | None = None  # another resource's storage, served converted

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: shared by every version of the resource (and by another group's
        view of the same objects: ``events.k8s.io`` events are core events)."""
        return self.storage or (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``plural.group`` as a real server names it in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


#: Storage keys the store treats specially.
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
POD_KEY = ("", "pods")


def _rt(group: str, version: str, plural: str, kind: str, namespaced: bool,
        short: tuple[str, ...] = (), *, status: bool = False, scale: bool = False,
        categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group=group, version=version, plural=plural, kind=kind,
                        namespaced=namespaced, singular=kind.lower(), short_names=short,
                        categories=categories, list_kind=kind + "List",
                        status_subresource=status, scale_subresource=scale)


def builtin_types() -> list[ResourceType]:
    """Every built-in resource the twin serves (core, apps, networking, rbac, policy,
    apiextensions, coordination, events, discovery ...)."""
    all_ = ("all",)
    rbac = "rbac.authorization.k8s.io"
    return [
        _rt("", "v1", "namespaces", "Namespace", False, ("ns",), status=True),
        _rt("", "v1", "nodes", "Node", False, ("no",), status=True),
        _rt("", "v1", "pods", "Pod", True, ("po",), status=True, categories=all_),
        _rt("", "v1", "services", "Service", True, ("svc",), status=True, categories=all_),
        _rt("", "v1", "endpoints", "Endpoints", True, ("ep",)),
        _rt("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
        _rt("", "v1", "secrets", "Secret", True),
        _rt("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
        _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",),
            status=True),
        _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), status=True),
        _rt("", "v1", "events", "Event", True, ("ev",)),
        _rt("", "v1", "replicationcontrollers", "ReplicationController", True, ("rc",),
            status=True, scale=True, categories=all_),
        _rt("", "v1", "limitranges", "LimitRange", True, ("limits",)),
        _rt("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), status=True),
        _rt("apps", "v1", "deployments", "Deployment", True, ("deploy",), status=True,
            scale=True, categories=all_),
        _rt("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), status=True, scale=True,
            categories=all_),
        _rt("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), status=True,
            categories=all_),
        _rt("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), status=True,
            scale=True, categories=all_),
        _rt("apps", "v1", "controllerrevisions", "ControllerRevision", True),
        _rt("batch", "v1", "jobs", "Job", True, (), status=True, categories=all_),
        _rt("batch", "v1", "cronjobs", "CronJob", True, ("cj",), status=True, categories=all_),
        _rt("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), status=True),
        _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
        _rt("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
        _rt(rbac, "v1", "roles", "Role", True),
        _rt(rbac, "v1", "rolebindings", "RoleBinding", True),
        _rt(rbac, "v1", "clusterroles", "ClusterRole", False),
        _rt(rbac, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
        _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",),
            status=True),
        _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions",
            "CustomResourceDefinition", False, ("crd", "crds"), status=True,
            categories=("api-extensions",)),
        _rt("coordination.k8s.io", "v1", "leases", "Lease", True),
        ResourceType(group="events.k8s.io", version="v1", plural="events", kind="Event",
                     namespaced=True, singular="event", short_names=("ev",),
                     list_kind="EventList", status_subresource=False, storage=("", "events")),
        _rt("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
        _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    ]
