"""A node path never leads out of the node's root (twin.node.files.NodeFiles.host_path).

host_path resolves a path fully (os.path.realpath) only when a symlink lies below the
root; these cases prove it refuses exactly the paths the full resolution of every path
refuses, and maps every other path as before: links inside the tree, links out of it
(absolute, relative through ``..``, chained, behind a linked directory), dangling links,
a link loop, missing components and files used as directories.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from twin.node.files import NodeFiles, norm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

PATHS = ["/", "/etc", "/etc/hostname", "/etc/hostname/x", "/missing", "/missing/a/b", "/etc/../etc/hostname",
         "/in-abs", "/in-rel", "/in-abs/x", "/out-abs", "/out-abs/secret", "/out-rel", "/out-rel/secret",
         "/chain", "/chain/secret", "/dir-link", "/dir-link/hostname", "/dir-link/out", "/dir-link/out/secret",
         "/dangling", "/dangling/x", "/loop", "/loop/x", "/var/lib/deep/file", "/var/lib/deep/up",
         "/var/lib/deep/up/hostname", "/var/lib/deep/up/out/secret", "/var/lib/deep/up/../../out-rel"]


def full_resolution(files: NodeFiles, path: str) -> Path:
    """The rule as it was: every path resolved from the host's ``/``."""
    root = os.path.realpath(files.root)
    p = norm(path)
    host = os.path.join(root, p.lstrip("/")) if p != "/" else root
    real = os.path.realpath(host)
    if real != root and not real.startswith(root + os.sep):
        raise PermissionError(path)
    return Path(host)


@pytest.fixture
def files(tmp_path: Path) -> NodeFiles:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    f = NodeFiles(tmp_path / "node", lambda event, **info: None)
    f.write("/etc/hostname", "node-1\n")
    f.write("/var/lib/deep/file", "x")
    r = f.root
    (r / "in-abs").symlink_to(r / "etc")                    # absolute, inside the root
    (r / "in-rel").symlink_to("etc/hostname")               # relative, inside
    (r / "out-abs").symlink_to(outside)                     # absolute, outside
    (r / "out-rel").symlink_to("../outside")                # relative, out through ..
    (r / "chain").symlink_to("in-abs/../out-rel")           # a chain that ends outside
    (r / "etc" / "out").symlink_to(outside)
    (r / "dir-link").symlink_to("etc")                      # a linked directory with a link out below
    (r / "dangling").symlink_to("nowhere/at/all")
    (r / "loop").symlink_to("loop")
    (r / "var" / "lib" / "deep" / "up").symlink_to("../../../etc")
    return f


@pytest.mark.parametrize("path", PATHS)
def test_host_path_refuses_exactly_what_a_full_resolution_refuses(files: NodeFiles, path: str) -> None:
    try:
        expected: Path | type[PermissionError] = full_resolution(files, path)
    except PermissionError:
        expected = PermissionError
    if expected is PermissionError:
        with pytest.raises(PermissionError):
            files.host_path(path)
    else:
        assert files.host_path(path) == expected


def test_the_cases_cover_both_answers(files: NodeFiles) -> None:
    refused = []
    for path in PATHS:
        try:
            full_resolution(files, path)
        except PermissionError:
            refused.append(path)
    assert {"/out-abs", "/out-rel/secret", "/chain", "/dir-link/out", "/var/lib/deep/up/out/secret"} <= set(refused)
    assert {"/in-abs/x", "/in-rel", "/dir-link/hostname", "/dangling", "/loop", "/var/lib/deep/up"}.isdisjoint(refused)
