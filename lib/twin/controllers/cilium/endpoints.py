"""CiliumEndpoints: a Ready agent publishes one for each pod of its node whose sandbox
is Cilium's (the store's garbage collector removes it with its pod)."""
from __future__ import annotations

import hashlib
from typing import Any

from ..kubelet import SANDBOX_CNI_ANNOTATION, node_internal_ip
from .config import labels_of


def identity_for(labels: dict, namespace: str) -> int:
    """A stable security identity for a label set (Cilium allocates from 256 up)."""
    key = ",".join(sorted(f"{k}={v}" for k, v in labels.items() if k != "pod-template-hash"))
    return 256 + int(hashlib.sha256(f"{namespace}/{key}".encode()).hexdigest()[:8], 16) % 65000


class Endpoints:
    """Part of :class:`~.model.CiliumModel`: keeps each Cilium pod's CiliumEndpoint."""

    store: Any
    cache: Any

    def _sync_cep(self, ns: str, name: str) -> None:
        t = self._type("cilium.io", "ciliumendpoints")
        if t is None:
            return
        pod = self.cache.get(("", "pods"), ns, name)
        if pod is None:
            return   # the store's garbage collector removes the CEP with its owner pod
        md = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName") or ""
        st = pod.get("status") or {}
        if (md.get("annotations") or {}).get(SANDBOX_CNI_ANNOTATION) != "cilium" or not st.get("podIP"):
            return
        if not self.agent_ready(node):
            return   # only a Ready agent publishes endpoints
        n = self.cache.get(("", "nodes"), "", node)
        labels = {k: v for k, v in labels_of(pod).items() if k != "pod-template-hash"}
        ident = identity_for(labels, ns)
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        ep_id = int(hashlib.sha256(f"{md.get('uid')}".encode()).hexdigest()[:4], 16) % 4000 + 1
        status = {
            "id": ep_id,
            "identity": {"id": ident, "labels": sorted(
                [f"k8s:{k}={v}" for k, v in labels.items()]
                + [f"k8s:io.kubernetes.pod.namespace={ns}",
                   f"k8s:io.cilium.k8s.policy.serviceaccount={sa}",
                   "k8s:io.cilium.k8s.policy.cluster=default"])},
            "networking": {"addressing": [{"ipv4": st["podIP"]}],
                           "node": node_internal_ip(n) if n else ""},
            "state": "ready",
            "encryption": {},
            "external-identifiers": {"k8s-namespace": ns, "k8s-pod-name": name,
                                     "pod-name": f"{ns}/{name}", "cni-attachment-id": md.get("uid", "")},
        }
        existing = self.store.peek(t, ns, name)
        if existing is not None:
            refs = (existing.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == md.get("uid") for r in refs):
                if existing.get("status") != status:
                    def put(o: dict) -> None:
                        o["status"] = status
                    self.store.mutate(t, ns, name, put)
                return
            self.store.delete(t, ns, name)   # a CEP of an earlier pod of the same name
        obj = {"apiVersion": f"cilium.io/{t.version}", "kind": "CiliumEndpoint",
               "metadata": {"name": name, "namespace": ns,
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                                                 "uid": md.get("uid", ""), "blockOwnerDeletion": True}]},
               "status": status}
        self.store.create(obj, rtype=t)
