"""Tools a test needs from the machine, and what happens when one is missing.

Locally a missing helm, kubectl, Chromium, OpenSSH client or server (``sshd``) or official
Cilium chart skips
the tests that need it, with the reason. With ``RUNBOOK_REQUIRE_TOOLS=1`` (``.ci/run``
sets it) the same test fails instead, so a missing install step in CI can never hide
behind a skip.

The official chart archive lives outside the repository (it is never copied in). It is
looked up, first found wins:

1. ``$RUNBOOK_CILIUM_CHART`` (a path to the ``.tgz``; set but missing is an error);
2. ``<repo>/../shared/charts/cilium-1.19.3.tgz`` (the clone next to ``shared/``, as CI
   lays it out);
3. ``/work/shared/charts/cilium-1.19.3.tgz`` (the team's machine, from any worktree).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn, Sequence

import pytest

REQUIRE_ENV = "RUNBOOK_REQUIRE_TOOLS"
CHART_ENV = "RUNBOOK_CILIUM_CHART"
CHART_NAME = "cilium-1.19.3.tgz"
REPO = Path(__file__).resolve().parents[2]
#: Where system daemons live when sbin is not on PATH (an ordinary user's shell).
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
CHART_PLACES = (REPO.parent / "shared" / "charts" / CHART_NAME,
                Path("/work/shared/charts") / CHART_NAME)


def tools_required() -> bool:
    """True when a missing tool must fail the test (``RUNBOOK_REQUIRE_TOOLS`` set, not 0)."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when tools are required.

    Example:
        >>> missing("helm unavailable: not on PATH")   # doctest: +SKIP
    """
    if tools_required():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1: this machine must have it; "
                    "see the install step in .ci/run]", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """The path of ``helm`` or ``kubectl`` (runbook.tools' lookup), or :func:`missing`."""
    from runbook.errors import RunbookError
    from runbook.tools import find_binary

    try:
        return find_binary(name)
    except RunbookError as e:
        missing(f"{name} unavailable: {e}")


def find_command(name: str, also_in: Sequence[str] = ()) -> str | None:
    """The absolute path of a command: on ``PATH``, else in one of the folders ``also_in``."""
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    for folder in also_in:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def require_command(name: str, package: str, also_in: Sequence[str] = ()) -> str:
    """The path of a command (e.g. ``ssh``; see :func:`find_command`), or :func:`missing`
    naming its package."""
    path = find_command(name, also_in)
    if path is None:
        where = f" (looked on PATH and in {', '.join(also_in)})" if also_in else ""
        missing(f"{name} not installed{where} (Debian package `{package}`)")
    return path


def require_sshd() -> str:
    """OpenSSH's server, ``sshd`` (absolute: it re-executes itself), or :func:`missing`.

    Its folder, ``/usr/sbin``, is often not on an ordinary user's ``PATH``: the sbin
    folders are searched too. The tests that run it also need ``ssh-keygen``
    (openssh-client).

    Example:
        >>> require_sshd()                    # doctest: +SKIP
        '/usr/sbin/sshd'
    """
    path = require_command("sshd", "openssh-server", also_in=SBIN)
    require_command("ssh-keygen", "openssh-client")
    return path


def find_cilium_chart() -> tuple[Path | None, list[str]]:
    """The official chart archive and the places looked at (see the module docstring)."""
    looked: list[str] = []
    explicit = os.environ.get(CHART_ENV, "").strip()
    if explicit:
        path = Path(explicit).expanduser().resolve()
        return (path if path.is_file() else None), [f"${CHART_ENV}={explicit}"]
    for place in CHART_PLACES:
        looked.append(str(place))
        if place.is_file():
            return place.resolve(), looked
    return None, looked


def require_cilium_chart() -> Path:
    """The official chart archive, or :func:`missing` with every place looked at."""
    path, looked = find_cilium_chart()
    if path is None:
        missing(f"official Cilium chart archive {CHART_NAME} not found (looked at: {', '.join(looked)}; "
                f"set {CHART_ENV} to its path)")
    return path
