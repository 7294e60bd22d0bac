"""The cilium.io CustomResourceDefinitions the operator registers (pure).

Before the operator has registered them, ``kubectl get ciliumnodes`` has no such
resource type; the agents wait for them ("waiting for CRDs").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- CRDs
@dataclass(frozen=True)
class CRDSpec:
    """One cilium.io CRD the operator registers."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: str                    # Namespaced | Cluster
    versions: tuple[str, ...]     # served versions; the first is the storage version
    categories: tuple[str, ...] = ("cilium",)
    status: bool = True
    columns: tuple[dict, ...] = ()


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
CRDS: tuple[CRDSpec, ...] = (
    CRDSpec("CiliumIdentity", "ciliumidentities", ("ciliumid",), "Cluster", ("v2",),
            status=False, columns=(
                {"name": "Namespace", "type": "string",
                 "jsonPath": '.metadata.labels.io\\.kubernetes\\.pod\\.namespace'}, _AGE)),
    CRDSpec("CiliumEndpoint", "ciliumendpoints", ("cep", "ciliumep"), "Namespaced", ("v2",),
            columns=(
                {"name": "Cilium ID", "type": "integer", "jsonPath": ".status.id"},
                {"name": "Security Identity", "type": "integer", "jsonPath": ".status.identity.id"},
                {"name": "Endpoint State", "type": "string", "jsonPath": ".status.state"},
                {"name": "IPv4", "type": "string", "jsonPath": ".status.networking.addressing[0].ipv4"},
                {"name": "IPv6", "type": "string", "jsonPath": ".status.networking.addressing[0].ipv6"})),
    CRDSpec("CiliumNode", "ciliumnodes", ("cn", "ciliumn"), "Cluster", ("v2",), columns=(
        {"name": "CiliumInternalIP", "type": "string",
         "jsonPath": '.spec.addresses[?(@.type=="CiliumInternalIP")].ip'},
        {"name": "InternalIP", "type": "string",
         "jsonPath": '.spec.addresses[?(@.type=="InternalIP")].ip'}, _AGE)),
    CRDSpec("CiliumNetworkPolicy", "ciliumnetworkpolicies", ("cnp", "ciliumnp"), "Namespaced",
            ("v2",), categories=("cilium", "ciliumpolicy"), columns=(_AGE,)),
    CRDSpec("CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", ("ccnp",),
            "Cluster", ("v2",), categories=("cilium", "ciliumpolicy"), columns=(_AGE,)),
    CRDSpec("CiliumCIDRGroup", "ciliumcidrgroups", ("ccg",), "Cluster", ("v2", "v2alpha1"),
            status=False, columns=(_AGE,)),
    CRDSpec("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools",
            ("ippools", "ippool", "lbippool", "lbippools"), "Cluster", ("v2", "v2alpha1"),
            columns=({"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"}, _AGE)),
    CRDSpec("CiliumNodeConfig", "ciliumnodeconfigs", (), "Namespaced", ("v2", "v2alpha1"),
            status=False),
    CRDSpec("CiliumPodIPPool", "ciliumpodippools", ("cpip",), "Cluster", ("v2alpha1",),
            status=False),
    CRDSpec("CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies", ("l2announcement",),
            "Cluster", ("v2alpha1",)),
)
CRD_SCHEMA_VERSION = "1.33.4"


def crd_object(spec: CRDSpec) -> dict:
    """The CustomResourceDefinition the operator creates for ``spec``.

    Example:
        >>> crd_object(CRDS[2])["metadata"]["name"]
        'ciliumnodes.cilium.io'
    """
    versions = []
    for i, v in enumerate(spec.versions):
        ver: dict[str, Any] = {
            "name": v, "served": True, "storage": i == 0,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}}}
        if spec.status:
            ver["subresources"] = {"status": {}}
        if spec.columns:
            ver["additionalPrinterColumns"] = [dict(c) for c in spec.columns]
        versions.append(ver)
    names: dict[str, Any] = {"kind": spec.kind, "listKind": spec.kind + "List",
                             "plural": spec.plural, "singular": spec.kind.lower(),
                             "categories": list(spec.categories)}
    if spec.short_names:
        names["shortNames"] = list(spec.short_names)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{spec.plural}.cilium.io",
                         "labels": {"io.cilium.k8s.crd.schema.version": CRD_SCHEMA_VERSION}},
            "spec": {"group": "cilium.io", "names": names, "scope": spec.scope,
                     "versions": versions}}
