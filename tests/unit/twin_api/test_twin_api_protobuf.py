"""The table-driven protobuf decoder (helm's Secrets, kubectl's typed bodies)."""
from __future__ import annotations

import base64

import pytest

from twin import protobuf as pb

pytestmark = pytest.mark.unit


def _meta() -> bytes:
    owner = pb._msg([(1, "Deployment"), (3, "web"), (4, "uid-1"), (5, "apps/v1"), (6, True)])
    return pb._msg([(1, "sh.helm.release.v1.demo.v1"), (3, "demo"), (7, 3),
                    (11, pb._map_entry("owner", "helm")), (11, pb._map_entry("name", "demo")),
                    (12, pb._map_entry("note", "x")), (13, owner), (14, "a/b"), (14, "c"),
                    (8, pb._msg([(1, 1767225600)]))])


def test_secret_round_trip():
    raw = pb._msg([(1, _meta()), (2, pb._map_entry("release", b"\x00\x01gz")),
                   (3, "helm.sh/release.v1"), (4, pb._map_entry("plain", "text")), (5, True)])
    obj = pb.decode_body(pb.encode_unknown("v1", "Secret", raw))
    assert obj["apiVersion"] == "v1" and obj["kind"] == "Secret"
    meta = obj["metadata"]
    assert meta["name"] == "sh.helm.release.v1.demo.v1"
    assert meta["namespace"] == "demo"
    assert meta["generation"] == 3
    assert meta["labels"] == {"owner": "helm", "name": "demo"}
    assert meta["annotations"] == {"note": "x"}
    assert meta["finalizers"] == ["a/b", "c"]
    assert meta["creationTimestamp"] == "2026-01-01T00:00:00Z"
    assert meta["ownerReferences"] == [{"kind": "Deployment", "name": "web", "uid": "uid-1",
                                        "apiVersion": "apps/v1", "controller": True}]
    # Secret data is []byte: base64 in JSON, exactly as the JSON API carries it.
    assert base64.b64decode(obj["data"]["release"]) == b"\x00\x01gz"
    assert obj["type"] == "helm.sh/release.v1"
    assert obj["stringData"] == {"plain": "text"}
    assert obj["immutable"] is True


def test_configmap_data_and_binary_data():
    raw = pb._msg([(1, pb._msg([(1, "cm")])), (2, pb._map_entry("k", "v")),
                   (3, pb._map_entry("bin", b"\xff")), (99, "unknown field is skipped")])
    obj = pb.decode_body(pb.encode_unknown("v1", "ConfigMap", raw))
    assert obj["data"] == {"k": "v"}
    assert base64.b64decode(obj["binaryData"]["bin"]) == b"\xff"
    assert obj["metadata"] == {"name": "cm"}


def test_varints_and_negative_numbers():
    raw = pb._msg([(1, pb._msg([(1, "x"), (7, 300), (10, -1)]))])
    obj = pb.decode_body(pb.encode_unknown("v1", "ConfigMap", raw))
    assert obj["metadata"]["generation"] == 300
    assert obj["metadata"]["deletionGracePeriodSeconds"] == -1


@pytest.mark.parametrize("body,match", [
    (b'{"kind":"Secret"}', "magic"),
    (pb.encode_unknown("example.com/v1", "Widget", b""), "not supported"),
    (pb.MAGIC + b"\x0a\x05ab", "truncated"),
    (pb.MAGIC + b"\x0b", "wire type"),
])
def test_bad_bodies_raise(body, match):
    with pytest.raises(pb.ProtobufError, match=match):
        pb.decode_body(body)
