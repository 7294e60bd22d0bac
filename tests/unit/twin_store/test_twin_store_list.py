"""Listing: selectors, the nodeName index, and limit/continue pagination."""
from __future__ import annotations

import pytest

from twin.store import BadRequest
from twin_store_helpers import ns_obj, pod

pytestmark = pytest.mark.unit


def _names(result) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in result.items]


@pytest.fixture
def populated(store, pods):
    for i in range(30):
        store.create(pod(f"p{i:02d}", "default" if i % 3 else "other",
                         labels={"app": "web" if i % 2 else "db", "i": str(i)},
                         node=f"n{i % 4}" if i % 5 else None,
                         phase="Running" if i % 7 else "Pending"))
    return store


def test_list_order_kind_and_version(populated, pods):
    result = populated.list(pods)
    keys = _names(result)
    assert keys == sorted(keys) and len(keys) == 30
    assert result.resource_version == str(populated.resource_version)
    assert all(o["kind"] == "Pod" and o["apiVersion"] == "v1" for o in result.items)
    assert result.continue_token is None and result.remaining is None


def test_list_namespace(populated, pods):
    result = populated.list(pods, "other")
    assert {ns for ns, _ in _names(result)} == {"other"}
    assert len(result.items) == 10 == populated.count(pods, "other")
    assert populated.list(pods, "empty-ns").items == []


def test_label_and_field_selectors(populated, pods):
    web = populated.list(pods, label_selector="app=web")
    assert len(web.items) == 15
    assert all(o["metadata"]["labels"]["app"] == "web" for o in web.items)
    pending = populated.list(pods, field_selector="status.phase!=Running")
    assert sorted(int(o["metadata"]["labels"]["i"]) for o in pending.items) == [0, 7, 14, 21, 28]
    by_name = populated.list(pods, field_selector="metadata.name=p03,metadata.namespace=other")
    assert _names(by_name) == [("other", "p03")]
    with pytest.raises(BadRequest):
        populated.list(pods, label_selector="app in (")


def test_node_name_index_follows_updates(populated, pods):
    on_n1 = populated.list(pods, field_selector="spec.nodeName=n1")
    expected = [f"p{i:02d}" for i in range(30) if i % 5 and i % 4 == 1]
    assert sorted(o["metadata"]["name"] for o in on_n1.items) == expected
    unscheduled = populated.list(pods, field_selector="spec.nodeName=")
    assert sorted(o["metadata"]["name"] for o in unscheduled.items) == [
        f"p{i:02d}" for i in range(0, 30, 5)]
    populated.mutate(pods, "default", "p01", lambda o: o["spec"].update(nodeName="n9"))
    assert [o["metadata"]["name"] for o in
            populated.list(pods, field_selector="spec.nodeName=n9").items] == ["p01"]
    assert "p01" not in [o["metadata"]["name"] for o in
                         populated.list(pods, field_selector="spec.nodeName=n1").items]
    assert [o["metadata"]["name"] for o in populated.pods_on_node("n9")] == ["p01"]
    populated.delete(pods, "default", "p01", grace_period=0)   # force: no kubelet here
    assert populated.list(pods, field_selector="spec.nodeName=n9").items == []
    # Namespace restriction and extra terms still apply on the indexed path.
    both = populated.list(pods, "other", field_selector="spec.nodeName=n1,status.phase=Running")
    assert all(o["metadata"]["namespace"] == "other" for o in both.items)


def _page_all(store, rtype, namespace=None, limit=7, **kw):
    pages, token, rvs = [], None, set()
    while True:
        result = store.list(rtype, namespace, limit=limit, continue_token=token, **kw)
        pages.append(result)
        rvs.add(result.resource_version)
        token = result.continue_token
        if token is None:
            return pages, rvs


def test_pagination_covers_everything_once(populated, pods):
    pages, rvs = _page_all(populated, pods)
    keys = [k for p in pages for k in _names(p)]
    assert keys == _names(populated.list(pods))
    assert len(rvs) == 1       # every page reports the list's resourceVersion
    assert [len(p.items) for p in pages] == [7, 7, 7, 7, 2]
    assert pages[0].remaining == 23


def test_pagination_in_a_namespace_and_with_selectors(populated, pods):
    pages, _ = _page_all(populated, pods, "default", limit=4)
    assert [k for p in pages for k in _names(p)] == _names(populated.list(pods, "default"))
    pages, _ = _page_all(populated, pods, limit=3, label_selector="app=db")
    got = [k for p in pages for k in _names(p)]
    assert got == _names(populated.list(pods, label_selector="app=db"))
    assert all(p.remaining is None for p in pages)   # unknown when filtering
    pages, _ = _page_all(populated, pods, limit=2, field_selector="spec.nodeName=n2")
    got = [k for p in pages for k in _names(p)]
    assert got == _names(populated.list(pods, field_selector="spec.nodeName=n2"))


def test_pagination_is_consistent_under_writes(populated, pods):
    """Objects that exist throughout come exactly once, whatever happens between pages."""
    before = set(_names(populated.list(pods)))
    first = populated.list(pods, limit=10)
    seen = _names(first)
    # Between pages: delete a seen and an unseen object, add some before and after the cursor.
    populated.delete(pods, "default", "p01", grace_period=0)
    populated.delete(pods, "other", "p27", grace_period=0)
    populated.create(pod("a-early", "default"))
    populated.create(pod("zz-late", "other"))
    populated.mutate(pods, "other", "p24", lambda o: o["metadata"]["labels"].update(x="1"))
    token = first.continue_token
    while token:
        page = populated.list(pods, limit=10, continue_token=token)
        assert page.resource_version == first.resource_version
        seen += _names(page)
        token = page.continue_token
    assert len(seen) == len(set(seen))
    stable = before - {("default", "p01"), ("other", "p27")}
    assert stable <= set(seen)
    assert ("other", "zz-late") in seen          # after the cursor: picked up
    assert ("other", "p27") not in seen          # deleted before being reached


def test_bad_continue_token(populated, pods):
    with pytest.raises(BadRequest):
        populated.list(pods, limit=5, continue_token="not-a-token!!")


def test_list_copy_false_returns_stored_objects(populated, pods):
    raw = populated.list(pods, limit=3, copy=False)
    assert [o["metadata"]["name"] for o in raw.items] == ["p01", "p02", "p04"]
    assert populated.peek(pods, "default", "p01") is raw.items[0]


def test_cost_does_not_depend_on_other_resources(store, pods):
    # Configmaps in bulk do not show up in (or slow down) pod lists: separate storage.
    for i in range(200):
        store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": f"cm{i}", "namespace": "default"}})
    store.create(pod("only"))
    assert _names(store.list(pods)) == [("default", "only")]
    assert store.count(store.lookup("", "v1", "configmaps")) == 200


def test_many_keys_batch_and_incremental_index(store, pods):
    store.create(ns_obj("bulk"))
    for i in range(600):   # a batch large enough to take the re-sort path
        store.create(pod(f"b{599 - i:04d}", "bulk"))
    names = [o["metadata"]["name"] for o in store.list(pods, "bulk").items]
    assert names == sorted(names) and len(names) == 600
    store.delete(pods, "bulk", "b0300")
    store.create(pod("b0300x", "bulk"))    # a small change takes the bisect path
    names = [o["metadata"]["name"] for o in store.list(pods, "bulk").items]
    assert names == sorted(names) and "b0300" not in names and "b0300x" in names
    all_keys = _names(store.list(pods))
    assert all_keys == sorted(all_keys) and len(all_keys) == 600


def test_batch_deletions_keep_the_index_right(store, pods):
    store.create(ns_obj("bulk"))
    for i in range(600):
        store.create(pod(f"b{i:04d}", "bulk"))
    assert len(store.list(pods, "bulk", limit=1).items) == 1     # index folded
    for i in range(0, 600, 3):
        store.delete(pods, "bulk", f"b{i:04d}")
    store.create(pod("b0000", "bulk"))                           # re-added after removal
    names = [o["metadata"]["name"] for o in store.list(pods, "bulk").items]
    expected = sorted({f"b{i:04d}" for i in range(600) if i % 3} | {"b0000"})
    assert names == expected
    pages, _ = _page_all(store, pods, "bulk", limit=97)
    assert [k[1] for p in pages for k in _names(p)] == expected
