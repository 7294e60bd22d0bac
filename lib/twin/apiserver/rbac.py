"""Who may do what: the RBAC authorizer, as pure functions over the stored RBAC objects.

A user in ``system:masters`` (the twin's admin token) may do everything, as the real
authorizer short-circuits. Anyone else gets the rules of the Roles and ClusterRoles
bound to them (by user name, group or service account; ClusterRoleBindings everywhere,
RoleBindings in their namespace), plus what the default bootstrap roles give every
authenticated user (discovery, ``/version``, ``/healthz``, self reviews).

Example:
    >>> user = UserInfo("system:serviceaccount:demo:ci", ("system:serviceaccounts",))
    >>> Attributes(verb="list", resource="pods", namespace="demo").describe(user)
    'User "system:serviceaccount:demo:ci" cannot list resource "pods" in API group "" in the namespace "demo"'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

RBAC = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
#: non-resource URLs every authenticated user may GET (system:discovery, system:public-info-viewer)
PUBLIC_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz",
                "/livez", "/readyz", "/openapi", "/openapi/*")
#: what system:basic-user grants every authenticated user
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out

    @property
    def is_master(self) -> bool:
        return MASTERS in self.groups


@dataclass(frozen=True)
class Attributes:
    """What a request does, as the authorizer sees it."""

    verb: str
    resource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    path: str = ""            # a non-resource request (``/healthz``)

    def describe(self, user: UserInfo) -> str:
        """The reason part of a real Forbidden message."""
        who = f'User "{user.username}"'
        if self.path:
            return f'{who} cannot {self.verb} path "{self.path}"'
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        return f'{who} cannot {self.verb} resource "{res}" in API group "{self.group}"{where}'


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The identity of a service account's token."""
    return UserInfo(f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"), uid)


def _match(values: Iterable[str] | None, wanted: str) -> bool:
    vals = list(values or ())
    return "*" in vals or wanted in vals


def rule_allows(rule: dict, a: Attributes) -> bool:
    """One PolicyRule against one request."""
    if a.path:
        if not _match(rule.get("verbs"), a.verb):
            return False
        for url in rule.get("nonResourceURLs") or ():
            if url == a.path or (url.endswith("*") and a.path.startswith(url[:-1])):
                return True
        return False
    if not _match(rule.get("verbs"), a.verb) or not _match(rule.get("apiGroups"), a.group):
        return False
    res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    resources = list(rule.get("resources") or ())
    if not ("*" in resources or res in resources
            or (a.subresource and f"*/{a.subresource}" in resources)):
        return False
    names = rule.get("resourceNames")
    return not names or a.name in names


def _subject_matches(subject: dict, user: UserInfo, binding_ns: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.username
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.username == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


def rules_for(objects: Any, user: UserInfo, namespace: str) -> list[dict]:
    """Every PolicyRule that applies to ``user`` in ``namespace`` ("" = cluster scope).

    ``objects(plural)`` yields the stored RBAC objects of one plural.
    """
    cluster_roles = {o["metadata"]["name"]: o for o in objects("clusterroles")}
    roles = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects("roles")}
    rules: list[dict] = []

    def add(ref: dict, ns: str) -> None:
        if ref.get("kind") == "ClusterRole":
            rules.extend((cluster_roles.get(ref.get("name")) or {}).get("rules") or ())
        elif ref.get("kind") == "Role":
            rules.extend((roles.get((ns, ref.get("name"))) or {}).get("rules") or ())

    for b in objects("clusterrolebindings"):
        if any(_subject_matches(s, user, "") for s in b.get("subjects") or ()):
            add(b.get("roleRef") or {}, "")
    if namespace:
        for b in objects("rolebindings"):
            bns = b["metadata"].get("namespace", "")
            if bns == namespace and any(_subject_matches(s, user, bns) for s in b.get("subjects") or ()):
                add(b.get("roleRef") or {}, bns)
    return rules


def authorize(objects: Any, user: UserInfo, a: Attributes) -> bool:
    """Whether ``user`` may do ``a`` (see the module docstring for the rules)."""
    if user.is_master:
        return True
    if a.path:
        if a.verb == "get" and any(a.path == p or (p.endswith("*") and a.path.startswith(p[:-1]))
                                   for p in PUBLIC_PATHS):
            return True
    elif a.verb == "create" and (a.group, a.resource) in SELF_REVIEWS:
        return True
    return any(rule_allows(r, a) for r in rules_for(objects, user, a.namespace))


def verb_of(method: str, has_name: bool, watch: bool) -> str:
    """The RBAC verb of an HTTP request on a resource."""
    if watch:
        return "watch"
    return {"GET": "get" if has_name else "list", "HEAD": "get" if has_name else "list",
            "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if has_name else "deletecollection"}.get(method, method.lower())
