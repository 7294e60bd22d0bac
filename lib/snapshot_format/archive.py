"""Writing and reading a snapshot archive (``.tar.gz``) or its unpacked directory.

Example:
    >>> import tempfile, pathlib
    >>> snap = Snapshot(cluster={"name": "demo"}, nodes=[{"name": "s1"}], secrets=[])
    >>> snap.add_objects("v1", "Namespace", "namespaces", False, [{"metadata": {"name": "a"}}])
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "demo.tar.gz"
    >>> _ = write(out, snap)
    >>> back = read(out)
    >>> back.cluster["name"], [o["metadata"]["name"] for o in back.items("Namespace")]
    ('demo', ['a'])
    >>> read_manifest(out)["version"]
    '1.0'
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import SnapshotFormatError, SnapshotVersionError

FORMAT = "phase22-cluster-snapshot"
VERSION = "1.0"
MAJOR = int(VERSION.split(".")[0])

MANIFEST = "manifest.json"
CLUSTER = "cluster.json"
NODES = "nodes.json"
SECRETS = "secrets.json"
PARAMS = "params.json"
OBJECTS_DIR = "objects/"
#: the fixed documents, in archive order (objects/* follow)
DOCUMENTS = (MANIFEST, CLUSTER, NODES, SECRETS, PARAMS)
#: keys a secrets.json entry may never hold
_SECRET_PAYLOAD = ("data", "stringData")
_HINT_RETAKE = "take the snapshot again with `runbook snapshot --params FILE --out ARCHIVE`"


def objects_document(api_version: str, plural: str) -> str:
    """The archive member holding one resource type.

    >>> objects_document("apps/v1", "deployments"), objects_document("v1", "pods")
    ('objects/apps_v1_deployments.json', 'objects/core_v1_pods.json')
    """
    group, _, version = api_version.rpartition("/")
    return f"{OBJECTS_DIR}{group or 'core'}_{version}_{plural}.json"


@dataclass
class Snapshot:
    """A cluster snapshot in memory (what :func:`read` returns and :func:`write` takes).

    Attributes:
        cluster: ``cluster.json``; nodes: ``nodes.json`` (a list, one entry per node);
        objects: member name -> ``{"apiVersion", "kind", "resource", "namespaced",
        "items"}``; secrets: ``secrets.json``; params: ``params.json`` or None;
        manifest: ``manifest.json`` (on write: the ``source`` and ``masked`` fields are
        taken from it, the rest is computed); source: where it was read from.
    """

    cluster: dict
    nodes: list[dict]
    objects: dict[str, dict] = field(default_factory=dict)
    secrets: list[dict] = field(default_factory=list)
    params: dict | None = None
    manifest: dict = field(default_factory=dict)
    source: str = ""

    def manifest_version(self) -> str:
        return str(self.manifest.get("version") or VERSION)

    def add_objects(self, api_version: str, kind: str, plural: str, namespaced: bool,
                    items: list[dict]) -> None:
        """Add (or replace) the objects of one resource type."""
        self.objects[objects_document(api_version, plural)] = {
            "apiVersion": api_version, "kind": kind, "resource": plural,
            "namespaced": bool(namespaced), "items": list(items)}

    def items(self, kind: str, group: str | None = None) -> list[dict]:
        """The objects of ``kind`` (of API group ``group`` when given), every version."""
        out: list[dict] = []
        for doc in self.objects.values():
            if doc["kind"] != kind:
                continue
            if group is not None and doc["apiVersion"].rpartition("/")[0] != group:
                continue
            out.extend(doc["items"])
        return out

    def iter_documents(self) -> Iterator[dict]:
        """Every objects document (``apiVersion``, ``kind``, ``items`` ...)."""
        return iter(self.objects.values())

    def counts(self) -> dict[str, int]:
        """Objects by kind (Secrets from ``secrets.json``); a custom resource's kind is
        named with its API group (``Node.longhorn.io``: not a Kubernetes ``Node``)."""
        out: dict[str, int] = {}
        for doc in self.objects.values():
            key = counted_kind(doc["kind"], str(doc.get("apiVersion") or ""))
            out[key] = out.get(key, 0) + len(doc["items"])
        if self.secrets:
            out["Secret"] = out.get("Secret", 0) + len(self.secrets)
        return out


# ----------------------------------------------------------------------------- writing
def _dump(doc: Any, compact: bool) -> bytes:
    if compact:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()


def write(path: str | os.PathLike[str], snap: Snapshot, *, compresslevel: int = 6) -> dict:
    """Write ``snap`` as a ``.tar.gz`` at ``path`` (mode 0600, atomically).

    The manifest lists every document with its sha256, size and item count, and the
    object counts by kind. Returns the manifest written.

    Raises:
        SnapshotFormatError: a document is not JSON-able, or the file cannot be written.
    """
    path = Path(path)
    docs: list[tuple[str, bytes, int | None]] = []
    try:
        docs.append((CLUSTER, _dump(snap.cluster, False), None))
        docs.append((NODES, _dump(snap.nodes, False), len(snap.nodes)))
        docs.append((SECRETS, _dump(snap.secrets, False), len(snap.secrets)))
        if snap.params is not None:
            docs.append((PARAMS, _dump(snap.params, False), None))
        for name in sorted(snap.objects):
            doc = snap.objects[name]
            docs.append((name, _dump(doc, True), len(doc["items"])))
    except (TypeError, ValueError) as e:
        raise SnapshotFormatError(str(path), f"a document is not JSON: {e}") from e
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": snap.manifest.get("created")
        or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": snap.manifest.get("source") or {},
        "masked": list(snap.manifest.get("masked") or []),
        "documents": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                             **({"items": n} if n is not None else {})}
                      for name, data, n in docs},
        "counts": dict(sorted(snap.counts().items())),
    }
    mdata = _dump(manifest, False)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz",
                                                      compresslevel=compresslevel) as tar:
            mtime = int(time.time())
            for name, data in [(MANIFEST, mdata)] + [(n, d) for n, d, _ in docs]:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o600, mtime
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SnapshotFormatError(str(path), f"cannot write the archive: {e.strerror or e}") from e
    return manifest


# ----------------------------------------------------------------------------- reading
def _check_manifest(where: str, manifest: Any) -> dict:
    if not isinstance(manifest, dict):
        raise SnapshotFormatError(where, f"{MANIFEST} is not a JSON object", hint=_HINT_RETAKE)
    if manifest.get("format") != FORMAT:
        raise SnapshotFormatError(
            where, f"{MANIFEST}: field 'format' is {manifest.get('format')!r}, not {FORMAT!r}: "
            "this is not a cluster snapshot", hint=_HINT_RETAKE)
    version = str(manifest.get("version") or "")
    major, _, minor = version.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise SnapshotFormatError(where, f"{MANIFEST}: field 'version' {version!r} is not MAJOR.MINOR",
                                  hint=_HINT_RETAKE)
    if int(major) != MAJOR:
        raise SnapshotVersionError(
            where, f"snapshot format version {version} is not supported: this runbook reads "
            f"version {MAJOR}.x (docs/snapshot-format.md)",
            hint="take the snapshot again with this runbook's `runbook snapshot`, or use the "
                 "runbook release that wrote it")
    return manifest


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        # tarfile's message lists every compression it tried, one per line: keep one line
        raise SnapshotFormatError(str(path), "not a snapshot archive (a .tar.gz): it does not read "
                                  "as a tar file, gzipped or not", hint=_HINT_RETAKE) from e


def _missing(path: Path) -> SnapshotFormatError:
    return SnapshotFormatError(str(path), "snapshot archive not found",
                               hint="pass the file `runbook snapshot --out` wrote (or a snapshot "
                                    "directory with a manifest.json)")


def read_manifest(path: str | os.PathLike[str]) -> dict:
    """Read and check only the manifest (format and version): cheap, for early refusals.

    Raises:
        SnapshotFormatError: missing, not an archive, no manifest, not a snapshot.
        SnapshotVersionError: another major version.
    """
    p = Path(path)
    if p.is_dir():
        return _check_manifest(str(p), _load_json(str(p), MANIFEST, _read_dir_member(p, MANIFEST)))
    if not p.is_file():
        raise _missing(p)
    with _open_tar(p) as tar:
        try:
            member = tar.getmember(MANIFEST)
        except KeyError:
            raise SnapshotFormatError(str(p), f"no {MANIFEST} in the archive: not a cluster snapshot",
                                      hint=_HINT_RETAKE) from None
        data = tar.extractfile(member)
        return _check_manifest(str(p), _load_json(str(p), MANIFEST, data.read() if data else None))


def _read_dir_member(root: Path, name: str) -> bytes | None:
    f = root / name
    return f.read_bytes() if f.is_file() else None


def _load_json(where: str, name: str, data: bytes | None) -> Any:
    if data is None:
        raise SnapshotFormatError(where, f"no {name} in the snapshot", hint=_HINT_RETAKE)
    try:
        return json.loads(data)
    except ValueError as e:
        raise SnapshotFormatError(where, f"{name} is not valid JSON: {e}", hint=_HINT_RETAKE) from e


def _members(p: Path) -> dict[str, bytes]:
    """Every regular member of the archive (or file of the directory) by name."""
    out: dict[str, bytes] = {}
    if p.is_dir():
        for f in sorted(p.rglob("*.json")):
            out[f.relative_to(p).as_posix()] = f.read_bytes()
        return out
    with _open_tar(p) as tar:
        try:
            for m in tar:
                if not m.isfile():
                    continue
                data = tar.extractfile(m)
                if data is not None:
                    out[m.name.removeprefix("./")] = data.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SnapshotFormatError(str(p), f"the archive is truncated or corrupt: {e}",
                                      hint=_HINT_RETAKE) from e
    return out


def read(path: str | os.PathLike[str]) -> Snapshot:
    """Read a snapshot archive (``.tar.gz``) or an unpacked snapshot directory.

    Checks the manifest (format, version), each document's sha256 when the manifest
    lists one, and the shape of every document.

    Raises:
        SnapshotFormatError: naming the archive, the document and the field.
        SnapshotVersionError: another major version.
    """
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise _missing(p)
    members = _members(p)
    manifest = _check_manifest(where, _load_json(where, MANIFEST, members.get(MANIFEST)))
    for name, entry in (manifest.get("documents") or {}).items():
        if name not in members:
            raise SnapshotFormatError(where, f"{MANIFEST} lists {name}, which is not in the snapshot",
                                      hint=_HINT_RETAKE)
        want = (entry or {}).get("sha256")
        if want and hashlib.sha256(members[name]).hexdigest() != want:
            raise SnapshotFormatError(where, f"{name} does not match its sha256 in {MANIFEST}: "
                                      "the archive was changed or damaged", hint=_HINT_RETAKE)
    cluster = _load_json(where, CLUSTER, members.get(CLUSTER))
    if not isinstance(cluster, dict) or not isinstance(cluster.get("name"), str) or not cluster["name"]:
        raise SnapshotFormatError(where, f"{CLUSTER}: field 'name' is missing or not a string")
    nodes = _load_json(where, NODES, members.get(NODES))
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and n.get("name") for n in nodes):
        raise SnapshotFormatError(where, f"{NODES}: expected a list of nodes, each with a 'name'")
    secrets = _load_json(where, SECRETS, members[SECRETS]) if SECRETS in members else []
    if not isinstance(secrets, list):
        raise SnapshotFormatError(where, f"{SECRETS}: expected a list")
    for i, s in enumerate(secrets):
        if not isinstance(s, dict) or any(k in s for k in _SECRET_PAYLOAD):
            raise SnapshotFormatError(where, f"{SECRETS}[{i}]: a Secret is recorded by namespace, "
                                      "name and type only; this entry holds data", hint=_HINT_RETAKE)
    params = _load_json(where, PARAMS, members[PARAMS]) if PARAMS in members else None
    objects: dict[str, dict] = {}
    for name in sorted(members):
        if not name.startswith(OBJECTS_DIR):
            continue
        doc = _load_json(where, name, members.pop(name))
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list) \
                or not isinstance(doc.get("apiVersion"), str) or not isinstance(doc.get("kind"), str):
            raise SnapshotFormatError(where, f"{name}: expected an object with apiVersion, kind and items")
        for i, o in enumerate(doc["items"]):
            md = o.get("metadata") if isinstance(o, dict) else None
            if not isinstance(md, dict) or not md.get("name"):
                raise SnapshotFormatError(where, f"{name}: items[{i}]: metadata.name is required")
        doc.setdefault("resource", name[len(OBJECTS_DIR):].rsplit(".", 1)[0].split("_", 2)[-1])
        doc.setdefault("namespaced", any("namespace" in o["metadata"] for o in doc["items"]))
        objects[name] = doc
    return Snapshot(cluster=cluster, nodes=nodes, objects=objects, secrets=secrets, params=params,
                    manifest=manifest, source=where)


def counted_kind(kind: str, api_version: str) -> str:
    """How ``counts`` names a kind: as it is for Kubernetes' own API groups (the core
    group, ``apps``, ``*.k8s.io``), ``kind.group`` for any other group.

    Example:
        >>> counted_kind("Node", "v1"), counted_kind("Node", "longhorn.io/v1beta2")
        ('Node', 'Node.longhorn.io')
        >>> counted_kind("Ingress", "networking.k8s.io/v1")
        'Ingress'
    """
    group = api_version.rpartition("/")[0]
    if not group or "." not in group or group.endswith(".k8s.io"):
        return kind
    return f"{kind}.{group}"
