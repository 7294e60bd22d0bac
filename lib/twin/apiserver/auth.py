"""Authentication, authorization and the review APIs: who a request is, what it may do.

- Authentication: the admin bearer token of the kubeconfig is ``system:admin`` in
  ``system:masters`` (k3s' admin kubeconfig); a token from ``serviceaccounts/token`` is
  its service account while the account exists and the token has not expired. The admin
  may impersonate (``Impersonate-User``/``Impersonate-Group``, ``kubectl --as``).
- Authorization: :mod:`.rbac` (everything for ``system:masters``).
- Reviews, answered without being stored: ``SelfSubjectAccessReview`` (``kubectl auth
  can-i``), ``SelfSubjectRulesReview`` (``can-i --list``), ``SubjectAccessReview``,
  ``LocalSubjectAccessReview``, ``SelfSubjectReview`` (``auth whoami``), ``TokenReview``;
  ``TokenRequest`` (``kubectl create token``) issues a service account token.

Tokens are JWTs (``header.payload.signature``, base64url) with the claims a real
service account token carries; the twin signs them with HMAC-SHA256 and a key made at
start (a real cluster signs with the service account key, RS256): they are valid only
against the twin that issued them, and never persisted.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from aiohttp import web

from ..store import ResourceType
from .rbac import Attributes, UserInfo, authorize, rules_for, service_account_user, verb_of
from .responses import HTTPError, json_response
from .routing import Route

ADMIN = UserInfo("system:admin", ("system:masters", "system:authenticated"))
ISSUER = "https://kubernetes.default.svc.cluster.local"
AUTHZ, AUTHN = "authorization.k8s.io", "authentication.k8s.io"
#: (group, plural, kind, namespaced): the review resources (create only, never stored)
REVIEWS = [(AUTHZ, "selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
           (AUTHZ, "selfsubjectrulesreviews", "SelfSubjectRulesReview", False),
           (AUTHZ, "subjectaccessreviews", "SubjectAccessReview", False),
           (AUTHZ, "localsubjectaccessreviews", "LocalSubjectAccessReview", True),
           (AUTHN, "selfsubjectreviews", "SelfSubjectReview", False),
           (AUTHN, "tokenreviews", "TokenReview", False)]
REVIEW_KEYS = {(g, p) for g, p, _k, _n in REVIEWS}
#: the authenticated identity of a request (an rbac.UserInfo), set by the server's dispatch
USER: Any = web.RequestKey("user", object) if hasattr(web, "RequestKey") else "user"


def review_types() -> list[ResourceType]:
    """The review resources as discovery lists them."""
    return [ResourceType(group=g, version="v1", plural=p, kind=k, namespaced=n,
                         singular=k.lower(), verbs=("create",), list_kind=k + "List",
                         status_subresource=False) for g, p, k, n in REVIEWS]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AuthRoutes:
    """The :class:`APIServer`'s identities, authorization and reviews (uses ``rt``, ``token``)."""

    rt: Any
    token: str
    _sa_key: bytes = b""

    # -- authentication --------------------------------------------------------------------
    def _rbac_objects(self, plural: str):
        t = self.rt.store.lookup("rbac.authorization.k8s.io", "v1", plural)
        return self.rt.store.iter_objects(t) if t is not None else ()

    def _authenticate(self, request: web.Request) -> UserInfo | None:
        """The identity of a request (after impersonation), or None (401)."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[7:].strip()
        if secrets.compare_digest(token, self.token):
            user = ADMIN
        else:
            user = self._token_user(token)
            if user is None:
                return None
        as_user = request.headers.get("Impersonate-User")
        if as_user:
            if not authorize(self._rbac_objects, user, Attributes("impersonate", "users")):
                raise HTTPError(403, "Forbidden", f'users "{as_user}" is forbidden: User '
                                f'"{user.username}" cannot impersonate resource "users" in API '
                                'group "" at the cluster scope', {"name": as_user, "kind": "users"})
            groups = list(request.headers.getall("Impersonate-Group", []))
            if as_user.startswith("system:serviceaccount:"):
                ns = as_user.split(":")[2] if as_user.count(":") >= 3 else ""
                groups += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
            user = UserInfo(as_user, tuple(dict.fromkeys([*groups, "system:authenticated"])))
        return user

    def _token_user(self, token: str) -> UserInfo | None:
        """The service account a token the twin issued stands for, if still valid."""
        parts = token.split(".")
        if len(parts) != 3 or not self._sa_key:
            return None
        expected = _b64url(hmac.new(self._sa_key, f"{parts[0]}.{parts[1]}".encode(),
                                    hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(_unb64url(parts[1]))
        except ValueError:
            return None
        if claims.get("exp", 0) < time.time():
            return None
        k8s = claims.get("kubernetes.io") or {}
        ns, sa = k8s.get("namespace", ""), (k8s.get("serviceaccount") or {})
        t = self.rt.store.lookup("", "v1", "serviceaccounts")
        cur = self.rt.store.try_get(t, ns, sa.get("name", "")) if t else None
        if cur is None or cur["metadata"].get("uid") != sa.get("uid"):
            return None   # a bound token dies with its service account
        return service_account_user(ns, sa["name"], sa.get("uid", ""))

    # -- authorization ---------------------------------------------------------------------
    def _check_access(self, request: web.Request, user: UserInfo, path: str,
                      route: Route | None) -> None:
        """Raise the real 403 when ``user`` may not make this request."""
        if user.is_master:
            return
        if route is None:
            a = Attributes(verb=request.method.lower().replace("head", "get"), path=path)
            if not authorize(self._rbac_objects, user, a):
                raise HTTPError(403, "Forbidden", f"forbidden: {a.describe(user)}", {})
            return
        watch = route.watch_path or request.query.get("watch") in ("true", "1")
        verb = verb_of(request.method, route.name is not None, watch)
        if route.subresource in ("exec", "attach", "portforward"):
            verb = "create"   # also for the WebSocket GET, as Kubernetes >= 1.31 authorizes it
        a = Attributes(verb=verb,
                       resource=route.plural, group=route.group, namespace=route.namespace or "",
                       name=route.name or "", subresource=route.subresource or "")
        if not authorize(self._rbac_objects, user, a):
            res = f"{route.plural}.{route.group}" if route.group else route.plural
            what = f'{res} "{route.name}"' if route.name else res
            raise HTTPError(403, "Forbidden", f"{what} is forbidden: {a.describe(user)}",
                            {"name": route.name or "", "group": route.group, "kind": route.plural})

    # -- reviews -----------------------------------------------------------------------------
    def _review(self, request: web.Request, t: ResourceType, ns: str | None, body: dict,
                user: UserInfo) -> web.Response:
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        out = {"kind": t.kind, "apiVersion": t.api_version,
               "metadata": {"creationTimestamp": None}, "spec": spec}
        if t.plural == "selfsubjectreviews":
            out.pop("spec")
            out["status"] = {"userInfo": user.as_dict()}
        elif t.plural == "tokenreviews":
            who = self._token_user(spec.get("token") or "") if spec.get("token") != self.token else ADMIN
            out["status"] = ({"authenticated": True, "user": who.as_dict(),
                              "audiences": spec.get("audiences") or [ISSUER]}
                             if who else {"user": {}, "error": "invalid bearer token"})
            out["spec"] = {k: v for k, v in spec.items() if k != "token"}
        elif t.plural == "selfsubjectrulesreviews":
            out["status"] = self._rules_status(user, spec.get("namespace") or "")
        else:
            subject = user
            if t.plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
                subject = UserInfo(spec.get("user", ""), tuple(spec.get("groups") or ()),
                                   spec.get("uid", ""))
            ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
            if isinstance(nra, dict):
                a = Attributes(verb=nra.get("verb", ""), path=nra.get("path", ""))
            elif isinstance(ra, dict):
                a = Attributes(verb=ra.get("verb", ""), resource=ra.get("resource", ""),
                               group=ra.get("group", ""), subresource=ra.get("subresource", ""),
                               name=ra.get("name", ""),
                               namespace=ns if t.namespaced else ra.get("namespace", ""))
            else:
                raise HTTPError(422, "Invalid", f"{t.kind}.{t.group} \"\" is invalid: "
                                "spec.resourceAttributes: Invalid value: \"null\": exactly one "
                                "of nonResourceAttributes or resourceAttributes must be specified",
                                {"kind": t.kind, "group": t.group})
            allowed = authorize(self._rbac_objects, subject, a)
            out["status"] = {"allowed": allowed}
            if allowed and not subject.is_master:
                out["status"]["reason"] = "allowed by RBAC"
        return json_response(out, 201)

    def _rules_status(self, user: UserInfo, ns: str) -> dict:
        if user.is_master:
            return {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": False}
        rules = rules_for(self._rbac_objects, user, ns)
        res = [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
               for r in rules if r.get("resources")]
        res.insert(0, {"verbs": ["create"], "apiGroups": [AUTHZ],
                       "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})
        non = [{"verbs": r.get("verbs", []), "nonResourceURLs": r["nonResourceURLs"]}
               for r in rules if r.get("nonResourceURLs")]
        non.append({"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*",
                                                          "/healthz", "/openapi", "/openapi/*",
                                                          "/version", "/version/"]})
        return {"resourceRules": res, "nonResourceRules": non, "incomplete": False}

    # -- token requests ----------------------------------------------------------------------
    def _token_request(self, request: web.Request, ns: str, name: str, body: Any) -> web.Response:
        t = self.rt.store.lookup("", "v1", "serviceaccounts")
        sa = self.rt.store.get(t, ns, name)
        spec = (body or {}).get("spec") if isinstance(body, dict) else None
        spec = dict(spec or {})
        try:
            seconds = int(spec.get("expirationSeconds") or 3600)
        except (TypeError, ValueError) as e:
            raise HTTPError(400, "BadRequest", "spec.expirationSeconds must be a number") from e
        if seconds < 600:
            raise HTTPError(422, "Invalid", 'TokenRequest.authentication.k8s.io "" is invalid: '
                            "spec.expirationSeconds: Invalid value: %d: may not specify a "
                            "duration less than 10 minutes" % seconds,
                            {"kind": "TokenRequest", "group": AUTHN,
                             "causes": [{"reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                                         "message": "may not specify a duration less than 10 minutes"}]})
        spec["expirationSeconds"] = seconds
        audiences = spec.get("audiences") or [ISSUER]
        spec["audiences"] = audiences
        now = int(time.time())
        uid = sa["metadata"].get("uid", "")
        claims = {"aud": audiences, "exp": now + seconds, "iat": now, "iss": ISSUER, "nbf": now,
                  "jti": secrets.token_hex(16),
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
                  "sub": f"system:serviceaccount:{ns}:{name}"}
        if not self._sa_key:
            self._sa_key = secrets.token_bytes(32)
        head = _b64url(json.dumps({"alg": "HS256", "kid": "twin"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64url(hmac.new(self._sa_key, f"{head}.{payload}".encode(), hashlib.sha256).digest())
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + seconds))
        return json_response({"kind": "TokenRequest", "apiVersion": f"{AUTHN}/v1",
                              "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
                              "spec": spec,
                              "status": {"token": f"{head}.{payload}.{sig}",
                                         "expirationTimestamp": exp}}, 201)
