"""The params sections that belong to one phase or strategy: the execute decision,
k3s's keys, the rollback, verify's probe DaemonSet, the twin, and node-by-node.

They are parts of :class:`runbook.params.schema.Params`; read them from there
(``params.verify.probe_image``). Every field has a description, as in ``schema``.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from .model_base import _Model

__all__ = ["Decision", "K3s", "Rollback", "DEFAULT_PROBE_IMAGE", "Verify", "Twin", "NodeByNode"]


class Decision(_Model):
    """The 'when to execute' criteria of the Phase 22 text."""

    pod_threshold: int = Field(500, ge=0, description="Execute only at or above this many "
                                                      "pods (below it the gain is small).")
    networkpolicies_required: bool = Field(False, description="The workloads need "
                                                              "NetworkPolicy enforcement.")
    multi_service_traffic: bool = Field(False, description="There is multi-service traffic "
                                                           "worth observing with Hubble.")
    fresh_cluster_max_pods: int = Field(20, ge=0, description="At or below this many pods "
                                                              "the cluster counts as fresh.")
    # No switch to override a DEFER verdict here: that is a decision of one run, taken by
    # the operator on the command line (--proceed-despite-deferral), not a setting a
    # long-lived params file would silently carry into every later run.


class K3s(_Model):
    """The server-only k3s options the migration sets (agents inherit them, defect 1)."""

    flannel_backend: str = Field("none", description="k3s flannel-backend on servers; "
                                                     "'none' hands networking to Cilium.")
    disable_network_policy: bool = Field(True, description="Stop k3s' embedded kube-router "
                                                           "network-policy controller.")
    disable_kube_proxy: Union[Literal["auto"], bool] = Field(
        "auto", description="disable-kube-proxy on servers; 'auto' follows the values' "
                            "kubeProxyReplacement (defect 2).")


class Rollback(_Model):
    """How 05-rollback takes Cilium off the nodes (decided before the run: the journal is
    bound to these params)."""

    reboot_nodes: bool = Field(
        False, description="Reboot every node Cilium ran on (servers first, one node at a "
                           "time, each back Ready before the next) instead of running Cilium's "
                           "own cleanup in a pod on each node. Ends in the same state: a reboot "
                           "clears the kernel state (BPF programs and maps, devices, iptables) "
                           "and /run; the files are removed either way.")
    remove_crds: bool = Field(
        False, description="Also delete the cilium.io CustomResourceDefinitions (and with them "
                           "every Cilium object) after helm uninstall; every object is saved in "
                           "the run folder and journaled first. Off by default: they do nothing "
                           "without Cilium and a second attempt reuses them.")


#: the probe image when the params name none: the loki gateway's nginx (Alpine), which
#: minicloud already runs, so its nodes pull nothing new (see :class:`Verify`)
DEFAULT_PROBE_IMAGE = "docker.io/nginxinc/nginx-unprivileged:1.27-alpine"


class Verify(_Model):
    """04-verify's probe DaemonSet: one small pod on every node, from which the data path is
    requested (DNS through the kube-dns ClusterIP, a Service ClusterIP over TCP, the probe
    pod on every other node). Created with execute only, journaled, always removed."""

    probe_image: str = Field(DEFAULT_PROBE_IMAGE, min_length=1, description=(
        "Image of the probe pods. It must have a shell, busybox's 'wget' and 'nslookup', and "
        "serve HTTP on probe_port (its own server, or probe_command). The default, nginx-"
        "unprivileged on Alpine, is an image minicloud already runs (its loki gateway), so "
        "no node pulls anything new; it serves HTTP on 8080 as a non-root user, and "
        "Alpine's busybox has wget and nslookup. Pick an image your nodes already have; a distroless "
        "image (CoreDNS, the Cilium operator) has no tool at all."))
    probe_command: list[str] = Field(default_factory=list, description=(
        "Command of the probe container, each element one word; empty = the image's own "
        "server. For a busybox image: [httpd, -f, -p, '8080'] (busybox's httpd)."))
    probe_port: int = Field(8080, ge=1, le=65535, description=(
        "TCP port the probe container serves HTTP on (a port above 1024: the pod runs "
        "without privileges)."))
    probe_namespace: str = Field("kube-system", min_length=1, description=(
        "Namespace of the probe DaemonSet (it must exist; kube-system by default, where the "
        "cluster's own system pods run)."))
    probe_service: str = Field("kube-system/kube-dns:9153", description=(
        "The Service ClusterIP each probe pod requests over HTTP, as namespace/name:port. "
        "Default: kube-dns's metrics port, which every k3s cluster has, answered over TCP by "
        "CoreDNS (the DNS lookup itself goes over UDP). Any HTTP answer counts, an error "
        "status too: it proves the translation and the delivery."))
    probe_targets_per_node: int = Field(20, ge=1, description=(
        "How many other nodes' probe pods each probe pod requests (the next ones in name "
        "order, wrapping around). With fewer nodes than this + 1, every pair is tried."))

    @field_validator("probe_service")
    @classmethod
    def _service_ref(cls, v: str) -> str:
        ns, _, rest = v.partition("/")
        name, _, port = rest.partition(":")
        if not ns or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"probe_service {v!r} is not namespace/name:port "
                             "(e.g. kube-system/kube-dns:9153)")
        return v

    @property
    def service(self) -> tuple[str, str, int]:
        """``(namespace, name, port)`` of :attr:`probe_service`."""
        ns, _, rest = self.probe_service.partition("/")
        name, _, port = rest.partition(":")
        return ns, name, int(port)


class Twin(_Model):
    """Extra facts of a twin target (written by `runbook twin up`)."""

    state_dir: str | None = Field(None, description="The twin's state folder.")
    chart_repo_url: str | None = Field(None, description="Overrides cilium.chart_repo_url.")
    admin_url: str | None = Field(None, description="The twin's fault/admin endpoint.")
    snapshot: str | None = Field(None, description="The snapshot archive the twin was built "
                                                   "from (`runbook twin up --from-snapshot`).")
    assumptions: list[str] = Field(default_factory=list, description=(
        "What the twin assumed where its snapshot could not tell (one rule per line); "
        "the report index lists them under 'Assumed'."))


class NodeByNode(_Model):
    """How the node-by-node strategy moves each node (docs/node-by-node.md)."""

    drain_timeout: float = Field(300, gt=0, description=(
        "Seconds one node's drain may take: evictions refused by a PodDisruptionBudget "
        "(HTTP 429) are retried until then, then the run stops with the pods still there."))
    eviction_retry: float = Field(5, gt=0, description=(
        "Seconds between two attempts to evict a pod a PodDisruptionBudget protects (sooner "
        "once that PDB changes: a replacement Ready, the PDB removed)."))
    delete_instead_of_evict: list[str] = Field(default_factory=list, description=(
        "PodDisruptionBudgets ('namespace/name') whose pods the drain DELETES instead of "
        "evicting (journaled): the outage of a workload you accepted in 01-preflight's PDB "
        "gate (one replica behind minAvailable: 1). Empty: every PDB is respected."))
    probe_image: str = Field("busybox:1.36", min_length=1, description=(
        "Image of the probe pod pinned to each migrated node (needs wget and nslookup); "
        "use one the nodes already have or can pull."))
    probe_timeout: float = Field(120, gt=0, description=(
        "Seconds the probe pod may take to start and answer on one node."))
    accepted_on_real_target_by: str = Field("", description=(
        "Empty (the default): node-by-node is refused on a real target. The name of the "
        "person who has read docs/node-by-node.md (status, the inferred steps) and rehearsed "
        "this cluster's snapshot with it, and accepts running it here; it is part of the "
        "params every phase journals. Ignored on a twin."))

    @field_validator("delete_instead_of_evict")
    @classmethod
    def _pdb_names(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x.count("/") != 1 or not all(x.split("/"))]
        if bad:
            raise ValueError(f"write each PDB as namespace/name, not {', '.join(map(repr, bad))}")
        return v
