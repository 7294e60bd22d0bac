"""An in-memory Argo CD API for runbook.argocd's unit tests (a uniquely named module).

It swaps the target, not the functions: argocd.py calls the same Cluster methods
(list, request, patch) and this store applies merge patches (RFC 7386) and JSON
patches (RFC 6902 add/remove) the way the API server does.
"""
from __future__ import annotations

import copy
from typing import Any

APPS = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/{name}"
SETS = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applicationsets/{name}"


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = op["path"].strip("/").split("/")
        parent = doc
        for p in parts[:-1]:
            parent = parent[p]  # KeyError/TypeError: the API server would refuse it too
        if not isinstance(parent, dict):
            raise ValueError(f"{op['path']}: parent is not an object")
        if op["op"] == "add":
            parent[parts[-1]] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[parts[-1]]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


class FakeArgo:
    def __init__(self, applications: list[dict], applicationsets: list[dict] | None = None) -> None:
        self.objects: dict[str, dict] = {}
        for a in applications:
            md = a["metadata"]
            self.objects[APPS.format(ns=md["namespace"], name=md["name"])] = copy.deepcopy(a)
        for s in applicationsets or []:
            md = s["metadata"]
            self.objects[SETS.format(ns=md["namespace"], name=md["name"])] = copy.deepcopy(s)
        self.writes: list[tuple[str, str, Any, str | None]] = []

    def list(self, resource: str, namespace: str | None = None, **_: Any) -> list[dict]:
        assert resource == "applications"
        prefix = APPS.format(ns=namespace, name="")
        return [copy.deepcopy(o) for p, o in self.objects.items() if p.startswith(prefix)]

    def app(self, name: str, ns: str = "argocd") -> dict:
        return self.objects[APPS.format(ns=ns, name=name)]

    def request(self, method: str, path: str, *, body: Any = None, content_type: str | None = None,
                ok_missing: bool = False, query: Any = None) -> Any:
        if method == "GET":
            obj = self.objects.get(path)
            if obj is None and not ok_missing:
                raise KeyError(path)
            return copy.deepcopy(obj)
        if method == "PATCH":
            self.writes.append((method, path, copy.deepcopy(body), content_type))
            if content_type == "application/json-patch+json":
                self.objects[path] = json_patch(self.objects[path], body)
            elif content_type == "application/merge-patch+json":
                self.objects[path] = merge_patch(self.objects[path], body)
            else:
                raise ValueError(content_type)
            return copy.deepcopy(self.objects[path])
        raise ValueError(method)

    def patch(self, resource: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: str = "merge") -> dict:
        assert resource == "applications" and patch_type == "merge"
        return self.request("PATCH", APPS.format(ns=namespace, name=name), body=patch,
                            content_type="application/merge-patch+json")
