"""Where an API request goes and what it carries, and what an error answer says.

:class:`Route` is the server URL and the headers (credentials included) that every
request to one API server carries, resolved from the official client's configuration
by :func:`resolve`: through the client's own auth settings, so a token an exec plugin
or an expiry date refreshes is refreshed there. ``runbook.cluster.Cluster.request_raw``
(the one choke point) resolves a route per call, or is handed one a paged read
resolved once for the whole list: the client's refresh hook costs ~0.3 ms a call (it
re-sets the configuration's host, which re-reads the proxy environment), ~30 ms on a
read of 100 pages.

Example:
    >>> r = Route("https://127.0.0.1:6443", {"Accept": "application/json"})
    >>> r
    Route(base='https://127.0.0.1:6443')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .paging import loads
from .redact import register_secret

__all__ = ["Route", "resolve", "status_message", "status_reason", "hint_for", "register_secret"]


@dataclass
class Route:
    """What every request to one server carries: the server URL, the headers with the
    credentials, and any credential the auth settings put in the query.

    ``repr`` shows no header values (they hold the token).
    """

    base: str
    headers: dict[str, str] = field(repr=False)
    auth_query: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def url(self, api: Any, path: str, query: list[tuple[str, Any]]) -> str:
        """``base + path`` with the query encoded as the client encodes it."""
        q = list(query) + list(self.auth_query)
        return self.base + path + ("?" + api.parameters_to_url_query(q, None) if q else "")

    def renew(self, fresh: "Route") -> bool:
        """Take ``fresh``'s credentials; True when they differ from the ones held."""
        changed = (fresh.headers, fresh.auth_query) != (self.headers, self.auth_query)
        self.base, self.headers, self.auth_query = fresh.base, fresh.headers, fresh.auth_query
        return changed


def resolve(api: Any) -> Route:
    """The route of an official ``ApiClient`` now: its host, default headers, cookie and
    the ``BearerToken`` auth setting (a bearer token, or the basic-auth header the
    kubeconfig loader puts there), its refresh hook run once. The credential is
    registered for redaction (a refreshed token is one too)."""
    headers = {"Accept": "application/json", **api.default_headers}
    if api.cookie:
        headers["Cookie"] = api.cookie
    query: list[tuple[str, str]] = []
    api.update_params_for_auth(headers, query, ["BearerToken"], "", "GET", None)
    auth = headers.get("authorization") or headers.get("Authorization")
    if auth:
        register_secret(auth.split(" ", 1)[-1])
    for _, value in query:
        register_secret(value)
    return Route(api.configuration.host, headers, tuple(query))


def status_message(data: bytes | None) -> str:
    """The message of an error answer (a ``Status`` object), or its first bytes."""
    try:
        doc = loads(data or b"{}")
        return str(doc.get("message") or doc.get("reason") or "")[:500]
    except ValueError:
        return (data or b"")[:200].decode("utf-8", "replace")


def status_reason(data: bytes | None) -> str | None:
    """The ``reason`` of an error answer (``NotFound``, ``Conflict``...), if any."""
    try:
        return loads(data or b"{}").get("reason")
    except ValueError:
        return None


def hint_for(status: int) -> str | None:
    """What a person can do about an error status."""
    return {401: "the kubeconfig's credentials were refused: is it the right cluster's kubeconfig?",
            403: "the kubeconfig's user lacks RBAC permission for this call",
            409: "the object changed meanwhile; re-run the step (it is idempotent)"}.get(status)
