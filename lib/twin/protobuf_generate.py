"""Build ``protobuf_fields.json``: the field numbers of the Kubernetes protobuf messages.

The twin decodes the protobuf bodies real clients send (kubectl's typed commands, helm,
client-go) with a generic wire reader driven by this table. The table is made from the
``generated.proto`` files Kubernetes publishes (Apache-2.0) in its ``k8s.io/api`` and
``k8s.io/apimachinery`` repositories; only field numbers, names and types are kept.
Field numbers never change once released, so a newer table decodes older clients.

Run it with the two repositories checked out (it is not needed at run time)::

    python -m twin.protobuf_generate ~/src/api ~/src/apimachinery > lib/twin/protobuf_fields.json

Table shape: ``{"k8s.io.api.apps.v1.Deployment": {"1": ["metadata", "<type>", "o"]}}``
with label ``o`` (optional), ``r`` (repeated) or ``m`` (``map<string, type>``), and
type a scalar (``string``, ``int32``, ``bytes`` ...) or a full message name.
Only GA versions (``v1``, ``v2``) and the apimachinery packages are kept.

Example:
    >>> parse_proto('package a.b;\\nmessage M {\\n  optional string name = 1;\\n'
    ...             '  map<string, string> labels = 2;\\n}\\n')
    {'a.b.M': {'1': ['name', 'string', 'o'], '2': ['labels', 'string', 'm']}}
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;", re.M)
_MESSAGE = re.compile(r"^message\s+(\w+)\s*\{(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^\s*(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", re.M)
_MAP = re.compile(r"^\s*map<\s*string\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;", re.M)
_SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
            "fixed32", "fixed64", "sint32", "sint64"}


def _qualify(type_name: str, package: str) -> str:
    if type_name in _SCALARS:
        return type_name
    if type_name.startswith("."):
        return type_name[1:]
    return f"{package}.{type_name}"


def parse_proto(text: str) -> dict[str, dict[str, list[str]]]:
    """The messages of one ``.proto`` file: full name -> field number -> [name, type, label]."""
    m = _PACKAGE.search(text)
    package = m.group(1) if m else ""
    out: dict[str, dict[str, list[str]]] = {}
    for msg in _MESSAGE.finditer(text):
        fields: dict[str, list[str]] = {}
        for f in _FIELD.finditer(msg.group(2)):
            label, type_name, name, num = f.groups()
            fields[num] = [name, _qualify(type_name, package), "r" if label == "repeated" else "o"]
        for f in _MAP.finditer(msg.group(2)):
            type_name, name, num = f.groups()
            fields[num] = [name, _qualify(type_name, package), "m"]
        out[f"{package}.{msg.group(1)}"] = dict(sorted(fields.items(), key=lambda kv: int(kv[0])))
    return out


def build(api_repo: Path, apimachinery_repo: Path) -> dict[str, dict[str, list[str]]]:
    table: dict[str, dict[str, list[str]]] = {}
    for proto in sorted(api_repo.glob("*/*/generated.proto")):
        if proto.parent.name not in ("v1", "v2"):
            continue
        table.update(parse_proto(proto.read_text(encoding="utf-8")))
    for rel in ("pkg/apis/meta/v1", "pkg/runtime", "pkg/runtime/schema", "pkg/util/intstr",
                "pkg/api/resource"):
        table.update(parse_proto((apimachinery_repo / rel / "generated.proto").read_text(encoding="utf-8")))
    return dict(sorted(table.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(build(Path(argv[0]), Path(argv[1])), sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
