"""Field ownership (twin.managed_fields) and apply conflicts (twin.patch.server_side_apply)."""
from __future__ import annotations

import pytest

from twin.managed_fields import ApplyConflict, changed_fields, conflict_message, record_update
from twin.patch import server_side_apply

pytestmark = pytest.mark.unit


def cm(**data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def test_changed_fields_of_named_lists():
    old = {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}
    new = {"spec": {"containers": [{"name": "a", "image": "x:2"}, {"name": "b", "image": "y"}]}}
    assert changed_fields(old, new) == {"f:spec": {"f:containers": {
        'k:{"name":"a"}': {"f:image": {}},
        'k:{"name":"b"}': {".": {}, "f:image": {}, "f:name": {}}}}}


def test_update_takes_fields_from_other_managers_and_forgets_removed_ones():
    one = record_update(None, cm(a="1", b="2"), manager="kubectl-create", api_version="v1", now="t0")
    two = record_update(one, cm(a="9", b="2"), manager="kubectl-patch", api_version="v1", now="t1")
    owners = {e["manager"]: e["fieldsV1"] for e in two["metadata"]["managedFields"]}
    assert owners == {"kubectl-create": {"f:data": {"f:b": {}}}, "kubectl-patch": {"f:data": {"f:a": {}}}}
    three = record_update(two, cm(a="9"), manager="kubectl-edit", api_version="v1", now="t2")
    assert [e["manager"] for e in three["metadata"]["managedFields"]] == ["kubectl-patch"]


def test_apply_conflicts_name_field_and_manager_and_force_takes_over():
    live = record_update(None, cm(a="1"), manager="kubectl-patch", api_version="v1", now="t0")
    with pytest.raises(ApplyConflict) as e:
        server_side_apply(live, cm(a="2"), field_manager="helm")
    assert str(e.value) == 'Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.a'
    assert e.value.causes() == [{"reason": "FieldManagerConflict",
                                 "message": 'conflict with "kubectl-patch" using v1', "field": ".data.a"}]
    same = server_side_apply(live, cm(a="1"), field_manager="helm")     # same value: shared
    assert len(same["metadata"]["managedFields"]) == 2
    forced = server_side_apply(live, cm(a="2"), field_manager="helm", force=True)
    assert [(e["manager"], e["operation"]) for e in forced["metadata"]["managedFields"]] == [("helm", "Apply")]
    assert forced["data"] == {"a": "2"}


def test_conflict_message_groups_managers():
    live = record_update(None, cm(a="1", b="1"), manager="x", api_version="v1", now="t")
    with pytest.raises(ApplyConflict) as e:
        server_side_apply(live, cm(a="2", b="2"), field_manager="helm")
    assert conflict_message(e.value.conflicts) == \
        'Apply failed with 2 conflicts: conflict with "x" using v1:\n- .data.a\n- .data.b'
