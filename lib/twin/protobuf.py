"""Decode the Kubernetes protobuf bodies real clients send (helm's release Secrets).

Helm (through client-go) stores releases as Secrets and sends their bodies as
``application/vnd.kubernetes.protobuf``: the 4-byte magic ``k8s\\x00`` followed by a
``runtime.Unknown`` message whose ``raw`` field holds the typed object. Only the few
types clients actually send this way are described here (Secret, ConfigMap, Namespace,
DeleteOptions); everything is decoded into the same JSON-like dict the JSON API takes.
The twin always answers in JSON, which client-go accepts.

The decoder is a small hand-written reader of the protobuf wire format driven by
field tables (number -> name, kind); unknown fields are skipped, as protobuf requires.

Example:
    >>> decode_body(encode_unknown("v1", "ConfigMap",
    ...     _msg([(1, _msg([(1, b"cm")])), (2, _map_entry("k", b"v"))])))["data"]
    {'k': 'v'}
"""
from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a decodable Kubernetes protobuf message."""


# --- wire format ---------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def iter_fields(buf: bytes):
    """Yield ``(field_number, wire_type, value)``; value is int (varint/fixed) or bytes."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > n:
                raise ProtobufError("truncated fixed64")
            val = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise ProtobufError("truncated length-delimited field")
            val = buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            if pos + 4 > n:
                raise ProtobufError("truncated fixed32")
            val = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        yield num, wt, val


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# --- schemas -----------------------------------------------------------------------------
# A schema maps field number -> (json name, kind). Kinds: "str", "bytes" (base64 in JSON,
# as the JSON API represents []byte), "int", "bool", "time", "strlist", "map_ss",
# "map_sb" (bytes values, base64), ("msg", schema), ("msglist", schema).
_TIME: dict = {}   # metav1.Time is {seconds=1, nanos=2}; handled by the "time" kind

OWNER_REF = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
             6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
MANAGED_FIELDS = {1: ("manager", "str"), 2: ("operation", "str"), 3: ("apiVersion", "str"),
                  4: ("time", "time"), 6: ("fieldsType", "str"), 8: ("subresource", "str")}
OBJECT_META = {
    1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"),
    4: ("selfLink", "str"), 5: ("uid", "str"), 6: ("resourceVersion", "str"),
    7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"), 10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map_ss"), 12: ("annotations", "map_ss"),
    13: ("ownerReferences", ("msglist", OWNER_REF)), 14: ("finalizers", "strlist"),
    17: ("managedFields", ("msglist", MANAGED_FIELDS)),
}
SECRET = {1: ("metadata", ("msg", OBJECT_META)), 2: ("data", "map_sb"), 3: ("type", "str"),
          4: ("stringData", "map_ss"), 5: ("immutable", "bool")}
CONFIG_MAP = {1: ("metadata", ("msg", OBJECT_META)), 2: ("data", "map_ss"),
              3: ("binaryData", "map_sb"), 4: ("immutable", "bool")}
NAMESPACE = {1: ("metadata", ("msg", OBJECT_META)),
             2: ("spec", ("msg", {1: ("finalizers", "strlist")}))}
PRECONDITIONS = {1: ("uid", "str"), 2: ("resourceVersion", "str")}
DELETE_OPTIONS = {1: ("gracePeriodSeconds", "int"), 2: ("preconditions", ("msg", PRECONDITIONS)),
                  3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "str"),
                  5: ("dryRun", "strlist")}

#: kind -> schema of the typed objects this module can decode.
SCHEMAS: dict[str, dict] = {"Secret": SECRET, "ConfigMap": CONFIG_MAP, "Namespace": NAMESPACE,
                            "DeleteOptions": DELETE_OPTIONS}


def _map_entry_decode(raw: bytes) -> tuple[str, bytes]:
    key, val = "", b""
    for num, _wt, v in iter_fields(raw):
        if num == 1:
            key = bytes(v).decode()
        elif num == 2:
            val = bytes(v)
    return key, val


def _time(raw: bytes) -> str:
    seconds = 0
    for num, _wt, v in iter_fields(raw):
        if num == 1:
            seconds = _signed64(v)
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_message(raw: bytes, schema: dict) -> dict:
    """Decode one message into a dict following ``schema`` (unknown fields skipped)."""
    out: dict[str, Any] = {}
    for num, wt, v in iter_fields(raw):
        spec = schema.get(num)
        if spec is None:
            continue
        name, kind = spec
        if kind == "str":
            out[name] = bytes(v).decode()
        elif kind == "bytes":
            out[name] = base64.b64encode(bytes(v)).decode()
        elif kind == "int":
            out[name] = _signed64(v)
        elif kind == "bool":
            out[name] = bool(v)
        elif kind == "time":
            out[name] = _time(bytes(v))
        elif kind == "strlist":
            out.setdefault(name, []).append(bytes(v).decode())
        elif kind in ("map_ss", "map_sb"):
            k, val = _map_entry_decode(bytes(v))
            out.setdefault(name, {})[k] = (val.decode() if kind == "map_ss"
                                           else base64.b64encode(val).decode())
        elif isinstance(kind, tuple) and kind[0] == "msg":
            out[name] = decode_message(bytes(v), kind[1])
        elif isinstance(kind, tuple) and kind[0] == "msglist":
            out.setdefault(name, []).append(decode_message(bytes(v), kind[1]))
        else:  # pragma: no cover - schema bug
            raise ProtobufError(f"bad schema kind {kind!r}")
        del wt
    return out


def decode_unknown(body: bytes) -> tuple[str, str, bytes, str]:
    """Split a ``k8s\\x00`` + runtime.Unknown envelope.

    Returns:
        ``(apiVersion, kind, raw, contentEncoding)``.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("missing k8s protobuf magic prefix")
    api_version = kind = encoding = ""
    raw = b""
    for num, _wt, v in iter_fields(body[len(MAGIC):]):
        if num == 1:
            for tnum, _twt, tv in iter_fields(bytes(v)):
                if tnum == 1:
                    api_version = bytes(tv).decode()
                elif tnum == 2:
                    kind = bytes(tv).decode()
        elif num == 2:
            raw = bytes(v)
        elif num == 3:
            encoding = bytes(v).decode()
    return api_version, kind, raw, encoding


def decode_body(body: bytes) -> dict:
    """Decode a Kubernetes protobuf request body into the JSON form of the object.

    Raises:
        ProtobufError: bad envelope, compressed content, or a kind not described here.
    """
    api_version, kind, raw, encoding = decode_unknown(body)
    if encoding:
        raise ProtobufError(f"unsupported protobuf contentEncoding {encoding!r}")
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported; send JSON")
    obj = decode_message(raw, schema)
    return {"apiVersion": api_version, "kind": kind, **obj}


# --- minimal encoder (tests and docs build bodies with it) ---------------------------------
def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, value: bytes | int | bool | str) -> bytes:
    if isinstance(value, (bool, int)) and not isinstance(value, bytes):
        return _enc_varint(num << 3) + _enc_varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return _enc_varint(num << 3 | 2) + _enc_varint(len(data)) + data


def _msg(fields: list[tuple[int, Any]]) -> bytes:
    """Encode ``[(number, value)]`` (value: bytes/str -> length-delimited, int -> varint)."""
    return b"".join(_field(n, v) for n, v in fields)


def _map_entry(key: str, value: bytes | str) -> bytes:
    return _msg([(1, key), (2, value)])


def encode_unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    """Wrap ``raw`` in the ``k8s\\x00`` + runtime.Unknown envelope."""
    type_meta = _msg([(1, api_version), (2, kind)])
    return MAGIC + _msg([(1, type_meta), (2, raw), (4, CONTENT_TYPE)])
