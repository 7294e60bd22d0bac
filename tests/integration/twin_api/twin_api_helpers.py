"""CRD and object builders shared by the API server tests."""
from __future__ import annotations

APPLICATION_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "applications.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {"kind": "Application", "listKind": "ApplicationList", "plural": "applications",
                  "singular": "application", "shortNames": ["app", "apps"]},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            "additionalPrinterColumns": [
                {"name": "Sync Status", "type": "string", "jsonPath": ".status.sync.status"},
                {"name": "Health Status", "type": "string", "jsonPath": ".status.health.status"},
                {"name": "Revision", "type": "string", "jsonPath": ".status.sync.revision", "priority": 10},
            ],
            "subresources": {},
        }],
    },
}


def application(name: str, *, automated: dict | None = None, namespace: str = "argocd") -> dict:
    policy: dict = {"syncOptions": ["CreateNamespace=true"]}
    if automated is not None:
        policy["automated"] = automated
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"project": "default", "syncPolicy": policy,
                     "source": {"repoURL": "https://git.example/apps", "path": name},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": name}},
            "status": {"sync": {"status": "Synced", "revision": "abc123"},
                       "health": {"status": "Healthy"}}}
