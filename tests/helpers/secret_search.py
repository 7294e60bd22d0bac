"""Searching evidence for credentials: what a twin holds, and every text a file holds.

Used by the no-secrets tests of ``tests/integration/security``: the full rehearsal's run
folder and a cluster snapshot archive are searched the same way.

- :func:`twin_secrets`: the credentials a twin's state folder holds (API token, k3s join
  token, SSH key, admin token, a kubeconfig client key);
- :func:`texts`: a file's text and, for a (gzipped) tar, every member's text;
- :func:`with_base64`: each token also in the base64 form a dumped Secret would show;
- :func:`search`: every (what, where) leak of ``secrets`` in ``files``;
- :func:`secret_config_values`: the values of k3s secret keys in config-like text.
"""
from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
from pathlib import Path
from typing import Iterable

import yaml


def key_fragments(pem: str) -> list[str]:
    """Distinctive pieces of a private key: every base64 body line of 40+ characters."""
    return [ln.strip() for ln in pem.splitlines() if len(ln.strip()) >= 40 and "-----" not in ln]


def texts(path: Path) -> list[tuple[str, str]]:
    """(label, text) of a file, and of every member when it is a (gzipped) archive.

    helm's cache under the run folder keeps chart archives (``*.chart``, ``*.tgz``) and a
    snapshot is a ``.tar.gz``: a secret inside one would be invisible to a plain byte search.
    """
    raw = path.read_bytes()
    out = [(path.name, raw.decode("utf-8", "replace"))]
    if raw[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(raw)
        except (OSError, EOFError):
            return out
        try:
            with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
                for m in tar.getmembers():
                    f = tar.extractfile(m) if m.isfile() else None
                    if f is not None:
                        out.append((f"{path.name}!{m.name}", f.read().decode("utf-8", "replace")))
        except tarfile.TarError:
            out.append((f"{path.name}!gunzip", inner.decode("utf-8", "replace")))
    return out


def with_base64(secrets: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each token also as base64: the form it would take in a dumped Secret's data."""
    out = dict(secrets)
    for what in ("api token", "k3s join token", "admin token"):
        for v in secrets.get(what, []):
            out.setdefault(f"{what} (base64)", []).append(base64.b64encode(v.encode()).decode())
    return out


def twin_secrets(sd: Path) -> dict[str, list[str]]:
    """The credentials a twin's state folder holds (on disk; the twin may be stopped)."""
    kube = yaml.safe_load((sd / "kubeconfig").read_text())
    token = kube["users"][0]["user"]["token"]
    join = None
    for cfg in sd.glob("nodes/*/etc/rancher/k3s/config.yaml"):
        doc = yaml.safe_load(cfg.read_text()) or {}
        if doc.get("token"):
            join = doc["token"]
    assert join, "the fixture's agents carry a join token"
    user = kube["users"][0]["user"]
    client_key = user.get("client-key-data")   # a certificate login instead of / beside a token
    out = {"api token": [token], "k3s join token": [join],
           "ssh private key": key_fragments((sd / "ssh" / "id_ed25519").read_text())}
    if client_key:
        out["kubeconfig client key"] = [client_key[:64]] + key_fragments(
            base64.b64decode(client_key).decode("utf-8", "replace"))
    admin = sd / "admin-token"
    if admin.exists():
        out["admin token"] = [admin.read_text().strip()]
    return out


def search(files: Iterable[Path], secrets: dict[str, list[str]], root: Path) -> tuple[list[str], int]:
    """(every "<what> in <where>" leak, how many texts were searched)."""
    leaks, searched = [], 0
    for p in files:
        for label, text in texts(p):
            searched += 1
            for what, values in secrets.items():
                for v in values:
                    if v and v in text:
                        leaks.append(f"{what} in {p.parent.relative_to(root) / label}")
    return sorted(set(leaks)), searched


#: config lines of k3s secret keys, as a diff or a file shows them (``+token: ...``)
SECRET_LINE = re.compile(r"(?:^|\\n|\n|>|\")[-+ ]?\s*(?:token|agent-token|etcd-s3-secret-key)"
                         r":[ \t]*([^\s\\<\"]+)")


def secret_config_values(text: str) -> list[str]:
    """The values of k3s secret keys in ``text`` (each must be all ``*``)."""
    return SECRET_LINE.findall(text)
