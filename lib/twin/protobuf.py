"""Decode the Kubernetes protobuf bodies real clients send (kubectl's typed commands, helm).

client-go sends built-in kinds as ``application/vnd.kubernetes.protobuf``: the 4-byte
magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message whose ``raw`` field holds the
typed object. kubectl's ``create deployment|service|role|...``, ``auth can-i``,
``create token`` and helm's release Secrets all arrive this way. Every kind of the GA
API groups is decoded into the same JSON-like dict the JSON API takes; the twin always
answers in JSON, which client-go accepts.

The decoder is a generic reader of the protobuf wire format driven by a table of field
numbers, names and types (``protobuf_fields.json``, generated from Kubernetes'
``generated.proto`` files by :mod:`twin.protobuf_generate`). The few messages that are
not objects in JSON are special-cased: Time/MicroTime (RFC 3339), IntOrString,
Quantity, RawExtension/FieldsV1 (embedded JSON), list wrappers (``ExtraValue``).
Unknown fields are skipped, as protobuf requires; empty strings and zero times are
left out, as Go's JSON encoding of the same object omits them. Zero numbers and false
booleans are kept: the wire cannot tell a pointer's explicit 0 (``replicas: 0``) from a
plain field's zero, and keeping it never changes what the object means.

Example:
    >>> decode_body(encode_unknown("v1", "ConfigMap",
    ...     _msg([(1, _msg([(1, b"cm")])), (2, _map_entry("k", b"v"))])))["data"]
    {'k': 'v'}
"""
from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import struct
from pathlib import Path
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


# --- messages ------------------------------------------------------------------------------
# Field numbers, names and types of every Kubernetes message (GA versions and apimachinery),
# generated from Kubernetes' generated.proto files by twin.protobuf_generate.
_TABLE_PATH = Path(__file__).with_name("protobuf_fields.json")
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_TIMES = {_META + "Time", _META + "MicroTime"}
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_RAW_JSON = {"k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"}
_SIGNED = {"int32", "int64"}
#: string fields (Go pointers) where "" is a value, not an absence ("no storage class").
_EMPTY_MEANS_SOMETHING = {"storageClassName"}
#: API groups whose protobuf package is not named after the group's first label.
_PACKAGES = {"": "core"}


@functools.lru_cache(maxsize=1)
def table() -> dict[str, dict[str, list[str]]]:
    """Message name -> field number -> [json name, type, label] (see twin.protobuf_generate)."""
    with open(_TABLE_PATH, encoding="utf-8") as f:
        return json.load(f)


def message_name(api_version: str, kind: str) -> str | None:
    """The protobuf message of a kind (``apps/v1``, ``Deployment`` -> ``k8s.io.api.apps.v1.Deployment``)."""
    group, _, version = api_version.rpartition("/")
    pkg = _PACKAGES.get(group, group.split(".")[0])
    for name in (f"k8s.io.api.{pkg}.{version}.{kind}", f"{_META}{kind}"):
        if name in table():
            return name
    return None


def _time(raw: bytes, micro: bool) -> str | None:
    seconds = nanos = 0
    for num, _wt, v in iter_fields(raw):
        if num == 1:
            seconds = _signed64(v)
        elif num == 2:
            nanos = v
    if seconds == 0 and nanos == 0:
        return None   # the zero time: absent in JSON
    t = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(type_name: str, raw: bytes) -> tuple[bool, Any]:
    """(handled, JSON value) for messages that are not objects in JSON."""
    if type_name in _TIMES:
        return True, _time(raw, type_name.endswith("MicroTime"))
    if type_name == _INT_OR_STRING:
        f = {num: v for num, _wt, v in iter_fields(raw)}
        if f.get(1, 0) == 1:
            return True, bytes(f.get(3, b"")).decode()
        return True, _signed32(f.get(2, 0))
    if type_name == _QUANTITY:
        f = {num: v for num, _wt, v in iter_fields(raw)}
        return True, bytes(f.get(1, b"")).decode()
    if type_name in _RAW_JSON:
        f = {num: v for num, _wt, v in iter_fields(raw)}
        data = bytes(f.get(1, b""))
        try:
            return True, json.loads(data) if data else {}
        except ValueError as e:
            raise ProtobufError(f"{type_name} does not hold JSON: {e}") from None
    fields = table().get(type_name) or {}
    if list(fields.values()) == [["items", fields.get("1", ["", ""])[1], "r"]] and \
            fields["1"][1] in ("string", "bytes"):
        # A list wrapper (ExtraValue, Verbs): a plain list in JSON.
        return True, [bytes(v).decode() for _n, _wt, v in iter_fields(raw)]
    return False, None


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _scalar(type_name: str, wt: int, v: Any) -> Any:
    if type_name == "string":
        return bytes(v).decode()
    if type_name == "bytes":
        return base64.b64encode(bytes(v)).decode()
    if type_name == "bool":
        return bool(v)
    if type_name in _SIGNED:
        return _signed32(v) if type_name == "int32" else _signed64(v)
    if type_name == "double" and wt == 1:
        return struct.unpack("<d", v.to_bytes(8, "little"))[0]
    if type_name == "float" and wt == 5:
        return struct.unpack("<f", v.to_bytes(4, "little"))[0]
    return v


def _value(type_name: str, wt: int, v: Any) -> Any:
    if type_name in _SCALARS:
        return _scalar(type_name, wt, v)
    return decode_message(bytes(v), type_name)


def _packed(type_name: str, raw: bytes) -> list:
    """A packed repeated scalar field (proto2 [packed=true] is not used by Kubernetes, but
    proto3 writers pack by default)."""
    out, pos = [], 0
    while pos < len(raw):
        v, pos = _varint(raw, pos)
        out.append(_scalar(type_name, 0, v))
    return out


_SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
            "fixed32", "fixed64", "sint32", "sint64"}


def decode_message(raw: bytes, type_name: str) -> Any:
    """Decode one message into its JSON form (unknown fields skipped, empty strings and
    zero times left out as Go's JSON encoder omits them)."""
    handled, value = _special(type_name, raw)
    if handled:
        return value
    fields = table().get(type_name)
    if fields is None:
        raise ProtobufError(f"no field table for protobuf message {type_name}")
    out: dict[str, Any] = {}
    for num, wt, v in iter_fields(raw):
        spec = fields.get(str(num))
        if spec is None:
            continue
        name, ftype, label = spec
        if label == "m":
            key, val_raw, val_wt = "", b"", 2
            for enum_, ewt, ev in iter_fields(bytes(v)):
                if enum_ == 1:
                    key = bytes(ev).decode()
                elif enum_ == 2:
                    val_raw, val_wt = ev, ewt
            if ftype in _SCALARS:
                entry = _scalar(ftype, val_wt, val_raw if val_raw != b"" or ftype in ("string", "bytes") else 0)
            else:
                entry = decode_message(bytes(val_raw), ftype)
            out.setdefault(name, {})[key] = entry
        elif label == "r":
            if ftype in _SCALARS and ftype not in ("string", "bytes") and wt == 2:
                out.setdefault(name, []).extend(_packed(ftype, bytes(v)))
            else:
                out.setdefault(name, []).append(_value(ftype, wt, v))
        else:
            val = _value(ftype, wt, v)
            if val is None or (ftype == "string" and val == "" and name not in _EMPTY_MEANS_SOMETHING):
                continue
            out[name] = val
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
        ProtobufError: bad envelope, compressed content, or a kind without a message.
    """
    api_version, kind, raw, encoding = decode_unknown(body)
    if encoding:
        raise ProtobufError(f"unsupported protobuf contentEncoding {encoding!r}")
    name = message_name(api_version, kind)
    if name is None:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} ({api_version}) are not supported; "
                            "send JSON")
    obj = decode_message(raw, name)
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
