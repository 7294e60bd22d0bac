"""Label and field selector parsing and matching."""
from __future__ import annotations

import pytest

from twin.selectors import (SelectorError, field_value, format_label_selector,
                            from_label_selector, parse_field_selector, parse_label_selector)

pytestmark = pytest.mark.unit

LABELS = {"app": "web", "tier": "front", "version": "3", "example.com/team": "a"}


@pytest.mark.parametrize("selector,expected", [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=api", False),
    ("app!=api", True),
    ("app!=web", False),
    ("missing!=x", True),            # absent label satisfies !=
    ("app in (web, api)", True),
    ("app in (api)", False),
    ("missing in (a)", False),
    ("app notin (api,db)", True),
    ("app notin (web)", False),
    ("missing notin (web)", True),   # absent label satisfies notin
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("version>2", True),
    ("version<3", False),
    ("missing>1", False),
    ("example.com/team=a", True),
    ("app=web,tier=front", True),
    ("app=web,tier=back", False),
    ("app in (web,api),tier notin (db),!canary,version", True),
    ("  app = web , tier  ", True),
])
def test_label_selector_operators(selector, expected):
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize("bad", ["app in (web", "app in web)", "=web", "app=we b",
                                 "app>x", "bad key=1", "a,,b", "app in ()", "x/y/z=1",
                                 "-bad=1"])
def test_label_selector_errors(bad):
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_empty_value_is_allowed():
    assert parse_label_selector("app=").matches({"app": ""})
    assert not parse_label_selector("app=").matches({"app": "x"})


def test_structured_selectors():
    sel = from_label_selector({"matchLabels": {"app": "web"},
                               "matchExpressions": [
                                   {"key": "tier", "operator": "In", "values": ["front"]},
                                   {"key": "canary", "operator": "DoesNotExist"},
                                   {"key": "version", "operator": "Exists"},
                                   {"key": "zone", "operator": "NotIn", "values": ["b"]}]})
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "canary": "1"})
    assert from_label_selector({}).matches({})      # empty selects everything
    assert from_label_selector(None) is None         # absent selects nothing (caller decides)
    with pytest.raises(SelectorError):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
    text = format_label_selector({"matchLabels": {"b": "2", "a": "1"},
                                  "matchExpressions": [{"key": "c", "operator": "In",
                                                        "values": ["y", "x"]}]})
    assert text == "a=1,b=2,c in (x,y)"
    assert parse_label_selector(text).matches({"a": "1", "b": "2", "c": "x"})


POD = {"metadata": {"name": "web-1", "namespace": "prod"},
       "spec": {"nodeName": "fast-skunk", "hostNetwork": True},
       "status": {"phase": "Running"}}


@pytest.mark.parametrize("selector,expected", [
    ("metadata.name=web-1", True),
    ("metadata.name==web-1", True),
    ("metadata.name!=web-1", False),
    ("metadata.namespace=prod", True),
    ("status.phase!=Running", False),
    ("status.phase=Running,spec.nodeName=fast-skunk", True),
    ("status.phase=Running,spec.nodeName!=fast-skunk", False),
    ("spec.hostNetwork=true", True),
    ("spec.schedulerName=", True),      # missing field compares as ""
    ("spec.nodeName=", False),
])
def test_field_selectors(selector, expected):
    assert parse_field_selector(selector).matches(POD) is expected


def test_field_selector_escapes_and_errors():
    sel = parse_field_selector(r"metadata.name=a\,b")
    assert sel.matches({"metadata": {"name": "a,b"}})
    assert parse_field_selector("spec.nodeName=n1").equals("spec.nodeName") == "n1"
    assert parse_field_selector("spec.nodeName!=n1").equals("spec.nodeName") is None
    for bad in ["metadata.name", "=x", r"metadata.name=a\q"]:
        with pytest.raises(SelectorError):
            parse_field_selector(bad)
    assert field_value(POD, "spec.missing.deeper") == ""
