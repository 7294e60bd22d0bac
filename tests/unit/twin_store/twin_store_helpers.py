"""Object builders shared by the twin store unit tests."""
from __future__ import annotations


def ns_obj(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(name: str, ns: str = "default", *, labels: dict | None = None, node: str | None = None,
        phase: str | None = None, owners: list[dict] | None = None, **meta) -> dict:
    obj: dict = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": name, "namespace": ns, "labels": labels or {}, **meta},
                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    if node is not None:
        obj["spec"]["nodeName"] = node
    if phase is not None:
        obj["status"] = {"phase": phase}
    if owners:
        obj["metadata"]["ownerReferences"] = owners
    return obj


def owner_ref(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "controller": True}
