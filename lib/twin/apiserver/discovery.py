"""Discovery: ``/version``'s answer, ``/api``, ``/apis``, group and resource lists.

kubectl and helm find every resource through these documents, both the legacy ones
(``APIVersions``, ``APIGroupList``, ``APIResourceList``) and aggregated discovery
(``apidiscovery.k8s.io/v2``, one document per root). They are computed from the
store's registered types on every request, so CRDs appear and vanish at once.
"""
from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..store import ResourceType
from .responses import JSON, HTTPError, accept_as, json_response

K8S_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1",
    "gitCommit": "a562d7ee0d9fb8bf2aad6a7ea9f4e0f7e7b4b2ad", "gitTreeState": "clean",
    "buildDate": "2024-12-13T00:00:00Z", "goVersion": "go1.22.9", "compiler": "gc",
    "platform": "linux/amd64",
}


def version_key(v: str) -> tuple:
    """Kubernetes version priority: GA > beta > alpha, then by number (v1 > v1beta2)."""
    m = re.match(r"v(\d+)(?:(alpha|beta)(\d+))?$", v)
    if not m:
        return (0, 0, 0, v)
    major, level, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 3, "beta": 2, "alpha": 1}[level]
    return (rank, major, minor, "")


class DiscoveryRoutes:
    """The :class:`APIServer`'s discovery documents (uses its ``rt``, ``host`` and ``port``)."""

    rt: Any
    host: str
    port: int

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.rt.store.resource_types():
            vs = groups.setdefault(rt.group, [])
            if rt.version not in vs:
                vs.append(rt.version)
        for vs in groups.values():
            vs.sort(key=version_key, reverse=True)
        return groups

    def _api_versions(self, request: web.Request) -> web.Response:
        if "APIGroupDiscoveryList" in accept_as(request.headers.get("Accept", "")):
            return self._aggregated(core=True, request=request)
        return json_response({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                           "serverAddress": f"{self.host}:{self.port}"}]})

    def _group_obj(self, name: str, versions: list[str]) -> dict:
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": vs, "preferredVersion": vs[0]}

    def _api_groups(self, request: web.Request) -> web.Response:
        if "APIGroupDiscoveryList" in accept_as(request.headers.get("Accept", "")):
            return self._aggregated(core=False, request=request)
        groups = [self._group_obj(g, vs) for g, vs in sorted(self._group_versions().items()) if g]
        return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _api_group(self, name: str) -> web.Response:
        vs = self._group_versions().get(name)
        if not vs or not name:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        return json_response({"kind": "APIGroup", "apiVersion": "v1", **self._group_obj(name, vs)})

    def _types_of(self, group: str, version: str) -> list[ResourceType]:
        return sorted((t for t in self.rt.store.resource_types()
                       if t.group == group and t.version == version), key=lambda t: t.plural)

    @staticmethod
    def _subresources(t: ResourceType) -> list[tuple[str, str, str, str, list[str]]]:
        """(name, group, version, kind, verbs) of the subresources served for ``t``."""
        subs = []
        if t.status_subresource:
            subs.append(("status", t.group, t.version, t.kind, ["get", "patch", "update"]))
        if t.scale_subresource:
            subs.append(("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]))
        if t.group == "" and t.plural == "pods":
            subs.append(("eviction", "policy", "v1", "Eviction", ["create"]))
            subs.append(("log", "", "v1", "Pod", ["get"]))
            subs.append(("exec", "", "v1", "PodExecOptions", ["create", "get"]))
            subs.append(("portforward", "", "v1", "PodPortForwardOptions", ["create", "get"]))
        if t.group == "" and t.plural == "serviceaccounts":
            subs.append(("token", "authentication.k8s.io", "v1", "TokenRequest", ["create"]))
        return subs

    def _resource_list(self, group: str, version: str) -> web.Response:
        types = self._types_of(group, version)
        if not types:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for t in types:
            r: dict[str, Any] = {"name": t.plural, "singularName": t.singular or t.kind.lower(),
                                 "namespaced": t.namespaced, "kind": t.kind, "verbs": list(t.verbs)}
            if t.short_names:
                r["shortNames"] = list(t.short_names)
            if t.categories:
                r["categories"] = list(t.categories)
            resources.append(r)
            for sub, g, v, kind, verbs in self._subresources(t):
                sr: dict[str, Any] = {"name": f"{t.plural}/{sub}", "singularName": "",
                                      "namespaced": t.namespaced, "kind": kind, "verbs": verbs}
                if (g, v) != (t.group, t.version):
                    sr["group"], sr["version"] = g, v
                resources.append(sr)
        gv = f"{group}/{version}" if group else version
        return json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                              "resources": resources})

    def _aggregated(self, *, core: bool, request: web.Request) -> web.Response:
        """Aggregated discovery (``apidiscovery.k8s.io/v2``): one document per root."""
        accept = request.headers.get("Accept", "")
        api_version = "apidiscovery.k8s.io/v2" if "v=v2;" in accept.replace(" ", "") + ";" or \
            "v=v2," in accept.replace(" ", "") else "apidiscovery.k8s.io/v2beta1"
        items = []
        for g, vs in sorted(self._group_versions().items()):
            if (g == "") != core:
                continue
            versions = []
            for v in vs:
                resources = []
                for t in self._types_of(g, v):
                    res: dict[str, Any] = {
                        "resource": t.plural,
                        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
                        "scope": "Namespaced" if t.namespaced else "Cluster",
                        "singularResource": t.singular or t.kind.lower(),
                        "verbs": list(t.verbs)}
                    if t.short_names:
                        res["shortNames"] = list(t.short_names)
                    if t.categories:
                        res["categories"] = list(t.categories)
                    subs = [{"subresource": s, "responseKind": {"group": sg, "version": sv, "kind": k},
                             "verbs": verbs} for s, sg, sv, k, verbs in self._subresources(t)]
                    if subs:
                        res["subresources"] = subs
                    resources.append(res)
                versions.append({"version": v, "resources": resources, "freshness": "Current"})
            items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": versions})
        body = {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {},
                "items": items}
        resp = json_response(body)
        resp.content_type = JSON
        resp.headers["Content-Type"] = (f"application/json;g=apidiscovery.k8s.io;"
                                        f"v={api_version.split('/')[1]};as=APIGroupDiscoveryList")
        return resp
