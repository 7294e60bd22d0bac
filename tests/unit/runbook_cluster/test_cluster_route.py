"""runbook.cluster_route through Cluster: credentials resolved once per list, renewed on a 401,
the query encoded as the official client encodes it, no token in a repr or an error."""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook import redact
from runbook.cluster import Cluster
from runbook.errors import ClusterError

from cluster_fakeapi import FakeAPI, Recorded, write_kubeconfig

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

PAGES = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], "")}


def make(tmp_path: Path, server: str) -> Cluster:
    return Cluster(str(write_kubeconfig(tmp_path / "kubeconfig", server)), retry_for=2.0, request_timeout=2.0)


def counting_hook(c: Cluster, tokens: list[str]) -> list[int]:
    """Replace the client's token refresh hook (what an exec plugin's expiry runs) by one that
    hands out ``tokens`` in turn (the last one repeats); returns the call counter."""
    calls = [0]

    def hook(cfg):
        cfg.api_key["BearerToken"] = f"Bearer {tokens[min(calls[0], len(tokens) - 1)]}"
        calls[0] += 1
    c.api.configuration.refresh_api_key_hook = hook
    return calls


def paged(accept: str | None = None):
    """The pods route: three pages; with ``accept``, any other token is refused from page 2 on."""
    def pods(rec: Recorded):
        token = rec.query.get("continue", [None])[0]
        if accept and token and rec.headers["authorization"] != f"Bearer {accept}":
            return 401, {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"}
        names, nxt = PAGES[token]
        return 200, {"metadata": {"continue": nxt}, "items": [{"metadata": {"name": n}} for n in names]}
    return pods


def test_a_list_resolves_its_credentials_once_not_per_page(tmp_path, fake_api: FakeAPI):
    fake_api.routes[("GET", "/api/v1/pods")] = paged()
    c = make(tmp_path, fake_api.url)
    calls = counting_hook(c, ["listing-token-1"])
    assert [p["metadata"]["name"] for p in c.list("pods")] == ["a", "b", "c", "d"]
    assert calls[0] == 1 and len(fake_api.requests) == 3
    assert {r.headers["authorization"] for r in fake_api.requests} == {"Bearer listing-token-1"}
    c.request("GET", "/api/v1/pods")   # a single call resolves its own
    assert calls[0] == 2


def test_a_token_that_expires_mid_list_is_renewed_once_and_kept_for_the_rest(tmp_path, fake_api: FakeAPI):
    redact.clear_registered()
    fake_api.routes[("GET", "/api/v1/pods")] = paged(accept="renewed-token-2")
    c = make(tmp_path, fake_api.url)
    calls = counting_hook(c, ["expiring-token-1", "renewed-token-2"])
    assert [p["metadata"]["name"] for p in c.list("pods")] == ["a", "b", "c", "d"]
    asked = [(r.query.get("continue", [None])[0], r.headers["authorization"]) for r in fake_api.requests]
    assert asked == [(None, "Bearer expiring-token-1"), ("t1", "Bearer expiring-token-1"),
                     ("t1", "Bearer renewed-token-2"), ("t2", "Bearer renewed-token-2")]
    assert calls[0] == 2 and c.outages == []
    assert "renewed-token-2" in redact.registered_secrets()   # a refreshed credential never lands in evidence


def test_a_refused_token_that_does_not_change_raises_at_once_without_it(tmp_path, fake_api: FakeAPI):
    fake_api.routes[("GET", "/api/v1/pods")] = paged(accept="a-token-nobody-has")
    c = make(tmp_path, fake_api.url)
    counting_hook(c, ["refused-token-1"])
    with pytest.raises(ClusterError) as ei:
        c.list("pods")
    assert ei.value.status == 401 and "credentials" in str(ei.value)
    assert "refused-token-1" not in str(ei.value) and "refused-token-1" not in repr(c.route())
    # page 2 asked ahead (refused: the credentials renewed, unchanged), then once more
    # through the choke point, which raises: no loop
    assert [r.query.get("continue", [None])[0] for r in fake_api.requests] == [None, "t1", "t1"]


def test_the_query_is_encoded_as_the_official_client_encodes_it(tmp_path, fake_api: FakeAPI):
    fake_api.on("GET", "/api/v1/pods", (200, {"items": []}))
    c = make(tmp_path, fake_api.url)
    c.request("GET", "/api/v1/pods", query={"watch": True, "limit": 5, "fieldSelector": None,
                                           "labelSelector": "app in (a,b),tier!=db"})
    q = fake_api.requests[0].query
    assert q == {"watch": ["true"], "limit": ["5"], "labelSelector": ["app in (a,b),tier!=db"]}
    assert fake_api.requests[0].headers["accept"] == "application/json"
