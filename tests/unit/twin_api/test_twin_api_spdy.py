"""SPDY/3.1 sessions (twin.apiserver.spdy) against frames built as a client builds them."""
from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from twin import protobuf as pb
from twin.apiserver.spdy import DICTIONARY, FLAG_FIN, SYN_REPLY, SYN_STREAM, Session

pytestmark = pytest.mark.unit


def test_dictionary_is_the_spdy3_one():
    assert len(DICTIONARY) == 1423 and zlib.adler32(DICTIONARY) == 0xE3C6A7C2
    assert DICTIONARY.startswith(b"\x00\x00\x00\x07options") and DICTIONARY.endswith(b",*,enq=0.")


def _syn_stream(deflate, sid: int, headers: dict[str, str], fin: bool = False) -> bytes:
    raw = struct.pack(">I", len(headers)) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        for k, v in headers.items())
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIH", sid, 0, 0) + block
    return struct.pack(">HHI", 0x8003, SYN_STREAM, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def _data(sid: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", sid, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def test_session_replies_and_carries_data():
    async def scenario() -> list[bytes]:
        inbox: asyncio.Queue = asyncio.Queue()
        sent: list[bytes] = []

        async def write(b: bytes) -> None:
            sent.append(b)

        async def on_stream(stream) -> None:
            body = await stream.read_all()
            await stream.write(stream.headers["streamtype"].encode() + b":" + body, fin=True)

        session = Session(inbox.get, write, on_stream)
        deflate = zlib.compressobj(zdict=DICTIONARY)
        inbox.put_nowait(_syn_stream(deflate, 1, {"streamType": "data", "port": "80"}))
        frame = _data(1, b"hello", fin=True)
        inbox.put_nowait(frame[:5])          # frames may arrive split
        inbox.put_nowait(frame[5:])
        task = asyncio.ensure_future(session.run())
        for _ in range(50):
            if len(sent) >= 2:
                break
            await asyncio.sleep(0.01)
        inbox.put_nowait(None)
        await task
        return sent

    sent = asyncio.run(scenario())
    reply, data = sent[0], sent[1]
    assert struct.unpack(">HH", reply[:4]) == (0x8003, SYN_REPLY) and struct.unpack(">I", reply[8:12]) == (1,)
    assert struct.unpack(">I", data[:4]) == (1,) and data[4] == FLAG_FIN and data[8:] == b"data:hello"


def test_protobuf_decodes_any_ga_kind():
    container = pb._msg([(1, "web"), (2, "nginx:1.27"), (6, pb._msg([(3, 8080), (4, "TCP")]))])
    template = pb._msg([(1, pb._msg([(11, pb._map_entry("app", "web"))])),
                        (2, pb._msg([(2, container)]))])
    spec = pb._msg([(1, 0), (2, pb._msg([(1, pb._map_entry("app", "web"))])), (3, template),
                    (4, pb._msg([(1, "RollingUpdate"),
                                 (2, pb._msg([(1, pb._msg([(1, 1), (3, "25%")]))]))]))])
    raw = pb._msg([(1, pb._msg([(1, "web"), (3, "shop")])), (2, spec)])
    obj = pb.decode_body(pb.encode_unknown("apps/v1", "Deployment", raw))
    assert obj["metadata"] == {"name": "web", "namespace": "shop"}
    assert obj["spec"]["replicas"] == 0          # an explicit zero survives
    assert obj["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]
    assert obj["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}
